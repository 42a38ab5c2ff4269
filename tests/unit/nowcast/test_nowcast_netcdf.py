"""CF-1.8 NetCDF writer: dimensions, units, times, derived fields, georeferencing."""

from __future__ import annotations

import datetime as dt

import netCDF4
import numpy as np
import pyproj
import pytest
import xarray as xr

from diffcast.data.transforms import RADAR_DBZ_META, SEVIR_META, vil_code_to_kgm2
from diffcast.geo import ProjectedGrid
from diffcast.writers.netcdf import exceedance_probability, write_forecast_netcdf

T0 = dt.datetime(2021, 6, 1, 12, 30)


@pytest.fixture()
def ensemble() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((3, 4, 6, 8), dtype=np.float32)


def test_file_layout_units_and_times(tmp_path, ensemble):
    x_in = np.random.default_rng(1).random((5, 6, 8), dtype=np.float32)
    path = write_forecast_netcdf(tmp_path / "f.nc", ensemble, SEVIR_META, T0, x_in=x_in, timestep_min=5.0)
    assert [p.name for p in tmp_path.iterdir()] == ["f.nc"]  # no temp file left behind
    with xr.open_dataset(path) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        for key in ("title", "source", "history", "references"):
            assert ds.attrs[key]
        assert "DiffCast" in ds.attrs["references"]
        assert dict(ds["forecast"].sizes) == {"member": 3, "time": 4, "y": 6, "x": 8}
        assert dict(ds["ensemble_mean"].sizes) == {"time": 4, "y": 6, "x": 8}
        assert dict(ds["exceedance_probability"].sizes) == {"threshold": 6, "time": 4, "y": 6, "x": 8}
        assert ds["forecast"].attrs["units"] == "kg m-2"
        assert ds["threshold"].attrs["units"] == "kg m-2"
        np.testing.assert_allclose(ds["threshold_code"].values, SEVIR_META.thresholds)
        # valid times: analysis + 5, 10, 15, 20 minutes
        want = np.array([np.datetime64(T0 + dt.timedelta(minutes=5 * k)) for k in range(1, 5)], dtype="datetime64[ns]")
        np.testing.assert_array_equal(ds["time"].values, want)
        assert ds["forecast_reference_time"].values == np.datetime64(T0, "ns")
        np.testing.assert_allclose(ds["forecast_period"].values, [5, 10, 15, 20])
        assert ds["input_time"].values[-1] == np.datetime64(T0, "ns")
        # physical values: the SEVIR decoding of the codes, mean taken in physical units
        phys = vil_code_to_kgm2(ensemble * 255.0)
        np.testing.assert_allclose(ds["forecast"].values, phys, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds["ensemble_mean"].values, phys.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds["observation"].values, vil_code_to_kgm2(x_in * 255.0), rtol=1e-5, atol=1e-6)
    raw = netCDF4.Dataset(path)
    try:
        units = raw.variables["time"].units
        assert units.startswith("minutes since 2021-06-01") and units.endswith("12:30:00")
        np.testing.assert_allclose(raw.variables["time"][:], [5, 10, 15, 20])
        assert raw.variables["forecast_reference_time"].standard_name == "forecast_reference_time"
        assert raw.variables["member"].standard_name == "realization"
        assert "_FillValue" not in raw.variables["time"].ncattrs()
        assert raw.variables["ensemble_mean"].cell_methods == "realization: mean"
    finally:
        raw.close()


def test_exceedance_probability_counts_members():
    fc = np.zeros((4, 1, 1, 2), dtype=np.float32)
    fc[:, 0, 0, 0] = np.array([10, 30, 50, 70]) / 90.0  # dBZ values
    prob = exceedance_probability(fc, RADAR_DBZ_META, [20.0, 50.0, 80.0])
    np.testing.assert_allclose(prob[:, 0, 0, 0], [0.75, 0.5, 0.0])
    np.testing.assert_allclose(prob[:, 0, 0, 1], [0.0, 0.0, 0.0])


def test_dbz_units_and_single_member(tmp_path):
    fc = np.full((1, 2, 1, 4, 4), 0.5, dtype=np.float32)  # (M, T, C, H, W) accepted
    path = write_forecast_netcdf(tmp_path / "r.nc", fc, RADAR_DBZ_META, T0, thresholds=[30.0, 50.0], timestep_min=10)
    with xr.open_dataset(path) as ds:
        assert ds.sizes["member"] == 1
        assert ds["forecast"].attrs["units"] == "dBZ"
        assert ds["forecast"].attrs["standard_name"] == "equivalent_reflectivity_factor"
        np.testing.assert_allclose(ds["forecast"].values, 45.0, rtol=1e-6)
        np.testing.assert_allclose(ds["exceedance_probability"].values[:, 0, 0, 0], [1.0, 0.0])
        assert (ds["time"].values[1] - ds["time"].values[0]) == np.timedelta64(10, "m")


def test_bad_shapes_raise(tmp_path):
    with pytest.raises(ValueError, match=r"\(M, T, H, W\)"):
        write_forecast_netcdf(tmp_path / "x.nc", np.zeros((2, 3), np.float32), SEVIR_META, T0)
    with pytest.raises(ValueError, match="x_in"):
        write_forecast_netcdf(tmp_path / "x.nc", np.zeros((1, 2, 4, 4), np.float32), SEVIR_META, T0, x_in=np.zeros((3, 5, 5)))
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- georeferencing
SWISS = (
    "+proj=somerc  +lon_0=7.43958333333333 +lat_0=46.9524055555556 +k_0=1 +x_0=600000 +y_0=200000 "
    "+ellps=bessel +towgs84=674.374,15.056,405.346,0,0,0,0 +units=m +no_defs"
)
ALBERS = "+proj=aea  +lon_0=153.240 +lat_0=-27.718 +lat_1=-26.200 +lat_2=-29.300"
POLAR = "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752"


def _geodata(projection=ALBERS, **kw):
    # 6 rows x 8 columns of 1 km, lower-left corner at (-4000, -3000) m, row 0 at the top
    meta = {"projection": projection, "x1": -4000.0, "y1": -3000.0, "x2": 4000.0, "y2": 3000.0,
            "xpixelsize": 1000.0, "ypixelsize": 1000.0, "cartesian_unit": "m", "yorigin": "upper"}
    meta.update(kw)
    return meta


def test_grid_from_pysteps_conventions():
    up = ProjectedGrid.from_pysteps(_geodata(), (6, 8))
    np.testing.assert_allclose(up.x, np.arange(-3500, 4000, 1000))
    np.testing.assert_allclose(up.y, np.arange(2500, -3000, -1000))  # row 0 is the top
    assert up.notes == () and up.units == "m"
    low = ProjectedGrid.from_pysteps(_geodata(yorigin="lower"), (6, 8))
    np.testing.assert_allclose(low.y, up.y[::-1])
    # BoM style: x1..x2 are the first and last pixel centres
    bom = ProjectedGrid.from_pysteps(_geodata(x1=-3500.0, x2=3500.0, y1=-2500.0, y2=2500.0), (6, 8))
    np.testing.assert_allclose(bom.x, up.x)
    np.testing.assert_allclose(bom.y, up.y)
    assert any("pixel centres" in n for n in bom.notes)
    # KNMI style: metadata in km for a projection in metres
    km = ProjectedGrid.from_pysteps(_geodata(x1=-4.0, x2=4.0, y1=-3.0, y2=3.0, xpixelsize=1.0, ypixelsize=1.0,
                                             cartesian_unit="km"), (6, 8))
    np.testing.assert_allclose(km.x, up.x)
    assert any("converted" in n for n in km.notes)
    # pixel size that fits neither reading: the extent wins, as in pysteps' get_geogrid
    odd = ProjectedGrid.from_pysteps(_geodata(xpixelsize=700.0), (6, 8))
    np.testing.assert_allclose(odd.x, up.x)
    assert any("xpixelsize 700" in n for n in odd.notes)
    for bad, match in (({"projection": None}, "no projection"), ({"x2": None}, "lack x2"),
                       ({"yorigin": "middle"}, "yorigin"), ({"projection": "+proj=nonsense"}, "pyproj")):
        with pytest.raises(ValueError, match=match):
            ProjectedGrid.from_pysteps(_geodata(**bad), (6, 8))


def test_grid_crop_and_resize_follow_pixels():
    g = ProjectedGrid.from_pysteps(_geodata(), (6, 8))
    c = g.crop(1, 2, 4, 4)  # rows 1..4, columns 2..5
    np.testing.assert_allclose(c.x, g.x[2:6])
    np.testing.assert_allclose(c.y, g.y[1:5])
    r = c.resized(2, 2)  # 2x2 blocks: centres are the block means
    np.testing.assert_allclose(r.x, g.x[2:6].reshape(2, 2).mean(1))
    np.testing.assert_allclose(r.y, g.y[1:5].reshape(2, 2).mean(1))
    with pytest.raises(ValueError, match="outside"):
        g.crop(4, 0, 4, 4)


def test_netcdf_grid_mapping_and_lat_lon(tmp_path):
    grid = ProjectedGrid.from_pysteps(_geodata(ALBERS), (6, 8))
    fc = np.random.default_rng(0).random((2, 3, 6, 8), dtype=np.float32)
    path = write_forecast_netcdf(tmp_path / "g.nc", fc, RADAR_DBZ_META, T0, x_in=fc[0], grid=grid)
    with xr.open_dataset(path) as ds:
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate" and ds["x"].attrs["units"] == "m"
        assert ds["y"].attrs["standard_name"] == "projection_y_coordinate"
        np.testing.assert_allclose(ds["y"].values, grid.y)
        for name in ("forecast", "ensemble_mean", "exceedance_probability", "observation"):
            assert ds[name].attrs["grid_mapping"] == "crs", name
            assert "lat" in ds[name].coords and "lon" in ds[name].coords, name
        gm = dict(ds["crs"].attrs)
        assert gm["grid_mapping_name"] == "albers_conical_equal_area" and gm["spatial_ref"] == gm["crs_wkt"]
        assert pyproj.CRS.from_cf(gm) == pyproj.CRS(ALBERS)
        # the CF parameters alone (no WKT) give the same projection: project the pixel centres both ways
        params = {k: v for k, v in gm.items() if k not in ("crs_wkt", "spatial_ref", "proj4_params")}
        rebuilt = pyproj.CRS.from_cf(params)
        lon, lat = pyproj.Proj(ALBERS)(*np.meshgrid(grid.x, grid.y), inverse=True)
        bx, by = pyproj.Proj(rebuilt)(lon, lat)
        np.testing.assert_allclose(bx, np.meshgrid(grid.x, grid.y)[0], atol=1e-3)
        np.testing.assert_allclose(by, np.meshgrid(grid.x, grid.y)[1], atol=1e-3)
        assert "comment" not in gm
        # lat/lon: pyproj.Proj inverse of the pixel centres, as pysteps' NetCDF exporter computes them
        np.testing.assert_allclose(ds["lon"].values, lon, atol=1e-9)
        np.testing.assert_allclose(ds["lat"].values, lat, atol=1e-9)
        assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["standard_name"] == "longitude"
        assert ds.attrs["geospatial_lat_min"] == pytest.approx(lat.min())
        assert ALBERS in ds.attrs["georeferencing"]
    raw = netCDF4.Dataset(path)
    try:
        assert set(raw.variables["forecast"].coordinates.split()) >= {"lat", "lon"}
        assert "coordinates" not in raw.variables["crs"].ncattrs()
    finally:
        raw.close()


def test_netcdf_swiss_grid_states_the_cf_limits(tmp_path):
    # CF has no Swiss oblique Mercator: pyproj's CF parameters alone land far off, the WKT is exact
    grid = ProjectedGrid.from_pysteps(
        {"projection": SWISS, "x1": 255000.0, "y1": -160000.0, "x2": 965000.0, "y2": 480000.0,
         "xpixelsize": 1000.0, "ypixelsize": 1000.0, "cartesian_unit": "m", "yorigin": "upper"}, (640, 710)
    ).resized(64, 71)
    path = write_forecast_netcdf(tmp_path / "ch.nc", np.zeros((1, 1, 64, 71), np.float32), RADAR_DBZ_META, T0, grid=grid)
    with xr.open_dataset(path) as ds:
        gm = dict(ds["crs"].attrs)
        assert pyproj.CRS.from_cf(gm) == pyproj.CRS(SWISS)
        assert "crs_wkt" in gm["comment"] and "off by" in gm["comment"]
        # towgs84 given: lat/lon on WGS 84, as pyproj.Proj (and pysteps' exporter) give them
        lon, lat = pyproj.Proj(SWISS)(grid.x[0], grid.y[0], inverse=True)
        assert (float(ds["lon"][0, 0]), float(ds["lat"][0, 0])) == pytest.approx((lon, lat), abs=1e-9)
        assert "WGS 84" in ds["lat"].attrs["comment"]


def test_netcdf_geographic_grid(tmp_path):
    grid = ProjectedGrid.from_pysteps(
        {"projection": "+proj=longlat +datum=WGS84", "x1": 5.0, "x2": 9.0, "y1": 45.0, "y2": 48.0,
         "xpixelsize": 0.5, "ypixelsize": 0.5, "cartesian_unit": "degrees", "yorigin": "upper"}, (6, 8)
    )
    path = write_forecast_netcdf(tmp_path / "ll.nc", np.zeros((1, 1, 6, 8), np.float32), RADAR_DBZ_META, T0, grid=grid)
    with xr.open_dataset(path) as ds:
        assert ds["x"].attrs["standard_name"] == "longitude" and ds["y"].attrs["units"] == "degrees_north"
        np.testing.assert_allclose(ds["x"].values, np.arange(5.25, 9.0, 0.5))
        np.testing.assert_allclose(ds["y"].values, np.arange(47.75, 45.0, -0.5))
        assert "lat" not in ds and ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude"


def test_netcdf_without_georeferencing_says_so(tmp_path, ensemble):
    path = write_forecast_netcdf(tmp_path / "p.nc", ensemble, SEVIR_META, T0, pixel_km=2.0)
    with xr.open_dataset(path) as ds:
        assert ds.attrs["georeferencing"].startswith("none")
        assert "crs" not in ds.variables and "lat" not in ds.variables
        assert "grid_mapping" not in ds["forecast"].attrs
        assert ds["x"].attrs["units"] == "km" and "standard_name" not in ds["x"].attrs
        np.testing.assert_allclose(ds["x"].values, np.arange(8) * 2.0 + 1.0)
    with pytest.raises(ValueError, match="grid is 6x8"):
        write_forecast_netcdf(tmp_path / "q.nc", np.zeros((1, 1, 4, 4), np.float32), SEVIR_META, T0,
                              grid=ProjectedGrid.from_pysteps(_geodata(), (6, 8)))


# ----------------------------------------------------------------------------- coverage and rain rate
def test_nan_outside_coverage_and_coverage_variable(tmp_path):
    fc = np.full((2, 3, 4, 5), 0.5, np.float32)
    x_in = np.full((2, 4, 5), 0.4, np.float32)
    coverage = np.ones((4, 5), bool)
    coverage[0, :2] = False
    path = write_forecast_netcdf(tmp_path / "c.nc", fc, RADAR_DBZ_META, T0, x_in=x_in, coverage=coverage)
    with xr.open_dataset(path) as ds:
        for name in ("forecast", "ensemble_mean", "exceedance_probability", "observation"):
            v = ds[name].values
            assert np.isnan(v[..., ~coverage]).all() and np.isfinite(v[..., coverage]).all(), name
        np.testing.assert_array_equal(ds["coverage"].values, coverage.astype(np.int8))
        assert list(ds["coverage"].attrs["flag_values"]) == [0, 1]
        assert ds["coverage"].attrs["flag_meanings"] == "not_covered covered"
        np.testing.assert_allclose(ds["forecast"].values[..., coverage], 45.0)
    raw = netCDF4.Dataset(path)
    try:
        assert np.isnan(raw.variables["forecast"]._FillValue)
        assert "_FillValue" not in raw.variables["coverage"].ncattrs()
        assert np.ma.getmaskarray(raw.variables["forecast"][:])[..., ~coverage].all()  # read as missing
    finally:
        raw.close()
    with pytest.raises(ValueError, match="coverage must be"):
        write_forecast_netcdf(tmp_path / "d.nc", fc, RADAR_DBZ_META, T0, coverage=coverage[:2])
    # without a mask (images, arrays): no coverage variable, no fill value, as before
    with xr.open_dataset(write_forecast_netcdf(tmp_path / "e.nc", fc, RADAR_DBZ_META, T0)) as ds:
        assert "coverage" not in ds and "_FillValue" not in ds["forecast"].encoding


def test_rain_rate_variables_and_thresholds(tmp_path):
    from diffcast.data.transforms import rainrate_to_dbz
    from diffcast.pipeline.units import rain_rate_meta

    meta = rain_rate_meta(RADAR_DBZ_META)
    rates = np.array([0.0, 0.5, 1.0, 12.0], np.float64)
    fc = (rainrate_to_dbz(rates) / 90.0).astype(np.float32).reshape(1, 1, 1, 4)
    path = write_forecast_netcdf(tmp_path / "r.nc", fc, meta, T0)
    with xr.open_dataset(path) as ds:
        assert ds["forecast"].attrs["units"] == "mm h-1" and ds["forecast"].attrs["standard_name"] == "rainfall_rate"
        np.testing.assert_allclose(ds["forecast"].values.ravel(), rates, rtol=1e-5)
        assert list(ds["threshold"].values) == [0.5, 1.0, 5.0, 10.0] and ds["threshold"].attrs["units"] == "mm h-1"
        np.testing.assert_allclose(ds["threshold_code"].values, rainrate_to_dbz(np.array([0.5, 1, 5, 10])), rtol=1e-6)
        # values exactly at a threshold reach it (float32 round-off of dBZ / 90 and back)
        np.testing.assert_array_equal(ds["exceedance_probability"].values[:, 0, 0],
                                      [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]])
        assert "Z = 200 R^1.6" in ds.attrs["comment"]
