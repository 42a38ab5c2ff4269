"""CF-1.8 NetCDF output of an ensemble nowcast.

The file written by :func:`write_forecast_netcdf` holds, in the physical units of
the dataset metadata (:meth:`DatasetMeta.to_physical`):

``forecast (member, time, y, x)``
    every ensemble member (one member for a deterministic model);
``ensemble_mean (time, y, x)``
    the mean over members, taken in physical units (``cell_methods =
    "realization: mean"``);
``exceedance_probability (threshold, time, y, x)``
    the fraction of members at or above each threshold (the paper's CSI counts
    ``x >= threshold``), with the thresholds as a coordinate in physical units
    and, alongside, in the dataset's threshold space (``threshold_code``);
``observation (input_time, y, x)``
    the observed input frames as fed to the model;
``coverage (y, x)``
    with a coverage mask (radar input): 1 where the last observed frame has
    data, 0 where it has none (outside radar coverage). Every variable above is
    NaN (its ``_FillValue``) where ``coverage`` is 0, so "no data" never reads
    as "no rain".

Rain rates (metadata whose physical unit is mm/h) are written as CF
``rainfall_rate`` in ``mm h-1``, reflectivity as ``equivalent_reflectivity_factor``
in ``dBZ``; the ``comment`` attribute states the transform (for rain rate from
the model's dBZ encoding: Marshall-Palmer ``Z = 200 R^1.6``).

Times follow CF: ``time`` holds valid times encoded as "minutes since <analysis
time>", ``forecast_reference_time`` is the analysis time (the valid time of the
last observed frame) and ``forecast_period`` the lead in minutes.

Space: with a :class:`ProjectedGrid` (radar files whose pysteps metadata give a
PROJ string and the grid's extent) ``x``/``y`` are projection coordinates of the
pixel centres in the projection's units (``y`` in the order of the data rows),
a scalar ``crs`` variable holds the CF grid mapping (``pyproj.CRS.to_cf()``
plus ``crs_wkt``/``spatial_ref``), every data variable names it in
``grid_mapping`` and 2-D ``lat``/``lon`` auxiliary coordinates give the pixel
centres in degrees. Without one (images, arrays, synthetic data) ``x``/``y`` are
distances in km from the grid's top-left corner and the ``georeferencing``
attribute says that the grid has no map projection.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .data.contract import DatasetMeta
from .utils.io import atomic_path

log = logging.getLogger(__name__)

#: Reference cited in every file we write.
DIFFCAST_REFERENCE = (
    "Yu, D., Li, X., Ye, Y., Zhang, B., Luo, C., Dai, K., Wang, R., Chen, X. (2024): "
    "DiffCast: A Unified Framework via Residual Diffusion for Precipitation Nowcasting. "
    "CVPR 2024, https://arxiv.org/abs/2312.06734"
)

#: UDUNITS spelling of the unit strings used in :mod:`diffcast.data.transforms`.
_UDUNITS = {"dBZ": "dBZ", "kg m-2": "kg m-2", "mm/h": "mm h-1", "mm h-1": "mm h-1", "": "1"}


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _naive_utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


#: Relative tolerance of :func:`exceeds` (float32 round-off of a value read exactly at a threshold).
THRESHOLD_RTOL = 4e-6


def exceeds(x: np.ndarray, code: float, meta: DatasetMeta) -> np.ndarray:
    """``x * scale >= code`` for ``[0, 1]`` values ``x``, up to float32 round-off.

    A value read from a file exactly at a threshold (MeteoSwiss rain rates are
    classes such as 1.0 mm/h) passes through float32 dBZ / 90 and back; values
    within ``THRESHOLD_RTOL`` (relative) below ``code`` count as reaching it.
    """
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * meta.scale >= float(code) * (1.0 - THRESHOLD_RTOL)


def exceedance_probability(forecast: np.ndarray, meta: DatasetMeta, thresholds: Sequence[float]) -> np.ndarray:
    """Fraction of members at or above each threshold (:func:`exceeds`).

    Parameters
    ----------
    forecast : ndarray
        ``(M, T, H, W)`` ensemble in ``[0, 1]`` model space.
    meta : DatasetMeta
        Gives the threshold space (``x * meta.scale``).
    thresholds : sequence of float
        Thresholds in the threshold space (e.g. VIL codes 0-255).

    Returns
    -------
    ndarray
        ``(K, T, H, W)`` float32 probabilities in ``[0, 1]``.
    """
    fc = np.asarray(forecast, dtype=np.float32)
    out = np.stack([exceeds(fc, th, meta).mean(axis=0) for th in thresholds]) if len(thresholds) else (
        np.zeros((0,) + fc.shape[1:], dtype=np.float32)
    )
    return out.astype(np.float32)


#: Metres per unit of the ``cartesian_unit`` values in pysteps metadata.
_PYSTEPS_UNIT_M = {"m": 1.0, "km": 1000.0}
#: How far (in pixels) ``x2 - x1`` may be from ``W`` (or ``W - 1``) pixel sizes.
_EXTENT_TOL = 0.01
#: Largest error (in pixels) tolerated when the CF parameters alone rebuild the projection.
_CF_PARAMS_TOL = 1e-3
#: Name of the CF grid-mapping variable.
GRID_MAPPING_VAR = "crs"
NO_GEOREFERENCING = (
    "none: the input carried no map projection; x and y are distances in km of the pixel "
    "centres from the grid's top-left corner"
)


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
        PROJ string (as given by the pysteps importer).
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
        attrs.update(crs_wkt=wkt, spatial_ref=wkt, proj4_params=self.projection)
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


def build_forecast_dataset(
    forecast: np.ndarray,
    meta: DatasetMeta,
    analysis_time: dt.datetime,
    *,
    timestep_min: float | None = None,
    x_in: np.ndarray | None = None,
    thresholds: Sequence[float] | None = None,
    pixel_km: float | None = None,
    title: str | None = None,
    source: str = "diffcast",
    history: str | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    time_note: str | None = None,
    grid: ProjectedGrid | None = None,
    coverage: np.ndarray | None = None,
) -> Any:
    """Build the CF-1.8 :class:`xarray.Dataset` of an ensemble nowcast.

    Parameters
    ----------
    forecast : ndarray
        ``(M, T_out, H, W)`` (or ``(M, T_out, 1, H, W)``) in ``[0, 1]``.
    meta : DatasetMeta
        Units and the transform to physical values.
    analysis_time : datetime
        Valid time of the last observed frame (UTC; naive datetimes are taken as UTC).
    timestep_min : float, optional
        Minutes between frames; defaults to ``meta.timestep_min``.
    x_in : ndarray, optional
        Observed frames ``(T_in, H, W)`` in ``[0, 1]``; stored as ``observation``.
    thresholds : sequence of float, optional
        Exceedance thresholds in threshold space; defaults to ``meta.thresholds``.
    pixel_km : float, optional
        Grid spacing in km (``meta.pixel_km`` when omitted).
    title, source, history : str, optional
        Global attributes.
    extra_attrs : mapping, optional
        Further global attributes (values are stringified unless numeric).
    time_note : str, optional
        Comment attached to the time coordinate (e.g. when times are nominal).
    grid : ProjectedGrid, optional
        Map projection of the ``(H, W)`` grid; gives projection ``x``/``y``, the
        ``crs`` grid mapping and 2-D ``lat``/``lon``. Without it ``x``/``y`` are
        plain distances in km and the ``georeferencing`` attribute says so.
    coverage : ndarray, optional
        ``(H, W)`` bool, True where the last observed frame has data. Gridded
        variables are NaN where it is False, and a ``coverage`` flag variable is
        written. ``None``: every pixel is covered, no ``coverage`` variable.

    Returns
    -------
    xarray.Dataset
    """
    import xarray as xr

    fc = np.asarray(forecast, dtype=np.float32)
    if fc.ndim == 5:
        if fc.shape[2] != 1:
            raise ValueError(f"forecast must have one channel, got shape {fc.shape}")
        fc = fc[:, :, 0]
    if fc.ndim != 4:
        raise ValueError(f"forecast must be (M, T, H, W), got shape {fc.shape}")
    m, t_out, h, w = fc.shape
    if grid is not None and tuple(grid.shape) != (h, w):
        raise ValueError(f"grid is {grid.shape[0]}x{grid.shape[1]} but the forecast is {h}x{w}")
    if coverage is not None:
        coverage = np.asarray(coverage, dtype=bool)
        if coverage.shape != (h, w):
            raise ValueError(f"coverage must be ({h}, {w}) like the forecast grid, got {coverage.shape}")
    outside = None if coverage is None else ~coverage
    step = float(meta.timestep_min if timestep_min is None else timestep_min)
    if step <= 0:
        raise ValueError(f"timestep_min must be positive, got {step}")
    thresholds = tuple(meta.thresholds if thresholds is None else thresholds)
    pixel_km = float(meta.pixel_km if pixel_km is None else pixel_km)
    t0 = _naive_utc(analysis_time)
    units = _UDUNITS.get(meta.physical_unit, meta.physical_unit or "1")
    time_units = f"minutes since {_iso(t0)}"

    leads = np.arange(1, t_out + 1, dtype=np.float64) * step
    valid = np.array([np.datetime64(t0 + dt.timedelta(minutes=float(v)), "ns") for v in leads])
    phys = meta.to_physical(fc)
    mean = phys.mean(axis=0, dtype=np.float64).astype(np.float32)
    prob = exceedance_probability(fc, meta, thresholds)
    # NaN members (motion bringing rain in from outside the domain) leave mean and probability unknown too
    unknown = ~np.isfinite(fc).all(axis=0)
    if unknown.any():
        mean[unknown] = np.nan
        prob[:, unknown] = np.nan
    else:
        unknown = None
    if outside is not None:
        for arr in (phys, mean, prob):
            arr[..., outside] = np.nan
    thr_code = np.asarray(thresholds, dtype=np.float32)
    # 6 significant digits: a threshold given in physical units (1 mm/h) and stored as its code comes back exact
    thr_phys = np.array(
        [float(f"{v:.6g}") for v in np.asarray(meta.to_physical(thr_code / float(meta.scale)), dtype=np.float64)],
        dtype=np.float32,
    )

    data_attrs = {
        "standard_name": meta.physical_name,
        "long_name": f"{meta.physical_name.replace('_', ' ')} ({meta.name} data)",
        "units": units,
    }
    if outside is not None or unknown is not None:
        data_attrs["comment"] = "; ".join(
            ([] if outside is None else ["NaN outside radar coverage (where the last observed frame has no data)"])
            + ([] if unknown is None else ["NaN where the motion brings rain in from outside the domain or the "
                                           "coverage (no observed origin)"])
        )
    space_coords, space_vars, space_attrs = _space(grid, h, w, pixel_km)
    if grid is not None:
        data_attrs["grid_mapping"] = GRID_MAPPING_VAR
    coords: dict[str, Any] = {
        "member": ("member", np.arange(m, dtype=np.int32), {"standard_name": "realization", "long_name": "ensemble member", "units": "1"}),
        "time": ("time", valid, {"standard_name": "time", "long_name": "valid time", "axis": "T"}),
        "forecast_period": (
            "time",
            leads.astype(np.float32),
            {"standard_name": "forecast_period", "long_name": "lead time", "units": "minutes"},
        ),
        "forecast_reference_time": (
            (),
            np.datetime64(t0, "ns"),
            {"standard_name": "forecast_reference_time", "long_name": "analysis time (valid time of the last observed frame)"},
        ),
        **space_coords,
        "threshold": (
            "threshold",
            thr_phys,
            {"standard_name": meta.physical_name, "long_name": "exceedance threshold", "units": units},
        ),
        "threshold_code": (
            "threshold",
            thr_code,
            {"long_name": f"exceedance threshold in {meta.unit}", "units": "1", "comment": f"threshold space = {meta.scale:g} x model value"},
        ),
    }
    if time_note:
        coords["time"][2]["comment"] = time_note
    aux = "forecast_reference_time forecast_period" + (" lat lon" if "lat" in space_coords else "")
    data_vars: dict[str, Any] = {
        "forecast": (("member", "time", "y", "x"), phys, dict(data_attrs, coordinates=aux)),
        "ensemble_mean": (
            ("time", "y", "x"),
            mean,
            dict(data_attrs, long_name=f"ensemble mean of {data_attrs['long_name']}", cell_methods="realization: mean"),
        ),
        "exceedance_probability": (
            ("threshold", "time", "y", "x"),
            prob,
            {
                "long_name": f"probability of {meta.physical_name.replace('_', ' ')} at or above threshold",
                "units": "1",
                "comment": f"fraction of the {m} ensemble member(s) with value >= threshold"
                + ("; NaN outside radar coverage" if outside is not None else ""),
                **({"grid_mapping": GRID_MAPPING_VAR} if grid is not None else {}),
            },
        ),
        **space_vars,
    }
    if x_in is not None:
        obs = np.asarray(x_in, dtype=np.float32)
        if obs.ndim == 4:
            obs = obs[:, 0]
        if obs.ndim != 3 or obs.shape[1:] != (h, w):
            raise ValueError(f"x_in must be (T_in, H, W) matching the forecast grid {h}x{w}, got {obs.shape}")
        t_in = obs.shape[0]
        in_leads = (np.arange(t_in, dtype=np.float64) - (t_in - 1)) * step
        in_times = np.array([np.datetime64(t0 + dt.timedelta(minutes=float(v)), "ns") for v in in_leads])
        coords["input_time"] = ("input_time", in_times, {"standard_name": "time", "long_name": "valid time of observed frame"})
        obs_phys = meta.to_physical(obs)
        if outside is not None:
            obs_phys[..., outside] = np.nan
        data_vars["observation"] = (
            ("input_time", "y", "x"),
            obs_phys,
            dict(data_attrs, long_name=f"observed {data_attrs['long_name']} (model input)"),
        )
    if coverage is not None:
        data_vars["coverage"] = (
            ("y", "x"),
            coverage.astype(np.int8),
            {
                "long_name": "radar coverage of the last observed frame",
                "flag_values": np.array([0, 1], dtype=np.int8),
                "flag_meanings": "not_covered covered",
                "comment": "0: the radar had no data here (the other variables are NaN); 1: covered",
                **({"grid_mapping": GRID_MAPPING_VAR} if grid is not None else {}),
            },
        )

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "title": title or f"DiffCast precipitation nowcast ({meta.name} units)",
        "institution": "generated with diffcast",
        "source": source,
        "history": f"{now}: {history or 'created by diffcast'} (diffcast {__version__})",
        "references": DIFFCAST_REFERENCE,
        "comment": f"values transformed to physical units: {meta.transform}",
        "ensemble_members": int(m),
        "timestep_minutes": float(step),
        "pixel_km": float(pixel_km),
        "dataset_metadata": meta.name,
        **space_attrs,
    }
    for k, v in (extra_attrs or {}).items():
        attrs[k] = v if isinstance(v, (int, float, np.integer, np.floating)) else str(v)
    ds = xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)
    enc_t = {"units": time_units, "calendar": "proleptic_gregorian", "dtype": "float64"}
    ds["time"].encoding.update(enc_t)
    ds["forecast_reference_time"].encoding.update(enc_t)
    if "input_time" in ds.coords:
        ds["input_time"].encoding.update(enc_t)
    for name in ds.coords:
        # CF: coordinate variables carry no fill value.
        ds[name].encoding.setdefault("_FillValue", None)
    fill = np.float32(np.nan) if outside is not None or unknown is not None else None
    for name in ("forecast", "ensemble_mean", "exceedance_probability", "observation"):
        if name in ds:
            ds[name].encoding.update({"zlib": True, "complevel": 4, "dtype": "float32", "_FillValue": fill})
    if "coverage" in ds:
        ds["coverage"].encoding.update({"zlib": True, "complevel": 4, "dtype": "int8", "_FillValue": None})
    for name in ("lat", "lon"):
        if name in ds.coords:
            ds[name].encoding.update({"zlib": True, "complevel": 4})
    if GRID_MAPPING_VAR in ds.data_vars:
        ds[GRID_MAPPING_VAR].encoding["coordinates"] = None  # a grid mapping has no coordinates
    return ds


def _space(grid: ProjectedGrid | None, h: int, w: int, pixel_km: float) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(coords, data_vars, global attrs)`` describing where the ``(H, W)`` pixels lie."""
    if grid is None:
        xs = (np.arange(w, dtype=np.float32) + 0.5) * pixel_km
        ys = (np.arange(h, dtype=np.float32) + 0.5) * pixel_km
        plain = "plain grid distance, not a map projection"
        coords = {
            "y": ("y", ys, {"long_name": "y distance of pixel centre from the grid's top edge", "units": "km", "axis": "Y", "comment": plain}),
            "x": ("x", xs, {"long_name": "x distance of pixel centre from the grid's left edge", "units": "km", "axis": "X", "comment": plain}),
        }
        return coords, {}, {"georeferencing": NO_GEOREFERENCING}
    crs = grid.crs
    gm = grid.grid_mapping_attrs()
    attrs = {"georeferencing": f"grid mapping {GRID_MAPPING_VAR!r} from {grid.source}: {grid.projection}"}
    if grid.notes:
        attrs["georeferencing_notes"] = "; ".join(grid.notes)
    if crs.is_geographic:  # the axes are longitude and latitude themselves (CF 4.1, 4.2)
        coords = {
            "y": ("y", grid.y, {"standard_name": "latitude", "long_name": "latitude of pixel centre", "units": "degrees_north", "axis": "Y"}),
            "x": ("x", grid.x, {"standard_name": "longitude", "long_name": "longitude of pixel centre", "units": "degrees_east", "axis": "X"}),
        }
        lats, lons = grid.y, grid.x
    else:
        units = grid.units
        coords = {
            "y": ("y", grid.y, {"standard_name": "projection_y_coordinate", "long_name": "y of pixel centre in the projection", "units": units, "axis": "Y"}),
            "x": ("x", grid.x, {"standard_name": "projection_x_coordinate", "long_name": "x of pixel centre in the projection", "units": units, "axis": "X"}),
        }
        lon, lat, datum = grid.lonlat()
        coords["lat"] = (("y", "x"), lat, {"standard_name": "latitude", "long_name": "latitude of pixel centre", "units": "degrees_north", "comment": f"on {datum}"})
        coords["lon"] = (("y", "x"), lon, {"standard_name": "longitude", "long_name": "longitude of pixel centre", "units": "degrees_east", "comment": f"on {datum}"})
        lats, lons = lat, lon
    attrs.update(
        geospatial_lat_min=float(np.min(lats)), geospatial_lat_max=float(np.max(lats)),
        geospatial_lon_min=float(np.min(lons)), geospatial_lon_max=float(np.max(lons)),
    )
    data_vars = {GRID_MAPPING_VAR: ((), np.int32(0), gm)}
    return coords, data_vars, attrs


def write_forecast_netcdf(path: str | os.PathLike[str], forecast: np.ndarray, meta: DatasetMeta, analysis_time: dt.datetime, **kwargs: Any) -> Path:
    """Write :func:`build_forecast_dataset` to ``path`` atomically (netCDF4 format).

    Parameters are those of :func:`build_forecast_dataset`. The file is written
    under a temporary name in the same folder and renamed, so a failed run never
    leaves a partial ``.nc`` file.
    """
    ds = build_forecast_dataset(forecast, meta, analysis_time, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4")
    log.info("wrote %s (%d member(s), %d lead(s))", path, ds.sizes["member"], ds.sizes["time"])
    return path
