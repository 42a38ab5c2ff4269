"""From input files to nowcast files: the library half of ``diffcast nowcast``.

Three steps, each usable on its own:

1. :func:`read_input` reads frames from what a user points at
   (:class:`RawInput`):

   - a folder of numbered images (``0.png``, ``1.png``, ...; grey value = model
     value x 255, as in the SEVIR demo folders). A folder holding ``preds/``
     (the layout of ``sevir_demo/demo_N``) is read through
     :func:`diffcast.data.images.read_image_sequence`: its ``preds/`` frames are
     the inputs and ``targets/`` (when present) the observed future;
   - radar files (a folder or a list) indexed by time
     (:class:`diffcast.data.radar.RadarSeries`: time stamps from the file names,
     ODIM files from their ``/what`` attributes) and decoded by the pysteps
     importers only when used, so a long folder costs the frames a nowcast
     needs; values in dBZ or rain rate are mapped to ``[0, 1]`` through the
     declared transform (:data:`diffcast.data.transforms.RADAR_DBZ_META`), and
     the record keeps the files' quantity (mm/h or dBZ) and no-data mask;
   - ``.npy`` arrays ``(T, H, W)`` or ``(T, 1, H, W)`` (``(N, T, ...)`` with
     ``sample_index``): float values must already be in ``[0, 1]`` model space,
     ``uint8`` values are 8-bit codes and are divided by 255 (the encoding of
     SEVIR VIL and of the CIKM/Shanghai images). ``layout="time-last"`` reads
     ``(H, W, T)`` and ``(N, H, W, T)`` instead; a 3-D shape whose time axis
     cannot be told (``(384, 384, 49)``) is an error asking for the layout;
   - HDF5 files with the same array layouts at ``h5_key`` (the key may be
     omitted when the file holds one dataset of 3 or more dimensions), read one
     sequence at a time. A SEVIR file (``vil`` of ``(N, H, W, T)`` uint8, time
     last, beside ``id``) is recognised: event ``sample_index`` is read with the
     SEVIR metadata (VIL code = 255 x, 5 min, 384 km across) and, unless
     ``start_frame`` says otherwise, its first ``t_in`` frames are the input and
     the following ones the observed future (the dataset's first window).
     ODIM radar HDF5 files are recognised and read as radar.

   Radar files keep the georeferencing of the pysteps metadata (projection,
   extent, ``yorigin``) as a :class:`~diffcast.io_netcdf.ProjectedGrid`; the other
   kinds have none.

2. :func:`prepare_input` fits the frames to a model: the last ``t_in`` frames
   (more are dropped, and this is logged; ``start_frame`` picks another window
   and makes the frames after it the observed future), the model's time step (frames are
   subsampled when the model step is a multiple of the input step), the model's
   units (only between metadata with the same threshold-space unit) and grid
   (area-average resize when the aspect ratio matches, optionally after a
   centre crop; a projected grid and the no-data mask follow the crop and
   resize). Only the frames used must be gap-free. What cannot be fitted is a
   :class:`ValueError` naming the mismatch and the fix.

3. :func:`run_nowcast` predicts and writes ``forecast.nc`` (CF-1.8),
   ``forecast.gif``, ``panel.png``, ``forecast.html`` and ``run.json`` into a temporary folder
   that is renamed to the output folder at the end, so a failure leaves no
   partial output. Outputs are in the input's quantity (rain rate in mm/h for
   rain-rate radar files, dBZ for reflectivity; ``units`` chooses) and NaN
   where the last input frame has no data (outside radar coverage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.contract import DatasetMeta
from .data.transforms import SEVIR_META, get_meta
from .io_netcdf import ProjectedGrid

log = logging.getLogger(__name__)

#: Input kinds understood by :func:`read_input`.
INPUT_KINDS = ("images", "radar", "npy", "h5")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: Axis orders of .npy/HDF5 arrays (``layout`` of :func:`read_input`, ``--layout``).
ARRAY_LAYOUTS = ("auto", "time-first", "time-last")
#: Name of the SEVIR VIL dataset (``(N, H, W, T)`` uint8, time last).
SEVIR_KEY = "vil"
#: Width of the SEVIR domain in km (384 pixels of 1 km).
SEVIR_DOMAIN_KM = 384.0
#: Analysis time used when the input carries no timestamps (stated in the outputs).
NOMINAL_ANALYSIS_TIME = dt.datetime(2000, 1, 1, 0, 0, 0)
#: Relative tolerance on aspect ratios when resizing.
ASPECT_TOL = 0.02
#: Units of the outputs (``units`` of :func:`run_nowcast`, ``--units``): ``auto`` = the input's quantity.
OUTPUT_UNITS = ("auto", "mm/h", "dBZ")
#: Default exceedance thresholds of rain-rate outputs (mm/h); the probability pictures use the second.
RAINRATE_THRESHOLDS = (0.5, 1.0, 5.0, 10.0)


@dataclass
class RawInput:
    """Frames as read from the user's files, before fitting them to a model.

    Attributes
    ----------
    frames : ndarray
        ``(T, H, W)`` float32 in ``[0, 1]`` in the encoding of :attr:`meta`
        (or of the model's metadata when :attr:`meta` is ``None``).
    kind : str
        One of :data:`INPUT_KINDS`.
    sources : list of str
        Files read, in time order (one per frame for images and radar files).
    meta : DatasetMeta or None
        Metadata of the values when the files declare it (radar); ``None`` when
        the values are taken to be in the model's encoding (images, arrays).
    times : list of datetime or None
        Valid time of each frame when the files carry timestamps.
    timestep_min : float or None
        Minutes between frames when known.
    y_true : ndarray or None
        ``(T_out, H, W)`` observed future when the input provides it (demo folders).
    pixel_km : float or None
        Grid spacing of the frames when known.
    notes : list of str
        Things done to the data worth recording (missing values filled, ...).
    grid : ProjectedGrid or None
        Map projection of the ``(H, W)`` frames (radar files with pysteps
        georeferencing); ``None`` when the input has none.
    start_frame : int or None
        First input frame the input kind suggests (0 for SEVIR events); ``None``:
        the last frames.
    mask : ndarray or None
        ``(T, H, W)`` bool, True where a frame has no data (outside radar
        coverage); ``None``: every pixel is covered (images, arrays).
    quantity : str or None
        What the files hold when they say (radar: ``"mm/h"`` for rain rates and
        accumulations, ``"dBZ"`` for reflectivity); outputs are given in it by default.

    Notes
    -----
    Radar frames (and their mask) are array-likes that decode a file the first
    time its frame is indexed (:class:`diffcast.data.radar.LazyFrames`), so
    :func:`prepare_input` reads only the frames it uses.
    """

    frames: Any
    kind: str
    sources: list[str]
    meta: DatasetMeta | None = None
    times: list[dt.datetime] | None = None
    timestep_min: float | None = None
    y_true: np.ndarray | None = None
    pixel_km: float | None = None
    notes: list[str] = field(default_factory=list)
    grid: ProjectedGrid | None = None
    start_frame: int | None = None
    mask: Any = None
    quantity: str | None = None


@dataclass
class PreparedInput:
    """Frames fitted to a model's grid, units and time step.

    Attributes
    ----------
    x_in : ndarray
        ``(T_in, H, W)`` float32 in ``[0, 1]`` model space.
    meta : DatasetMeta
        The model's metadata with ``timestep_min`` and ``pixel_km`` of these frames.
    analysis_time : datetime
        Valid time of the last frame (nominal when :attr:`time_nominal`).
    times : list of datetime
        Valid times of the ``T_in`` frames.
    time_nominal : bool
        True when the input carried no timestamps.
    kind : str
        Input kind (see :data:`INPUT_KINDS`).
    sources : list of str
        Files of the frames used (all files read for array inputs).
    y_true : ndarray or None
        ``(T, H, W)`` observed future on the model grid, when known.
    raw_shape : tuple of int
        ``(T, H, W)`` of the frames as read.
    notes : list of str
        What was done to fit the frames (cropping, resizing, frames dropped).
    grid : ProjectedGrid or None
        Map projection of the model grid (the input's, after cropping and resizing).
    mask : ndarray or None
        ``(T_in, H, W)`` bool on the model grid, True where a frame has no data (a
        resized pixel has data when at least half its area has); ``None``: all covered.
    quantity : str or None
        The input's quantity (:attr:`RawInput.quantity`).
    """

    x_in: np.ndarray
    meta: DatasetMeta
    analysis_time: dt.datetime
    times: list[dt.datetime]
    time_nominal: bool
    kind: str
    sources: list[str]
    raw_shape: tuple[int, ...]
    y_true: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    grid: ProjectedGrid | None = None
    mask: np.ndarray | None = None
    quantity: str | None = None

    @property
    def coverage(self) -> np.ndarray | None:
        """``(H, W)`` bool, True where the last input frame has data; ``None`` when the input has no mask."""
        return None if self.mask is None else ~np.asarray(self.mask[-1], dtype=bool)


# ----------------------------------------------------------------------------- reading
def _natural_key(path: Path) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


@dataclass(frozen=True)
class _Layout:
    """How the axes of a .npy/HDF5 array map to ``(T, H, W)``."""

    time_last: bool  # (..., H, W, T)
    samples: bool  # a leading sequence axis N
    channel: bool  # a channel axis of one, (T, 1, H, W)
    sevir: bool  # the SEVIR VIL layout (N, H, W, T) uint8

    @property
    def text(self) -> str:
        axes = "H, W, T" if self.time_last else "T, 1, H, W" if self.channel else "T, H, W"
        return f"({'N, ' if self.samples else ''}{axes})"


def _array_layout(shape: tuple[int, ...], dtype: Any, what: str, name: str, layout: str) -> _Layout:
    """Decide the axis order of an array from its shape, dtype and name (see :func:`read_input`)."""
    if layout not in ARRAY_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(ARRAY_LAYOUTS)}")
    nd = len(shape)
    sevir_like = nd == 4 and name.rsplit("/", 1)[-1].lower() == SEVIR_KEY and np.dtype(dtype) == np.uint8
    if layout == "time-last":
        if nd not in (3, 4):
            raise ValueError(f"{what} has shape {shape}; --layout time-last reads (H, W, T) or (N, H, W, T) arrays")
        return _Layout(True, nd == 4, False, sevir_like)
    if layout == "auto":
        if sevir_like and shape[1] == shape[2] and shape[3] != shape[1]:
            return _Layout(True, True, False, True)
        tail = shape[1:] if nd == 4 and shape[1] != 1 else shape if nd == 3 else None
        # Square frames one way and not the other: a time-last array would be misread as time-first.
        if tail is not None and tail[0] == tail[1] != tail[2]:
            a, b, c = tail
            raise ValueError(
                f"{what} has shape {shape} and its time axis cannot be identified (time first: {a} frames of "
                f"{b}x{c}; time last: {c} frames of {a}x{b}); pass --layout time-first or --layout time-last"
            )
    if nd == 5:
        if shape[2] != 1:
            raise ValueError(f"{what}: expected one channel (N, T, 1, H, W), got shape {shape}")
        return _Layout(False, True, True, False)
    if nd == 4:
        return _Layout(False, shape[1] != 1, shape[1] == 1, False)
    if nd == 3:
        return _Layout(False, False, False, False)
    raise ValueError(f"{what} must be (T, H, W) or (T, 1, H, W), got shape {shape}")


def _read_array(
    arr: Any, what: str, sample_index: int | None, layout: str = "auto", name: str = ""
) -> tuple[np.ndarray, _Layout, int | None]:
    """A .npy (memory-mapped) or HDF5 array -> ``((T, H, W) float32 in [0, 1], layout, sequence index)``.

    Only the chosen sequence is read from an ``(N, ...)`` array.
    """
    shape = tuple(int(v) for v in arr.shape)
    lay = _array_layout(shape, arr.dtype, what, name, layout)
    index = None
    if lay.samples:
        n = shape[0]
        if sample_index is None and n != 1:
            raise ValueError(
                f"{what} has shape {shape}: read as {lay.text} holding {n} "
                f"{'SEVIR events' if lay.sevir else 'sequences'}; choose one with --sample-index I (0 to {n - 1})"
            )
        index = 0 if sample_index is None else int(sample_index)
        if not -n <= index < n:
            raise ValueError(f"--sample-index {sample_index} out of range for {n} sequences in {what}")
        index %= n
        a = np.asarray(arr[index])
    else:
        if sample_index not in (None, 0):
            raise ValueError(f"{what} holds one sequence (shape {shape}); --sample-index {sample_index} does not apply")
        a = np.asarray(arr[()])
    if lay.time_last:
        a = np.moveaxis(a, -1, 0)
    elif lay.channel:
        a = a[:, 0]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0, lay, index
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"{what} has dtype {a.dtype}; expected float values in [0, 1] or uint8 codes (0-255, divided by 255)"
        )
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf values; fill missing data (e.g. with 0) first")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-5 or hi > 1.0 + 1e-5:
        raise ValueError(
            f"{what} has values in [{lo:.4g}, {hi:.4g}]; float input must be scaled to [0, 1] "
            "(model value = physical threshold-space value / meta.scale), or given as uint8 codes"
        )
    return np.clip(a, 0.0, 1.0), lay, index


def _read_npy(path: Path, sample_index: int | None, layout: str = "auto") -> RawInput:
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise ValueError(f"{path} is not a plain numeric .npy array: {exc}") from exc
    frames, _, _ = _read_array(arr, str(path), sample_index, layout)
    return RawInput(frames, "npy", [str(path)])


def _h5_datasets(fh: Any) -> list[str]:
    import h5py

    names: list[str] = []
    fh.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _is_odim(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return "what" in fh and "dataset1" in fh
    except OSError:
        return False


def _is_radar_h5(path: Path) -> bool:
    """An ODIM composite, or a KNMI radar file by its name (``RAD_NL25_RAP_NA_201008260000.h5``)."""
    from .data.radar import RADAR_FORMATS

    return bool(RADAR_FORMATS["knmi"].match(path)) or _is_odim(path)


def _sevir_event_id(fh: Any, key: str, index: int) -> str | None:
    """The ``id`` entry of event ``index`` beside a SEVIR ``vil`` dataset, when the file has one."""
    parent = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    ids = fh.get(parent + "id")
    if ids is None or getattr(ids, "ndim", 0) != 1 or ids.shape[0] != fh[key].shape[0]:
        return None
    v = ids[index]
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _read_h5(path: Path, key: str | None, sample_index: int | None, layout: str = "auto") -> RawInput:
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file: {exc}") from exc
    with fh:
        names = _h5_datasets(fh)
        if key is None:
            # A SEVIR file holds vil (N, H, W, T) beside id (N,): one dataset with frames.
            frames_like = [n for n in names if fh[n].ndim >= 3]
            if len(frames_like) == 1:
                key = frames_like[0]
            elif len(names) == 1:
                key = names[0]
            else:
                raise ValueError(
                    f"{path} holds {len(names)} datasets ({', '.join(names[:10]) or 'none'}); choose one with --h5-key"
                )
        if key not in fh or not isinstance(fh[key], h5py.Dataset):
            raise ValueError(f"{path} has no dataset {key!r}; datasets: {', '.join(names[:10]) or 'none'}")
        what = f"{path}:{key}"
        frames, lay, index = _read_array(fh[key], what, sample_index, layout, name=key)
        if not lay.sevir:
            return RawInput(frames, "h5", [what if index is None else f"{what}[{index}]"])
        n_events = fh[key].shape[0]
        event_id = _sevir_event_id(fh, key, int(index))
    # SEVIR: VIL codes / 255 are the SEVIR encoding; the domain is 384 km across whatever the pixel count.
    t, h, w = frames.shape
    pixel_km = SEVIR_DOMAIN_KM / w
    meta = dataclasses.replace(
        SEVIR_META,
        pixel_km=pixel_km,
        transform=SEVIR_META.transform + f"; SEVIR file, {h}x{w} px of {pixel_km:g} km",
    )
    label = f"event {index}" + (f" (id {event_id})" if event_id else "") + f" of {n_events}"
    return RawInput(
        frames, "h5", [f"{what}[{index}]"], meta=meta, timestep_min=float(SEVIR_META.timestep_min),
        pixel_km=pixel_km, start_frame=0,
        notes=[f"SEVIR layout (N, H, W, T) in {what}: {label}, {t} frames of {h}x{w}, VIL code = 255 x"],
    )


def _input_subfolder(folder: Path) -> Path | None:
    from .data.images import INPUT_DIRS

    return next((folder / n for n in INPUT_DIRS if (folder / n).is_dir()), None)


def _read_images(folder: Path) -> RawInput:
    from .data import images

    inp = _input_subfolder(folder)
    if inp is not None:
        x_in, y_true = images.read_image_sequence(folder)
        raw = RawInput(np.asarray(x_in, dtype=np.float32), "images", [str(p) for p in images.list_frames(inp)])
        raw.y_true = None if y_true is None else np.asarray(y_true, dtype=np.float32)
        return raw
    frames = images.read_image_frames(folder)
    return RawInput(np.asarray(frames, dtype=np.float32), "images", [str(p) for p in images.list_frames(folder)])


def _read_radar(paths: Sequence[Path], fmt: str | None, probe: int | None = None, pattern: str | None = None) -> RawInput:
    """Index radar files by time and decode one (``probe``, default the last) for the grid and units.

    The frames come back as lazy array-likes: :func:`prepare_input` decodes only
    the frames it uses. A folder's files are sorted by time; listed files must be
    in time order.
    """
    from .data import radar

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


def detect_kind(paths: Sequence[str | os.PathLike[str]]) -> str:
    """Guess the input kind of ``paths`` (see :data:`INPUT_KINDS`)."""
    ps = [Path(p) for p in paths]
    if len(ps) == 1:
        p = ps[0]
        if p.is_dir():
            if _input_subfolder(p) is not None:
                return "images"
            files = [q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")]
            if files and all(q.suffix.lower() in IMAGE_SUFFIXES for q in files):
                return "images"
            return "radar"
        if p.suffix.lower() == ".npy":
            return "npy"
        if p.suffix.lower() in H5_SUFFIXES:
            return "radar" if _is_radar_h5(p) else "h5"
        if p.suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"{p} is a single image; give the folder holding the numbered frames")
        return "radar"
    if any(p.is_dir() for p in ps):
        raise ValueError("give either one folder or a list of files, not several folders")
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in ps):
        raise ValueError("image frames are read from a folder of numbered files; give the folder, not the files")
    if any(p.suffix.lower() == ".npy" for p in ps) or any(p.suffix.lower() in H5_SUFFIXES and not _is_radar_h5(p) for p in ps):
        raise ValueError("give one .npy or HDF5 file (holding all frames), not a list")
    return "radar"


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
) -> RawInput:
    """Read nowcast input frames from files (see the module docstring for the layouts).

    Radar files are indexed by time first (from their names; ODIM files: their
    ``/what`` attributes) and decoded only when :func:`prepare_input` uses them;
    one file (the last, or ``start_frame``) is decoded here for the grid and units.

    Parameters
    ----------
    paths : sequence of path-like
        One folder or file, or a list of radar files.
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

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If the input cannot be read or has an unsupported layout.
    """
    if not paths:
        raise ValueError("no input given: pass --input PATH [PATH ...]")
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


# ----------------------------------------------------------------------------- fitting
def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from .data.sevir import resize_frames

    h, w = size
    h0, w0 = frames.shape[-2:]
    if (h0, w0) == (h, w):
        return frames
    # The data layer's resize: area averaging down, bilinear up.
    method = "area" if (h <= h0 and w <= w0) else "bilinear"
    return resize_frames(np.ascontiguousarray(frames, dtype=np.float32), (h, w), method)


def grid_window(shape: Sequence[int], size: tuple[int, int], crop: str = "none") -> tuple[int, int, int, int] | None:
    """The central window :func:`fit_grid` cuts from ``shape`` frames before resizing to ``size``.

    Returns
    -------
    (top, left, height, width) or None
        ``None`` when the frames are resized whole (same aspect ratio within 2 %).

    Raises
    ------
    ValueError
        If the aspect ratios differ and ``crop`` is ``"none"``.
    """
    if crop not in ("none", "center"):
        raise ValueError(f"crop must be 'none' or 'center', got {crop!r}")
    h, w = size
    h0, w0 = (int(v) for v in shape)
    if (h0, w0) == (h, w):
        return None
    aspect, aspect0 = h / w, h0 / w0
    if abs(aspect0 / aspect - 1.0) <= ASPECT_TOL:
        return None
    if crop != "center":
        raise ValueError(
            f"input frames are {h0}x{w0} pixels (aspect {aspect0:.3g}) but the model grid is {h}x{w} "
            f"(aspect {aspect:.3g}); area-average resizing needs the same aspect ratio: pass "
            "--crop center to use the central window, or choose a grid that matches (--size for baselines)"
        )
    if aspect0 > aspect:
        hh = max(1, int(round(w0 * aspect)))
        return (h0 - hh) // 2, 0, hh, w0
    ww = max(1, int(round(h0 / aspect)))
    return 0, (w0 - ww) // 2, h0, ww


def fit_grid(frames: np.ndarray, size: tuple[int, int], crop: str = "none") -> tuple[np.ndarray, float, list[str]]:
    """Resize ``(T, H0, W0)`` frames to ``size`` by area averaging.

    Parameters
    ----------
    frames : ndarray
        ``(T, H0, W0)``.
    size : (int, int)
        Target ``(H, W)``.
    crop : str
        ``"none"``: the aspect ratios must match (within 2 %); ``"center"``:
        cut the largest central window with the target aspect ratio first
        (:func:`grid_window`).

    Returns
    -------
    frames : ndarray
        ``(T, H, W)`` float32.
    factor : float
        Input pixels per output pixel (multiply the input pixel size by it).
    notes : list of str
    """
    out, _, factor, notes = fit_grid_masked(frames, None, size, crop)
    return out, factor, notes


def fit_grid_masked(
    frames: np.ndarray, nodata: np.ndarray | None, size: tuple[int, int], crop: str = "none"
) -> tuple[np.ndarray, np.ndarray | None, float, list[str]]:
    """:func:`fit_grid` for frames with a no-data mask.

    Values are averaged over the pixels with data only, and a resized pixel has
    data when at least half its area has (the rule of
    :func:`diffcast.data.radar.regrid`); pixels without data are 0.

    Parameters
    ----------
    frames : ndarray
        ``(T, H0, W0)``.
    nodata : ndarray or None
        ``(T, H0, W0)`` bool, True = no data; ``None``: all pixels have data.
    size, crop
        As in :func:`fit_grid`.

    Returns
    -------
    frames : ndarray
        ``(T, H, W)`` float32.
    nodata : ndarray or None
        ``(T, H, W)`` bool (``None`` when ``nodata`` was).
    factor : float
    notes : list of str
    """
    window = grid_window(frames.shape[-2:], size, crop)
    h, w = size
    h0, w0 = frames.shape[-2:]
    notes: list[str] = []
    if nodata is not None and nodata.shape != frames.shape:
        raise ValueError(f"no-data mask {nodata.shape} does not match the frames {frames.shape}")
    if (h0, w0) == (h, w):
        return frames, nodata, 1.0, notes
    if window is not None:
        top, left, hh, ww = window
        frames = frames[..., top : top + hh, left : left + ww]
        if nodata is not None:
            nodata = nodata[..., top : top + hh, left : left + ww]
        notes.append(f"cropped the central {hh}x{ww} window of the {h0}x{w0} frames")
        h0, w0 = hh, ww
    if nodata is None or not nodata.any():
        out = _resize(frames, size)
        mask = None if nodata is None else np.zeros((frames.shape[0], h, w), bool)
    else:
        valid = (~nodata).astype(np.float32)
        total = _resize(np.asarray(frames, np.float32) * valid, size)
        frac = _resize(valid, size)
        covered = frac >= 0.5
        out = np.where(covered, total / np.maximum(frac, 1e-6), 0.0).astype(np.float32)
        mask = ~covered
    notes.append(f"resized {h0}x{w0} -> {h}x{w} ({'area average' if h <= h0 else 'bilinear'})")
    return np.clip(out, 0.0, 1.0), mask, h0 / h, notes


def fit_projected_grid(grid: ProjectedGrid, size: tuple[int, int], crop: str = "none") -> ProjectedGrid:
    """The georeferencing of frames after :func:`fit_grid` (same crop window, same resize)."""
    window = grid_window(grid.shape, size, crop)
    if window is not None:
        grid = grid.crop(*window)
    return grid if tuple(grid.shape) == tuple(size) else grid.resized(*size)


def convert_units(frames: np.ndarray, src: DatasetMeta | None, dst: DatasetMeta, model: str = "the model") -> np.ndarray:
    """Map ``[0, 1]`` values encoded by ``src`` metadata to ``dst``'s encoding.

    Values pass through the threshold space (``x * scale``); this is defined only
    when both metadata records use the same threshold-space unit (e.g. dBZ to
    dBZ with different scales). ``src=None`` means the values already use
    ``dst``'s encoding.

    Raises
    ------
    ValueError
        If the units differ (e.g. reflectivity input for a VIL model).
    """
    if src is None or (src.unit == dst.unit and src.scale == dst.scale):
        return frames
    if src.unit != dst.unit:
        raise ValueError(
            f"{model} works in {dst.unit} ({dst.name} data) but the input is {src.unit} ({src.name}); "
            "there is no conversion rule between them: use a model trained on this quantity or a baseline"
        )
    return np.clip(frames * (src.scale / dst.scale), 0.0, 1.0).astype(np.float32)


def _parse_time(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"analysis time {value!r} is not an ISO date-time like 2024-05-01T12:00") from exc
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def prepare_input(
    raw: RawInput,
    *,
    t_in: int,
    size: tuple[int, int],
    meta: DatasetMeta,
    crop: str = "none",
    analysis_time: str | dt.datetime | None = None,
    model_name: str = "the model",
    start_frame: int | None = None,
    t_out: int | None = None,
) -> PreparedInput:
    """Fit raw frames to a model: frames, time step, units and grid.

    Parameters
    ----------
    raw : RawInput
        From :func:`read_input`.
    t_in : int
        Frames the model observes; the last ``t_in`` frames are used unless
        ``start_frame`` (or the input's :attr:`RawInput.start_frame`) says otherwise.
    size : (int, int)
        Model grid ``(H, W)``.
    meta : DatasetMeta
        The model's metadata (units, ``timestep_min``, ``pixel_km``).
    crop : str
        ``"none"`` or ``"center"`` (see :func:`fit_grid`).
    analysis_time : str or datetime, optional
        Valid time of the last frame for inputs without timestamps (ISO string).
    model_name : str
        Used in error messages.
    start_frame : int, optional
        Index (0-based, in the input's own frames) of the first input frame: the
        ``t_in`` frames from it (every ``k``-th when the model step is ``k`` input
        steps) are the input, and the frames after them (up to ``t_out``) the
        observed future (``y_true``). Default: ``raw.start_frame``, else the last frames.
    t_out : int, optional
        Forecast length; limits the observed future taken from the input frames.

    Raises
    ------
    ValueError
        On a mismatch the model cannot handle (too few frames, incompatible time
        step or units, grid without a resampling rule, a window outside the frames).
    """
    frames = raw.frames
    n_all = frames.shape[0]
    times = list(raw.times) if raw.times else None
    # One source file per frame (images, radar): keep the list aligned with the frames used.
    sources = list(raw.sources) if len(raw.sources) == n_all else None
    notes = list(raw.notes)
    step_model = float(meta.timestep_min)
    step_in = raw.timestep_min
    k = 1
    if step_in is not None and abs(step_in - step_model) > 1e-6:
        ratio = step_model / step_in
        k = int(round(ratio))
        if k < 1 or abs(ratio - k) > 1e-6:
            raise ValueError(
                f"input frames are {step_in:g} min apart but {model_name} expects {step_model:g} min "
                f"(meta.timestep_min of {meta.name}); frames can only be subsampled when the model step "
                "is a whole multiple of the input step"
            )
        notes.append(f"took every {k}th frame ({step_in:g} -> {step_model:g} min)")
        log.info("input step %g min, model step %g min: using every %dth frame", step_in, step_model, k)
    start = raw.start_frame if start_frame is None else int(start_frame)
    future: np.ndarray | None = None
    if start is None:
        idx = np.arange(n_all - 1, -1, -k)[::-1]
        n = idx.size
        if n < t_in:
            raise ValueError(
                f"{model_name} needs {t_in} input frames {step_model:g} min apart, got {n}"
                + (f" (after subsampling {n_all} frames)" if n != n_all else "")
            )
        if n > t_in:
            log.info("input has %d frames; using the last %d", n, t_in)
            notes.append(f"used the last {t_in} of {n} frames")
            idx = idx[-t_in:]
    else:
        last = start + k * (t_in - 1)
        if start < 0 or last >= n_all:
            latest = n_all - 1 - k * (t_in - 1)
            raise ValueError(
                f"--start-frame {start}: {model_name} needs {t_in} input frames {step_model:g} min apart"
                + (f" (every {k}th frame)" if k > 1 else "")
                + f" from frame {start}, but the input has frames 0..{n_all - 1}"
                + (f"; choose a start frame from 0 to {latest}" if latest >= 0 else "")
            )
        idx = start + k * np.arange(t_in)
        future = np.arange(last + k, n_all, k)[: t_out if t_out is not None else None]
        notes.append(
            f"used frames {start}..{last} of {n_all} as input"
            + (f" and {future.size} later frame(s) as observed future" if future.size else "")
        )
    all_times = times
    if all_times:
        # Only the frames used must be gap-free: a gap elsewhere in a long folder does not matter.
        all_sources = sources

        def name(i: int) -> str:
            return Path(all_sources[i]).name if all_sources else f"frame {i}"

        j = _spacing_break(all_times, idx, step_model)
        if j is not None:
            a, b = int(idx[j - 1]), int(idx[j])
            d = (all_times[b] - all_times[a]).total_seconds() / 60.0
            raise ValueError(
                f"gap in the radar time series: {d:g} min between {name(a)} and {name(b)} (expected "
                f"{step_model:g} min); sequences never span missing frames: choose a window without a gap "
                "with --start-frame, or leave out the files before the gap"
            )
        if future is not None and future.size:
            j = _spacing_break(all_times, np.concatenate([idx[-1:], future]), step_model)
            if j is not None:
                after = int(future[j - 2]) if j > 1 else int(idx[-1])
                notes.append(f"observed future stops at the gap after {name(after)} ({j - 1} frame(s))")
                future = future[: j - 1]
    frames = np.asarray(frames[idx], dtype=np.float32)
    nodata = None if raw.mask is None else np.asarray(raw.mask[idx], dtype=bool)
    times = [all_times[i] for i in idx] if all_times else None
    sources = [sources[i] for i in idx] if sources else None
    frames = convert_units(frames, raw.meta, meta, model_name)
    frames, nodata, factor, grid_notes = fit_grid_masked(frames, nodata, size, crop)
    notes.extend(grid_notes)
    if nodata is not None and nodata[-1].any():
        notes.append(f"{nodata[-1].mean():.1%} of the last input frame has no radar data (NaN in forecast.nc)")
    # The observed future: frames after the window, else the input's own (demo folders' targets/).
    y_src, y_nodata = None, None
    if future is not None and future.size:
        y_src = np.asarray(raw.frames[future], dtype=np.float32)
        y_nodata = None if raw.mask is None else np.asarray(raw.mask[future], dtype=bool)
    elif idx[-1] == n_all - 1:
        y_src = raw.y_true
    y_true = None
    if y_src is not None:
        with contextlib.suppress(ValueError):
            y_true = fit_grid_masked(convert_units(y_src, raw.meta, meta, model_name), y_nodata, size, crop)[0]
    grid = None
    if raw.grid is not None:
        if tuple(raw.grid.shape) == tuple(raw.frames.shape[-2:]):
            grid = fit_projected_grid(raw.grid, size, crop)
        else:  # pragma: no cover - readers build the grid from the frames they return
            notes.append(f"georeferencing dropped: grid {raw.grid.shape} does not match frames {raw.frames.shape[-2:]}")
    pixel_in = raw.pixel_km if raw.pixel_km is not None else meta.pixel_km
    out_meta = dataclasses.replace(meta, timestep_min=step_model, pixel_km=float(pixel_in) * factor)
    given = _parse_time(analysis_time)
    if times:
        t0 = times[-1]
        t0 = t0.astimezone(dt.timezone.utc).replace(tzinfo=None) if t0.tzinfo else t0
        if given is not None and given != t0:
            notes.append(f"analysis time from the files ({t0.isoformat()}) used instead of the one given")
        nominal = False
    else:
        t0 = given or NOMINAL_ANALYSIS_TIME
        nominal = given is None
        times = [t0 - dt.timedelta(minutes=step_model * (t_in - 1 - i)) for i in range(t_in)]
        if nominal:
            notes.append(f"input has no timestamps; times are relative to a nominal analysis time {t0.isoformat()}")
    return PreparedInput(
        x_in=np.ascontiguousarray(frames, dtype=np.float32),
        meta=out_meta,
        analysis_time=t0,
        times=[t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t for t in times],
        time_nominal=nominal,
        kind=raw.kind,
        sources=sources if sources is not None else list(raw.sources),
        raw_shape=tuple(raw.frames.shape),
        y_true=y_true,
        notes=notes,
        grid=grid,
        mask=nodata,
        quantity=raw.quantity,
    )


def _spacing_break(times: Sequence[dt.datetime], indices: Sequence[int], step_min: float) -> int | None:
    """Position ``j`` of the first pair ``indices[j-1], indices[j]`` whose times are not ``step_min`` apart."""
    for j in range(1, len(indices)):
        d = (times[int(indices[j])] - times[int(indices[j - 1])]).total_seconds() / 60.0
        if abs(d - step_min) > 1e-6:
            return j
    return None


# ----------------------------------------------------------------------------- model choice
def make_nowcaster(
    spec: str,
    raw: RawInput | None = None,
    *,
    t_in: int | None = None,
    t_out: int | None = None,
    size: tuple[int, int] | None = None,
    data_meta: str | None = None,
) -> Any:
    """A :class:`~diffcast.inference.Nowcaster` for a baseline name or a checkpoint path.

    Baselines take their grid from ``size`` (default: the input's own grid),
    ``t_in``/``t_out`` (default 5 and 20), and their metadata from the input
    (radar and SEVIR files), else ``data_meta`` (default ``"sevir"``), with the input's time
    step when the files give it. For checkpoints these are fixed by the model;
    asking for other values is an error.
    """
    from .inference import BASELINES, Nowcaster

    if spec in BASELINES:
        if raw is not None and raw.meta is not None:
            meta = raw.meta
            if data_meta is not None and data_meta != meta.name:
                log.warning("%s input declares its own units (%s); --data-meta %s ignored", raw.kind, meta.name, data_meta)
        else:
            meta = get_meta(data_meta or "sevir")
        if raw is not None and raw.timestep_min is not None:
            meta = dataclasses.replace(meta, timestep_min=float(raw.timestep_min))
        if size is None:
            size = tuple(raw.frames.shape[-2:]) if raw is not None else (128, 128)
        return Nowcaster.from_baseline(
            spec, t_in=t_in or 5, t_out=t_out or 20, channels=1, height=int(size[0]), width=int(size[1]), meta=meta
        )
    nc = Nowcaster.from_checkpoint(spec)
    nc = _native_grid(nc, spec, raw) if size is None else nc
    for key, given, have in (("t_in", t_in, nc.t_in), ("t_out", t_out, nc.t_out)):
        if given is not None and given != have:
            raise ValueError(f"{key}={given} was asked for but the checkpoint {spec} was trained with {key}={have}")
    if size is not None and tuple(size) != (nc.height, nc.width):
        raise ValueError(
            f"--size {size[0]} {size[1]} was asked for but the checkpoint works on {nc.height}x{nc.width}; "
            "inputs are resized to the model grid automatically"
        )
    if data_meta is not None and data_meta != nc.meta.name:
        raise ValueError(f"the checkpoint was trained on {nc.meta.name} data; --data-meta {data_meta} does not apply")
    if nc.channels != 1:
        raise ValueError(f"nowcast files hold one channel; the checkpoint has {nc.channels}")
    return nc


def _native_grid(nc: Any, spec: str, raw: RawInput | None) -> Any:
    """``nc`` rebuilt for the radar input's own grid (zero-padded) when it can run there.

    A fully convolutional model (DiffCast over a parameter-free backbone) trained at
    the input's pixel size forecasts the whole domain at native resolution instead of
    an area average on its training grid; the forecast is cropped back in
    :func:`run_nowcast` (``nc.input_grid``). Other models are returned unchanged.
    """
    from .inference import PIXEL_TOL, GridMismatchError, Nowcaster, padded_grid

    if raw is None or raw.kind != "radar" or raw.pixel_km is None:
        return nc
    h, w = (int(v) for v in raw.frames.shape[-2:])
    if (h, w) == (nc.height, nc.width) or abs(float(raw.pixel_km) / float(nc.meta.pixel_km) - 1.0) > PIXEL_TOL:
        return nc
    hp, wp = padded_grid(h, w)
    try:
        native = Nowcaster.from_checkpoint(spec, grid=(hp, wp))
    except GridMismatchError as exc:
        log.info("%s: forecasting on its own %dx%d grid (%s)", nc.name, nc.height, nc.width, exc)
        return nc
    native.input_grid = (h, w)
    log.info("%s runs on the native %dx%d radar grid (padded to %dx%d)", nc.name, h, w, hp, wp)
    return native


# ----------------------------------------------------------------------------- output units
def rain_rate_meta(meta: DatasetMeta) -> DatasetMeta:
    """``meta`` (reflectivity, ``x * scale`` in dBZ) with rain rate in mm/h as its physical quantity.

    The model-space encoding is unchanged; ``to_physical`` gives
    ``R = (10^(dBZ/10) / 200)^(1/1.6)`` (Marshall-Palmer ``Z = 200 R^1.6``, as
    rain-rate files are read), 0 mm/h at the encoding's floor (0 dBZ = 0.036 mm/h),
    and the default thresholds are :data:`RAINRATE_THRESHOLDS` (stored as dBZ).

    Raises
    ------
    ValueError
        If ``meta``'s threshold space is not dBZ.
    """
    from .data.transforms import encoded_rainrate, rainrate_to_dbz

    if meta.unit != "dBZ":
        raise ValueError(f"rain rate is derived from reflectivity (dBZ); {meta.name} data are in {meta.unit}")
    if meta.physical_unit == "mm/h":
        return meta
    return dataclasses.replace(
        meta,
        physical_unit="mm/h",
        physical_name="rainfall_rate",
        thresholds=tuple(float(rainrate_to_dbz(np.array([r], np.float64))[0]) for r in RAINRATE_THRESHOLDS),
        transform=f"{meta.transform}; rain rate R = (10^(dBZ/10) / 200)^(1/1.6) mm/h (Marshall-Palmer Z = 200 R^1.6), "
        "0 mm/h at and below 0 dBZ (0.036 mm/h)",
        to_physical_fn=encoded_rainrate,
    )


def output_meta(meta: DatasetMeta, quantity: str | None, units: str = "auto") -> DatasetMeta:
    """The metadata outputs are written with: ``meta`` in the quantity ``units`` asks for.

    Parameters
    ----------
    meta : DatasetMeta
        The model's metadata (its encoding of the frames).
    quantity : str or None
        The input's quantity (``"mm/h"``, ``"dBZ"``; ``None`` when the input does not say).
    units : {"auto", "mm/h", "dBZ"}
        ``"auto"``: the input's quantity (``meta``'s own physical unit when it has
        none); ``"mm/h"``/``"dBZ"``: rain rate or reflectivity (reflectivity models only).

    Raises
    ------
    ValueError
        Unknown ``units``, or mm/h / dBZ asked for data that are not reflectivity.
    """
    if units not in OUTPUT_UNITS:
        raise ValueError(f"unknown units {units!r}; choose one of: {', '.join(OUTPUT_UNITS)}")
    want = quantity if units == "auto" else units
    if want is None or (units == "auto" and meta.unit != "dBZ"):
        return meta
    if meta.unit != "dBZ":
        raise ValueError(
            f"--units {units} applies to reflectivity and rain-rate data; the model's {meta.name} data are "
            f"{meta.unit}: use --units auto"
        )
    if want == "mm/h":
        return rain_rate_meta(meta)
    if meta.physical_unit == "mm/h":  # back to reflectivity
        from .data.transforms import get_meta

        base = get_meta("radar")
        return dataclasses.replace(
            meta, physical_unit=base.physical_unit, physical_name=base.physical_name, thresholds=base.thresholds,
            to_physical_fn=None,
        )
    return meta


def threshold_code(value: float, meta: DatasetMeta) -> float:
    """A threshold in output units (mm/h for rain rate, else threshold space) in threshold space."""
    from .viz.animate import is_rain_rate

    if not is_rain_rate(meta):
        return float(value)
    from .data.transforms import rainrate_to_dbz

    return float(rainrate_to_dbz(np.array([value], np.float64))[0]) if value > 0 else 0.0


# ----------------------------------------------------------------------------- running
def software_versions() -> dict[str, str]:
    """Versions of the packages that shape a forecast."""
    from . import __version__

    out = {"diffcast": __version__, "python": platform.python_version()}
    for mod in ("torch", "numpy", "xarray", "netCDF4", "pysteps", "h5py", "matplotlib", "PIL"):
        with contextlib.suppress(Exception):
            out[mod] = str(__import__(mod).__version__)
    return out


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike[str]) -> Any:
    """Yield a temporary folder beside ``out_dir``; publish its files on success.

    On success the temporary folder is renamed to ``out_dir`` (or, when
    ``out_dir`` exists, each file is moved into it with an atomic rename). On any
    error the temporary folder is removed, so no partial output remains.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    parent = out.resolve().parent
    from .utils.io import ensure_writable_dir

    ensure_writable_dir(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=parent))
    try:
        yield tmp
        # mkdtemp/mkstemp create owner-only entries; give the outputs the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if not out.exists():
            os.rename(tmp, out)
        else:
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
            tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_nowcast(
    nowcaster: Any,
    prepared: PreparedInput,
    out_dir: str | os.PathLike[str],
    *,
    members: int = 1,
    seed: int | None = None,
    prob_threshold: float | Sequence[float] | None = None,
    progress: bool = True,
    sample_kwargs: dict[str, Any] | None = None,
    spec: str | None = None,
    command: Sequence[str] | None = None,
    units: str = "auto",
    html: bool = True,
) -> dict[str, Any]:
    """Forecast and write ``forecast.nc``, ``forecast.gif``, ``panel.png``, ``forecast.html`` and ``run.json``.

    Outputs are in the input's quantity by default (``units="auto"``): rain rate
    (mm/h) for rain-rate and accumulation radar files, reflectivity (dBZ) for
    reflectivity files, the model's physical units for other inputs. Pixels where
    the last input frame has no data (outside radar coverage) are NaN in
    ``forecast.nc`` (with a ``coverage`` variable) and grey in the pictures.

    Parameters
    ----------
    nowcaster : Nowcaster
        The model.
    prepared : PreparedInput
        Input fitted to the model (:func:`prepare_input`).
    out_dir : path-like
        Output folder (created; existing files of the same names are replaced).
    members : int
        Ensemble size for probabilistic models (deterministic models give one).
    seed : int, optional
        Sampling seed (recorded; drawn at random when omitted).
    prob_threshold : float or sequence of float, optional
        Thresholds of the probability panels, in the output units (mm/h for rain
        rate, else threshold space, e.g. dBZ or VIL code); all are added to the
        thresholds of ``forecast.nc`` and get a panel in ``forecast.html``; the
        first is the one of ``forecast.gif`` and ``panel.png``. Default: 1 mm/h
        for rain rate, else the middle paper threshold.
    progress : bool
        Show a progress bar while sampling.
    sample_kwargs : dict, optional
        Diffusion sampling options; its key ``prob_matching`` (``"cdf"``, the
        default, or ``None``) is not a sampler option: ``"cdf"`` gives each member of
        a diffusion ensemble, lead by lead, the distribution of the last observed
        frame over the covered pixels (:func:`diffcast.models.backbones.pysteps_methods.match_cdf`).
        ``sampler``, ``steps``, ... passed to the diffusion sampler.
    spec : str, optional
        How the model was named (checkpoint path or baseline), for ``run.json``.
    command : sequence of str, optional
        Command line, for ``run.json``.
    units : {"auto", "mm/h", "dBZ"}
        Quantity of the outputs (:func:`output_meta`).
    html : bool
        Write ``forecast.html`` (:func:`diffcast.viz.forecast_page.write_forecast_page`).

    Returns
    -------
    dict
        The content of ``run.json``.
    """
    import torch

    from .io_netcdf import write_forecast_netcdf
    from .viz.animate import (
        default_prob_threshold,
        display_unit,
        is_rain_rate,
        save_forecast_gif,
        save_forecast_panel,
        threshold_value,
    )

    if members < 1:
        raise ValueError(f"--members must be >= 1, got {members}")
    meta = output_meta(prepared.meta, prepared.quantity, units)
    unit = display_unit(meta)
    if prob_threshold is None:
        thr_codes = [default_prob_threshold(meta)]
        thr_values = [threshold_value(thr_codes[0], meta)]
    else:
        thr_values = [float(prob_threshold)] if np.ndim(prob_threshold) == 0 else [float(v) for v in prob_threshold]
        if not thr_values:
            raise ValueError("--prob-threshold needs at least one value")
        thr_codes = [threshold_code(v, meta) for v in thr_values]
    for thr, thr_code in zip(thr_values, thr_codes):
        if not 0.0 < thr_code <= meta.scale:
            if is_rain_rate(meta):
                lo, hi = threshold_value(1e-6 * meta.scale, meta), threshold_value(meta.scale, meta)
                raise ValueError(
                    f"--prob-threshold {thr:g} mm/h is outside the rain rates the model's encoding holds "
                    f"({lo:.3g} to {hi:.3g} mm/h, 0 to {meta.scale:g} dBZ)"
                )
            raise ValueError(f"--prob-threshold {thr:g} is outside (0, {meta.scale:g}] ({meta.unit})")
    thr, thr_code = thr_values[0], thr_codes[0]  # the gif's and panel's
    coverage = prepared.coverage
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    if not nowcaster.is_probabilistic and members > 1:
        log.warning("%s is deterministic: writing one member instead of %d", nowcaster.name, members)
    start = time.perf_counter()
    x = torch.from_numpy(prepared.x_in)[None, :, None]
    h, w = prepared.x_in.shape[-2:]
    if (nowcaster.height, nowcaster.width) != (h, w) and nowcaster.height >= h and nowcaster.width >= w:
        # native-grid nowcast (make_nowcaster): zero padding = no rain outside the domain, cropped back below
        x = torch.nn.functional.pad(x, (0, nowcaster.width - w, 0, nowcaster.height - h))
    kwargs = dict(sample_kwargs or {}) if nowcaster.is_probabilistic else {}
    # probability matching is not a sampler option: "cdf" (default) or None, diffusion ensembles only
    prob_matching = kwargs.pop("prob_matching", "cdf")
    from .models.backbones.pysteps_methods import check_prob_matching, match_cdf

    check_prob_matching(prob_matching)
    max_memory = kwargs.pop("max_memory", None)  # not a sampler option either: the cap of the schedule below
    plan = None
    from .inference import is_diffusion_model

    if is_diffusion_model(nowcaster.model):
        from .memory import member_schedule

        # before any work: members in turns under the cap, or a clear error when even one at a time does not fit
        plan = member_schedule(nowcaster.model, nowcaster.height, nowcaster.width, members, max_memory=max_memory,
                               member_chunk=kwargs.get("member_chunk"), n_thresholds=len(meta.thresholds) + len(thr_codes))
        if plan is not None:
            kwargs["member_chunk"] = plan.member_chunk
    with staged_output(out_dir) as tmp:
        t_pred = time.perf_counter()
        result = nowcaster.predict(x, members=members, seed=seed, progress=progress, **kwargs)
        t_pred = time.perf_counter() - t_pred
        fc = result.forecast[:, 0, :, 0, :h, :w].float().cpu().numpy()  # (M, T_out, H, W)
        if not np.isfinite(fc).all():
            raise ValueError(f"{nowcaster.name} produced non-finite values; the model file may be corrupt")
        fc = np.clip(fc, 0.0, 1.0)
        from .inference import inflow_of

        # no rain invented at the inflow edges: NaN where the motion brings it from outside the domain/coverage
        unknown = inflow_of(nowcaster.model, x[0, :, 0].cpu().numpy(),
                            np.ones((h, w), bool) if coverage is None else coverage, fc.shape[1])
        if unknown is not None:
            fc[:, unknown] = np.nan

        matched = prob_matching == "cdf" and is_diffusion_model(nowcaster.model) and fc.shape[0] > 1
        if matched:
            # ranks are kept, so matching the encoded values equals matching rain rates
            ref = prepared.x_in[-1].astype(np.float64)
            if coverage is not None:
                ref = np.where(coverage, ref, np.nan)
            fc = match_cdf(fc, ref).astype(np.float32)
        m_out, t_out = fc.shape[:2]
        title = f"{nowcaster.name}: {m_out} member(s), analysis {_iso(prepared.analysis_time)}"
        history = "diffcast nowcast" + ("" if command is None else " " + " ".join(command))
        note = "times are relative to a nominal analysis time (input had no timestamps)" if prepared.time_nominal else None
        thresholds = tuple(sorted(set(meta.thresholds) | set(thr_codes)))
        write_forecast_netcdf(
            tmp / "forecast.nc",
            fc,
            meta,
            prepared.analysis_time,
            x_in=prepared.x_in,
            thresholds=thresholds,
            title=f"DiffCast nowcast by {nowcaster.name}",
            source=f"diffcast {nowcaster.name} ({'probabilistic' if nowcaster.is_probabilistic else 'deterministic'})",
            history=history,
            extra_attrs={"model": nowcaster.name, "seed": int(seed), "input_kind": prepared.kind},
            time_note=note,
            grid=prepared.grid,
            coverage=coverage,
        )
        save_forecast_gif(
            tmp / "forecast.gif", prepared.x_in, fc, meta, prob_threshold=thr_code, y_true=prepared.y_true,
            title=nowcaster.name, coverage=coverage,
        )
        save_forecast_panel(
            tmp / "panel.png", prepared.x_in, fc, meta, prob_threshold=thr_code, y_true=prepared.y_true, title=title,
            coverage=coverage,
        )
        outputs = ["forecast.nc", "forecast.gif", "panel.png", "run.json"]
        if html:
            from .viz.forecast_page import write_forecast_page

            write_forecast_page(
                tmp / "forecast.html", prepared.x_in, fc, meta, thresholds=sorted(set(thr_codes)),
                analysis_time=prepared.analysis_time, step_min=meta.timestep_min, coverage=coverage,
                grid=prepared.grid, y_true=prepared.y_true, input_mask=prepared.mask, title=title,
                notes=[note] if note else (),
            )
            outputs.insert(3, "forecast.html")
        step = meta.timestep_min
        info = {
            "model": {
                "name": nowcaster.name,
                "spec": spec or nowcaster.name,
                "probabilistic": bool(nowcaster.is_probabilistic),
                "t_in": nowcaster.t_in,
                "t_out": nowcaster.t_out,
                "grid": [nowcaster.height, nowcaster.width],
                "config": nowcaster.config.get("model"),
            },
            "prob_matching": "cdf" if matched else None,
            "memory": None if plan is None else plan.describe(),
            "members_requested": int(members),
            "members": int(m_out),
            "seed": int(seed),
            "sample_kwargs": {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in kwargs.items()},
            "prob_threshold": thr,
            "prob_thresholds": thr_values,
            "prob_threshold_unit": unit,
            "output": {
                "units": meta.physical_unit,
                "standard_name": meta.physical_name,
                "thresholds": [threshold_value(c, meta) for c in thresholds],
                "threshold_unit": unit,
                "transform": meta.transform,
                "coverage_fraction": None if coverage is None else round(float(coverage.mean()), 6),
            },
            "input": {
                "kind": prepared.kind,
                "quantity": prepared.quantity,
                "files": prepared.sources,
                "raw_shape": list(prepared.raw_shape),
                "x_in_shape": list(prepared.x_in.shape),
                "times": [_iso(t) for t in prepared.times],
                "times_nominal": prepared.time_nominal,
                "notes": prepared.notes,
                "georeferencing": prepared.grid.describe() if prepared.grid is not None else None,
            },
            "analysis_time": _iso(prepared.analysis_time),
            "valid_times": [_iso(prepared.analysis_time + dt.timedelta(minutes=step * (k + 1))) for k in range(t_out)],
            "forecast_shape": list(fc.shape),
            "meta": prepared.meta.as_dict(),
            "outputs": outputs,
            "software": software_versions(),
            "command": list(command) if command is not None else None,
            "elapsed_s": {"predict": round(t_pred, 3), "total": None},
        }
        info["elapsed_s"]["total"] = round(time.perf_counter() - start, 3)
        from .utils.io import atomic_write_text

        atomic_write_text(tmp / "run.json", json.dumps(info, indent=2, default=str) + "\n")
    log.info("nowcast written to %s (%d member(s), %d lead(s), %.1f s)", out_dir, m_out, t_out, info["elapsed_s"]["total"])
    return info


def nowcast_to_files(
    spec: str,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    members: int = 1,
    seed: int | None = None,
    prob_threshold: float | Sequence[float] | None = None,
    input_kind: str | None = None,
    h5_key: str | None = None,
    sample_index: int | None = None,
    radar_format: str | None = None,
    radar_pattern: str | None = None,
    layout: str = "auto",
    start_frame: int | None = None,
    crop: str = "none",
    analysis_time: str | dt.datetime | None = None,
    size: tuple[int, int] | None = None,
    t_in: int | None = None,
    t_out: int | None = None,
    data_meta: str | None = None,
    sample_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    command: Sequence[str] | None = None,
    units: str = "auto",
    html: bool = True,
) -> dict[str, Any]:
    """Read ``inputs``, forecast with ``spec`` and write the nowcast files: the Python ``diffcast nowcast``.

    >>> info = nowcast_to_files("extrapolation", ["sevir_demo/demo_0"], "out")  # doctest: +SKIP
    >>> info = nowcast_to_files("runs/diffcast", ["frames.npy"], "out", members=8, seed=1)  # doctest: +SKIP

    Parameters are those of :func:`read_input`, :func:`make_nowcaster`,
    :func:`prepare_input` and :func:`run_nowcast`. Everything is checked before
    anything is written; returns the content of ``run.json``.
    """
    if units not in OUTPUT_UNITS:
        raise ValueError(f"unknown units {units!r}; choose one of: {', '.join(OUTPUT_UNITS)}")
    raw = read_input(
        inputs, input_kind, h5_key=h5_key, sample_index=sample_index, radar_format=radar_format, layout=layout,
        radar_pattern=radar_pattern,
        start_frame=start_frame,
    )
    nc = make_nowcaster(spec, raw, t_in=t_in, t_out=t_out, size=size, data_meta=data_meta)
    return nowcast_raw(
        nc, raw, out_dir, crop=crop, analysis_time=analysis_time, start_frame=start_frame, members=members, seed=seed,
        prob_threshold=prob_threshold, progress=progress, sample_kwargs=sample_kwargs, spec=str(spec),
        command=command, units=units, html=html,
    )


def nowcast_raw(
    nowcaster: Any,
    raw: RawInput,
    out_dir: str | os.PathLike[str],
    *,
    crop: str = "none",
    analysis_time: str | dt.datetime | None = None,
    start_frame: int | None = None,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """Fit ``raw`` to ``nowcaster`` (:func:`prepare_input`) and forecast into ``out_dir`` (:func:`run_nowcast`).

    The second half of :func:`nowcast_to_files`, for callers that keep one model for
    many inputs (``diffcast nowcast --watch``). ``run_kwargs`` are those of
    :func:`run_nowcast`; returns the content of ``run.json``.
    """
    nc = nowcaster
    prepared = prepare_input(
        raw, t_in=nc.t_in, size=getattr(nc, "input_grid", (nc.height, nc.width)), meta=nc.meta, crop=crop,
        analysis_time=analysis_time,
        model_name=nc.name, start_frame=start_frame, t_out=nc.t_out,
    )
    return run_nowcast(nc, prepared, out_dir, **run_kwargs)
