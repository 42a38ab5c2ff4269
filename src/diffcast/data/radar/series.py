"""Radar files of one series indexed by time, decoded lazily (:class:`RadarSeries`).

:class:`RadarSeries` indexes files by time from their names (ODIM: the ``/what``
attributes) and decodes a frame only when it is used, so a nowcast from a long
folder reads just the frames it needs. :func:`read_radar_files` reads a whole
gap-free series at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import DatasetMeta
from .files import _check_order, _check_times, _time_step
from .formats import RADAR_FORMATS, detect_format
from .frames import (
    RadarFrames,
    _as_size,
    _pixel_km,
    _radar_meta,
    radar_quantity,
    read_frame,
    regrid,
    source_metadata,
)


class RadarSeries:
    """Radar files of one series, indexed by time; frames are decoded only when asked for.

    Building the index reads file names only (ODIM and OPERA files: their ``/what``
    date and time attributes), so a folder of hundreds of composites costs nothing
    until frames are used; :meth:`frame` decodes one file (once: frames are cached).

    Parameters
    ----------
    paths : list of path
        The files.
    fmt : str, optional
        One of :data:`RADAR_FORMATS`; detected from the file names when omitted.
    timestep_min : float, optional
        Time step; default: the shortest spacing between the files.
    sort : bool
        Sort the files by time (a folder's files); otherwise they must be given in
        time order.

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        Undetectable format, several series, time stamps out of order or duplicated, or
        the optional library of the format is not installed.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        fmt: str | None = None,
        timestep_min: float | None = None,
        *,
        sort: bool = False,
    ) -> None:
        ps = [Path(p) for p in paths]
        if not ps:
            raise ValueError("no radar files given")
        for p in ps:
            if not p.is_file():
                raise FileNotFoundError(f"radar file {p} not found")
        fmt = fmt or detect_format(ps)
        if fmt not in RADAR_FORMATS:
            raise ValueError(f"unknown radar format {fmt!r}; choose one of: {', '.join(RADAR_FORMATS)}")
        RADAR_FORMATS[fmt].require()  # before indexing a folder whose files cannot be decoded
        kinds = sorted({RADAR_FORMATS[fmt].series(p) for p in ps})
        if len(kinds) > 1:
            raise ValueError(
                f"the radar files mix several series ({', '.join(kinds)}); pass files of one series"
            )
        times = [RADAR_FORMATS[fmt].timestamp(p) for p in ps]
        if sort:
            order = sorted(range(len(ps)), key=lambda i: (times[i], ps[i].name))
            ps, times = [ps[i] for i in order], [times[i] for i in order]
        _check_order(times, ps)
        self.fmt = fmt
        self.paths = ps
        self.times = times
        self.timestep_min = _time_step(times, timestep_min)
        self.reads: list[int] = []  # indices decoded, in order
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {}
        self._native: tuple[int, int] | None = None
        self._first: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Frame ``i`` on the native grid: ``(dBZ / 90, no-data mask (True = no data), pysteps metadata)``."""
        i = range(len(self.paths))[i]
        if i not in self._cache:
            x, valid, meta = read_frame(self.paths[i], self.fmt)
            if self._native is None:
                self._native, self._first = x.shape, i
            elif x.shape != self._native:
                raise ValueError(
                    f"{self.paths[i]}: grid {x.shape} differs from {self._native} of {self.paths[self._first].name}"
                )
            self._cache[i] = (x, ~valid, meta)
            self.reads.append(i)
        return self._cache[i]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the native grid (decodes the last frame when none was read yet)."""
        if self._native is None:
            self.frame(len(self.paths) - 1)
        return self._native  # type: ignore[return-value]

    @property
    def first_meta(self) -> dict[str, Any]:
        """pysteps metadata of the first frame decoded (georeferencing, units)."""
        self.grid_shape  # noqa: B018 - decodes one frame if needed
        return self._cache[self._first][2]  # type: ignore[index]

    @property
    def quantity(self) -> str:
        """``"mm/h"`` or ``"dBZ"``: what the files hold (:func:`radar_quantity`)."""
        return radar_quantity(self.first_meta)

    @property
    def meta(self) -> DatasetMeta:
        """Dataset metadata of the native frames (``RADAR_DBZ_META`` with this time step and pixel size)."""
        km = _pixel_km(self.first_meta, self.grid_shape, None, "area")
        return _radar_meta(self.timestep_min, km, self.fmt, "area", None)

    @property
    def source(self) -> dict[str, Any]:
        """The ``source`` record of :class:`RadarFrames` for these files (:func:`source_metadata`)."""
        return source_metadata(self.first_meta, self.fmt, self.paths, self.grid_shape)

    def lazy(self, what: str = "data") -> LazyFrames:
        """``(T, H, W)`` array-like of the frames (``"data"``) or no-data masks (``"mask"``), decoded on indexing."""
        return LazyFrames(self, what)


class LazyFrames:
    """``(T, H, W)`` frames of a :class:`RadarSeries` that decodes a file the first time its frame is indexed.

    Indexing (an int, a slice or an integer array along time) returns numpy arrays;
    ``numpy.asarray`` decodes every frame.
    """

    ndim = 3

    def __init__(self, series: RadarSeries, what: str = "data") -> None:
        if what not in ("data", "mask"):
            raise ValueError(f"what must be 'data' or 'mask', got {what!r}")
        self.series = series
        self.what = what
        self.dtype = np.dtype(np.float32 if what == "data" else bool)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.series), *self.series.grid_shape)

    def __len__(self) -> int:
        return len(self.series)

    def _one(self, i: int) -> np.ndarray:
        x, nodata, _ = self.series.frame(int(i))
        return x if self.what == "data" else nodata

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])]
        idx = np.arange(len(self.series))[key]
        if idx.ndim == 0:
            return self._one(int(idx))
        if idx.size == 0:
            return np.zeros((0, *self.series.grid_shape), self.dtype)
        return np.stack([self._one(int(i)) for i in idx])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def read_radar_files(
    paths: Sequence[str | Path],
    fmt: str | None = None,
    size: int | tuple[int, int] | None = None,
    resample: str = "area",
    timestep_min: float | None = None,
) -> RadarFrames:
    """Read consecutive radar files (e.g. the inputs of ``diffcast nowcast``).

    Parameters
    ----------
    paths : list of path
        Files in time order.
    fmt : str, optional
        One of :data:`RADAR_FORMATS`; detected from the file names when omitted.
    size : int or (int, int), optional
        Output frame size; ``None`` keeps the native grid.
    resample : {"area", "crop"}
        How to reach ``size`` (see :mod:`.frames`).
    timestep_min : float, optional
        Expected spacing; default: the shortest spacing between the files.

    Returns
    -------
    RadarFrames

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        Undetectable format, unreadable file, non-increasing time stamps, a gap,
        or frames of different sizes (all messages name the file).
    """
    series = RadarSeries(paths, fmt, timestep_min)
    step = _check_times(series.times, series.paths, timestep_min)
    sz = _as_size(size)
    frames, masks = [], []
    for i in range(len(series)):
        x, nodata, _ = series.frame(i)
        x, valid = regrid(x, ~nodata, sz, resample)
        frames.append(x)
        masks.append(~valid)
    first_meta = series.first_meta
    native = series.grid_shape
    return RadarFrames(
        data=np.stack(frames).astype(np.float32),
        times=series.times,
        timestep_min=step,
        meta=_radar_meta(step, _pixel_km(first_meta, native, sz, resample), series.fmt, resample, sz),
        source=source_metadata(first_meta, series.fmt, series.paths, native),
        mask=np.stack(masks),
        quantity=radar_quantity(first_meta),
    )
