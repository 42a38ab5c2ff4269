"""An mlcast radar Zarr store opened lazily: :class:`SpecStore`.

Opening reads metadata and coordinates only (``xarray.open_zarr`` without dask:
lazily indexed arrays); a frame is decompressed when it is asked for, one chunk
per time step as the spec requires. The store gives diffcast's one radar record:

- values in diffcast's quantity (:meth:`SpecStore.read`: mm/h for rain rates and
  accumulations, accumulations divided by their interval; dBZ for reflectivity;
  NaN = no data), and the ``[0, 1]`` encoding of every radar source
  (:meth:`SpecStore.frame`: dBZ / 90, rain rates by Marshall-Palmer ``Z = 200 R^1.6``);
- frames north-up (row 0 the northern edge) whichever way ``y`` runs in the store,
  with a :class:`~diffcast.geo.ProjectedGrid` in the CRS of the ``grid_mapping``
  variable (``crs_wkt``/``spatial_ref``, else the CF parameters), ``x``/``y`` in m
  or km converted to the CRS's units;
- the times, the ``missing_times``, ``consistent_timestep_start`` and the regular
  time step (:mod:`.windows` cuts gap-free windows from them).

Where the store breaks the spec in a way diffcast relies on, :class:`SpecStoreError`
(a ``ValueError``) names the store, the problem and the fix; missing optional parts
are collected in :attr:`SpecStore.warnings`.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ...geo import ProjectedGrid
from ..radar.frames import to_unit_interval
from .spec import LENGTH_UNITS, STANDARD_NAMES, Quantity, quantity_of

log = logging.getLogger(__name__)

#: Frames kept decoded by a :class:`SpecStore` (a nowcast reads the data and the mask of each).
_CACHE_FRAMES = 32


class SpecStoreError(ValueError):
    """A store that breaks the spec where diffcast relies on it."""


def is_zarr_store(path: str | os.PathLike[str]) -> bool:
    """True for a URL (``s3://``, ``gs://``, ``https://``) or a folder that is a Zarr v2/v3 store."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return True
    p = Path(text.removeprefix("file://"))
    return p.is_dir() and any((p / name).is_file() for name in (".zmetadata", ".zgroup", "zarr.json", ".zattrs"))


def parse_storage_options(items: list[str] | None) -> dict[str, Any]:
    """``["anon=true", "endpoint_url=https://..."]`` -> fsspec storage options (booleans and numbers parsed).

    ``client_kwargs.endpoint_url=...`` style keys build nested dicts.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--storage-option {item!r} is not KEY=VALUE (e.g. anon=true)")
        low = value.strip().lower()
        parsed: Any = value.strip()
        if low in ("true", "false"):
            parsed = low == "true"
        else:
            try:
                parsed = int(value) if value.strip().lstrip("-").isdigit() else float(value)
            except ValueError:
                parsed = value.strip()
        target = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = parsed
    return out


def _open(url: str, storage_options: dict[str, Any] | None) -> Any:
    import xarray as xr

    remote = "://" in url and not url.startswith("file://")
    if not remote and not Path(url.removeprefix("file://")).exists():
        raise FileNotFoundError(f"Zarr store {url} does not exist")
    consolidated = None  # remote: try consolidated metadata, then the plain listing
    if not remote:
        local = Path(url.removeprefix("file://"))
        consolidated = True if (local / ".zmetadata").is_file() else (False if (local / "zarr.json").is_file() else None)
    try:
        return xr.open_zarr(
            url, consolidated=consolidated, chunks=None, decode_timedelta=False,
            storage_options=storage_options or None if remote else None,
        )
    except FileNotFoundError:
        raise
    except Exception as exc:  # zarr/xarray errors vary by version: one line naming the store
        raise SpecStoreError(f"{url}: cannot be opened as a Zarr store ({type(exc).__name__}: {exc})") from exc


def _pick_variable(ds: Any, wanted: str | None, url: str) -> str:
    found = {
        name: str(var.attrs.get("standard_name", ""))
        for name, var in ds.data_vars.items()
        if var.ndim == 3 and str(var.attrs.get("standard_name", "")) in STANDARD_NAMES
    }
    if wanted is not None:
        hits = [n for n, sn in found.items() if sn == wanted]
        if not hits:
            have = ", ".join(f"{n} ({sn})" for n, sn in found.items()) or "none"
            raise SpecStoreError(
                f"{url}: no (time, y, x) variable has standard_name {wanted!r} (the store has: {have})"
            )
        return hits[0]
    if not found:
        names = ", ".join(f"{n} (standard_name {v.attrs.get('standard_name')!r})" for n, v in ds.data_vars.items()) or "no data variables"
        raise SpecStoreError(
            f"{url}: no recognisable radar variable: none of {names} is a (time, y, x) variable with a "
            f"standard_name of the mlcast spec ({', '.join(STANDARD_NAMES)}); set the variable's standard_name attribute"
        )
    if len(set(found.values())) > 1:
        raise SpecStoreError(
            f"{url}: several radar variables ({', '.join(f'{n}: {s}' for n, s in found.items())}); "
            f"pick one with --standard-name"
        )
    return next(iter(found))


def _as_datetime64(values: Any) -> np.ndarray:
    return np.asarray(values).astype("datetime64[ns]")


def _mode_step(times: np.ndarray) -> float:
    """Most frequent spacing (minutes) of sorted datetime64 ``times``; NaN for fewer than two."""
    if times.size < 2:
        return float("nan")
    d = np.diff(times).astype("timedelta64[s]").astype(np.int64)
    vals, counts = np.unique(d, return_counts=True)
    return float(vals[np.argmax(counts)]) / 60.0


def _coord(ds: Any, var: Any, axis: str, url: str) -> tuple[str, np.ndarray, float]:
    """Name, values (metres) of the projected coordinate along ``axis`` of ``var``, and its metres per unit."""
    dim = var.dims[2 if axis == "x" else 1]
    cands = [n for n, c in ds.coords.items() if c.attrs.get("standard_name") == f"projection_{axis}_coordinate"]
    cands = [n for n in cands if ds[n].dims == (dim,)] or ([dim] if dim in ds.coords or dim in ds.variables else [])
    if not cands:
        raise SpecStoreError(
            f"{url}: no projected {axis} coordinate for dimension {dim!r}; add a coordinate with "
            f"standard_name projection_{axis}_coordinate and units m or km"
        )
    name = cands[0]
    c = ds[name]
    units = str(c.attrs.get("units", "")).strip().lower()
    if units not in LENGTH_UNITS:
        raise SpecStoreError(
            f"{url}: the {axis} coordinate {name!r} has units {c.attrs.get('units')!r}; set units to m or km"
        )
    return name, np.asarray(c.values, dtype=np.float64), LENGTH_UNITS[units]


def _crs(ds: Any, var: Any, url: str) -> tuple[Any, str]:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    gm = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
    if not gm:
        hits = [n for n, v in ds.variables.items() if "crs_wkt" in v.attrs or "spatial_ref" in v.attrs or "grid_mapping_name" in v.attrs]
        if len(hits) != 1:
            raise SpecStoreError(
                f"{url}: no CRS: the variable has no grid_mapping attribute; add one naming a variable "
                f"with crs_wkt (and the CF grid-mapping parameters)"
            )
        gm = hits[0]
    gm = str(gm).split(":")[0].strip()
    if gm not in ds.variables:
        raise SpecStoreError(f"{url}: no CRS: grid_mapping names {gm!r}, which is not in the store")
    attrs = dict(ds[gm].attrs)
    errors = []
    for key in ("crs_wkt", "spatial_ref"):
        if attrs.get(key):
            try:
                return CRS.from_user_input(str(attrs[key])), f"{key} of {gm!r}"
            except CRSError as exc:
                errors.append(f"{key}: {exc}")
    if attrs.get("grid_mapping_name"):
        try:
            return CRS.from_cf(attrs), f"CF parameters of {gm!r}"
        except (CRSError, KeyError, ValueError) as exc:
            errors.append(f"CF parameters: {exc}")
    raise SpecStoreError(
        f"{url}: no CRS: grid_mapping variable {gm!r} has no usable crs_wkt, spatial_ref or CF parameters"
        + (f" ({'; '.join(errors)})" if errors else "")
    )


def _regular(values: np.ndarray, axis: str, url: str) -> float:
    if values.size < 2:
        raise SpecStoreError(f"{url}: the {axis} coordinate has fewer than two values")
    d = np.diff(values)
    step = float(d.mean())
    if step == 0 or np.max(np.abs(d - step)) > 1e-3 * abs(step):
        raise SpecStoreError(f"{url}: the {axis} coordinate is not regularly spaced (diffcast needs a regular grid)")
    return step


class SpecStore:
    """A radar store of the mlcast spec, read lazily (see module docstring).

    Parameters
    ----------
    url : str or path
        Local folder or fsspec URL (``s3://bucket/name.zarr``).
    standard_name : str, optional
        The variable's standard name, needed when the store holds several radar variables.
    storage_options : dict, optional
        fsspec options for remote stores (e.g. ``{"anon": True, "endpoint_url": ...}``).

    Raises
    ------
    FileNotFoundError
        A local store that does not exist.
    SpecStoreError
        No recognisable variable, unknown units, no time coordinate, time not
        strictly increasing, no CRS, an irregular grid.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        standard_name: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = str(url)
        self.storage_options = dict(storage_options or {})
        self.standard_name_wanted = standard_name
        self.warnings: list[str] = []
        ds = _open(self.url, self.storage_options)
        self._ds = ds
        url = self.url
        self.name = _pick_variable(ds, standard_name, url)
        var = ds[self.name]
        self.standard_name = str(var.attrs["standard_name"])
        self.units = str(var.attrs.get("units", ""))
        try:
            self.q: Quantity = quantity_of(self.standard_name, self.units)
        except ValueError as exc:
            raise SpecStoreError(f"{url}: variable {self.name!r}: {exc}") from None
        if var.dims[0] == "time" and "time" not in ds.coords:
            raise SpecStoreError(
                f"{url}: no time coordinate: the dimension 'time' of {self.name!r} has no coordinate values; "
                f"add a CF time variable (units like 'minutes since 1970-01-01')"
            )
        if var.dims[0] != "time" or "time" not in ds.coords:
            raise SpecStoreError(
                f"{url}: variable {self.name!r} has dimensions {var.dims}; the spec needs (time, y, x) with a time coordinate"
            )
        try:
            times = _as_datetime64(ds["time"].values)
        except (TypeError, ValueError) as exc:
            raise SpecStoreError(f"{url}: the time coordinate is not CF time ({exc}); give it units like 'minutes since 1970-01-01'") from None
        if times.size and np.any(np.diff(times) <= np.timedelta64(0, "ns")):
            i = int(np.argmax(np.diff(times) <= np.timedelta64(0, "ns")))
            raise SpecStoreError(
                f"{url}: time is not strictly increasing ({times[i]} is followed by {times[i + 1]}); "
                f"sort the store by time and drop duplicates"
            )
        self.times = times
        self.missing_times = self._missing(ds, times)
        self.consistent_start = self._consistent_start(ds)
        self.timestep_min = self._timestep()
        self._frame_hours = self._accumulation_hours() if self.q.kind == "amount" else None
        self._grid_setup(ds, var)
        self.attrs = {k: v for k, v in ds.attrs.items()}
        for key in ("license", "mlcast_dataset_identifier", "mlcast_dataset_version"):
            if key not in ds.attrs:
                self.warnings.append(f"no global attribute {key!r} (the spec asks for it)")
        self.reads: list[int] = []
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = OrderedDict()
        for w in self.warnings:
            log.warning("%s: %s", url, w)

    # ------------------------------------------------------------------ set-up
    def _missing(self, ds: Any, times: np.ndarray) -> np.ndarray:
        if "missing_times" not in ds.variables:
            self.warnings.append("no missing_times variable: gaps are taken from the spacing of time")
            return np.zeros(0, "datetime64[ns]")
        try:
            mt = np.sort(_as_datetime64(ds["missing_times"].values).ravel())
        except (TypeError, ValueError):
            raise SpecStoreError(f"{self.url}: missing_times is not CF time; give it time units") from None
        clash = np.intersect1d(mt, times)
        if clash.size:
            raise SpecStoreError(
                f"{self.url}: {clash.size} missing_times are also in time (first {clash[0]}); the spec keeps them apart"
            )
        return mt

    def _consistent_start(self, ds: Any) -> np.datetime64 | None:
        raw = ds.attrs.get("consistent_timestep_start")
        if raw is None:
            return None
        try:
            import pandas as pd

            ts = pd.Timestamp(str(raw))
            if ts.tzinfo is not None:
                ts = ts.tz_convert("UTC").tz_localize(None)
            return np.datetime64(ts.to_datetime64(), "ns")
        except (ValueError, TypeError):
            raise SpecStoreError(
                f"{self.url}: consistent_timestep_start {raw!r} is not an ISO date-time"
            ) from None

    @property
    def _all_times(self) -> np.ndarray:
        return np.union1d(self.times, self.missing_times)

    def _timestep(self) -> float:
        allt = self._all_times
        if self.consistent_start is not None:
            allt = allt[allt >= self.consistent_start]
        step = _mode_step(allt)
        if allt.size >= 2:
            d = np.diff(allt).astype("timedelta64[s]").astype(np.int64) / 60.0
            odd = int(np.sum(np.abs(d - step) > 1e-6))
            if odd:
                where = "after consistent_timestep_start" if self.consistent_start is not None else "and no consistent_timestep_start is given"
                self.warnings.append(
                    f"the time step is {step:g} min but {odd} spacing(s) of time and missing_times differ {where}; "
                    f"windows only use frames {step:g} min apart"
                )
        return step

    def _accumulation_hours(self) -> np.ndarray:
        """Hours each frame's accumulation covers: the spacing to the previous time or missing time."""
        allt = self._all_times
        pos = np.searchsorted(allt, self.times)
        prev = np.where(pos > 0, allt[np.maximum(pos - 1, 0)], allt[np.minimum(pos + 1, allt.size - 1)])
        h = np.abs((self.times - prev).astype("timedelta64[s]").astype(np.float64)) / 3600.0
        if self.consistent_start is not None:
            h[self.times >= self.consistent_start] = self.timestep_min / 60.0
        return np.where(h > 0, h, self.timestep_min / 60.0)

    def _grid_setup(self, ds: Any, var: Any) -> None:
        crs, crs_from = _crs(ds, var, self.url)
        xname, x, xm = _coord(ds, var, "x", self.url)
        yname, y, ym = _coord(ds, var, "y", self.url)
        if crs.is_geographic:
            raise SpecStoreError(f"{self.url}: the CRS is geographic; the spec needs projected x/y")
        unit_m = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
        x, y = x * xm / unit_m, y * ym / unit_m
        dx, dy = _regular(x, "x", self.url), _regular(y, "y", self.url)
        self.flip_x, self.flip_y = dx < 0, dy > 0  # frames: west to east, north-up
        h, w = int(var.shape[1]), int(var.shape[2])
        x0 = float(min(x[0], x[-1]) - abs(dx) / 2)
        y0 = float(max(y[0], y[-1]) + abs(dy) / 2)
        notes = []
        if xm != unit_m:
            notes.append(f"x/y in {ds[xname].attrs.get('units')} converted to the CRS's units")
        if self.flip_y:
            notes.append("y increases in the store: rows flipped to north-up")
        self.grid = ProjectedGrid(
            crs.to_wkt(), x0, y0, abs(dx), -abs(dy), (h, w), source=f"{crs_from} in {self.url}", notes=tuple(notes)
        )
        self.xy_names = (xname, yname)
        self.pixel_km = abs(dx) * unit_m / 1000.0

    # ------------------------------------------------------------------ pickling (data-loader workers)
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = None
        state["_cache"] = OrderedDict()
        return state

    @property
    def ds(self) -> Any:
        """The ``xarray.Dataset`` (lazy), reopened after unpickling."""
        if self._ds is None:
            self._ds = _open(self.url, self.storage_options)
        return self._ds

    # ------------------------------------------------------------------ shape and reading
    def __len__(self) -> int:
        return int(self.times.size)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.grid.shape

    @property
    def quantity(self) -> str:
        """``"mm/h"`` or ``"dBZ"``: what :meth:`read` returns."""
        return self.q.quantity

    def _orient(self, a: np.ndarray) -> np.ndarray:
        if self.flip_y:
            a = a[..., ::-1, :]
        if self.flip_x:
            a = a[..., ::-1]
        return np.ascontiguousarray(a)

    def read(self, index: Any, window: tuple[slice, slice] | None = None) -> np.ndarray:
        """Frames ``index`` (int, slice or int array along time) in :attr:`quantity`, north-up, NaN = no data.

        ``window`` (row and column slices of the north-up frame) reads only that part
        of each frame (a chunk is still decompressed whole).
        """
        idx = np.arange(len(self))[index]
        one = idx.ndim == 0
        idx = np.atleast_1d(idx)
        arr = self.ds[self.name].variable
        if idx.size and np.all(np.diff(idx) == 1):
            raw = arr[int(idx[0]) : int(idx[-1]) + 1].values
        else:
            raw = arr[idx].values if idx.size else np.zeros((0, *self.grid_shape), np.float32)
        # raw is a fresh array (xarray reads the chunks anew every time): converted in place
        out = self.q.convert(self._orient(np.asarray(raw, dtype=np.float32)),
                             None if self._frame_hours is None else self._frame_hours[idx], copy=False)
        if window is not None:
            out = out[:, window[0], window[1]]
        return out[0] if one else out

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Frame ``i`` encoded like every radar source: ``(dBZ / 90 in [0, 1], no-data mask, metadata)``."""
        i = range(len(self))[i]
        if i not in self._cache:
            x, valid = to_unit_interval(self.read(i), {"unit": self.quantity, "transform": None})
            self._cache[i] = (x, ~valid, {"unit": self.quantity, "store": self.url, "variable": self.name})
            self.reads.append(i)
            while len(self._cache) > _CACHE_FRAMES:
                self._cache.popitem(last=False)
        return self._cache[i]

    def lazy(self, what: str = "data") -> Any:
        """``(T, H, W)`` array-like of encoded frames (``"data"``) or no-data masks (``"mask"``)."""
        from ..radar.series import LazyFrames

        return LazyFrames(self, what)  # type: ignore[arg-type]

    def latlon(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The store's own 2-D ``(lat, lon)``, north-up like the frames; ``None`` when it has none."""
        ds = self.ds
        names = {}
        for key, std in (("lat", "latitude"), ("lon", "longitude")):
            hits = [n for n, v in ds.variables.items() if v.attrs.get("standard_name") == std and v.ndim == 2]
            hits = hits or [n for n in (key, std) if n in ds.variables and ds[n].ndim == 2]
            if not hits:
                return None
            names[key] = hits[0]
        return (self._orient(np.asarray(ds[names["lat"]].values, np.float64)),
                self._orient(np.asarray(ds[names["lon"]].values, np.float64)))

    def times_py(self, idx: Any = slice(None)) -> list[Any]:
        """Times as timezone-naive UTC ``datetime`` objects."""
        import pandas as pd

        return [t.to_pydatetime() for t in pd.to_datetime(self.times[idx])]

    def provenance(self) -> dict[str, Any]:
        """Dataset identifier, version, URL, variable and units (for model files and forecasts)."""
        a = self.attrs
        return {
            "store": self.url,
            "variable": self.name,
            "standard_name": self.standard_name,
            "units": self.units,
            "mlcast_dataset_identifier": a.get("mlcast_dataset_identifier"),
            "mlcast_dataset_version": a.get("mlcast_dataset_version"),
            "license": a.get("license"),
        }

    def describe(self) -> dict[str, Any]:
        """What ``diffcast data info`` prints; reads no pixels."""
        from .windows import gap_summary

        t = self.times
        return {
            "store": self.url,
            "variable": self.name,
            "standard_name": self.standard_name,
            "units": self.units,
            "quantity": self.quantity,
            "kind": self.q.kind,
            "grid": f"{self.grid_shape[0]} x {self.grid_shape[1]} at {self.pixel_km:g} km",
            "crs": self.grid.crs.name,
            "y_order": "increasing (flipped to north-up)" if self.flip_y else "decreasing (north-up)",
            "frames": int(t.size),
            "time_range": [str(t[0]) if t.size else None, str(t[-1]) if t.size else None],
            "timestep_min": self.timestep_min,
            "consistent_timestep_start": None if self.consistent_start is None else str(self.consistent_start),
            "missing_frames": int(self.missing_times.size),
            **gap_summary(self),
            "license": self.attrs.get("license"),
            "dataset": self.attrs.get("mlcast_dataset_identifier"),
            "dataset_version": self.attrs.get("mlcast_dataset_version"),
            "warnings": list(self.warnings),
        }
