"""Radar archives in the mlcast Zarr spec (EUMETNET E-AI ``source_data/radar_precipitation`` 0.3.0).

- :mod:`.spec`: standard names and units the spec allows, and how each becomes
  diffcast's quantity (mm/h or dBZ);
- :mod:`.store`: :class:`SpecStore`, a store opened lazily (metadata only; frames
  decompressed when used), north-up frames, the CRS, times and gaps;
- :mod:`.windows`: gap-aware windows and ISO time-range splits;
- :mod:`.synthetic`: :func:`write_spec_store`, stores of synthetic rain in each
  layout real archives use (tests and benchmarks).
"""

from .spec import SPEC_VERSION, STANDARD_NAMES, Quantity, quantity_of
from .store import SpecStore, SpecStoreError, is_zarr_store, parse_storage_options
from .synthetic import write_spec_store
from .windows import gap_summary, parse_time_range, regular_runs, split_windows, window_starts

__all__ = [
    "SPEC_VERSION",
    "STANDARD_NAMES",
    "Quantity",
    "SpecStore",
    "SpecStoreError",
    "gap_summary",
    "is_zarr_store",
    "parse_storage_options",
    "parse_time_range",
    "quantity_of",
    "regular_runs",
    "split_windows",
    "window_starts",
    "write_spec_store",
]
