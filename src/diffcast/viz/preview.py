"""Preview grids of data sequences (``diffcast data preview``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.contract import DatasetMeta
from ..utils.io import atomic_path
from .colormaps import dbz_cmap, vil_cmap

log = logging.getLogger(__name__)


def _as_frames(seq: np.ndarray) -> np.ndarray:
    arr = seq.detach().cpu().numpy() if hasattr(seq, "detach") else np.asarray(seq)
    if arr.ndim == 4:  # (T, C, H, W): first channel
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(
            f"preview expects sequences of shape (T, H, W) or (T, C, H, W), got {arr.shape}"
        )
    return arr.astype(np.float32, copy=False)


def plot_sequences(
    sequences: Sequence[np.ndarray],
    out: str | Path,
    meta: DatasetMeta,
    *,
    frames: int | Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    dpi: int = 80,
) -> Path:
    """Draw sequences as a grid (one row per sequence) and write a PNG atomically.

    Parameters
    ----------
    sequences : sequence of arrays
        Each ``(T, H, W)`` or ``(T, C, H, W)`` in ``[0, 1]``.
    out : path
        Output ``.png`` file; its folder must exist.
    meta : DatasetMeta
        Gives the colour map: the SEVIR VIL map for VIL data, a dBZ map otherwise,
        and the colour-bar unit.
    frames : int or sequence of int, optional
        Number of evenly spaced frames to draw, or explicit frame indices
        (default: up to 8 evenly spaced frames).
    titles : sequence of str, optional
        Row labels.
    dpi : int
        Resolution.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seqs = [_as_frames(s) for s in sequences]
    if not seqs:
        raise ValueError("nothing to preview: no sequences")
    t = min(s.shape[0] for s in seqs)
    if frames is None:
        frames = min(8, t)
    if isinstance(frames, int):
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        idx = np.unique(np.linspace(0, t - 1, min(frames, t)).round().astype(int)).tolist()
    else:
        idx = [int(i) for i in frames]
        bad = [i for i in idx if not 0 <= i < t]
        if bad:
            raise ValueError(f"frame indices {bad} out of range for sequences of {t} frames")
    is_vil = str(meta.unit).lower().startswith("vil")
    cmap, norm = (
        vil_cmap() if is_vil else dbz_cmap(min(meta.thresholds) / 2 if meta.thresholds else 5.0)
    )

    rows, cols = len(seqs), len(idx)
    fig = Figure(figsize=(1.6 * cols + 1.2, 1.6 * rows + 0.4), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for r, seq in enumerate(seqs):
        for c, ti in enumerate(idx):
            ax = axes[r, c]
            im = ax.imshow(seq[ti] * meta.scale, cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={ti} ({ti * meta.timestep_min:g} min)", fontsize=7)
            if c == 0 and titles is not None and r < len(titles):
                ax.set_ylabel(str(titles[r]), fontsize=7)
    fig.subplots_adjust(left=0.05, right=0.88, top=0.92, bottom=0.03, wspace=0.04, hspace=0.08)
    cax = fig.add_axes((0.9, 0.1, 0.015, 0.8))
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(meta.unit, fontsize=7)
    cb.ax.tick_params(labelsize=6)
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote preview of %d sequence(s) x %d frame(s) to %s", rows, cols, out)
    return out
