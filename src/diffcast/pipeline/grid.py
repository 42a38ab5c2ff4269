"""Grid fitting: frames (and their no-data mask and georeferencing) onto a model's grid.

Area-average resize when the aspect ratio matches (bilinear when enlarging),
optionally after a centre crop (:func:`grid_window`); a projected grid and the
no-data mask follow the crop and the resize.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..geo import ProjectedGrid

#: Relative tolerance on aspect ratios when resizing.
ASPECT_TOL = 0.02


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from ..data.sevir import resize_frames

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
