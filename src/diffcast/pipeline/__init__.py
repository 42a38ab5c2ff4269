"""The forecast pipeline: from input files to nowcast files, one stage per module.

::

    read      readers/{images,arrays,radar,zarr}.py -> RawInput: frames (t, y, x), grid, mask, units
              inputs.py picks the reader (detect_kind, read_input)
    prepare   prepare.py (+ grid.py, units.py)  -> PreparedInput: model space, model grid and step
    model     model.py (make_nowcaster)         -> a Nowcaster: baseline or checkpoint, its grid
    predict   Nowcaster.predict (inference.py)  -> motion / backbone (mu) -> residual sampling
                                                   (members, memory-capped, seeded) -> members
    write     run.py (run_nowcast)              -> physical units, NaN outside coverage, then the
              writers (diffcast.writers: netcdf or zarr, gif/panel images, html page, staged output)

Each stage is usable on its own, and imports point one way: ``run`` -> ``inputs``,
``model``, ``prepare`` -> ``grid``, ``units`` -> ``readers`` -> :mod:`diffcast.data`,
:mod:`diffcast.geo`; ``run`` -> :mod:`diffcast.writers`. Nothing imports back up this
chain: the readers and the writers know nothing of the pipeline. :func:`nowcast_to_files`
is the whole road (the Python ``diffcast nowcast``); the array-in, array-out face
is :func:`diffcast.nowcast` (:mod:`diffcast.api`).

This package replaces ``diffcast.nowcasting``, which remains as a deprecated alias.
"""

from .grid import ASPECT_TOL, fit_grid, fit_grid_masked, fit_projected_grid, grid_window
from .inputs import detect_kind, read_input
from .model import make_nowcaster
from .prepare import NOMINAL_ANALYSIS_TIME, PreparedInput, prepare_input
from .readers.arrays import ARRAY_LAYOUTS, H5_SUFFIXES, SEVIR_DOMAIN_KM, SEVIR_KEY
from .readers.base import INPUT_KINDS, RawInput
from .readers.images import IMAGE_SUFFIXES
from .run import nowcast_raw, nowcast_to_files, run_nowcast, software_versions
from .units import (
    OUTPUT_UNITS,
    RAINRATE_THRESHOLDS,
    convert_units,
    output_meta,
    rain_rate_meta,
    threshold_code,
)

__all__ = [
    "ARRAY_LAYOUTS",
    "ASPECT_TOL",
    "H5_SUFFIXES",
    "IMAGE_SUFFIXES",
    "INPUT_KINDS",
    "NOMINAL_ANALYSIS_TIME",
    "OUTPUT_UNITS",
    "RAINRATE_THRESHOLDS",
    "SEVIR_DOMAIN_KM",
    "SEVIR_KEY",
    "PreparedInput",
    "RawInput",
    "convert_units",
    "detect_kind",
    "fit_grid",
    "fit_grid_masked",
    "fit_projected_grid",
    "grid_window",
    "make_nowcaster",
    "nowcast_raw",
    "nowcast_to_files",
    "output_meta",
    "prepare_input",
    "rain_rate_meta",
    "read_input",
    "run_nowcast",
    "software_versions",
    "threshold_code",
]
