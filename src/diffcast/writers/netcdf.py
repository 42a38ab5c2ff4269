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

Space: with a :class:`~diffcast.geo.ProjectedGrid` (radar files whose pysteps metadata give a
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

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.contract import DatasetMeta
from ..data.transforms import exceeds
from ..geo import ProjectedGrid
from ..utils.io import atomic_path

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
    out = np.zeros((len(thresholds),) + fc.shape[1:], dtype=np.float32)
    # member by member and lead by lead: the temporaries are one (H, W) frame, not the ensemble
    for k, th in enumerate(thresholds):
        for t in range(fc.shape[1]):
            count = np.zeros(fc.shape[2:], dtype=np.int32)
            for member in fc[:, t]:
                count += exceeds(member, th, meta)
            np.divide(count, fc.shape[0], out=out[k, t], dtype=np.float32)
    return out


#: Name of the CF grid-mapping variable.
GRID_MAPPING_VAR = "crs"


NO_GEOREFERENCING = (
    "none: the input carried no map projection; x and y are distances in km of the pixel "
    "centres from the grid's top-left corner"
)


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
    latlon: tuple[np.ndarray, np.ndarray] | None = None,
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
    latlon : (ndarray, ndarray), optional
        ``(H, W)`` latitude and longitude (degrees) the input gave for these pixels
        (a Zarr spec store's own ``lat``/``lon``); written instead of the values
        computed from ``grid``, so the forecast's lat/lon are the input's.

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
    mean = np.empty(phys.shape[1:], dtype=np.float32)
    for t in range(t_out):  # one lead at a time: the float64 sum is a frame, not the forecast
        mean[t] = phys[:, t].mean(axis=0, dtype=np.float64)
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
    space_coords, space_vars, space_attrs = _space(grid, h, w, pixel_km, latlon)
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


def _space(
    grid: ProjectedGrid | None, h: int, w: int, pixel_km: float, latlon: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
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
        if latlon is not None and np.shape(latlon[0]) == (h, w) == np.shape(latlon[1]):
            lat, lon = (np.asarray(a, dtype=np.float64) for a in latlon)
            where = "copied from the input's own lat/lon"
        else:
            lon, lat, datum = grid.lonlat()
            where = f"on {datum}"
        coords["lat"] = (("y", "x"), lat, {"standard_name": "latitude", "long_name": "latitude of pixel centre", "units": "degrees_north", "comment": where})
        coords["lon"] = (("y", "x"), lon, {"standard_name": "longitude", "long_name": "longitude of pixel centre", "units": "degrees_east", "comment": where})
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
