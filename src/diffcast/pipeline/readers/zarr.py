"""Reader of radar archives in the mlcast Zarr spec (a local store or a URL).

:class:`diffcast.data.mlcast.SpecStore` opens the store lazily (metadata and
coordinates only) and decompresses a frame the first time it is indexed, so a
nowcast from a 20-year archive reads the few frames it uses. The record keeps the
store's quantity (mm/h for rain rates and accumulations, dBZ for reflectivity),
the no-data mask, the grid in the store's CRS and the store's own lat/lon; the
frames are in the ``[0, 1]`` encoding of every radar source
(:data:`diffcast.data.transforms.RADAR_DBZ_META`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .base import RawInput

log = logging.getLogger(__name__)

#: Largest distance (degrees) between a store's lat/lon and those of its CRS before the store's are not trusted.
LATLON_TOL_DEG = 1e-3


def _store_latlon(store: Any, notes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The store's own ``(lat, lon)`` when it has them and they agree with its CRS, else ``None``."""
    got = store.latlon()
    if got is None:
        return None
    lat, lon = got
    if lat.shape != tuple(store.grid.shape) or lon.shape != lat.shape:
        notes.append(f"lat/lon of the store are {lat.shape}, not the grid's {tuple(store.grid.shape)}: computed from the CRS")
        return None
    glon, glat, _ = store.grid.lonlat()
    err = float(max(np.nanmax(np.abs(glat - lat)), np.nanmax(np.abs(((glon - lon) + 180.0) % 360.0 - 180.0))))
    if not err <= LATLON_TOL_DEG:
        notes.append(f"lat/lon of the store differ from its CRS by up to {err:.3g} deg: computed from the CRS instead")
        log.warning("%s: lat/lon differ from the grid mapping by up to %.3g deg; using the grid mapping's", store.url, err)
        return None
    return lat, lon


def store_attrs(store: Any) -> dict[str, Any]:
    """Global attributes a forecast records about its input store (``None`` values left out)."""
    p = store.provenance()
    out = {
        "input_store": p["store"],
        "input_variable": p["variable"],
        "input_standard_name": p["standard_name"],
        "input_units": p["units"],
        "input_dataset_identifier": p.get("mlcast_dataset_identifier"),
        "input_dataset_version": p.get("mlcast_dataset_version"),
        "input_license": p.get("license"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _read_zarr(
    url: str, standard_name: str | None = None, storage_options: dict[str, Any] | None = None
) -> RawInput:
    """Open a spec store and return its frames as lazy array-likes (nothing decompressed here).

    Raises
    ------
    FileNotFoundError
        A local store that does not exist.
    diffcast.data.mlcast.SpecStoreError
        A store that breaks the spec where diffcast relies on it (one line naming
        the store, the problem and the fix).
    """
    from ...data.mlcast import SpecStore
    from ...data.radar.frames import _radar_meta

    store = SpecStore(url, standard_name=standard_name, storage_options=storage_options)
    if len(store) < 2:
        raise ValueError(f"{store.url}: the store has {len(store)} frame(s); a nowcast needs a time series of several")
    meta = _radar_meta(
        store.timestep_min, store.pixel_km, f"mlcast Zarr store ({store.standard_name} in {store.units})", "none", None
    )
    notes = [f"{store.url}: {w}" for w in store.warnings] + list(store.grid.notes)
    latlon = _store_latlon(store, notes)
    return RawInput(
        store.lazy("data"), "zarr", [store.url], meta=meta, times=store.times_py(),
        timestep_min=float(store.timestep_min), pixel_km=float(store.pixel_km), notes=notes, grid=store.grid,
        mask=store.lazy("mask"), quantity=store.quantity, latlon=latlon, attrs=store_attrs(store),
    )
