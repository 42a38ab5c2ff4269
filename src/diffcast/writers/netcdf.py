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

Storage: the gridded variables (``forecast``, ``ensemble_mean``,
``exceedance_probability``, ``observation``) are float32, zlib level 4 with
shuffle, one ``(y, x)`` frame per chunk (as in ``forecast.zarr``).
:func:`write_forecast_netcdf` computes and writes them one lead at a time, so
its memory is one lead of them, not the ``M + 1 + K`` forecast-sized arrays
(members, mean, thresholds) that :func:`build_forecast_dataset` holds; both
give the same values, attributes and encodings.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.contract import DatasetMeta
from ..data.transforms import exceeds
from ..geo import ProjectedGrid
from ..utils.io import atomic_path

# DIFFCAST_REFERENCE ... _space lived here before the layout had a module of its own; they still resolve here
# (diffcast.io_netcdf's old names point at this module).
from .cf_layout import (  # noqa: F401
    _GRIDDED,
    _UDUNITS,
    DIFFCAST_REFERENCE,
    GRID_MAPPING_VAR,
    NO_GEOREFERENCING,
    _dataset,
    _frame_chunks,
    _iso,
    _Layout,
    _layout,
    _naive_utc,
    _space,
)

log = logging.getLogger(__name__)

#: The compression of :data:`~diffcast.writers.cf_layout._PACKING` as :meth:`netCDF4.Dataset.createVariable`
#: arguments: what xarray's netCDF4 backend passes for it (``shuffle=True`` is its default).
_NC4_PACKING = {"compression": "zlib", "complevel": 4, "shuffle": True, "fletcher32": False, "contiguous": False,
                "endian": "native"}


def _lead_probability(members: np.ndarray, meta: DatasetMeta, thresholds: Sequence[float], out: np.ndarray) -> np.ndarray:
    """Fill ``out[k]`` (``(K, H, W)``) with the fraction of ``members`` (``(M, H, W)``) at or above ``thresholds[k]``."""
    for k, th in enumerate(thresholds):
        count = np.zeros(members.shape[1:], dtype=np.int32)
        for member in members:  # member by member: the temporaries are one (H, W) frame, not the ensemble
            count += exceeds(member, th, meta)
        np.divide(count, members.shape[0], out=out[k], dtype=np.float32)
    return out


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
    for t in range(fc.shape[1]):  # lead by lead
        _lead_probability(fc[:, t], meta, thresholds, out[:, t])
    return out


def _lead_fields(
    members: np.ndarray, meta: DatasetMeta, thresholds: Sequence[float], outside: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One lead of ``forecast``, ``ensemble_mean`` and ``exceedance_probability`` as the file holds them.

    Parameters
    ----------
    members : ndarray
        ``(M, H, W)`` float32 members of one lead in ``[0, 1]``; NaN where a
        member is unknown (rain moving in from outside the domain).
    meta : DatasetMeta
        Transform to physical units and threshold space.
    thresholds : sequence of float
        ``K`` thresholds in threshold space.
    outside : ndarray or None
        ``(H, W)`` bool, True outside the coverage.

    Returns
    -------
    (ndarray, ndarray, ndarray)
        float32 ``(M, H, W)`` members and ``(H, W)`` mean in physical units and
        ``(K, H, W)`` probabilities; all NaN outside the coverage, mean and
        probabilities NaN where a member is NaN.
    """
    phys = meta.to_physical(members)
    # float64 sum over members of one frame; the mean is taken in physical units
    mean = phys.mean(axis=0, dtype=np.float64).astype(np.float32)
    prob = _lead_probability(members, meta, thresholds, np.empty((len(thresholds),) + members.shape[1:], np.float32))
    # NaN members (motion bringing rain in from outside the domain) leave mean and probability unknown too
    unknown = ~np.isfinite(members).all(axis=0)
    if unknown.any():
        mean[unknown] = np.nan
        prob[:, unknown] = np.nan
    if outside is not None:
        for arr in (phys, mean, prob):
            arr[..., outside] = np.nan
    return phys, mean, prob


def _observation_frame(frame: np.ndarray, meta: DatasetMeta, outside: np.ndarray | None) -> np.ndarray:
    """One observed ``(H, W)`` frame in physical units, NaN outside the coverage."""
    phys = meta.to_physical(frame)
    if outside is not None:
        phys[outside] = np.nan
    return phys


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
        Every variable in memory (float32 gridded variables: ``M + 1 + K`` times
        the forecast's frames, plus the observations); :func:`write_forecast_netcdf`
        writes the same file without holding them.
    """
    lay = _layout(
        forecast, meta, analysis_time, timestep_min=timestep_min, x_in=x_in, thresholds=thresholds,
        pixel_km=pixel_km, title=title, source=source, history=history, extra_attrs=extra_attrs,
        time_note=time_note, grid=grid, coverage=coverage, latlon=latlon,
    )
    m, t_out, h, w = lay.fc.shape
    phys = np.empty((m, t_out, h, w), dtype=np.float32)
    mean = np.empty((t_out, h, w), dtype=np.float32)
    prob = np.empty((len(lay.thresholds), t_out, h, w), dtype=np.float32)
    for t in range(t_out):  # the same arithmetic as the streamed file, lead by lead
        phys[:, t], mean[t], prob[:, t] = _lead_fields(lay.fc[:, t], meta, lay.thresholds, lay.outside)
    gridded = {"forecast": phys, "ensemble_mean": mean, "exceedance_probability": prob}
    if lay.obs is not None:
        obs = np.empty(lay.obs.shape, dtype=np.float32)
        for i, frame in enumerate(lay.obs):
            obs[i] = _observation_frame(frame, meta, lay.outside)
        gridded["observation"] = obs
    return _dataset(lay, gridded)


def write_forecast_netcdf(path: str | os.PathLike[str], forecast: np.ndarray, meta: DatasetMeta, analysis_time: dt.datetime, **kwargs: Any) -> Path:
    """Write the file of :func:`build_forecast_dataset` to ``path`` atomically (netCDF4 format).

    Parameters are those of :func:`build_forecast_dataset`. The gridded
    variables are computed and written one lead (one observed frame) at a time,
    so memory holds one lead of them, not the whole dataset: xarray writes
    everything else, then netCDF4 adds the gridded variables with the
    attributes, compression, chunks and fill value that xarray would give them.
    The file is written under a temporary name in the same folder and renamed,
    so a failed run never leaves a partial ``.nc`` file.
    """
    lay = _layout(forecast, meta, analysis_time, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        _dataset(lay, {}).to_netcdf(tmp, format="NETCDF4", engine="netcdf4")
        _append_gridded(tmp, lay)
    log.info("wrote %s (%d member(s), %d lead(s))", path, lay.fc.shape[0], lay.fc.shape[1])
    return path


def _append_gridded(path: Path, lay: _Layout) -> None:
    """Add the gridded variables of ``lay`` to the file xarray wrote at ``path``, one lead at a time.

    On disk they come after the other variables, and netCDF-C (4.10) does not
    track the creation order of attributes of a variable added to an existing
    file, so ``ncdump`` lists theirs in another order; names and values are those
    of the whole dataset written by xarray.
    """
    import netCDF4

    sizes = lay.sizes
    names = [name for name in _GRIDDED if name in lay.data_vars]
    with netCDF4.Dataset(path, "a") as nc:
        written: set[str] = set()
        for name in names:
            dims, _, attrs = lay.data_vars[name]
            var = nc.createVariable(name, np.float32, dims, fill_value=lay.fill,
                                    chunksizes=_frame_chunks(dims, sizes), **_NC4_PACKING)
            # Each write fills whole chunks, which a chunk cache would only keep in memory (64 MiB per
            # variable): with a 1-byte cache HDF5 writes every chunk straight out (netCDF-C ignores size 0).
            var.set_var_chunk_cache(size=1)
            coordinates = lay.cf_coordinates(name)
            var.setncatts(dict(attrs, coordinates=coordinates) if coordinates else attrs)
            written.update(coordinates.split())
        if "coordinates" in nc.ncattrs() and "coordinates" not in lay.attrs:
            # xarray listed the coordinates no variable of its (partial) dataset named; the gridded ones name them now
            left = set(nc.getncattr("coordinates").split()) - written
            if left:
                nc.setncattr("coordinates", " ".join(sorted(left)))
            else:
                nc.delncattr("coordinates")
        for t in range(lay.fc.shape[1]):
            phys, mean, prob = _lead_fields(lay.fc[:, t], lay.meta, lay.thresholds, lay.outside)
            nc["forecast"][:, t] = phys
            nc["ensemble_mean"][t] = mean
            nc["exceedance_probability"][:, t] = prob
        if lay.obs is not None:
            for i, frame in enumerate(lay.obs):
                nc["observation"][i] = _observation_frame(frame, lay.meta, lay.outside)
