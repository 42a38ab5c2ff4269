"""Step 1 of a nowcast: read frames from what a user points at.

:func:`read_input` detects the input kind (:func:`detect_kind`) and hands the
paths to the reader of that kind, one module each under
:mod:`diffcast.pipeline.readers`:

- ``images``: a folder of numbered images (:mod:`~diffcast.pipeline.readers.images`);
- ``npy`` and ``h5``: arrays, SEVIR files included (:mod:`~diffcast.pipeline.readers.arrays`);
- ``radar``: radar files, ODIM and KNMI HDF5 included, decoded lazily
  (:mod:`~diffcast.pipeline.readers.radar`);
- ``zarr``: a radar archive in the mlcast Zarr spec, a local folder or a URL
  (``s3://...``), read lazily (:mod:`~diffcast.pipeline.readers.zarr`).

Every reader returns a :class:`~diffcast.pipeline.readers.base.RawInput`. Radar
files and Zarr stores keep their georeferencing (a :class:`~diffcast.geo.ProjectedGrid`);
the other kinds have none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .readers.arrays import H5_SUFFIXES, _read_h5, _read_npy
from .readers.base import INPUT_KINDS, RawInput
from .readers.images import IMAGE_SUFFIXES, _input_subfolder, _read_images
from .readers.radar import _is_radar_h5, _read_radar
from .readers.zarr import _read_zarr

log = logging.getLogger(__name__)


def _radar_named(files: Sequence[Path]) -> bool:
    """True when image-suffixed ``files`` are radar files by name (FMI GeoTIFF ``201609281600_FINUTM.tif``)."""
    from ..data.radar import detect_format

    try:
        detect_format(files)
    except ValueError:
        return False
    return True


def detect_kind(paths: Sequence[str | os.PathLike[str]]) -> str:
    """Guess the input kind of ``paths`` (see :data:`INPUT_KINDS`).

    Files named as a radar format are radar even when their suffix is an image's: a
    folder of FMI GeoTIFFs (``.tif``) is read by pysteps' importer with its
    georeferencing, not as grey-scale pictures.
    """
    from ..data.mlcast import is_zarr_store

    if len(paths) == 1 and is_zarr_store(paths[0]):
        return "zarr"
    if len(paths) > 1 and any(is_zarr_store(p) for p in paths):
        raise ValueError("a Zarr store holds the whole time series; give one store, not a list")
    ps = [Path(p) for p in paths]
    if len(ps) == 1:
        p = ps[0]
        if p.is_dir():
            if _input_subfolder(p) is not None:
                return "images"
            files = [q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")]
            if files and all(q.suffix.lower() in IMAGE_SUFFIXES for q in files) and not _radar_named(files):
                return "images"
            return "radar"
        if p.suffix.lower() == ".npy":
            return "npy"
        if p.suffix.lower() in H5_SUFFIXES:
            return "radar" if _is_radar_h5(p) else "h5"
        if p.suffix.lower() in IMAGE_SUFFIXES and not _radar_named(ps):
            raise ValueError(f"{p} is a single image; give the folder holding the numbered frames")
        return "radar"
    if any(p.is_dir() for p in ps):
        raise ValueError("give either one folder or a list of files, not several folders")
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in ps) and not _radar_named(ps):
        raise ValueError("image frames are read from a folder of numbered files; give the folder, not the files")
    if any(p.suffix.lower() == ".npy" for p in ps) or any(p.suffix.lower() in H5_SUFFIXES and not _is_radar_h5(p) for p in ps):
        raise ValueError("give one .npy or HDF5 file (holding all frames), not a list")
    return "radar"


def _is_store_input(paths: Sequence[str | os.PathLike[str]]) -> bool:
    """True when ``paths`` name one Zarr store (a store folder or a URL)."""
    from ..data.mlcast import is_zarr_store

    return any(is_zarr_store(p) for p in paths)


def read_input(
    paths: Sequence[str | os.PathLike[str]],
    kind: str | None = None,
    *,
    h5_key: str | None = None,
    sample_index: int | None = None,
    radar_format: str | None = None,
    layout: str = "auto",
    start_frame: int | None = None,
    radar_pattern: str | None = None,
    standard_name: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> RawInput:
    """Read nowcast input frames from files (layouts: the reader modules, :mod:`diffcast.pipeline.readers`).

    Radar files are indexed by time first (from their names; ODIM files: their
    ``/what`` attributes) and decoded only when :func:`prepare_input` uses them;
    one file (the last, or ``start_frame``) is decoded here for the grid and units.

    Parameters
    ----------
    paths : sequence of path-like
        One folder or file, a list of radar files, or one Zarr store (a folder or
        a URL such as ``s3://bucket/archive.zarr``).
    kind : str, optional
        Force the input kind (one of :data:`INPUT_KINDS`); guessed when omitted.
    h5_key : str, optional
        Dataset path inside an HDF5 file.
    sample_index : int, optional
        Sequence to take from an ``(N, T, ...)`` or ``(N, H, W, T)`` array (may be
        omitted when ``N`` is 1).
    radar_format : str, optional
        pysteps importer name for radar files (guessed from the file names otherwise).
    radar_pattern : str, optional
        Shell pattern on the file names picking one product of a folder holding several.
    layout : {"auto", "time-first", "time-last"}
        Axis order of .npy/HDF5 arrays. ``"auto"``: time first, except the SEVIR
        layout (a ``vil`` dataset ``(N, H, W, T)`` of uint8 with square frames);
        a shape that reads as square frames only with time last is an error.
    start_frame : int, optional
        The first input frame :func:`prepare_input` will be given (radar: the file
        decoded for the grid and units, so that no frame outside the window is read).
    standard_name : str, optional
        Zarr stores: the variable's ``standard_name`` when the store holds several.
    storage_options : dict, optional
        Zarr stores at a URL: fsspec options (``{"anon": True, "endpoint_url": ...}``).

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If the input cannot be read or has an unsupported layout.
    """
    if not paths:
        raise ValueError("no input given: pass --input PATH [PATH ...]")
    if kind not in (None, *INPUT_KINDS):
        raise ValueError(f"unknown input kind {kind!r}; choose one of: {', '.join(INPUT_KINDS)}")
    if kind == "zarr" or (kind is None and _is_store_input(paths)):
        if len(paths) != 1:
            raise ValueError(f"zarr input is one store, got {len(paths)} paths")
        raw = _read_zarr(str(paths[0]), standard_name, storage_options)
        log.info("opened %s: %d frame(s) of %dx%d, read lazily", raw.sources[0], *raw.frames.shape)
        return raw
    for name, given in (("--standard-name", standard_name), ("--storage-option", storage_options)):
        if given:
            raise ValueError(f"{name} applies to Zarr stores only; {', '.join(map(str, paths))} is not one")
    ps = [Path(p) for p in paths]
    for p in ps:
        if not p.exists():
            raise FileNotFoundError(f"input {p} does not exist")
    kind = kind or detect_kind(ps)
    if kind not in INPUT_KINDS:
        raise ValueError(f"unknown input kind {kind!r}; choose one of: {', '.join(INPUT_KINDS)}")
    if kind in ("images", "npy", "h5") and len(ps) != 1:
        raise ValueError(f"{kind} input is one {'folder' if kind == 'images' else 'file'}, got {len(ps)} paths")
    if kind == "images":
        if not ps[0].is_dir():
            raise ValueError(f"image input must be a folder of numbered frames, got file {ps[0]}")
        raw = _read_images(ps[0])
    elif kind == "npy":
        raw = _read_npy(ps[0], sample_index, layout)
    elif kind == "h5":
        raw = _read_h5(ps[0], h5_key, sample_index, layout)
    else:
        raw = _read_radar(ps, radar_format, start_frame, radar_pattern)
    if raw.frames.shape[0] < 1 or min(raw.frames.shape[1:]) < 2:
        raise ValueError(f"input frames have unusable shape {raw.frames.shape}")
    log.info(
        "%s %d %s frame(s) of %dx%d from %s", "indexed" if kind == "radar" else "read", raw.frames.shape[0], kind,
        *raw.frames.shape[1:], ps[0] if len(ps) == 1 else f"{len(ps)} files",
    )
    return raw
