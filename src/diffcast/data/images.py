"""Image-sequence folders: numbered greyscale frames (``0.png, 1.png, ...``).

Frames are sorted by the last number in their file name (``0.png``, ``frame_0001.png``,
``img-12.png``), not alphabetically. Grey values are VIL codes (0-255) and
``[0, 1] = grey / 255`` (:data:`~diffcast.data.transforms.IMAGES_META`). RGB(A)
images are accepted when R = G = B (as in the SEVIR demo of the DiffCast
repository: ``demo_N/preds/0..4.png`` = 5 observed frames, ``demo_N/targets/0..19.png``
= 20 target frames); colour images are refused since their colour map cannot be
inverted reliably.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import DATASETS
from .transforms import IMAGES_META

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
#: Sub-folder names holding observed frames (``preds`` is what the DiffCast demo calls them).
INPUT_DIRS = ("inputs", "input", "x_in", "preds")
#: Sub-folder names holding target frames.
TARGET_DIRS = ("targets", "target", "y_true", "gt")
_NUM = re.compile(r"(\d+)")


def _frame_number(path: Path) -> int:
    nums = _NUM.findall(path.stem)
    if not nums:
        raise ValueError(
            f"cannot order frame {path}: its name has no frame number (expected e.g. 0.png, frame_0001.png)"
        )
    return int(nums[-1])


def list_frames(folder: str | Path) -> list[Path]:
    """Image files of ``folder`` sorted by frame number.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    ValueError
        If it holds no images or two files share a frame number.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    if not files:
        raise ValueError(f"no image frames ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    keyed = sorted((_frame_number(p), p.name, p) for p in files)
    nums = [k for k, _, _ in keyed]
    dups = sorted({n for n in nums if nums.count(n) > 1})
    if dups:
        raise ValueError(
            f"{folder}: several files share frame number(s) {dups[:5]}; cannot order the frames"
        )
    return [p for _, _, p in keyed]


def read_image(path: str | Path) -> np.ndarray:
    """One greyscale frame as ``(H, W)`` float32 in ``[0, 1]`` (grey / 255, 16-bit / 65535).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing, unreadable/corrupt or colour (R != G != B) image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA")
                mode = "RGBA"
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    if mode == "F":
        raise ValueError(
            f"{path}: floating-point images are not supported; save 8-bit greyscale PNGs"
        )
    if arr.ndim == 3:
        rgb = arr[..., :3].astype(np.int16)
        if (
            np.abs(rgb[..., 0] - rgb[..., 1]).max() > 1
            or np.abs(rgb[..., 0] - rgb[..., 2]).max() > 1
        ):
            raise ValueError(
                f"{path} is a colour image (R, G, B differ); expected greyscale frames whose grey value is the "
                "VIL code (0-255)"
            )
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return arr.astype(np.float32) / 255.0


def read_image_frames(folder: str | Path) -> np.ndarray:
    """All frames of a folder, sorted by frame number.

    Returns
    -------
    numpy.ndarray
        ``(T, H, W)`` float32 in ``[0, 1]`` (grey value / 255 = VIL code / 255).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing folder, no frames, unreadable frames or frames of different sizes.
    """
    files = list_frames(folder)
    frames = [read_image(p) for p in files]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        sizes = ", ".join(f"{p.name}: {f.shape[0]}x{f.shape[1]}" for p, f in zip(files, frames))
        raise ValueError(f"frames in {folder} have different sizes ({sizes[:300]})")
    return np.stack(frames).astype(np.float32, copy=False)


def _find_sub(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def read_image_sequence(folder: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a sequence folder: ``inputs/`` (or ``preds/``) + ``targets/``, or plain frames.

    Parameters
    ----------
    folder : path
        Either a folder with an input sub-folder (``inputs``, ``input``, ``x_in`` or
        ``preds``, the DiffCast demo's name for the observed frames) and optionally a
        target sub-folder (``targets``, ``target``, ``y_true``, ``gt``), or a folder
        of frames.

    Returns
    -------
    x_in : numpy.ndarray
        ``(T_in, H, W)`` float32 in ``[0, 1]``.
    y_true : numpy.ndarray or None
        ``(T_out, H, W)`` float32, or ``None`` when there are no targets.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"sequence folder {folder} does not exist")
    inp = _find_sub(folder, INPUT_DIRS)
    tgt = _find_sub(folder, TARGET_DIRS)
    if inp is None:
        if tgt is not None:
            raise ValueError(
                f"{folder} has {tgt.name}/ but no input frames folder (one of {', '.join(INPUT_DIRS)})"
            )
        return read_image_frames(folder), None
    x_in = read_image_frames(inp)
    if tgt is None:
        return x_in, None
    y_true = read_image_frames(tgt)
    if x_in.shape[1:] != y_true.shape[1:]:
        raise ValueError(
            f"{folder}: input frames are {x_in.shape[1]}x{x_in.shape[2]} but targets are "
            f"{y_true.shape[1]}x{y_true.shape[2]}"
        )
    return x_in, y_true


def is_sequence_folder(folder: Path) -> bool:
    """True for a folder with an input sub-folder or with image frames directly inside."""
    if _find_sub(folder, INPUT_DIRS) is not None:
        return True
    return folder.is_dir() and any(
        p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file()
    )


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if x.shape[-2:] == tuple(size):
        return x
    interp = cv2.INTER_AREA if x.shape[-2] >= size[0] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=interp) for f in x])


@DATASETS.register("images")
class ImageSequences(Dataset):
    """Sequence folders of numbered greyscale frames.

    ``root`` holds one folder per sequence (e.g. the SEVIR demo's ``demo_0/``,
    ``demo_1/``); an item is the input frames followed by the target frames, as
    ``(T, 1, H, W)`` float32 in ``[0, 1]``.

    Splits: when ``root`` has ``train/``, ``val/`` and/or ``test/`` sub-folders,
    they are used. Otherwise, with ``split_fractions=None`` (default), *every split
    sees all sequences* (such folders are usually evaluation sets); a warning says
    so. With ``split_fractions=(f_train, f_val, f_test)`` the sorted sequence
    folders are cut into contiguous, disjoint blocks instead.

    Parameters
    ----------
    root : path
        Folder of sequence folders.
    split : {"train", "val", "test"}
    seq_len : int, optional
        Frames per item: the first ``seq_len`` frames are used; sequences with
        fewer frames raise ``ValueError``. Default: all frames.
    size : int or (int, int), optional
        Resize frames (area averaging when shrinking, bilinear when enlarging).
    split_fractions : (float, float, float), optional
        See above.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        seq_len: int | None = None,
        size: int | tuple[int, int] | None = None,
        split_fractions: tuple[float, float, float] | None = None,
    ) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose one of: train, val, test")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image dataset root {self.root} does not exist")
        base = self.root / split if (self.root / split).is_dir() else None
        if base is None and any((self.root / s).is_dir() for s in ("train", "val", "test")):
            raise ValueError(f"{self.root} has split folders but no {split}/ folder")
        folders = sorted(
            (
                p
                for p in (base or self.root).iterdir()
                if p.is_dir() and not p.name.startswith(".") and is_sequence_folder(p)
            ),
            key=lambda p: ([int(n) for n in _NUM.findall(p.name)], p.name),
        )
        if base is None and is_sequence_folder(self.root) and not folders:
            folders = [self.root]  # root is itself one sequence
        if not folders:
            raise ValueError(
                f"no sequence folders (with frames or {'/'.join(INPUT_DIRS)} sub-folders) in {base or self.root}"
            )
        if base is None:
            if split_fractions is None:
                log.warning(
                    "%s has no train/val/test folders: split %r uses all %d sequences (pass "
                    "split_fractions=(...) for disjoint splits)",
                    self.root,
                    split,
                    len(folders),
                )
            else:
                fr = np.asarray(split_fractions, dtype=float)
                if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
                    raise ValueError(
                        f"split_fractions must be three non-negative numbers, got {split_fractions}"
                    )
                edges = np.round(
                    np.cumsum(np.concatenate([[0.0], fr / fr.sum()])) * len(folders)
                ).astype(int)
                i = ("train", "val", "test").index(split)
                folders = folders[edges[i] : edges[i + 1]]
                if not folders:
                    raise ValueError(
                        f"split {split!r} of {self.root} is empty with split_fractions={split_fractions}"
                    )
        self.folders = folders
        self.split = split
        self.seq_len = None if seq_len is None else int(seq_len)
        self.size = (
            None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        )
        self.meta = IMAGES_META

    def __len__(self) -> int:
        return len(self.folders)

    def sequence(self, idx: int) -> np.ndarray:
        """Item ``idx`` as ``(T, H, W)`` float32 (inputs then targets)."""
        folder = self.folders[idx]
        x_in, y_true = read_image_sequence(folder)
        seq = x_in if y_true is None else np.concatenate([x_in, y_true], axis=0)
        if self.seq_len is not None:
            if seq.shape[0] < self.seq_len:
                raise ValueError(
                    f"{folder} has {seq.shape[0]} frames, fewer than seq_len={self.seq_len}"
                )
            seq = seq[: self.seq_len]
        if self.size is not None:
            seq = _resize(seq, self.size)
        return np.clip(seq, 0.0, 1.0)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.sequence(int(idx))))[:, None]
