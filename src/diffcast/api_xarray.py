"""xarray in, xarray out for :func:`diffcast.nowcast`.

An ``xarray.DataArray`` with a ``time`` dimension (``(time, y, x)``, e.g.
``xr.open_zarr(store)[name]`` of an mlcast spec store or a variable of any CF file),
or an ``xarray.Dataset`` holding one such radar variable, is read here into the
numpy convention of :func:`diffcast.nowcast` (rain rate in mm/h, north-up, NaN =
no data) and the forecast is labelled back:

>>> fc = diffcast.nowcast(xr.open_zarr(store, decode_coords="all")["rainfall_flux"].isel(time=slice(-4, None)))
>>> fc.dims                                   # ('ens_number', 'lead_time', 'y', 'x')

Units are converted by the variable's ``standard_name`` and ``units`` as the spec
store reader converts them (:meth:`diffcast.data.mlcast.spec.Quantity.convert`);
reflectivity (dBZ) becomes rain rate by Marshall-Palmer ``Z = 200 R^1.6`` with the
radar encoding's 0 dBZ floor (:func:`diffcast.data.transforms.encoded_rainrate`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: What the forecast is (rain rate; 1 kg m-2 h-1 of water is 1 mm/h): CF names the spec accepts back as input.
OUTPUT_UNITS = "kg m-2 h-1"
_REL_TOL = 0.01


def is_xarray(obj: Any) -> bool:
    """True for an ``xarray.DataArray`` or ``Dataset`` (without importing xarray when it is not loaded)."""
    xr = sys.modules.get("xarray")
    return xr is not None and isinstance(obj, (xr.DataArray, xr.Dataset))


@dataclass
class XarrayInput:
    """A DataArray read for :func:`diffcast.nowcast`, and what is needed to label its forecast.

    Attributes
    ----------
    precip : numpy.ndarray
        ``(t, y, x)`` float32 rain rate in mm/h, north-up and west to east, NaN = no data.
    timestep : float
        Minutes between the input frames (the spacing of ``time``).
    pixel_size : float or None
        Grid spacing in km from the ``x``/``y`` coordinates (``None`` when they do not say).
    """

    precip: np.ndarray
    timestep: float
    pixel_size: float | None
    reference_time: np.datetime64
    dims: tuple[str, str]
    flip_y: bool
    flip_x: bool
    coords: dict[str, Any] = field(default_factory=dict)
    grid_mapping: str | None = None
    standard_name: str = "rainfall_flux"
    source: str = ""

    def to_dataarray(self, forecast: np.ndarray, lead_min: float, model: str) -> Any:
        """``(members, leads, y, x)`` mm/h, north-up -> a labelled ``DataArray`` in the input's orientation."""
        import xarray as xr

        out = forecast
        if self.flip_y:
            out = out[..., ::-1, :]
        if self.flip_x:
            out = out[..., ::-1]
        m, n = out.shape[:2]
        lead = (np.arange(1, n + 1) * np.timedelta64(int(round(lead_min * 60)), "s")).astype("timedelta64[ns]")
        coords = {
            "ens_number": ("ens_number", np.arange(m, dtype=np.int32),
                           {"standard_name": "realization", "long_name": "ensemble member"}),
            "lead_time": ("lead_time", lead, {"standard_name": "forecast_period", "long_name": "lead time"}),
            "forecast_reference_time": ((), self.reference_time, {
                "standard_name": "forecast_reference_time",
                "long_name": "analysis time (time of the last input frame)"}),
            "valid_time": ("lead_time", self.reference_time + lead, {"standard_name": "time", "long_name": "valid time"}),
            **self.coords,
        }
        attrs = {
            "standard_name": self.standard_name,
            "long_name": "rain rate in mm/h (1 kg m-2 h-1 of water = 1 mm/h)",
            "units": OUTPUT_UNITS,
            "comment": "NaN where the last input frame has no data and where the motion brings rain in from "
                       "outside the domain or the coverage (no observed origin)",
            "source": f"diffcast.nowcast, model {model}",
        }
        if self.source:
            attrs["input"] = self.source
        if self.grid_mapping is not None:
            attrs["grid_mapping"] = self.grid_mapping
        return xr.DataArray(np.ascontiguousarray(out), dims=("ens_number", "lead_time", *self.dims),
                            coords=coords, attrs=attrs, name=self.standard_name)


def _pick(ds: Any) -> Any:
    """The one radar variable of a Dataset, found by standard_name like the spec store reader; its grid mapping attached."""
    from .data.mlcast.spec import STANDARD_NAMES

    hits = [n for n, v in ds.data_vars.items() if "time" in v.dims and v.attrs.get("standard_name") in STANDARD_NAMES]
    if len(hits) != 1:
        have = ", ".join(f"{n} ({v.attrs.get('standard_name')})" for n, v in ds.data_vars.items()) or "none"
        raise ValueError(
            f"precip is a Dataset with {'several' if hits else 'no'} radar variables (a time dimension and a "
            f"standard_name of {', '.join(STANDARD_NAMES)}); it holds: {have}. Pass the DataArray: precip=ds[name]"
        )
    da = ds[hits[0]]
    gm = _grid_mapping_name(da)
    if gm is not None and gm not in da.coords and gm in ds.variables:
        da = da.assign_coords({gm: ds[gm]})
    return da


def _grid_mapping_name(da: Any) -> str | None:
    gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    if not gm:
        return None
    return str(gm).split(":")[0].strip() or None


def _quantity(da: Any) -> Any:
    """The :class:`~diffcast.data.mlcast.spec.Quantity` of ``da`` from its standard_name and units."""
    from .data.mlcast.spec import STANDARD_NAMES, quantity_of

    sn, units = da.attrs.get("standard_name"), da.attrs.get("units")
    if units is None:
        raise ValueError(
            f"precip ({da.name!r}) has no units attribute; set it (mm/h, kg m-2 h-1, kg m-2 s-1, mm, dBZ) and a "
            f"standard_name ({', '.join(STANDARD_NAMES)})"
        )
    if sn is not None:
        return quantity_of(str(sn), str(units))
    for guess in ("rainfall_flux", "precipitation_amount", "equivalent_reflectivity_factor"):  # units alone tell
        try:
            return quantity_of(guess, str(units))
        except ValueError:
            continue
    return quantity_of("rainfall_flux", str(units))  # raises, listing the rain-rate units


def _time_step(times: np.ndarray, timestep: float | None) -> float:
    if times.size >= 2:
        d = np.diff(times).astype("timedelta64[ms]").astype(np.float64) / 60000.0
        if np.any(d <= 0):
            raise ValueError("precip's time is not strictly increasing; sort it (precip.sortby('time'))")
        step = float(d[-1])
        if np.max(np.abs(d - step)) > 1.0 / 60:
            raise ValueError(
                f"precip's frames are not evenly spaced in time (steps of {', '.join(f'{v:g}' for v in np.unique(d))} "
                "min); select consecutive frames at one step (no missing frame between them)"
            )
        if timestep is not None and abs(float(timestep) - step) > 1e-6 * step:
            raise ValueError(
                f"timestep={timestep!r} but precip's frames are {step:g} min apart; leave timestep out for a DataArray"
            )
        return step
    if timestep is None:
        raise ValueError("precip has a single time; give timestep (minutes between frames) or more frames")
    return float(timestep)


def _axis(da: Any, dim: str, axis: str) -> tuple[np.ndarray | None, float | None]:
    """Values along ``dim`` (from its coordinate) and metres per coordinate unit (``None`` if not a length)."""
    from .data.mlcast.spec import LENGTH_UNITS

    cands = [n for n, c in da.coords.items() if c.dims == (dim,)
             and c.attrs.get("standard_name") == f"projection_{axis}_coordinate"]
    name = cands[0] if cands else (dim if dim in da.coords else None)
    if name is None:
        return None, None
    c = da.coords[name]
    vals = np.asarray(c.values)
    if not np.issubdtype(vals.dtype, np.number) or vals.size < 2:
        return None, None
    return vals.astype(np.float64), LENGTH_UNITS.get(str(c.attrs.get("units", "")).strip().lower())


def _pixel_km(step: float, per_unit: float | None) -> float | None:
    return None if per_unit is None else abs(step) * per_unit / 1000.0


def from_xarray(obj: Any, timestep: float | None, pixel_size: float | None) -> XarrayInput:
    """Read a DataArray (or a Dataset with one radar variable) for :func:`diffcast.nowcast`.

    Raises
    ------
    ValueError
        No ``time`` dimension, not ``(time, y, x)``, unknown units, frames not evenly
        spaced, or ``timestep``/``pixel_size`` that contradict the coordinates.
    """
    import xarray as xr

    from .data.transforms import encoded_rainrate

    da = _pick(obj) if isinstance(obj, xr.Dataset) else obj
    if "time" not in da.dims or da.ndim != 3:
        raise ValueError(f"precip must be a (time, y, x) DataArray with a time dimension, got dims {da.dims}")
    da = da.transpose("time", ...)
    if "time" not in da.coords:
        raise ValueError("precip has a time dimension but no time coordinate; assign one (datetime64)")
    try:
        times = np.asarray(da["time"].values).astype("datetime64[ns]")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"precip's time coordinate is not a date-time ({exc})") from None
    step = _time_step(times, timestep)
    q = _quantity(da)
    values = q.convert(np.asarray(da.values), hours=step / 60.0)
    if q.kind == "reflectivity":
        ok = np.isfinite(values)
        values = np.where(ok, encoded_rainrate(np.where(ok, values, 0.0)), np.nan).astype(np.float32)
    ydim, xdim = str(da.dims[1]), str(da.dims[2])
    y, ym = _axis(da, ydim, "y")
    x, xm = _axis(da, xdim, "x")
    flip_y = y is not None and y[-1] > y[0]  # the model works north-up: row 0 the northern edge
    flip_x = x is not None and x[-1] < x[0]
    if flip_y:
        values = values[:, ::-1]
    if flip_x:
        values = values[:, :, ::-1]
    dx = _pixel_km(float(np.mean(np.diff(x))), xm) if x is not None else None
    dy = _pixel_km(float(np.mean(np.diff(y))), ym) if y is not None else None
    if dx is not None and dy is not None and abs(dx / dy - 1.0) > _REL_TOL:
        raise ValueError(f"precip's pixels are {dx:g} x {dy:g} km; nowcasting needs square pixels: resample it")
    px = dx if dx is not None else dy
    if px is not None and pixel_size is not None and abs(float(pixel_size) / px - 1.0) > _REL_TOL:
        raise ValueError(
            f"pixel_size={pixel_size!r} km but precip's {xdim}/{ydim} coordinates give {px:g} km; leave pixel_size out"
        )
    gm = _grid_mapping_name(da)
    coords: dict[str, Any] = {}
    for name, c in da.coords.items():
        if c.dims and set(c.dims) <= {ydim, xdim}:
            coords[str(name)] = xr.Variable(c.dims, np.asarray(c.values), dict(c.attrs))  # no zarr encoding carried
    if gm is not None and gm not in da.coords:
        log.warning(
            "precip names grid_mapping %r but does not carry that variable (xr.open_zarr(...)[name] leaves it in the "
            "Dataset), so the forecast has no CRS: pass the Dataset, precip.assign_coords(%s=ds[%r]), or open with "
            "decode_coords='all'", gm, gm, gm,
        )
        gm = None
    if gm is None:  # rioxarray's spatial_ref and other scalar grid-mapping coordinates
        hits = [str(n) for n, c in da.coords.items() if c.ndim == 0 and
                any(k in c.attrs for k in ("crs_wkt", "spatial_ref", "grid_mapping_name"))]
        gm = hits[0] if len(hits) == 1 else None
    if gm is not None:
        c = da.coords[gm]
        coords[gm] = xr.Variable((), np.asarray(c.values), dict(c.attrs))
    sn = str(da.attrs.get("standard_name", ""))
    return XarrayInput(
        precip=values,
        timestep=step,
        pixel_size=px,
        reference_time=times[-1],
        dims=(ydim, xdim),
        flip_y=flip_y,
        flip_x=flip_x,
        coords=coords,
        grid_mapping=gm,
        standard_name="precipitation_flux" if sn.startswith("precipitation") else "rainfall_flux",
        source=f"{da.name} ({sn or 'no standard_name'}, {da.attrs.get('units')}), {times.size} frames "
               f"{np.datetime_as_string(times[0], 's')} to {np.datetime_as_string(times[-1], 's')}",
    )
