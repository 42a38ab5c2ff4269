"""Reader of image folders: numbered frames (``0.png``, ``1.png``, ...).

Grey value = model value x 255, as in the SEVIR demo folders. A folder holding
``preds/`` (the layout of ``sevir_demo/demo_N``) is read through
:func:`diffcast.data.images.read_image_sequence`: its ``preds/`` frames are the
inputs and ``targets/`` (when present) the observed future.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import RawInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _input_subfolder(folder: Path) -> Path | None:
    from ...data.images import INPUT_DIRS

    return next((folder / n for n in INPUT_DIRS if (folder / n).is_dir()), None)


def _read_images(folder: Path) -> RawInput:
    from ...data import images

    inp = _input_subfolder(folder)
    if inp is not None:
        x_in, y_true = images.read_image_sequence(folder)
        raw = RawInput(np.asarray(x_in, dtype=np.float32), "images", [str(p) for p in images.list_frames(inp)])
        raw.y_true = None if y_true is None else np.asarray(y_true, dtype=np.float32)
        return raw
    frames = images.read_image_frames(folder)
    return RawInput(np.asarray(frames, dtype=np.float32), "images", [str(p) for p in images.list_frames(folder)])
