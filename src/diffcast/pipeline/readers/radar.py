"""Reader of radar files (a folder or a list), indexed by time.

:class:`diffcast.data.radar.RadarSeries` takes the time stamps from the file
names (ODIM files: from their ``/what`` attributes) and the pysteps importers
(one per format, :data:`diffcast.data.radar.formats.RADAR_FORMATS`; none is
repeated here) decode a file only when its frame is used, so a long folder
costs the frames a nowcast needs. Values in dBZ or rain rate are mapped to
``[0, 1]`` through the declared transform
(:data:`diffcast.data.transforms.RADAR_DBZ_META`); the record keeps the files'
quantity (mm/h or dBZ), the no-data mask and the georeferencing of the pysteps
metadata (projection, extent, ``yorigin``) as a :class:`~diffcast.geo.ProjectedGrid`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...geo import ProjectedGrid
from .base import RawInput

log = logging.getLogger(__name__)


def _natural_key(path: Path) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def _is_odim(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return "what" in fh and "dataset1" in fh
    except (OSError, RuntimeError):  # h5py raises RuntimeError on a damaged heap: not a readable ODIM file
        return False


#: HDF5 radar formats known by their file names (their contents need not be ODIM-complete:
#: pysteps reads MeteoSwiss HDF5 without a root ``what`` group, the time comes from the name).
_NAMED_H5_FORMATS = ("knmi", "dwd_hdf5", "mch_hdf5")


def _is_radar_h5(path: Path) -> bool:
    """An ODIM composite, or a KNMI, DWD or MeteoSwiss radar file by its name
    (``RAD_NL25_RAP_NA_201008260000.h5``, ``20250604_1700_RY.h5``, ``RZC241231200VL.801.h5``)."""
    from ...data.radar import RADAR_FORMATS

    return any(RADAR_FORMATS[f].match(path) for f in _NAMED_H5_FORMATS) or _is_odim(path)


def _read_radar(paths: Sequence[Path], fmt: str | None, probe: int | None = None, pattern: str | None = None) -> RawInput:
    """Index radar files by time and decode one (``probe``, default the last) for the grid and units.

    The frames come back as lazy array-likes: :func:`prepare_input` decodes only
    the frames it uses. A folder's files are sorted by time; listed files must be
    in time order.
    """
    from ...data import radar

    files: list[Path] = []
    for p in paths:
        files.extend(sorted((q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")), key=_natural_key) if p.is_dir() else [p])
    if not files:
        raise ValueError(f"no radar files found in {', '.join(map(str, paths))}")
    if pattern is not None:
        files = radar.select_files(files, pattern, ", ".join(map(str, paths)))
    series = radar.RadarSeries(files, fmt, sort=any(p.is_dir() for p in paths))
    n = len(series)
    first = probe if probe is not None and 0 <= probe < n else n - 1
    series.frame(first)
    shape = series.grid_shape
    meta = series.meta
    sources = [str(f) for f in series.paths]
    notes: list[str] = []
    grid = _radar_grid(series.source, shape, sources[first], notes)
    return RawInput(
        series.lazy("data"), "radar", sources, meta=meta, times=list(series.times),
        timestep_min=float(series.timestep_min), pixel_km=meta.pixel_km, notes=notes, grid=grid,
        mask=series.lazy("mask"), quantity=series.quantity,
    )


def _radar_grid(source: dict[str, Any], shape: Sequence[int], first: str, notes: list[str]) -> ProjectedGrid | None:
    """Georeferencing of the native radar grid from the first file's pysteps metadata (``None`` when it has none)."""
    try:
        grid = ProjectedGrid.from_pysteps(
            source, tuple(shape), source=f"pysteps {source.get('format', 'radar')} metadata of {Path(first).name}"
        )
    except ValueError as exc:
        notes.append(f"no georeferencing: {exc}")
        log.warning("radar files without usable georeferencing (%s): forecast.nc gets plain x/y in km", exc)
        return None
    notes.extend(grid.notes)
    return grid
