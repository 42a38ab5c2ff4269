"""Training and evaluation windows cut from a spec store: the ``mlcast`` dataset.

Items have the layout of :class:`~diffcast.data.radar_train.RadarWindows`
(``(T, 1, size, size)`` float32, ``x = dBZ / 90``; with a parameter-free
``backbone`` the backbone's ``mu`` follows as ``t_out`` more frames), so a radar
config trains on a store by changing only its data section. Policy:

- windows are ``seq_len`` frames exactly one regular time step apart
  (:func:`.windows.regular_runs`): never across a ``missing_times`` entry, a change
  of time step, or before ``consistent_timestep_start``; a window starts every
  ``stride`` frames;
- splits are ISO time ranges (``train="2001-01-01/2019-12-31"``, ``val="2020"``,
  ``test="2021-2023"``, or ``splits={...}``); a window belongs to a split only when
  all its frames lie in the split's ranges (:func:`.windows.split_windows`);
- item ``i`` is crop ``i % crops_per_window`` of window ``i // crops_per_window``: a
  window is decompressed once (all its frames in one read) and kept while its crops
  are cut (:attr:`items_per_window` tells the trainer to keep a window's crops
  together in a batch); crops are ranked as ``radar_windows`` ranks them
  (:func:`~diffcast.data.radar_train.rank_crops`: the most rain in the last input
  frame among ``candidates`` random positions fixed by ``seed`` and the window);
- no data: training crops need at least ``min_coverage`` of their pixels covered in
  every frame, and pixels without data are NaN in the item (the trainer masks them
  out of the loss, the evaluator out of every score: :mod:`diffcast.metrics.nodata`);
  validation and test crops need ``eval_min_coverage`` (default 1: fully covered, found
  by a scan of the coverage when no random candidate is).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import DATASETS
from ..radar import DBZ_SCALE
from ..radar_train import (
    backbone_mu,
    check_parameter_free,
    context_box,
    random_rot_flip,
    rank_crops,
)
from .store import SpecStore
from .windows import regular_runs, split_windows, window_starts

log = logging.getLogger(__name__)

#: Marshall-Palmer ``Z = 200 R^1.6`` as ``dBZ = offset + slope log10(R)`` (see :func:`~diffcast.data.transforms.rainrate_to_dbz`).
_MP_OFFSET, _MP_SLOPE = np.float32(10.0 * np.log10(200.0)), np.float32(16.0)

_SPLITS = ("train", "val", "test", "all")


def _hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def _rain_level(store: SpecStore, dbz: float) -> float:
    """``dbz`` in the store's quantity (mm/h by Marshall-Palmer ``Z = 200 R^1.6``, or dBZ)."""
    from ..transforms import dbz_to_rainrate

    return float(dbz) if store.quantity == "dBZ" else float(dbz_to_rainrate(np.float64(dbz)))


def _full_coverage_scan(valid: np.ndarray, size: tuple[int, int], step: int) -> list[tuple[int, int]]:
    """Top-left corners (every ``step`` pixels) of ``size`` crops with every pixel valid (a summed-area table)."""
    h, w = valid.shape
    sh, sw = size
    sat = np.zeros((h + 1, w + 1), np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(valid, axis=0, dtype=np.int64), axis=1)
    ys = np.arange(0, h - sh + 1, step)
    xs = np.arange(0, w - sw + 1, step)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    n = sat[yy + sh, xx + sw] - sat[yy, xx + sw] - sat[yy + sh, xx] + sat[yy, xx]
    ok = n == sh * sw
    return list(zip(yy[ok].tolist(), xx[ok].tolist()))


@DATASETS.register("mlcast")
class StoreWindows(Dataset):
    """Crops of gap-free windows of an mlcast spec store (see module docstring).

    Parameters
    ----------
    store : str, path or SpecStore
        Store path or URL (``s3://...``), or an open :class:`SpecStore`.
    split : {"train", "val", "test", "all"}
    seq_len : int
        Frames per window (``t_in + t_out``; the trainer passes it).
    t_in : int
        Observed frames (needed with ``backbone``; the rest of ``seq_len`` is the forecast).
    size : int or (int, int)
        Crop size in pixels (native resolution).
    train, val, test : str or list of str, optional
        ISO time ranges of each split (``"2001-01-01/2019-12-31"``, ``"2020"``, ``"2021-2023"``).
    splits : dict, optional
        The same as one mapping (``{"train": ..., "val": ..., "test": ...}``).
    standard_name : str, optional
        The variable, when the store holds several.
    storage_options : dict, optional
        fsspec options of a remote store (e.g. ``{"anon": True}``).
    backbone : str, optional
        Parameter-free backbone (``extrapolation``, ``persistence``) whose ``mu`` is
        appended to each item, computed on a ``mu_context`` window around the crop.
    stride : int, optional
        Frames between window starts (default 1 for train, ``seq_len`` otherwise).
    crops_per_window, candidates : int
        Crops cut from each window; random positions ranked per window.
    rain_threshold, min_rain : float
        dBZ counted as rain when ranking crops; crops with a smaller rain fraction are
        used only when a window has no rainier one.
    min_coverage : float
        Fraction of a training crop's pixels that must have data in every frame.
    eval_min_coverage : float
        The same for validation, test and ``all`` crops (default 1: fully covered, the
        crops scored before the metrics had a no-data mask; lower it to score partly
        covered crops, whose pixels without data every score leaves out).
    units : {"dBZ", "mm/h"}
        Encoding of the items (``dBZ / 90``, what models train on, or ``R / 200`` to
        score in rain rate); :attr:`model_meta` is the dBZ record either way.
    mu_context : int
        Side of the window ``mu`` is computed on.
    augment : bool, optional
        Random rotations and flips (default: on for ``train`` only).
    seed : int
        Seed of the crop positions.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | SpecStore,
        split: str = "train",
        seq_len: int = 25,
        t_in: int | None = None,
        size: int | tuple[int, int] = 256,
        train: Any = None,
        val: Any = None,
        test: Any = None,
        splits: Mapping[str, Any] | None = None,
        standard_name: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        backbone: str | None = None,
        stride: int | None = None,
        crops_per_window: int = 4,
        candidates: int = 32,
        rain_threshold: float = 15.0,
        min_rain: float = 0.02,
        min_coverage: float = 0.75,
        eval_min_coverage: float = 1.0,
        units: str = "dBZ",
        mu_context: int = 256,
        augment: bool | None = None,
        seed: int = 0,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(_SPLITS)}")
        if units not in ("dBZ", "mm/h"):
            raise ValueError(f"unknown units {units!r}; choose 'dBZ' or 'mm/h'")
        if backbone and (t_in is None or not 1 <= int(t_in) < int(seq_len)):
            raise ValueError(f"with a backbone, t_in must lie in [1, seq_len={seq_len}), got {t_in}")
        if crops_per_window < 1 or candidates < 1:
            raise ValueError("crops_per_window and candidates must be >= 1")
        for name, value in (("min_coverage", min_coverage), ("eval_min_coverage", eval_min_coverage)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {value}")
        check_parameter_free(backbone)
        if isinstance(store, SpecStore):
            self.store = store
        else:
            self.store = SpecStore(store, standard_name=standard_name, storage_options=dict(storage_options or {}))
        st = self.store
        self.split = split
        self.seq_len = int(seq_len)
        self.t_in = int(t_in) if t_in is not None else None
        self.t_out = self.seq_len - self.t_in if self.t_in is not None else None
        self.size = _hw(size)
        self.backbone = backbone or None
        self.crops_per_window = int(crops_per_window)
        self.candidates = int(candidates)
        self.min_rain = float(min_rain)
        self.min_coverage = float(min_coverage if split == "train" else eval_min_coverage)
        self.rain_threshold = float(rain_threshold)
        self.rain_level = _rain_level(st, rain_threshold)
        self.units = units
        self.mu_context = max(int(mu_context), *self.size)
        self.augment = (split == "train") if augment is None else bool(augment)
        self.seed = int(seed)
        self.stride = int(stride) if stride is not None else (1 if split == "train" else self.seq_len)
        ranges = {k: v for k, v in dict(splits or {}).items() if v is not None}
        for name, value in (("train", train), ("val", val), ("test", test)):
            if value is not None:
                if name in ranges and ranges[name] != value:
                    raise ValueError(f"the {name} range is given twice ({ranges[name]!r} in splits, {value!r})")
                ranges[name] = value
        self.ranges = {k: [str(x) for x in ([v] if isinstance(v, (str, int)) else v)] for k, v in ranges.items()}
        runs = regular_runs(st.times, st.timestep_min, st.consistent_start)
        starts = window_starts(runs, self.seq_len, self.stride)
        self.empty_reason: str | None = None
        if split == "all":
            self.windows = starts
        else:
            if split not in self.ranges:
                t = st.times
                span = f"{t[0]} to {t[-1]}" if t.size else "no frames"
                raise ValueError(
                    f"{st.url}: no time range for the {split} split (the store holds {span}); give one with "
                    f"--{split} RANGE or data.kwargs.{split}=RANGE (e.g. 2021-2023 or 2021-06-01/2021-08-31), "
                    "or use split 'all'"
                )
            self.windows = split_windows(st.times, starts, self.seq_len, self.ranges)[split]
        h, w = st.grid_shape
        if h < self.size[0] or w < self.size[1]:
            raise ValueError(f"{st.url}: frames are {h} x {w}, smaller than the crop size {self.size}; lower size")
        if len(self.windows) == 0:
            longest = max((b - a for a, b in runs), default=0)
            self.empty_reason = (
                f"{st.url}: the {split} split ({', '.join(self.ranges.get(split, ['all']))}) has no window of "
                f"{self.seq_len} frames {st.timestep_min:g} min apart (the longest gap-free run of the store has "
                f"{longest} frames); widen the range or lower seq_len"
            )
            log.info("%s", self.empty_reason)
        from ..transforms import RADAR_DBZ_META, RADAR_RATE_META

        base = f"; {self.size[0]}x{self.size[1]} crops at native resolution of {st.url} ({st.name})"
        self.model_meta = dataclasses.replace(
            RADAR_DBZ_META, timestep_min=float(st.timestep_min), pixel_km=float(st.pixel_km),
            transform=RADAR_DBZ_META.transform + base,
        )
        self.meta = self.model_meta if units == "dBZ" else dataclasses.replace(
            RADAR_RATE_META, timestep_min=float(st.timestep_min), pixel_km=float(st.pixel_km),
            transform=RADAR_RATE_META.transform + base,
        )
        self._window: tuple[int, np.ndarray, list[tuple[int, int]]] | None = None
        self.decoded_windows = 0  # windows decompressed by this process (benchmarks, tests)

    #: NaN in an item marks pixels without data (the trainer masks them out of the loss, the evaluator out of every score).
    nan_is_nodata = True

    # ------------------------------------------------------------------ bookkeeping
    @property
    def items_per_window(self) -> int:
        """Consecutive items cut from one decompressed window (the trainer batches them together)."""
        return self.crops_per_window

    def __len__(self) -> int:
        return int(len(self.windows)) * self.crops_per_window

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_window"] = None
        return state

    def provenance(self) -> dict[str, Any]:
        """Where the items come from: the store's identifier, version, URL, variable, units, and the split ranges."""
        return {**self.store.provenance(), "timestep_min": float(self.store.timestep_min), "splits": dict(self.ranges)}

    def window_times(self, idx: int) -> np.ndarray:
        """The ``seq_len`` times (datetime64) of item ``idx``."""
        s = int(self.windows[int(idx) // self.crops_per_window])
        return self.store.times[s : s + self.seq_len]

    # ------------------------------------------------------------------ windows and crops
    def _load(self, w: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Frames (physical quantity, NaN = no data) of window ``w`` and its ranked crop corners."""
        if self._window is not None and self._window[0] == w:
            return self._window[1], self._window[2]
        s = int(self.windows[w])
        raw = self.store.read(slice(s, s + self.seq_len))
        self.decoded_windows += 1
        valid = ~np.isnan(raw).any(axis=0)
        last_in = raw[(self.t_in or self.seq_len // 2) - 1]
        with np.errstate(invalid="ignore"):
            rain = last_in >= self.rain_level
        rng = np.random.default_rng([self.seed, s])
        keep = self.crops_per_window
        ranked = rank_crops(rain, valid, self.size, self.candidates, keep, self.min_rain, rng, self.min_coverage)
        if len(ranked) < keep:  # not enough rain: the best-covered positions among the same candidates
            more = rank_crops(rain, valid, self.size, self.candidates, keep, 0.0, np.random.default_rng([self.seed, s]),
                              self.min_coverage)
            ranked += [c for c in more if c not in ranked][: keep - len(ranked)]
        corners = [(y0, x0) for _, y0, x0 in ranked]
        if not corners:  # no random candidate is covered enough: scan the coverage
            step = max(1, min(self.size) // 4)
            full = _full_coverage_scan(valid, self.size, step)
            if full:
                pick = np.random.default_rng([self.seed, s, 1]).choice(len(full), size=min(keep, len(full)), replace=False)
                corners = [full[int(i)] for i in pick]
            elif self.min_coverage < 1.0:
                corners = [(y0, x0) for _, y0, x0 in rank_crops(
                    rain, valid, self.size, self.candidates, keep, 0.0, np.random.default_rng([self.seed, s]), 0.0)]
            else:
                t0 = self.store.times[s]
                raise ValueError(
                    f"{self.store.url}: no {self.size[0]} x {self.size[1]} crop of the window at {t0} has data at "
                    "every pixel, which validation and test crops need by default; lower size or eval_min_coverage"
                )
        self._window = (w, raw, corners)
        return raw, corners

    def _encode(self, raw: np.ndarray) -> np.ndarray:
        """``[0, 1]`` frames (dBZ / 90) with NaN where there is no data.

        The encoding of :func:`~diffcast.data.radar.frames.to_unit_interval` (Marshall-Palmer
        ``dBZ = 10 log10(200 R^1.6)``, 0 dBZ for no rain), computed in float32 with one
        logarithm: it is most of the time an item takes.
        """
        if self.store.quantity == "dBZ":
            dbz = raw
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                dbz = _MP_OFFSET + _MP_SLOPE * np.log10(np.maximum(raw, np.float32(0)))
        x = np.clip(dbz * np.float32(1.0 / DBZ_SCALE), np.float32(0), np.float32(1)).astype(np.float32, copy=False)
        return x  # NaN (no data) stays NaN through log10 and clip

    def __getitem__(self, idx: int) -> torch.Tensor:
        n = len(self)
        idx = int(idx)
        if not -n <= idx < n:
            raise IndexError(self.empty_reason or f"item {idx} out of range: the {self.split} split has {n} items")
        idx %= n
        w, c = divmod(idx, self.crops_per_window)
        raw, corners = self._load(w)
        y0, x0 = corners[c % len(corners)]
        sh, sw = self.size
        x = self._encode(raw[:, y0 : y0 + sh, x0 : x0 + sw])
        if self.backbone:
            cy0, cx0, ch, cw = context_box(y0, x0, self.size, self.mu_context, raw.shape[1:])
            ctx = np.nan_to_num(self._encode(raw[: self.t_in, cy0 : cy0 + ch, cx0 : cx0 + cw]), nan=0.0)
            mu = backbone_mu(ctx, self.t_out, self.backbone)[:, y0 - cy0 : y0 - cy0 + sh, x0 - cx0 : x0 - cx0 + sw]
            x = np.concatenate([x, mu.astype(np.float32)])
        if self.units != "dBZ":
            from ..transforms import transcode

            nodata = np.isnan(x)
            x = transcode(x, self.model_meta, self.meta)
            x[nodata] = np.nan  # transcode's Marshall-Palmer maps NaN to 0 mm/h: no data must stay NaN
        if self.augment:
            x = random_rot_flip(x)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32))[:, None]
