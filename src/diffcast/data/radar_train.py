"""Training windows from radar archives, with the backbone's ``mu`` computed once.

DiffCast over a parameter-free backbone (``extrapolation``: pysteps Lucas-Kanade +
semi-Lagrangian advection) learns only the residual ``y - mu``; computing ``mu``
with LK at every training step would dominate the step time. This dataset cuts a
fixed pool of crops from the radar windows once, computes ``mu`` for each crop
with the backbone, stores the pool (float16) in a cache file outside the work
tree, and serves items of ``t_in + 2 t_out`` frames: inputs, observed future and
``mu``. The trainer passes the last ``t_out`` frames to
``ResidualDiffusion.loss(..., mu=...)`` (see :mod:`diffcast.training.trainer`).

Policy, all deterministic from ``seed``:

- archives: every folder under ``root`` that holds one radar series (MeteoSwiss,
  FMI, BoM station/product, ...) with a wanted ``timestep_min`` (5 min by
  default: series with another step are skipped and logged, never resampled in
  time). A list, e.g. ``[5, 6]``, also takes series of the other steps at their own
  cadence and pixel size (one model step = one archive step): more weather for a
  data-starved model, at the price of slightly different motion per step;
- ``coarsen`` block-averages a series in space by an integer factor (e.g. 0.5 km /
  10 min frames by 4, to 2 km: one step then moves rain about as many pixels as a
  1 km / 5 min step), area averaging over valid pixels as :func:`regrid` does;
- events split by date into train / val / test by
  :class:`~diffcast.data.radar.RadarArchive` (``split_events`` to choose them);
- windows of ``t_in + t_out`` consecutive frames every ``stride`` frames inside an event;
- per window, ``crops_per_window`` crops of ``size`` x ``size`` pixels at native
  resolution, chosen among ``candidates`` random positions as those with the most
  rain (fraction of pixels >= ``rain_threshold`` dBZ in the last input frame, at
  least ``min_rain``) and full radar coverage in every frame;
- ``mu`` is computed on a ``mu_context`` x ``mu_context`` window around the crop
  (clipped to the frame) and then cut to the crop, so the motion field sees the
  rain around it, as it does when a nowcast covers a whole domain;
- training items get a random rotation by a multiple of 90 degrees and a random
  flip (the same for inputs, future and ``mu``: advection commutes with them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from . import DATASETS
from .radar import DBZ_SCALE, RadarArchive, read_frame
from .radar.frames import regrid

log = logging.getLogger(__name__)

#: Bumped when the pool layout or the crop policy changes (invalidates caches).
POOL_VERSION = 2


def default_cache_dir() -> Path:
    """``$DIFFCAST_CACHE`` or ``$XDG_CACHE_HOME/diffcast`` (``~/.cache/diffcast``), plus ``radar_windows``."""
    base = os.environ.get("DIFFCAST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "diffcast"
    )
    return Path(base) / "radar_windows"


def find_series(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included, depth <= 3) that each hold exactly one radar series."""
    from .radar import list_radar_files

    found: list[Path] = []

    def visit(folder: Path, depth: int) -> None:
        try:
            list_radar_files(folder)
        except (ValueError, FileNotFoundError):
            if depth < 3:
                for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    visit(sub, depth + 1)
            return
        found.append(folder)

    visit(Path(root), 0)
    return found


def rank_crops(
    rain: np.ndarray,
    valid: np.ndarray,
    size: int | tuple[int, int],
    candidates: int,
    keep: int,
    min_rain: float,
    rng: np.random.Generator,
    min_coverage: float = 0.999,
) -> list[tuple[float, int, int]]:
    """The rainiest of ``candidates`` random crop positions: ``[(rain fraction, y0, x0), ...]``, best first.

    ``rain`` and ``valid`` are ``(H, W)`` boolean maps (rain in the last input frame;
    data in every frame). A position is kept when at least ``min_coverage`` of its
    pixels are valid and its rain fraction is at least ``min_rain``; at most ``keep``
    are returned. Shared by :class:`RadarWindows` and the spec-store windows
    (:mod:`diffcast.data.mlcast.dataset`).
    """
    ch, cw = (size, size) if isinstance(size, int) else size
    h, w = rain.shape
    ys = rng.integers(0, h - ch + 1, candidates)
    xs = rng.integers(0, w - cw + 1, candidates)
    scored = []
    for y0, x0 in zip(ys, xs):
        win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        if valid[win].mean() < min_coverage:
            continue
        frac = float(rain[win].mean())
        if frac >= min_rain:
            scored.append((frac, int(y0), int(x0)))
    scored.sort(reverse=True)
    return scored[:keep]


def series_factors(coarsen: dict[str, int] | None, series: list[Path], root: Path) -> dict[Path, int]:
    """``{series folder: factor}`` for a ``coarsen`` setting (keys: folder name or path under ``root``)."""
    out: dict[Path, int] = {}
    for key, factor in (coarsen or {}).items():
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"coarsen: the factor of {key!r} must be a positive integer, got {factor!r}")
        hits = [f for f in series if f.name == str(key) or f.relative_to(root).as_posix() == str(key).strip("/")]
        if len(hits) != 1:
            names = ", ".join(f.relative_to(root).as_posix() for f in series)
            why = "names no series" if not hits else "names several series (give its path)"
            raise ValueError(f"coarsen: {key!r} {why}; series under {root}: {names}")
        if factor > 1:
            out[hits[0]] = factor
    return out


def context_box(y0: int, x0: int, size: tuple[int, int], ctx: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(cy0, cx0, ch, cw)``: the ``ctx`` x ``ctx`` window centred on a crop, clipped to a frame of ``shape``."""
    (sh, sw), (h, w) = size, shape
    cy0 = min(max(y0 + sh // 2 - ctx // 2, 0), max(h - ctx, 0))
    cx0 = min(max(x0 + sw // 2 - ctx // 2, 0), max(w - ctx, 0))
    return cy0, cx0, min(ctx, h), min(ctx, w)


def backbone_mu(frames_in: np.ndarray, t_out: int, backbone: str) -> np.ndarray:
    """``(t_out, h, w)`` forecast of a parameter-free backbone from ``(t_in, h, w)`` frames in ``[0, 1]``."""
    from ..models.backbones import BACKBONES

    t_in, h, w = frames_in.shape
    bb = BACKBONES.build(backbone, t_in=t_in, t_out=t_out, channels=1, height=h, width=w)
    with torch.no_grad():
        return bb(torch.from_numpy(np.ascontiguousarray(frames_in, np.float32))[None, :, None])[0, :, 0].clamp(0, 1).numpy()


def check_parameter_free(backbone: str | None) -> None:
    """Raise ``ValueError`` unless ``backbone`` is ``None`` or a parameter-free backbone (its ``mu`` can be precomputed)."""
    from ..models.backbones import BACKBONES

    if backbone and getattr(BACKBONES.get(backbone), "trainable", True):
        raise ValueError(f"backbone {backbone!r} has parameters; only parameter-free backbones are cached")


def random_rot_flip(item: np.ndarray) -> np.ndarray:
    """A random rotation by a multiple of 90 degrees and a random flip of the last two axes (``np.random``)."""
    k = int(np.random.randint(4))
    item = np.rot90(item, k, axes=(-2, -1))
    if np.random.randint(2):
        item = item[..., ::-1]
    return np.ascontiguousarray(item)


@DATASETS.register("radar_windows")
class RadarWindows(Dataset):
    """Crops of radar windows with the backbone output, for training DiffCast on radar.

    Parameters
    ----------
    root : path
        Folder of radar archives (searched for series, see :func:`find_series`).
    split : {"train", "val", "test", "all"}
    seq_len : int
        ``t_in + t_out`` (the trainer passes it).
    t_in : int
        Observed frames (the rest of ``seq_len`` is the forecast).
    size : int
        Crop size in pixels (native resolution).
    backbone : str or None
        Parameter-free backbone whose ``mu`` is appended to each item (``extrapolation``,
        ``persistence``); ``None``: items are plain ``seq_len`` sequences.
    stride : int
        Frames between window starts.
    crops_per_window, candidates : int
        Crops kept per window, random positions tried.
    rain_threshold : float
        dBZ counted as rain when ranking crops.
    min_rain : float
        Minimum rain fraction of a kept crop.
    timestep_min : float or list of float
        Time step(s) of the series to use (others are skipped). With a list, the first
        is the model's time step (the dataset's metadata); series of the other steps are
        used at their own cadence, never resampled in time.
    mu_context : int
        Side of the window on which ``mu`` is computed (at least ``size``).
    coarsen : dict, optional
        ``{series: factor}``: frames of a series are block-averaged in space by an
        integer ``factor`` before crops are cut (a series is named by its folder's name,
        e.g. ``prcp-c10``, or its path under ``root``, e.g. ``bom/prcp-c10``). Each key
        must name a series that is found.
    split_events : dict, optional
        Explicit event dates per split (passed to :class:`RadarArchive`).
    augment : bool or None
        Random rotations/flips (default: on for ``train`` only).
    cache_dir : path, optional
        Where pools are stored (default :func:`default_cache_dir`).
    seed : int
        Seed of the crop positions.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        seq_len: int = 16,
        t_in: int = 4,
        size: int = 128,
        backbone: str | None = "extrapolation",
        stride: int = 2,
        crops_per_window: int = 8,
        candidates: int = 48,
        rain_threshold: float = 15.0,
        min_rain: float = 0.02,
        timestep_min: float | list[float] = 5.0,
        mu_context: int = 256,
        coarsen: dict[str, int] | None = None,
        split_events: dict[str, Any] | None = None,
        augment: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> None:
        if not 1 <= t_in < seq_len:
            raise ValueError(f"t_in must lie in [1, seq_len={seq_len}), got {t_in}")
        if size < 8 or crops_per_window < 1 or candidates < crops_per_window:
            raise ValueError("size must be >= 8 and candidates >= crops_per_window >= 1")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"radar folder {self.root} does not exist")
        self.split = split
        self.seq_len, self.t_in, self.t_out = int(seq_len), int(t_in), int(seq_len) - int(t_in)
        self.size = int(size)
        self.backbone = backbone
        self.augment = (split == "train") if augment is None else bool(augment)
        if isinstance(timestep_min, (list, tuple)):
            steps = [float(v) for v in timestep_min]
            if not steps:
                raise ValueError("timestep_min: give at least one time step (minutes)")
            timestep_key: float | list[float] = steps
        else:
            steps = [float(timestep_min)]
            timestep_key = steps[0]
        if any(v <= 0 for v in steps):
            raise ValueError(f"timestep_min must be positive, got {timestep_min}")
        settings = {
            "version": POOL_VERSION, "split": split, "seq_len": self.seq_len, "t_in": self.t_in, "size": self.size,
            "backbone": backbone, "stride": int(stride), "crops_per_window": int(crops_per_window),
            "candidates": int(candidates), "rain_threshold": float(rain_threshold), "min_rain": float(min_rain),
            "timestep_min": timestep_key, "split_events": split_events, "seed": int(seed),
            "mu_context": max(int(mu_context), int(size)),
        }
        series = find_series(self.root)
        if not series:
            raise ValueError(f"no radar series found under {self.root}")
        self.coarsen = series_factors(coarsen, series, self.root)
        if self.coarsen:
            settings["coarsen"] = {str(k.relative_to(self.root)): v for k, v in self.coarsen.items()}
        archives: list[RadarArchive] = []
        skipped = []
        for folder in series:
            kwargs: dict[str, Any] = {"split": split, "seq_len": self.seq_len, "size": None, "stride": int(stride)}
            if split_events is not None:
                kwargs["split_events"] = split_events
            arch = RadarArchive(folder, **kwargs)
            if not any(abs(arch.timestep_min - v) <= 1e-6 for v in steps):
                skipped.append(f"{folder.relative_to(self.root) if folder != self.root else folder.name} "
                               f"({arch.timestep_min:g} min)")
                continue
            archives.append(arch)
        if skipped:
            log.info("radar_windows: series with another time step than %s min skipped: %s",
                     "/".join(f"{v:g}" for v in steps), ", ".join(skipped))
        others = [a for a in archives if abs(a.timestep_min - steps[0]) > 1e-6]
        if others:
            log.info("radar_windows: %d series used at their own cadence (%s min), as %g-min model steps",
                     len(others), "/".join(sorted({f"{a.timestep_min:g}" for a in others})), steps[0])
        self.archives = archives
        ident = {
            **settings,
            # resolved: the same files named through another spelling of the root share the pool
            "files": [[str(Path(p).resolve()) for p in a.paths] for a in archives],
            "windows": [list(map(int, a.windows)) for a in archives],
        }
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_file = self.cache_dir / f"{split}-{key}.npz"
        self.pool, self.labels = self._load_or_build(settings)
        # the metadata (time step, pixel size) of the model's own time step
        primary = [a for a in archives if abs(a.timestep_min - steps[0]) <= 1e-6]
        meta = primary[0].meta if primary else None
        from .transforms import RADAR_DBZ_META

        self.meta = dataclasses.replace(
            meta or RADAR_DBZ_META,
            transform=(RADAR_DBZ_META.transform + f"; {self.size}x{self.size} crops at native resolution"),
        )
        if len(self) == 0:
            log.warning("radar_windows split %r of %s has no item (%d series used)", split, self.root, len(archives))

    # ------------------------------------------------------------------ pool
    def _load_or_build(self, s: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
        if self.cache_file.is_file():
            with np.load(self.cache_file, allow_pickle=False) as z:
                log.info("radar_windows: %d items from %s", z["pool"].shape[0], self.cache_file)
                return z["pool"], [str(v) for v in z["labels"]]
        pool, labels = self._build(s)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(self.cache_file.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, pool=pool, labels=np.asarray(labels))
        os.replace(tmp, self.cache_file)
        log.info("radar_windows: wrote %d items to %s", pool.shape[0], self.cache_file)
        return pool, labels

    def _build(self, s: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
        from tqdm.auto import tqdm

        n_frames = self.seq_len + (self.t_out if self.backbone else 0)
        ctx = int(s["mu_context"])
        check_parameter_free(self.backbone)
        rng = np.random.default_rng(s["seed"])
        rain_x = s["rain_threshold"] / DBZ_SCALE
        items: list[np.ndarray] = []
        labels: list[str] = []
        total = sum(len(a.windows) for a in self.archives)
        bar = tqdm(total=total, desc=f"radar_windows {self.split}: crops and {self.backbone or 'no'} backbone",
                   unit="window", disable=total == 0)
        for arch in self.archives:
            factor = self.coarsen.get(arch.root, 1)
            cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            for start in arch.windows:
                idx = range(start, start + self.seq_len)
                for i in list(cache):
                    if i < start:
                        del cache[i]
                for i in idx:
                    if i not in cache:
                        x, valid, _ = read_frame(arch.paths[i], arch.fmt)
                        if factor > 1:
                            x, valid = regrid(x, valid, (x.shape[0] // factor, x.shape[1] // factor), "area")
                        cache[i] = (x, valid)
                frames = np.stack([cache[i][0] for i in idx])
                valid = np.stack([cache[i][1] for i in idx]).all(axis=0)
                h, w = frames.shape[1:]
                bar.update(1)
                if h < self.size or w < self.size:
                    continue
                crops = rank_crops(frames[self.t_in - 1] >= rain_x, valid, self.size, s["candidates"],
                                   s["crops_per_window"], s["min_rain"], rng)
                for _, y0, x0 in crops:
                    crop = frames[:, y0 : y0 + self.size, x0 : x0 + self.size]
                    item = np.empty((n_frames, self.size, self.size), np.float16)
                    item[: self.seq_len] = crop
                    if self.backbone:
                        # mu on the context window around the crop, then cut to the crop
                        cy0, cx0, ch, cw = context_box(y0, x0, (self.size, self.size), ctx, (h, w))
                        mu = backbone_mu(frames[: self.t_in, cy0 : cy0 + ch, cx0 : cx0 + cw], self.t_out, self.backbone)
                        item[self.seq_len :] = mu[:, y0 - cy0 : y0 - cy0 + self.size, x0 - cx0 : x0 - cx0 + self.size]
                    items.append(item)
                    t0 = arch.times[start + self.t_in - 1]
                    labels.append(f"{arch.root.name} {t0:%Y-%m-%dT%H:%M} y{y0} x{x0}")
        bar.close()
        pool = np.stack(items) if items else np.zeros((0, n_frames, self.size, self.size), np.float16)
        return pool, labels

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return int(self.pool.shape[0])

    def __getitem__(self, idx: int) -> torch.Tensor:
        item = self.pool[int(idx)].astype(np.float32)
        if self.augment:
            item = random_rot_flip(item)
        return torch.from_numpy(np.ascontiguousarray(item))[:, None]
