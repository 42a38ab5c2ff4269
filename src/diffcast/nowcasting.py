"""Deprecated alias: ``diffcast.nowcasting`` was split into :mod:`diffcast.pipeline` (issue 16).

Where its names went:

- reading: :class:`RawInput`, ``INPUT_KINDS`` -> :mod:`diffcast.pipeline.readers.base`;
  :func:`detect_kind`, :func:`read_input` -> :mod:`diffcast.pipeline.inputs`; the readers
  themselves -> :mod:`diffcast.pipeline.readers.images`, ``.arrays`` (``.npy``/HDF5/SEVIR,
  ``ARRAY_LAYOUTS``) and ``.radar``;
- grid fitting: :func:`grid_window`, :func:`fit_grid`, :func:`fit_grid_masked`,
  :func:`fit_projected_grid` -> :mod:`diffcast.pipeline.grid`;
- units: :func:`convert_units`, :func:`rain_rate_meta`, :func:`output_meta`,
  :func:`threshold_code`, ``OUTPUT_UNITS``, ``RAINRATE_THRESHOLDS`` -> :mod:`diffcast.pipeline.units`;
- :class:`PreparedInput`, :func:`prepare_input` -> :mod:`diffcast.pipeline.prepare`;
- :func:`make_nowcaster` -> :mod:`diffcast.pipeline.model`;
- :func:`run_nowcast`, :func:`nowcast_to_files`, :func:`nowcast_raw`,
  :func:`software_versions` -> :mod:`diffcast.pipeline.run`;
- :func:`staged_output` -> :mod:`diffcast.writers.staging`.

The public names are also importable from :mod:`diffcast.pipeline` itself. Every
name this module had (private ones included) still resolves here to the very same
object, with a :class:`DeprecationWarning`; patch the new module, not this alias.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_P = "diffcast.pipeline."
#: Old name -> module that defines it now.
_MOVED = {
    **dict.fromkeys(("INPUT_KINDS", "RawInput"), _P + "readers.base"),
    **dict.fromkeys(("IMAGE_SUFFIXES", "_input_subfolder", "_read_images"), _P + "readers.images"),
    **dict.fromkeys(
        ("H5_SUFFIXES", "ARRAY_LAYOUTS", "SEVIR_KEY", "SEVIR_DOMAIN_KM", "_Layout", "_array_layout", "_read_array",
         "_read_npy", "_h5_datasets", "_sevir_event_id", "_read_h5"),
        _P + "readers.arrays",
    ),
    **dict.fromkeys(("_natural_key", "_is_odim", "_is_radar_h5", "_read_radar", "_radar_grid"), _P + "readers.radar"),
    **dict.fromkeys(("detect_kind", "read_input"), _P + "inputs"),
    **dict.fromkeys(
        ("ASPECT_TOL", "_resize", "grid_window", "fit_grid", "fit_grid_masked", "fit_projected_grid"), _P + "grid"
    ),
    **dict.fromkeys(
        ("OUTPUT_UNITS", "RAINRATE_THRESHOLDS", "convert_units", "rain_rate_meta", "output_meta", "threshold_code"),
        _P + "units",
    ),
    **dict.fromkeys(
        ("NOMINAL_ANALYSIS_TIME", "PreparedInput", "_parse_time", "prepare_input", "_spacing_break"), _P + "prepare"
    ),
    **dict.fromkeys(("make_nowcaster", "_native_grid"), _P + "model"),
    **dict.fromkeys(
        ("software_versions", "_iso", "run_nowcast", "nowcast_to_files", "nowcast_raw"), _P + "run"
    ),
    "staged_output": "diffcast.writers.staging",
    "ProjectedGrid": "diffcast.geo",
}

__all__ = sorted(n for n in _MOVED if not n.startswith("_"))


def __getattr__(name: str) -> Any:
    target = _MOVED.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"diffcast.nowcasting is deprecated: import {name} from {target}", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(target), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))
