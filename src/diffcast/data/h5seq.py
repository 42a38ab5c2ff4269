"""The DiffCast HDF5 sets for CIKM, Shanghai Radar and MeteoNet.

Layouts written by the published DiffCast preprocessing:

* **CIKM** (``cikm``): groups ``train``, ``valid``, ``test`` holding datasets
  ``sample_{i}`` of shape ``(15, 101, 101)`` uint8; centre-padded with zeros to
  128x128 (5 inputs -> 10 targets). ``[0, 1] = uint8 / 255`` (dBZ = 90 x).
* **Shanghai** (``shanghai``): groups ``train``, ``test`` holding datasets
  ``"0", "1", ...`` of shape ``(25, H, W)`` uint8, resized to 128.
  ``[0, 1] = uint8 / 255``.
* **MeteoNet** (``meteonet``): as Shanghai, but ``[0, 1] = x / 90`` (dBZ = 90 x)
  and the value 255 marks invalid pixels, which become 0.

Shanghai and MeteoNet have no validation group. The published code validated on
the test split; here that is an explicit choice: ``val_from="test"`` (default,
logged as a warning) or ``val_from="train_tail"``, which holds out the last
``val_fraction`` (10%) of the train group as validation and removes it from train.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from . import DATASETS
from .contract import DatasetMeta
from .sevir import RESIZE_METHODS, _is_url, _open_binary, resize_frames
from .transforms import CIKM_META, METEONET_META, SHANGHAI_META

log = logging.getLogger(__name__)

_SAMPLE = re.compile(r"^sample_(\d+)$")
_INDEX = re.compile(r"^(\d+)$")


class H5SequenceDataset(Dataset):
    """Base class: one HDF5 file, groups per split, one uint8 ``(T, H, W)`` dataset per sequence.

    Parameters
    ----------
    path : str or path
        The ``.h5`` file (local or fsspec URL).
    split : {"train", "val", "test"}
    seq_len : int, optional
        Frames per item (default: the layout's length, 15 or 25); the first
        ``seq_len`` frames are used.
    size : int or (int, int) or None
        Output size (default 128); ``None`` keeps the stored size.
    resize : {"area", "bilinear", "diffcast-compat"}
        Resize method for layouts that resize (Shanghai, MeteoNet).
    val_from : {"test", "train_tail"}
        Where validation comes from when the file has no validation group.
    val_fraction : float
        Fraction of train held out by ``val_from="train_tail"``.
    storage_options : dict, optional
        fsspec options for URLs.
    """

    name = ""
    meta: DatasetMeta
    groups: dict[str, str] = {}
    key_pattern = _INDEX
    default_len = 25
    pad = False  # centre-pad instead of resizing

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str = "train",
        seq_len: int | None = None,
        size: int | tuple[int, int] | None = 128,
        resize: str = "area",
        val_from: str = "test",
        val_fraction: float = 0.1,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        import h5py

        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose one of: train, val, test")
        if resize not in RESIZE_METHODS:
            raise ValueError(
                f"unknown resize method {resize!r}; choose one of: {', '.join(RESIZE_METHODS)}"
            )
        if val_from not in ("test", "train_tail"):
            raise ValueError(f"val_from must be 'test' or 'train_tail', got {val_from!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.path = str(path)
        self.storage_options = dict(storage_options or {})
        self.split = split
        self.seq_len = self.default_len if seq_len is None else int(seq_len)
        self.size = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be a positive int or (H, W), got {size}")
        self.resize = resize
        self.val_from = val_from

        group = self.groups.get(split)
        take: slice | None = None
        if group is None:  # no validation group in this layout
            if val_from == "test":
                log.warning(
                    "%s has no validation group: split 'val' uses the TEST group (as the published DiffCast "
                    "code did); pass val_from='train_tail' to hold out the end of train instead",
                    self.name,
                )
                group = self.groups["test"]
            else:
                group = self.groups["train"]
        raw = _open_binary(self.path, self.storage_options) if _is_url(self.path) else None
        if raw is None and not Path(self.path).is_file():
            raise FileNotFoundError(f"{self.name} file {self.path} not found")
        try:
            with h5py.File(raw if raw is not None else self.path, "r") as fh:
                if group not in fh:
                    raise ValueError(
                        f"{self.path} is not a {self.name} file in the DiffCast layout: no group {group!r} "
                        f"(top-level keys: {', '.join(list(fh.keys())[:10]) or 'none'})"
                    )
                keys = self._sorted_keys(fh[group], group)
                first = fh[group][keys[0]]
                shape, dtype = first.shape, first.dtype
        except OSError as exc:
            raise ValueError(f"cannot open {self.name} HDF5 file {self.path}: {exc}") from exc
        finally:
            if raw is not None:
                raw.close()
        if len(shape) != 3 or dtype != np.uint8:
            raise ValueError(
                f"{self.path}/{group}/{keys[0]}: expected (T, H, W) uint8, got {shape} {dtype}"
            )
        if shape[0] < self.seq_len:
            raise ValueError(
                f"{self.path}/{group}/{keys[0]} has {shape[0]} frames, fewer than seq_len={self.seq_len}"
            )
        if (
            split in ("train", "val")
            and self.groups.get("val") is None
            and val_from == "train_tail"
        ):
            n_val = max(1, int(round(len(keys) * val_fraction)))
            if n_val >= len(keys):
                raise ValueError(
                    f"{self.path}: too few train sequences ({len(keys)}) to hold out {val_fraction:.0%}"
                )
            take = slice(len(keys) - n_val, None) if split == "val" else slice(0, len(keys) - n_val)
            log.info(
                "%s: %s = %s of the train group (val_from='train_tail')", self.name, split, take
            )
        self.group = group
        self.keys = keys if take is None else keys[take]
        self.native_size = shape[1:]
        self._fh: Any = None
        self._raw: Any = None
        self._pid = os.getpid()

    def _sorted_keys(self, grp: Any, group: str) -> list[str]:
        pairs = []
        for k in grp.keys():
            m = self.key_pattern.match(k)
            if m is None:
                raise ValueError(
                    f"{self.path}/{group}: unexpected entry {k!r} for the {self.name} layout "
                    f"(expected names matching {self.key_pattern.pattern})"
                )
            pairs.append((int(m.group(1)), k))
        if not pairs:
            raise ValueError(f"{self.path}/{group} is empty")
        return [k for _, k in sorted(pairs)]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_raw"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def _file(self) -> Any:
        import h5py

        if self._fh is None or os.getpid() != self._pid:
            self._pid = os.getpid()
            self._raw = (
                _open_binary(self.path, self.storage_options) if _is_url(self.path) else None
            )
            self._fh = h5py.File(self._raw if self._raw is not None else self.path, "r")
        return self._fh

    def __len__(self) -> int:
        return len(self.keys)

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """uint8 ``(T, H, W)`` -> float32 ``[0, 1]`` (layout specific)."""
        return raw.astype(np.float32) * (1.0 / 255.0)

    def sequence(self, idx: int) -> np.ndarray:
        """Item ``idx`` as ``(seq_len, H, W)`` float32 in ``[0, 1]``."""
        key = self.keys[idx]
        ds = self._file()[self.group][key]
        if ds.ndim != 3 or ds.shape[0] < self.seq_len:
            raise ValueError(
                f"{self.path}/{self.group}/{key}: expected >= {self.seq_len} frames (T, H, W), got {ds.shape}"
            )
        x = self.decode(ds[: self.seq_len])
        if self.size is not None:
            if self.pad:
                x = center_pad(x, self.size)
            else:
                x = resize_frames(x, self.size, self.resize)
        return np.clip(x, 0.0, 1.0)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.sequence(int(idx))))[:, None]


def center_pad(x: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Zero-pad ``(T, H, W)`` symmetrically to ``size`` (extra pixel after), e.g. 101 -> 13 + 101 + 14."""
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if h > th or w > tw:
        raise ValueError(f"cannot pad {h}x{w} frames to {th}x{tw}")
    top, left = (th - h) // 2, (tw - w) // 2
    return np.pad(x, ((0, 0), (top, th - h - top), (left, tw - w - left)))


@DATASETS.register("cikm")
class CIKMDataset(H5SequenceDataset):
    """CIKM AnalytiCup 2017 radar (see module docstring); 15 frames, padded 101 -> 128."""

    name = "cikm"
    meta = CIKM_META
    groups = {"train": "train", "val": "valid", "test": "test"}
    key_pattern = _SAMPLE
    default_len = 15
    pad = True


@DATASETS.register("shanghai")
class ShanghaiDataset(H5SequenceDataset):
    """Shanghai Radar (see module docstring); 25 frames resized to 128."""

    name = "shanghai"
    meta = SHANGHAI_META
    groups = {"train": "train", "test": "test"}


@DATASETS.register("meteonet")
class MeteoNetDataset(H5SequenceDataset):
    """MeteoNet (see module docstring); 25 frames, ``x / 90``, 255 = invalid -> 0."""

    name = "meteonet"
    meta = METEONET_META
    groups = {"train": "train", "test": "test"}

    def decode(self, raw: np.ndarray) -> np.ndarray:
        x = raw.astype(np.float32) * (1.0 / 90.0)
        x[raw == 255] = 0.0
        return np.clip(x, 0.0, 1.0)
