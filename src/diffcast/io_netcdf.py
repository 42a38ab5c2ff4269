"""Deprecated alias: ``diffcast.io_netcdf`` moved (issue 16).

- the NetCDF writer (:func:`write_forecast_netcdf`, :func:`build_forecast_dataset`,
  :func:`exceedance_probability`, ``GRID_MAPPING_VAR``, ``NO_GEOREFERENCING``,
  ``DIFFCAST_REFERENCE``) -> :mod:`diffcast.writers.netcdf`;
- the georeferencing (:class:`ProjectedGrid` and its helpers), which the readers
  use too -> :mod:`diffcast.geo`;
- :func:`exceeds` and ``THRESHOLD_RTOL`` (threshold-space comparison, used by the
  pictures as well) -> :mod:`diffcast.data.transforms`.

Every name this module had (private ones included) still resolves here to the very
same object, with a :class:`DeprecationWarning`; patch the new module, not this alias.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: Old name -> module that defines it now.
_MOVED = {
    **dict.fromkeys(
        ("DIFFCAST_REFERENCE", "_UDUNITS", "_iso", "_naive_utc", "exceedance_probability", "GRID_MAPPING_VAR",
         "NO_GEOREFERENCING", "build_forecast_dataset", "_space", "write_forecast_netcdf"),
        "diffcast.writers.netcdf",
    ),
    **dict.fromkeys(
        ("_PYSTEPS_UNIT_M", "_EXTENT_TOL", "_CF_PARAMS_TOL", "_PROJ_SIZE_KEYS", "_km_ellipsoid_to_m", "_crs_unit_m",
         "_extent_axis", "ProjectedGrid"),
        "diffcast.geo",
    ),
    **dict.fromkeys(("THRESHOLD_RTOL", "exceeds"), "diffcast.data.transforms"),
}

__all__ = sorted(n for n in _MOVED if not n.startswith("_"))


def __getattr__(name: str) -> Any:
    target = _MOVED.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"diffcast.io_netcdf is deprecated: import {name} from {target}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(target), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))
