"""The radar training dataset: :class:`RadarArchive` splits an archive by event, never by frame.

Events are runs of frames without a gap longer than an hour, labelled by the UTC
date of their first frame (:mod:`.events`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import DATASETS
from .events import (
    EVENT_GAP_MIN,
    RADAR_SPLITS,
    RadarEvent,
    assign_events,
    contiguous_runs,
    find_events,
)
from .files import list_radar_files
from .frames import _as_size, _pixel_km, _radar_meta, frame_header, radar_quantity, read_frame

log = logging.getLogger(__name__)


@DATASETS.register("radar")
class RadarArchive(Dataset):
    """Sequences from a folder of radar composites (any format in :data:`RADAR_FORMATS`).

    All files under ``root`` (recursively) of one format are sorted by time and cut
    into events (:func:`find_events`: runs of frames without a gap longer than
    ``event_gap_min`` minutes, labelled by the UTC date of their first frame).
    Whole events go to the splits, never single frames (:func:`assign_events`:
    by ``split_fractions`` of the events in time order, test last, or by
    ``split_events``); ``split="all"`` takes every event. Inside the events of a
    split, windows of ``seq_len`` frames start every ``stride`` frames and never
    cross a gap (spacing different from the time step).

    A split without a window is not an error here (``len`` is 0, and
    :attr:`empty_reason` says why and what to change); code that needs items
    raises :attr:`empty_reason` as a ``ValueError``.

    Parameters
    ----------
    root : path
        Folder with radar files (searched recursively).
    split : {"train", "val", "test", "all"}
    seq_len : int
        Frames per item.
    fmt : str, optional
        File format; detected when omitted (must be unique under ``root``).
    size : int or (int, int), optional
        Output size (default 128); ``None`` keeps the native grid.
    resample : {"area", "crop"}
    stride : int
        Frames between window starts (default: ``seq_len``, no overlap).
    split_fractions : (float, float, float)
        Shares of the events for train / val / test.
    timestep_min : float, optional
        Time step; default: the most common spacing.
    cache : bool
        Keep decoded frames in memory (per worker).
    series : str, optional
        Product/station to use when ``root`` holds several (see :func:`list_radar_files`).
    split_events : dict, optional
        Split -> event dates ``"YYYY-MM-DD"`` or ranges ``"YYYY-MM-DD/YYYY-MM-DD"``
        (see :func:`assign_events`); overrides ``split_fractions``.
    event_gap_min : float
        Minutes without frames that separate two events (default 60).
    units : {"dBZ", "mm/h"}
        Encoding of the items: ``"dBZ"`` (``x = dBZ / 90``, what radar models are
        trained on; :data:`~diffcast.data.transforms.RADAR_DBZ_META`) or ``"mm/h"``
        (``x = R / 200``, linear rain rate for scoring in mm/h;
        :data:`~diffcast.data.transforms.RADAR_RATE_META`). :attr:`model_meta` is
        the dBZ record either way.
    pattern : str, optional
        Shell pattern on the file names picking one product out of a folder that
        holds several (see :func:`list_radar_files`).

    Attributes
    ----------
    events : list of RadarEvent
        Every event of the archive, in time order.
    event_splits : list of str
        The split of each event (``""``: unused).
    quantity : str
        What the files hold: ``"mm/h"`` or ``"dBZ"`` (:func:`radar_quantity`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        seq_len: int = 25,
        fmt: str | None = None,
        size: int | tuple[int, int] | None = 128,
        resample: str = "area",
        stride: int | None = None,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        timestep_min: float | None = None,
        cache: bool = True,
        series: str | None = None,
        split_events: Mapping[str, Any] | None = None,
        event_gap_min: float = EVENT_GAP_MIN,
        units: str = "dBZ",
        pattern: str | None = None,
    ) -> None:
        if units not in ("dBZ", "mm/h"):
            raise ValueError(f"unknown units {units!r}; choose 'dBZ' or 'mm/h'")
        self.units = units
        if split not in RADAR_SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(RADAR_SPLITS)}")
        if resample not in ("area", "crop"):
            raise ValueError(f"unknown resample {resample!r}; choose 'area' or 'crop'")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        fr = np.asarray(split_fractions, dtype=float)
        if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
            raise ValueError(
                f"split_fractions must be three non-negative numbers, got {split_fractions}"
            )
        if not event_gap_min > 0:
            raise ValueError(f"event_gap_min must be positive, got {event_gap_min}")
        self.fmt, items = list_radar_files(root, fmt, series, pattern)
        self.root = Path(root)
        self.split = split
        self.seq_len = int(seq_len)
        self.stride = int(stride or seq_len)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.size = _as_size(size)
        self.resample = resample
        times = [t for t, _ in items]
        diffs = [(b - a).total_seconds() / 60.0 for a, b in zip(times[:-1], times[1:])]
        self.timestep_min = float(
            timestep_min or (Counter(diffs).most_common(1)[0][0] if diffs else 5.0)
        )
        self.events = find_events(times, float(event_gap_min))
        self.event_splits = assign_events(self.events, tuple(fr), split_events)
        chosen = [
            e for e, s in zip(self.events, self.event_splits) if split == "all" or s == split
        ]
        block = [items[i] for e in chosen for i in range(e.start, e.stop)]
        self.times = [t for t, _ in block]
        self.paths = [p for _, p in block]
        self.windows: list[int] = []
        runs = contiguous_runs(self.times, self.timestep_min)
        for a, b in runs:
            self.windows.extend(range(a, b - self.seq_len + 1, self.stride))
        self.why_empty: str | None = None
        self.empty_reason: str | None = None
        if not self.windows:
            self.why_empty, full = self._why_empty(chosen, runs)
            self.empty_reason = f"radar split {split!r} of {self.root} has no window of {self.seq_len} frames: {full}"
            log.info("%s", self.empty_reason)
        # pixel size and quantity from the first file's header (the grid is the same for all; HDF5
        # composites are not decoded for it, so describing an archive reads no pixels)
        self.native_shape, meta0 = frame_header(items[0][1], self.fmt)
        self.quantity = radar_quantity(meta0)
        pixel_km = _pixel_km(meta0, self.native_shape, self.size, resample)
        self.model_meta = _radar_meta(self.timestep_min, pixel_km, self.fmt, resample, self.size)
        self.meta = self.model_meta
        if units == "mm/h":
            from ..transforms import RADAR_RATE_META

            self.meta = dataclasses.replace(
                RADAR_RATE_META, timestep_min=self.model_meta.timestep_min, pixel_km=self.model_meta.pixel_km,
                transform=RADAR_RATE_META.transform + f"; source format {self.fmt}"
                + (f"; {resample} to {self.size[0]}x{self.size[1]}" if self.size is not None else ""),
            )
        self.cache = cache
        self._frames: dict[int, np.ndarray] = {}

    def _why_empty(self, chosen: list[RadarEvent], runs: list[tuple[int, int]]) -> tuple[str, str]:
        """``(short reason, one-line reason with the fix)`` of a split without a window."""
        n = len(self.events)
        events = f"{n} event{'s' if n != 1 else ''}"
        labels = ", ".join(e.label for e in self.events[:6]) + (", ..." if n > 6 else "")
        example = json.dumps({"test": [self.events[-1].label]})
        if not chosen:
            counts = Counter(s or "none" for s in self.event_splits)
            where = (
                f"all in {next(iter(counts))}"
                if len(counts) == 1
                else ", ".join(f"{c} in {s}" for s, c in counts.items())
            )
            short = f"{events} in the archive: {where}; pass split_events or a longer archive"
            full = (
                f"the archive holds {events} ({labels}), {where}; assign events to splits with the dataset "
                f"option split_events, e.g. split_events={example}, use split 'all', or add events to the archive"
            )
            return short, full
        longest = max((b - a for a, b in runs), default=0)
        k = len(chosen)
        mine = f"{k} event{'s' if k != 1 else ''} ({', '.join(e.label for e in chosen[:6])}{', ...' if k > 6 else ''})"
        short = (
            f"{mine}, at most {longest} consecutive frames {self.timestep_min:g} min apart; "
            "lower seq_len or pass split_events"
        )
        full = (
            f"its {mine} have at most {longest} consecutive frames {self.timestep_min:g} min apart; lower "
            f"seq_len (t_in + t_out) or give the split longer events with split_events (events: {labels})"
        )
        return short, full

    def describe_events(self) -> list[dict[str, Any]]:
        """Every event with its split and frame count (for ``diffcast data info``)."""
        return [
            {
                "event": e.label,
                "split": s or "unused",
                "frames": e.n_frames,
                "first": f"{e.first:%Y-%m-%dT%H:%MZ}",
                "last": f"{e.last:%Y-%m-%dT%H:%MZ}",
            }
            for e, s in zip(self.events, self.event_splits)
        ]


    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames"] = {}
        return state

    def __len__(self) -> int:
        return len(self.windows)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of this split as ``(H, W)`` float32 in ``[0, 1]``."""
        if i in self._frames:
            return self._frames[i]
        x, _, _ = read_frame(self.paths[i], self.fmt, self.size, self.resample)
        if self.cache:
            self._frames[i] = x
        return x

    def _start(self, idx: int) -> int:
        n = len(self.windows)
        if not -n <= idx < n:
            # IndexError (the sequence protocol), with the reason when the split is empty
            raise IndexError(
                self.empty_reason
                or f"window {idx} out of range: radar split {self.split!r} of {self.root} has {n} windows"
            )
        return self.windows[idx]

    def sequence(self, idx: int) -> np.ndarray:
        """Item ``idx`` as ``(seq_len, H, W)`` float32."""
        s = self._start(idx)
        frames = [self.frame(i) for i in range(s, s + self.seq_len)]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise ValueError(
                f"radar frames {self.paths[s]} .. {self.paths[s + self.seq_len - 1]} have different grids {shapes}; set size="
            )
        return np.stack(frames)

    def window_times(self, idx: int) -> list[datetime]:
        s = self._start(idx)
        return self.times[s : s + self.seq_len]

    def __getitem__(self, idx: int) -> torch.Tensor:
        seq = self.sequence(int(idx))
        if self.units != "dBZ":
            from ..transforms import transcode

            seq = transcode(seq, self.model_meta, self.meta)
        return torch.from_numpy(seq)[:, None]
