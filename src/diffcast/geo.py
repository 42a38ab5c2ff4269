"""Georeferencing of regular grids: :class:`ProjectedGrid`.

Neutral ground between the readers (radar files build a grid from their pysteps
metadata, :mod:`diffcast.pipeline.readers.radar`), the forecast pipeline (crops and
resizes follow the frames, :func:`diffcast.pipeline.grid.fit_projected_grid`) and
the writers (CF grid mapping and lat/lon in :mod:`diffcast.writers.netcdf`, the
graticule of :mod:`diffcast.viz.forecast_page`), so that none of them imports
another for it. Formerly part of ``diffcast.io_netcdf``.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


#: Metres per unit of the ``cartesian_unit`` values in pysteps metadata.
_PYSTEPS_UNIT_M = {"m": 1.0, "km": 1000.0}


#: How far (in pixels) ``x2 - x1`` may be from ``W`` (or ``W - 1``) pixel sizes.
_EXTENT_TOL = 0.01


#: Largest error (in pixels) tolerated when the CF parameters alone rebuild the projection.
_CF_PARAMS_TOL = 1e-3


#: PROJ ellipsoid/sphere size parameters (always metres in PROJ).
_PROJ_SIZE_KEYS = ("a", "b", "R")


def _km_ellipsoid_to_m(proj: str) -> tuple[str, str | None]:
    """A PROJ string whose ``+a``/``+b``/``+R`` are given in km (KNMI: ``+a=6378.137``) with them in metres.

    PROJ reads ellipsoid sizes in metres whatever ``+units`` says; an Earth radius
    below 100 km can only be kilometres, and read as metres it puts the grid near a
    pole. Returns ``(proj, note)``; ``note`` is ``None`` when nothing was changed.
    """
    import re

    changed = []

    def fix(m: re.Match[str]) -> str:
        key, val = m.group(1), float(m.group(2))
        if 1000.0 < val < 100_000.0:  # an Earth radius in km
            changed.append(f"+{key}={m.group(2)}")
            return f"+{key}={val * 1000.0:.6f}".rstrip("0").rstrip(".")
        return m.group(0)

    out = re.sub(r"\+(" + "|".join(_PROJ_SIZE_KEYS) + r")=([0-9.eE+-]+)", fix, proj)
    if not changed:
        return proj, None
    return out, f"ellipsoid size {', '.join(changed)} read as km (PROJ takes metres) and converted to metres"


def _crs_unit_m(crs: Any) -> float:
    """Metres per unit of a projected CRS's x axis (1.0 for geographic CRSs, whose units are degrees)."""
    if crs.is_geographic:
        return 1.0
    return float(crs.axis_info[0].unit_conversion_factor)


def _extent_axis(a: float, b: float, pixel: Any, n: int, name: str, notes: list[str]) -> tuple[float, float]:
    """``(outer edge, pixel step)`` of one grid axis from the pysteps extent ``a..b`` over ``n`` pixels."""
    lo, hi = sorted((float(a), float(b)))
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        raise ValueError(f"the metadata give an empty {name} extent {a}..{b}")
    if pixel:
        p = abs(float(pixel))
        if abs(span - n * p) <= _EXTENT_TOL * p:
            return lo, span / n
        if n > 1 and abs(span - (n - 1) * p) <= _EXTENT_TOL * p:
            notes.append(f"{name}1..{name}2 of the metadata are the first and last pixel centres, not the grid edges")
            return lo - span / (n - 1) / 2.0, span / (n - 1)
        notes.append(
            f"{name}pixelsize {p:g} does not fit the extent {span:g} over {n} pixels; "
            f"pixels of extent / {n} = {span / n:g} used (pysteps' convention)"
        )
    return lo, span / n


@dataclass(frozen=True)
class ProjectedGrid:
    """A regular grid in a map projection: where the pixels of ``(H, W)`` frames lie.

    Pixel ``(i, j)`` (row, column) has its centre at ``x = x0 + (j + 0.5) dx``,
    ``y = y0 + (i + 0.5) dy`` in the units of :attr:`projection`; ``(x0, y0)`` is
    the outer corner of pixel ``(0, 0)``. ``dy < 0`` when row 0 is the top (northern)
    edge of the grid (pysteps ``yorigin="upper"``), ``dy > 0`` when it is the bottom.

    Attributes
    ----------
    projection : str
        PROJ string (as given by the pysteps importer) or WKT (Zarr spec stores'
        ``crs_wkt``); anything :class:`pyproj.CRS` reads.
    x0, y0 : float
        Outer corner of pixel ``(0, 0)``, projection units.
    dx, dy : float
        Step per column and per row, projection units (signed).
    shape : (int, int)
        ``(H, W)`` of the frames.
    source : str
        Where the georeferencing came from (recorded in the file).
    notes : tuple of str
        How the metadata were read (units converted, extent convention).
    """

    projection: str
    x0: float
    y0: float
    dx: float
    dy: float
    shape: tuple[int, int]
    source: str = "pysteps metadata"
    notes: tuple[str, ...] = ()

    @classmethod
    def from_pysteps(
        cls, meta: Mapping[str, Any], shape: Sequence[int], source: str = "pysteps metadata"
    ) -> ProjectedGrid:
        """The grid of an ``(H, W)`` field read by a pysteps importer.

        Parameters
        ----------
        meta : mapping
            pysteps metadata: ``projection`` (PROJ string), ``x1, y1, x2, y2``
            (extent, in ``cartesian_unit``: m, the default, or km), ``xpixelsize``,
            ``ypixelsize`` (optional) and ``yorigin`` (``"upper"``: row 0 is the top).
        shape : (int, int)
            ``(H, W)`` of the field as the importer returned it.
        source : str
            Recorded as the origin of the georeferencing.

        Notes
        -----
        pysteps documents ``x1..x2`` as the outer edges of the grid, and most
        importers follow that; the BoM Rainfields importer gives the first and last
        pixel centres instead (``x2 - x1 = (W - 1) xpixelsize``). The pixel sizes
        decide which reading applies; when they fit neither, the extent is divided
        into ``W`` pixels (as ``pysteps.visualization.utils.get_geogrid`` does) and
        a note says so. Coordinates are converted to the projection's own units
        (KNMI metadata give km for a projection in metres).

        Raises
        ------
        ValueError
            If the metadata lack the projection or extent, or pyproj cannot read them.
        """
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        proj = meta.get("projection")
        if not proj:
            raise ValueError("the metadata give no projection")
        missing = [k for k in ("x1", "y1", "x2", "y2", "yorigin") if meta.get(k) is None]
        if missing:
            raise ValueError(f"the metadata lack {', '.join(missing)}")
        notes: list[str] = []
        proj, fixed = _km_ellipsoid_to_m(str(proj))
        if fixed:
            notes.append(fixed)
        try:
            crs = CRS(str(proj))
        except CRSError as exc:
            raise ValueError(f"pyproj cannot read the projection {proj!r}: {exc}") from exc
        h, w = (int(v) for v in shape)
        unit = str(meta.get("cartesian_unit") or "m").strip()
        if crs.is_geographic:
            if unit.lower() not in ("deg", "degree", "degrees"):
                raise ValueError(f"geographic projection {proj!r} with coordinates in {unit!r}")
            factor = 1.0
        else:
            if unit not in _PYSTEPS_UNIT_M:
                raise ValueError(f"unknown cartesian_unit {unit!r} in the metadata (expected m or km)")
            factor = _PYSTEPS_UNIT_M[unit] / _crs_unit_m(crs)
            if factor != 1.0:
                notes.append(f"metadata coordinates in {unit} converted to the projection's units")
        x_lo, sx = _extent_axis(meta["x1"], meta["x2"], meta.get("xpixelsize"), w, "x", notes)
        y_lo, sy = _extent_axis(meta["y1"], meta["y2"], meta.get("ypixelsize"), h, "y", notes)
        yorigin = str(meta["yorigin"]).strip().lower()
        if yorigin not in ("upper", "lower"):
            raise ValueError(f"yorigin must be 'upper' or 'lower', got {meta['yorigin']!r}")
        y0, dy = (y_lo + h * sy, -sy) if yorigin == "upper" else (y_lo, sy)
        return cls(str(proj), x_lo * factor, y0 * factor, sx * factor, dy * factor, (h, w), source, tuple(notes))

    # -------------------------------------------------------------- what the nowcast does to frames
    def crop(self, top: int, left: int, height: int, width: int) -> ProjectedGrid:
        """The grid of the window ``[top:top + height, left:left + width]`` of the frames."""
        h, w = self.shape
        if top < 0 or left < 0 or height < 1 or width < 1 or top + height > h or left + width > w:
            raise ValueError(f"window ({top}, {left}, {height}, {width}) is outside the {h}x{w} grid")
        return dataclasses.replace(
            self, x0=self.x0 + left * self.dx, y0=self.y0 + top * self.dy, shape=(int(height), int(width))
        )

    def resized(self, height: int, width: int) -> ProjectedGrid:
        """The grid after resampling the frames to ``height x width`` over the same area.

        Area averaging and OpenCV's bilinear resize both keep the outer edges of the
        grid in place (pixel-centre alignment), so the pixels just change size.
        """
        h, w = self.shape
        return dataclasses.replace(
            self, dx=self.dx * w / int(width), dy=self.dy * h / int(height), shape=(int(height), int(width))
        )

    # -------------------------------------------------------------- coordinates
    @property
    def crs(self) -> Any:
        """The :class:`pyproj.CRS` of :attr:`projection`."""
        from pyproj import CRS

        return CRS(self.projection)

    @property
    def x(self) -> np.ndarray:
        """``(W,)`` float64 x of the pixel centres (projection units)."""
        return self.x0 + (np.arange(self.shape[1], dtype=np.float64) + 0.5) * self.dx

    @property
    def y(self) -> np.ndarray:
        """``(H,)`` float64 y of the pixel centres, in the order of the rows (projection units)."""
        return self.y0 + (np.arange(self.shape[0], dtype=np.float64) + 0.5) * self.dy

    @property
    def units(self) -> str:
        """UDUNITS string of the projection coordinates (``"m"``, ``"km"``, ...)."""
        if self.crs.is_geographic:
            return "degrees"
        f = _crs_unit_m(self.crs)
        return {1.0: "m", 1000.0: "km"}.get(f, f"{f:g} m")

    def lonlat(self) -> tuple[np.ndarray, np.ndarray, str]:
        """``(lon, lat, datum)``: ``(H, W)`` float64 degrees of the pixel centres and what they refer to.

        A projection that carries a ``towgs84`` shift (MeteoSwiss' Bessel-based
        Swiss grid) gives WGS 84 coordinates, as ``pyproj.Proj(projection)(x, y,
        inverse=True)`` does in pysteps' NetCDF exporter; any other projection gives
        coordinates on its own ellipsoid (no datum shift is known for it).
        """
        from pyproj import CRS, Transformer

        crs = self.crs
        xx, yy = np.meshgrid(self.x, self.y)
        if crs.is_bound:
            target, datum = CRS("EPSG:4326"), "WGS 84 (datum shift from the projection's towgs84 parameters)"
        else:
            target, datum = crs.geodetic_crs, "the geodetic datum of the projection (crs_wkt)"
        lon, lat = Transformer.from_crs(crs, target, always_xy=True).transform(xx, yy)
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64), datum

    def grid_mapping_attrs(self) -> dict[str, Any]:
        """CF grid-mapping attributes: ``pyproj.CRS.to_cf()`` plus ``crs_wkt``, ``spatial_ref``, ``proj4_params``.

        The CF parameters alone are checked by rebuilding the projection from them
        (``pyproj.CRS.from_cf`` without the WKT) and comparing the grid's corners;
        where CF cannot express the projection (e.g. the Swiss oblique Mercator,
        ``+proj=somerc``, whose rectified-grid angle CF lacks) a ``comment`` says
        how far off they are and that ``crs_wkt`` is exact.
        """
        crs = self.crs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cf = dict(crs.to_cf())
        wkt = cf.get("crs_wkt") or crs.to_wkt()
        attrs: dict[str, Any] = {k: v for k, v in cf.items() if v is not None}
        proj4 = self.projection
        if not proj4.lstrip().startswith("+"):  # a WKT (Zarr stores): PROJ string for tools that want one
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proj4 = crs.to_proj4()
        attrs.update(crs_wkt=wkt, spatial_ref=wkt, proj4_params=proj4)
        err = self._cf_params_error(cf)
        pixel = min(abs(self.dx), abs(self.dy))
        if not err <= _CF_PARAMS_TOL * pixel:
            why = "; ".join(str(w.message) for w in caught) or "pyproj found no CF equivalent"
            size = "cannot rebuild it" if not np.isfinite(err) else f"are off by up to {err:.3g} {self.units} on this grid"
            attrs["comment"] = (
                f"the CF parameters alone {size} ({why}); crs_wkt and spatial_ref describe the projection exactly"
            )
            log.info("grid mapping of %r: %s", self.projection, attrs["comment"])
        return attrs

    def _cf_params_error(self, cf: Mapping[str, Any]) -> float:
        """Largest distance (projection units) between the grid's corners and their images under the CF-only CRS."""
        from pyproj import CRS, Transformer
        from pyproj.exceptions import CRSError

        params = {k: v for k, v in cf.items() if k != "crs_wkt"}
        if "grid_mapping_name" not in params:
            return float("inf")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rebuilt = CRS.from_cf(params)
        except (CRSError, KeyError, ValueError):
            return float("inf")
        base0 = self.crs.source_crs if self.crs.is_bound else self.crs
        base1 = rebuilt.source_crs if rebuilt.is_bound else rebuilt
        xs, ys = self.x, self.y
        px = np.array([xs[0], xs[-1], xs[0], xs[-1], xs.mean()])
        py = np.array([ys[0], ys[0], ys[-1], ys[-1], ys.mean()])
        lon, lat = Transformer.from_crs(base0, base0.geodetic_crs, always_xy=True).transform(px, py)
        qx, qy = Transformer.from_crs(base1.geodetic_crs, base1, always_xy=True).transform(lon, lat)
        scale = _crs_unit_m(base1) / _crs_unit_m(base0)
        d = np.hypot(np.asarray(qx) * scale - px, np.asarray(qy) * scale - py)
        return float(np.max(d)) if np.isfinite(d).all() else float("inf")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``run.json``)."""
        return {
            "projection": self.projection,
            "units": self.units,
            "shape": list(self.shape),
            "x_first_last": [float(self.x[0]), float(self.x[-1])],
            "y_first_last": [float(self.y[0]), float(self.y[-1])],
            "source": self.source,
            "notes": list(self.notes),
        }
