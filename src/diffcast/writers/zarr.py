"""Zarr output of an ensemble nowcast (``diffcast nowcast --format zarr``).

:func:`write_forecast_zarr` writes the dataset of
:func:`diffcast.writers.netcdf.build_forecast_dataset` (same variables,
dimensions ``member``/``time``/``threshold``/``y``/``x``, the ``crs`` grid mapping
with ``crs_wkt``, 2-D ``lat``/``lon``, the same global attributes) as a Zarr v2
store with consolidated metadata, which xarray, zarr 2 and 3 and the mlcast tools
open. Gridded variables are chunked one frame per chunk, like the spec's stores.
The store is written under a temporary name in the same folder and renamed, so
a failed run never leaves a partial store.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..data.contract import DatasetMeta
from .netcdf import build_forecast_dataset
from .staging import replace_entry

log = logging.getLogger(__name__)

#: netCDF4-only encodings dropped before writing Zarr.
_NETCDF_ONLY = ("zlib", "complevel", "shuffle", "contiguous", "fletcher32", "chunksizes", "least_significant_digit")


def forecast_to_zarr(ds: Any, path: str | os.PathLike[str]) -> Path:
    """Write a forecast :class:`xarray.Dataset` to a new Zarr store at ``path`` atomically."""
    path = Path(path)
    folder = path.parent
    if not folder.exists():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    ds = ds.copy()
    for name in ds.variables:
        enc = ds[name].encoding
        for key in _NETCDF_ONLY:
            enc.pop(key, None)
        if ds[name].ndim >= 3:  # one (y, x) frame per chunk
            enc["chunks"] = tuple(1 if d not in ("y", "x") else ds.sizes[d] for d in ds[name].dims)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp.", dir=folder))
    try:
        ds.to_zarr(tmp / path.name, mode="w", consolidated=True, zarr_format=2)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp / path.name, 0o777 & ~umask)
        replace_entry(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_forecast_zarr(
    path: str | os.PathLike[str], forecast: np.ndarray, meta: DatasetMeta, analysis_time: dt.datetime, **kwargs: Any
) -> Path:
    """Write :func:`~diffcast.writers.netcdf.build_forecast_dataset` to a Zarr store at ``path``.

    Parameters are those of :func:`~diffcast.writers.netcdf.build_forecast_dataset`;
    the content is that of ``forecast.nc``.
    """
    ds = build_forecast_dataset(forecast, meta, analysis_time, **kwargs)
    forecast_to_zarr(ds, path)
    log.info("wrote %s (%d member(s), %d lead(s))", path, ds.sizes["member"], ds.sizes["time"])
    return Path(path)
