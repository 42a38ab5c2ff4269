"""Readers of ``.npy`` and HDF5 arrays, SEVIR files included.

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

ODIM radar HDF5 files are told apart in :mod:`.radar` (:func:`~.radar._is_radar_h5`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...data.transforms import SEVIR_META
from .base import RawInput

H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


#: Axis orders of .npy/HDF5 arrays (``layout`` of :func:`read_input`, ``--layout``).
ARRAY_LAYOUTS = ("auto", "time-first", "time-last")


#: Name of the SEVIR VIL dataset (``(N, H, W, T)`` uint8, time last).
SEVIR_KEY = "vil"


#: Width of the SEVIR domain in km (384 pixels of 1 km).
SEVIR_DOMAIN_KM = 384.0


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
    except (ValueError, EOFError) as exc:  # EOFError: empty or cut-short header
        raise ValueError(f"{path} is not a plain numeric .npy array: {exc or 'the file is empty'}") from exc
    try:
        frames, _, _ = _read_array(arr, str(path), sample_index, layout)
    except (OSError, EOFError) as exc:  # a file cut short after its header: the memory map cannot cover it
        raise ValueError(f"{path} is cut short or damaged ({exc})") from exc
    return RawInput(frames, "npy", [str(path)])


def _h5_datasets(fh: Any) -> list[str]:
    import h5py

    names: list[str] = []
    fh.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


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
    try:
        return _read_open_h5(fh, path, key, sample_index, layout)
    except RuntimeError as exc:  # h5py's error for a damaged heap or B-tree inside an openable file
        raise ValueError(f"{path} is a damaged HDF5 file: {exc}") from exc


def _read_open_h5(fh: Any, path: Path, key: str | None, sample_index: int | None, layout: str) -> RawInput:
    import h5py

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
