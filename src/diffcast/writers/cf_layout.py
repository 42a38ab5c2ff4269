"""What a forecast file holds besides its gridded arrays (:mod:`diffcast.writers.netcdf`, :mod:`~diffcast.writers.zarr`).

:func:`_layout` checks the inputs of
:func:`~diffcast.writers.netcdf.build_forecast_dataset` and lays out the CF-1.8
coordinates (times, thresholds, projection ``x``/``y``, ``lat``/``lon``), the
``crs`` grid mapping, the ``coverage`` flags, every variable's attributes and the
global attributes; :func:`_dataset` turns that into an :class:`xarray.Dataset`
with its encodings, with or without the gridded variables (``forecast``,
``ensemble_mean``, ``exceedance_probability``, ``observation``), whose values
:mod:`diffcast.writers.netcdf` computes lead by lead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..data.contract import DatasetMeta
from ..geo import ProjectedGrid

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


#: Name of the CF grid-mapping variable.
GRID_MAPPING_VAR = "crs"


NO_GEOREFERENCING = (
    "none: the input carried no map projection; x and y are distances in km of the pixel "
    "centres from the grid's top-left corner"
)

#: The gridded variables: as large as the forecast or the input, computed lead by lead (frame by frame).
_GRIDDED = ("forecast", "ensemble_mean", "exceedance_probability", "observation")

#: Compression of the gridded variables (and ``coverage``, ``lat``, ``lon``) as xarray encodings.
_PACKING = {"zlib": True, "complevel": 4}


def _frame_chunks(dims: Sequence[str], sizes: Mapping[str, int]) -> tuple[int, ...]:
    """One ``(y, x)`` frame per chunk: what a reader of one map touches, and what is written at a time."""
    return tuple(sizes[d] if d in ("y", "x") else 1 for d in dims)


@dataclass
class _Layout:
    """A forecast file but its gridded arrays: inputs checked, coordinates, small variables, attributes.

    ``data_vars`` maps every variable name, in file order, to ``(dims, data,
    attrs)``; the data of the :data:`_GRIDDED` ones is None: they are computed one
    lead (one observed frame) at a time by :mod:`diffcast.writers.netcdf`.
    """

    fc: np.ndarray  # (M, T, H, W) float32 in [0, 1]
    obs: np.ndarray | None  # (T_in, H, W) float32 in [0, 1]
    meta: DatasetMeta
    thresholds: tuple[float, ...]
    outside: np.ndarray | None  # (H, W) bool
    fill: np.float32 | None
    coords: dict[str, Any]
    data_vars: dict[str, Any]
    attrs: dict[str, Any]
    time_units: str

    @property
    def sizes(self) -> dict[str, int]:
        m, t_out, h, w = self.fc.shape
        sizes = {"member": m, "time": t_out, "threshold": len(self.thresholds), "y": h, "x": w}
        if self.obs is not None:
            sizes["input_time"] = self.obs.shape[0]
        return sizes

    def cf_coordinates(self, name: str) -> str:
        """The ``coordinates`` attribute xarray writes for variable ``name``.

        The variable's own ``coordinates`` attribute, else (``xarray.conventions``)
        the sorted non-dimension coordinates whose dimensions are among the variable's.
        """
        dims, _, attrs = self.data_vars[name]
        if "coordinates" in attrs:
            return str(attrs["coordinates"])
        aux = []
        for coord, (cdims, _, _) in self.coords.items():
            cdims = (cdims,) if isinstance(cdims, str) else tuple(cdims)
            if cdims != (coord,) and set(cdims) <= set(dims):
                aux.append(coord)
        return " ".join(sorted(aux))


def _layout(
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
) -> _Layout:
    """Check the inputs of :func:`build_forecast_dataset` and lay out everything but the gridded arrays."""
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
    obs = None
    if x_in is not None:
        obs = np.asarray(x_in, dtype=np.float32)
        if obs.ndim == 4:
            obs = obs[:, 0]
        if obs.ndim != 3 or obs.shape[1:] != (h, w):
            raise ValueError(f"x_in must be (T_in, H, W) matching the forecast grid {h}x{w}, got {obs.shape}")
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
    # lead by lead: a boolean copy of the whole forecast is not needed to know whether any member is NaN
    unknown = any(not np.isfinite(fc[:, t]).all() for t in range(t_out))
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
    if outside is not None or unknown:
        data_attrs["comment"] = "; ".join(
            ([] if outside is None else ["NaN outside radar coverage (where the last observed frame has no data)"])
            + ([] if not unknown else ["NaN where the motion brings rain in from outside the domain or the "
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
        "forecast": (("member", "time", "y", "x"), None, dict(data_attrs, coordinates=aux)),
        "ensemble_mean": (
            ("time", "y", "x"),
            None,
            dict(data_attrs, long_name=f"ensemble mean of {data_attrs['long_name']}", cell_methods="realization: mean"),
        ),
        "exceedance_probability": (
            ("threshold", "time", "y", "x"),
            None,
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
    if obs is not None:
        t_in = obs.shape[0]
        in_leads = (np.arange(t_in, dtype=np.float64) - (t_in - 1)) * step
        in_times = np.array([np.datetime64(t0 + dt.timedelta(minutes=float(v)), "ns") for v in in_leads])
        coords["input_time"] = ("input_time", in_times, {"standard_name": "time", "long_name": "valid time of observed frame"})
        data_vars["observation"] = (
            ("input_time", "y", "x"),
            None,
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
    return _Layout(
        fc=fc, obs=obs, meta=meta, thresholds=thresholds, outside=outside,
        fill=np.float32(np.nan) if outside is not None or unknown else None,
        coords=coords, data_vars=data_vars, attrs=attrs, time_units=time_units,
    )


def _dataset(layout: _Layout, gridded: Mapping[str, np.ndarray]) -> Any:
    """The :class:`xarray.Dataset` of ``layout`` with its encodings; gridded variables not in ``gridded`` left out.

    Without any gridded variable the coordinates come first, so that a file
    written from it numbers its dimensions in the order of the full dataset's
    (``member, time, y, x, threshold, input_time``).
    """
    import xarray as xr

    data_vars = {
        name: (dims, gridded[name] if name in _GRIDDED else data, attrs)
        for name, (dims, data, attrs) in layout.data_vars.items()
        if name not in _GRIDDED or name in gridded
    }
    if gridded:
        ds = xr.Dataset(data_vars=data_vars, coords=layout.coords, attrs=layout.attrs)
    else:
        ds = xr.Dataset(coords=layout.coords, attrs=layout.attrs).assign(data_vars)
    enc_t = {"units": layout.time_units, "calendar": "proleptic_gregorian", "dtype": "float64"}
    ds["time"].encoding.update(enc_t)
    ds["forecast_reference_time"].encoding.update(enc_t)
    if "input_time" in ds.coords:
        ds["input_time"].encoding.update(enc_t)
    for name in ds.coords:
        # CF: coordinate variables carry no fill value.
        ds[name].encoding.setdefault("_FillValue", None)
    for name in _GRIDDED:
        if name in ds:
            ds[name].encoding.update(
                {**_PACKING, "dtype": "float32", "_FillValue": layout.fill,
                 "chunksizes": _frame_chunks(ds[name].dims, ds.sizes)}
            )
    if "coverage" in ds:
        ds["coverage"].encoding.update({**_PACKING, "dtype": "int8", "_FillValue": None})
    for name in ("lat", "lon"):
        if name in ds.coords:
            ds[name].encoding.update(_PACKING)
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
