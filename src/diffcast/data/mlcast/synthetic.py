"""Spec stores of synthetic rain, in each layout real archives use (tests, benchmarks, demos).

:func:`write_spec_store` writes a Zarr store that follows the mlcast
``radar_precipitation`` spec: one ``(time, y, x)`` variable chunked one frame per
time step, zstd-compressed, with projected ``x``/``y`` (m or km, ``y`` either
way), 2-D ``lat``/``lon``, a ``crs`` grid-mapping variable (``crs_wkt``,
``spatial_ref`` and the CF parameters), ``missing_times``, optionally a change
of time step before ``consistent_timestep_start``, and the ``license`` and
``mlcast_*`` global attributes. The rain is a few Gaussian cells drifting at a
fixed velocity, so a nowcast has something to follow.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Projection of the synthetic stores: ETRS89 / LAEA Europe.
SYNTHETIC_CRS = "EPSG:3035"
#: EPSG:3035 (LAEA Europe) with its axes in km (PROJ takes x_0, y_0 in metres whatever +units), for stores with x/y in km.
SYNTHETIC_CRS_KM = "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=km +no_defs +type=crs"

_VARIABLES = {
    "rate": ("rainfall_flux", "kg m-2 h-1", "precipitation rate"),
    "amount": ("precipitation_amount", "kg m-2", "precipitation amount over the time step"),
    "reflectivity": ("equivalent_reflectivity_factor", "dBZ", "equivalent reflectivity factor"),
}


def synthetic_rain(n: int, shape: tuple[int, int], seed: int = 0, velocity: tuple[float, float] = (0.6, 1.0)) -> np.ndarray:
    """``(n, H, W)`` float32 rain rates (mm/h) of drifting Gaussian cells that grow and decay."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n_cells = 6
    cy, cx = rng.uniform(0, h, n_cells), rng.uniform(0, w, n_cells)
    amp = rng.uniform(4.0, 40.0, n_cells)
    sig = rng.uniform(4.0, max(6.0, min(h, w) / 6), n_cells)
    phase = rng.uniform(0, 2 * np.pi, n_cells)
    out = np.zeros((n, h, w), np.float32)
    for t in range(n):
        for c in range(n_cells):
            y = (cy[c] + velocity[0] * t) % (h + 4 * sig[c]) - 2 * sig[c]
            x = (cx[c] + velocity[1] * t) % (w + 4 * sig[c]) - 2 * sig[c]
            a = amp[c] * (0.6 + 0.4 * np.sin(phase[c] + t / 20.0))
            out[t] += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sig[c] ** 2))
    out[out < 0.1] = 0.0
    return out


def spec_times(
    n: int, step_min: float = 5.0, start: str = "2020-06-01T00:00", steps_before: Sequence[tuple[float, int]] = ()
) -> tuple[np.ndarray, np.datetime64 | None]:
    """``n`` regular times after optional earlier periods ``[(step_min, count), ...]``; returns (times, consistent start)."""
    t = np.datetime64(start, "ns")
    out = []
    for s, count in steps_before:
        for _ in range(count):
            out.append(t)
            t = t + np.timedelta64(int(s * 60), "s")
    consistent = t if steps_before else None
    for _ in range(n):
        out.append(t)
        t = t + np.timedelta64(int(step_min * 60), "s")
    return np.array(out, "datetime64[ns]"), consistent


def write_spec_store(
    path: str | os.PathLike[str],
    *,
    kind: str = "rate",
    n_frames: int = 200,
    shape: tuple[int, int] = (96, 80),
    step_min: float = 5.0,
    xy_units: str = "m",
    y_increasing: bool = False,
    missing: Sequence[int] = (),
    steps_before: Sequence[tuple[float, int]] = (),
    start: str = "2020-06-01T00:00",
    zarr_format: int = 2,
    pixel_m: float = 1000.0,
    nodata_corner: bool = True,
    seed: int = 0,
    rain: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    chunk_frames: bool = True,
) -> str:
    """Write a spec store (see module docstring) and return its path.

    Parameters
    ----------
    kind : {"rate", "amount", "reflectivity"}
        ``rainfall_flux`` in kg m-2 h-1, ``precipitation_amount`` in kg m-2 over the
        step, or ``equivalent_reflectivity_factor`` in dBZ (Marshall-Palmer).
    n_frames : int
        Frames of the regular period, before removing ``missing``.
    missing : sequence of int
        Indices (into all times) moved from ``time`` to ``missing_times``.
    steps_before : sequence of (step_min, count)
        Earlier periods at other steps; ``consistent_timestep_start`` then marks the regular one.
    nodata_corner : bool
        NaN in the south-west corner (outside "radar coverage").
    rain : ndarray, optional
        ``(T, H, W)`` rain rates (mm/h) to store instead of :func:`synthetic_rain`.
    """
    import numcodecs
    import xarray as xr
    from pyproj import CRS, Transformer

    from ..transforms import rainrate_to_dbz

    if kind not in _VARIABLES:
        raise ValueError(f"kind must be one of {', '.join(_VARIABLES)}, got {kind!r}")
    times, consistent = spec_times(n_frames, step_min, start, steps_before)
    h, w = shape
    r = synthetic_rain(times.size, shape, seed) if rain is None else np.asarray(rain, np.float32)
    if r.shape != (times.size, h, w):
        raise ValueError(f"rain must be {(times.size, h, w)}, got {r.shape}")
    keep = np.setdiff1d(np.arange(times.size), np.asarray(missing, int))
    allt = times
    dt_h = np.diff(allt, prepend=allt[0] - (allt[1] - allt[0])).astype("timedelta64[s]").astype(np.float64) / 3600.0
    if kind == "rate":
        vals = r
    elif kind == "amount":
        vals = r * dt_h[:, None, None].astype(np.float32)
    else:
        vals = np.where(r > 0, rainrate_to_dbz(r), -10.0).astype(np.float32)
    vals = vals.astype(np.float32)
    if nodata_corner:
        vals[:, -h // 4 :, : w // 4] = np.nan
    vals, times_kept = vals[keep], allt[keep]
    crs = CRS(SYNTHETIC_CRS)
    x_m = 4_000_000.0 + (np.arange(w) + 0.5) * pixel_m
    y_m = 3_000_000.0 - (np.arange(h) + 0.5) * pixel_m  # north-up: decreasing
    lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(*np.meshgrid(x_m, y_m))
    if y_increasing:
        y_m, vals, lat, lon = y_m[::-1], vals[:, ::-1], lat[::-1], lon[::-1]
    scale = {"m": 1.0, "km": 1000.0}[xy_units]
    name, units, long_name = _VARIABLES[kind]
    gm = {k: v for k, v in crs.to_cf().items() if v is not None}  # CF parameters: metres, as CF readers assume
    # The WKT is in the coordinates' own unit, as the spec's validator reads it (x/y in km: a CRS in km).
    wkt = (crs if xy_units == "m" else CRS(SYNTHETIC_CRS_KM)).to_wkt()
    gm.update(crs_wkt=wkt, spatial_ref=wkt)
    ds = xr.Dataset(
        {
            name: (("time", "y", "x"), np.ascontiguousarray(vals),
                   {"standard_name": name, "units": units, "long_name": long_name, "grid_mapping": "crs"}),
            "crs": ((), np.int32(0), gm),
            "missing_times": (("missing_times",), allt[np.asarray(missing, int)] if len(missing) else np.zeros(0, "datetime64[ns]")),
        },
        coords={
            "time": ("time", times_kept, {"standard_name": "time", "axis": "T"}),
            "x": ("x", x_m / scale, {"standard_name": "projection_x_coordinate", "units": xy_units, "axis": "X"}),
            "y": ("y", y_m / scale, {"standard_name": "projection_y_coordinate", "units": xy_units, "axis": "Y"}),
            "lat": (("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": (("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={
            "license": "CC-BY-4.0",
            "mlcast_created_on": dt.datetime(2026, 1, 1).isoformat(),
            "mlcast_created_by": "diffcast tests <diffcast@example.org>",
            "mlcast_created_with": "https://github.com/diffcast/diffcast@v0.1.0",
            "mlcast_dataset_version": "0.1.0",
            "mlcast_dataset_validator_version": "0.4.0",
            "mlcast_dataset_identifier": f"XX-DIFFCAST-{kind}",
            **({"consistent_timestep_start": str(consistent.astype("datetime64[s]"))} if consistent is not None else {}),
            **(attrs or {}),
        },
    )
    chunks = (1, h, w) if chunk_frames else (min(16, max(len(keep), 1)), h, w)
    if zarr_format == 2:
        comp: dict[str, Any] = {"compressors": [numcodecs.Zstd(level=3)]}
    else:
        import zarr.codecs

        comp = {"compressors": [zarr.codecs.ZstdCodec(level=3)]}
    enc = {name: {"chunks": chunks, **comp}, "time": {"units": "minutes since 1970-01-01", "dtype": "int64"},
           "missing_times": {"units": "minutes since 1970-01-01", "dtype": "int64"}}
    ds.to_zarr(str(path), mode="w", consolidated=zarr_format == 2, zarr_format=zarr_format, encoding=enc)
    return str(path)
