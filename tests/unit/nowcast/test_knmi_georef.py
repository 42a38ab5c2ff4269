"""KNMI georeferencing: pysteps gives km coordinates and a PROJ string with the ellipsoid in km."""

from __future__ import annotations

import numpy as np
import pytest

from diffcast.geo import ProjectedGrid, _km_ellipsoid_to_m

pytest.importorskip("pyproj")

#: pysteps' import_knmi_hdf5 metadata of the 765 x 700 NL composite (1 km, coordinates in km).
KNMI_META = {
    "projection": "+proj=stere +lat_0=90 +lon_0=0.0 +lat_ts=60.0 +a=6378.137 +b=6356.752 +x_0=0 +y_0=0",
    "x1": 0.0, "y1": -4415.002, "x2": 700.0, "y2": -3650.0, "xpixelsize": 1.0, "ypixelsize": 1.0,
    "cartesian_unit": "km", "yorigin": "upper",
}
#: Corners of the KNMI composite as its files state them (geo_product_corners: lon, lat).
KNMI_CORNERS = {"lower left": (0.0, 49.362064), "upper left": (0.0, 55.973602),
                "upper right": (10.856453, 55.388973), "lower right": (9.0093, 48.895302)}


def test_knmi_grid_lands_on_the_netherlands():
    grid = ProjectedGrid.from_pysteps(KNMI_META, (765, 700))
    lon, lat, _ = grid.lonlat()
    got = {"lower left": (lon[-1, 0], lat[-1, 0]), "upper left": (lon[0, 0], lat[0, 0]),
           "upper right": (lon[0, -1], lat[0, -1]), "lower right": (lon[-1, -1], lat[-1, -1])}
    for name, (lo, la) in KNMI_CORNERS.items():
        # pixel centres are half a pixel (about 0.01 degrees) inside the corners
        assert got[name][0] == pytest.approx(lo, abs=0.03), name
        assert got[name][1] == pytest.approx(la, abs=0.03), name
    assert any("read as km" in n for n in grid.notes)


def test_only_km_ellipsoids_are_rewritten():
    assert _km_ellipsoid_to_m("+proj=stere +lat_0=90 +a=6378137 +b=6356752")[1] is None
    assert _km_ellipsoid_to_m("+proj=somerc +lat_0=46.95 +ellps=bessel")[1] is None
    fixed, note = _km_ellipsoid_to_m("+proj=stere +R=6371.0 +lat_0=90")
    assert "+R=6371000" in fixed and note
    assert np.isfinite(ProjectedGrid.from_pysteps(dict(KNMI_META, projection=fixed), (765, 700)).lonlat()[1]).all()
