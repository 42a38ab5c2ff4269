"""Pictures of a nowcast: an animated GIF and a PNG panel.

Frames are drawn in the dataset's threshold space (``x * meta.scale``): SEVIR-like
VIL data with the SEVIR VIL colour map (:func:`diffcast.viz.colormaps.vil_cmap`),
reflectivity (dBZ) with a sequential map over 0-70 dBZ. Probabilities use a
separate 0-1 map. Matplotlib is used through its object API (no pyplot, no global
backend switch); GIFs are assembled with Pillow. Every file is written atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.contract import DatasetMeta
from ..utils.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class Panel:
    """One image column of an animation.

    Attributes
    ----------
    label : str
        Title drawn above the panel.
    frames : ndarray
        ``(T, H, W)`` values in ``[0, 1]`` (``kind="value"``) or probabilities
        (``kind="prob"``); frame ``i`` is shown in animation frame ``i`` (a panel
        with fewer frames stays blank afterwards; use ``offset`` to start later).
    kind : str
        ``"value"`` or ``"prob"``.
    offset : int
        Animation frame at which this panel's first frame appears.
    """

    label: str
    frames: np.ndarray
    kind: str = "value"
    offset: int = 0


def _is_vil(meta: DatasetMeta) -> bool:
    return meta.unit.lower().startswith("vil")


def value_cmap(meta: DatasetMeta) -> tuple[Any, Any]:
    """``(cmap, norm)`` for values in threshold space (``x * meta.scale``)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if _is_vil(meta):
        from .colormaps import vil_cmap

        return vil_cmap()
    cmap = colormaps["turbo"].with_extremes(under="white")
    lo = min(meta.thresholds) / 2 if meta.thresholds else 1e-3
    return cmap, Normalize(vmin=lo, vmax=min(meta.scale, 70.0))


def prob_cmap() -> tuple[Any, Any]:
    """``(cmap, norm)`` for exceedance probabilities."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    return colormaps["magma_r"], Normalize(vmin=0.0, vmax=1.0)


def colorize(values: np.ndarray, meta: DatasetMeta, kind: str = "value") -> np.ndarray:
    """Map ``[0, 1]`` values (or probabilities) to RGB.

    Parameters
    ----------
    values : ndarray
        ``(..., H, W)`` in ``[0, 1]``.
    meta : DatasetMeta
        Gives the threshold space and colour map.
    kind : str
        ``"value"`` or ``"prob"``.

    Returns
    -------
    ndarray
        ``(..., H, W, 3)`` uint8.
    """
    if kind not in ("value", "prob"):
        raise ValueError(f"kind must be 'value' or 'prob', got {kind!r}")
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    if kind == "prob":
        cmap, norm = prob_cmap()
        rgba = cmap(norm(v))
    else:
        cmap, norm = value_cmap(meta)
        rgba = cmap(norm(v * meta.scale))
    return (np.asarray(rgba)[..., :3] * 255.0 + 0.5).astype(np.uint8)


def _upscale(img: np.ndarray, factor: int) -> np.ndarray:
    return img if factor == 1 else img.repeat(factor, axis=0).repeat(factor, axis=1)


def save_panels_gif(
    path: str | os.PathLike[str],
    panels: Sequence[Panel],
    meta: DatasetMeta,
    frame_labels: Sequence[str] | None = None,
    *,
    scale: int | None = None,
    duration_ms: int = 400,
    title: str | None = None,
) -> Path:
    """Write an animated GIF with panels side by side.

    Parameters
    ----------
    path : path-like
        Destination ``.gif``.
    panels : sequence of Panel
        Columns of the animation.
    meta : DatasetMeta
        Colour map and threshold space of the values.
    frame_labels : sequence of str, optional
        Caption of each animation frame (e.g. ``"+15 min"``).
    scale : int, optional
        Integer upscaling of each pixel; by default so that panels are >= 128 px.
    duration_ms : int
        Display time of each frame.
    title : str, optional
        Text drawn in the caption line before the frame label.
    """
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("save_panels_gif needs at least one panel")
    h, w = panels[0].frames.shape[-2:]
    for p in panels:
        if p.frames.ndim != 3 or p.frames.shape[-2:] != (h, w):
            raise ValueError(f"panel {p.label!r} must be (T, {h}, {w}), got {p.frames.shape}")
    n_frames = max(p.offset + p.frames.shape[0] for p in panels)
    if n_frames < 1:
        raise ValueError("panels have no frames")
    scale = scale or max(1, int(np.ceil(128 / max(h, w))))
    scale = min(scale, 4)
    ph, pw = h * scale, w * scale
    gap, head, foot = 4, 14, 14
    width = len(panels) * pw + (len(panels) + 1) * gap
    height = head + ph + foot + gap
    colored = [colorize(p.frames, meta, p.kind) for p in panels]
    images = []
    for i in range(n_frames):
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        for j, (p, rgb) in enumerate(zip(panels, colored)):
            x0 = gap + j * (pw + gap)
            draw.text((x0, 1), p.label[: max(4, pw // 6)], fill=(0, 0, 0))
            k = i - p.offset
            if 0 <= k < rgb.shape[0]:
                canvas.paste(Image.fromarray(_upscale(rgb[k], scale)), (x0, head))
            else:
                draw.rectangle([x0, head, x0 + pw - 1, head + ph - 1], fill=(235, 235, 235))
        caption = " ".join(s for s in (title, frame_labels[i] if frame_labels and i < len(frame_labels) else f"frame {i}") if s)
        draw.text((gap, head + ph + 2), caption[: width // 6], fill=(0, 0, 0))
        images.append(canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0, disposal=2
        )
    log.info("wrote %s (%d frames)", path, n_frames)
    return path


def _lead_labels(t_in: int, t_out: int, step: float) -> list[str]:
    return [f"obs {(i - t_in + 1) * step:+g} min" for i in range(t_in)] + [
        f"forecast +{(k + 1) * step:g} min" for k in range(t_out)
    ]


def save_forecast_gif(
    path: str | os.PathLike[str],
    x_in: np.ndarray,
    forecast: np.ndarray,
    meta: DatasetMeta,
    *,
    prob_threshold: float | None = None,
    members_shown: int = 2,
    y_true: np.ndarray | None = None,
    timestep_min: float | None = None,
    title: str | None = None,
) -> Path:
    """Animated GIF of a nowcast: observed frames, then the forecast.

    Panels: observed/truth | ensemble mean | up to ``members_shown`` members |
    probability of exceeding ``prob_threshold`` (threshold space). The observed
    frames play first (in every panel's first column only), then the leads.

    Parameters
    ----------
    x_in : ndarray
        ``(T_in, H, W)`` observed frames in ``[0, 1]``.
    forecast : ndarray
        ``(M, T_out, H, W)`` in ``[0, 1]``.
    meta : DatasetMeta
        Units and colour map.
    prob_threshold : float, optional
        Threshold in threshold space; defaults to the middle paper threshold.
    y_true : ndarray, optional
        ``(T_out, H, W)`` observed future, shown after the inputs in the first panel.
    """
    x_in = np.asarray(x_in, dtype=np.float32)
    fc = np.asarray(forecast, dtype=np.float32)
    if x_in.ndim != 3 or fc.ndim != 4:
        raise ValueError(f"expected x_in (T_in, H, W) and forecast (M, T_out, H, W), got {x_in.shape} and {fc.shape}")
    t_in, t_out = x_in.shape[0], fc.shape[1]
    thr = default_prob_threshold(meta) if prob_threshold is None else float(prob_threshold)
    first = x_in if y_true is None else np.concatenate([x_in, np.asarray(y_true, dtype=np.float32)[:t_out]])
    panels = [Panel("observed" if y_true is None else "observed / truth", first)]
    panels.append(Panel("ensemble mean" if fc.shape[0] > 1 else "forecast", fc.mean(axis=0), offset=t_in))
    if fc.shape[0] > 1:
        for m in range(min(members_shown, fc.shape[0])):
            panels.append(Panel(f"member {m + 1}", fc[m], offset=t_in))
    code = fc * meta.scale
    panels.append(Panel(f"P(>={thr:g})", (code >= thr).mean(axis=0), kind="prob", offset=t_in))
    step = meta.timestep_min if timestep_min is None else timestep_min
    return save_panels_gif(path, panels, meta, _lead_labels(t_in, t_out, step), title=title)


def default_prob_threshold(meta: DatasetMeta) -> float:
    """The middle paper threshold of ``meta`` (e.g. VIL code 133 for SEVIR)."""
    if not meta.thresholds:
        return 0.5 * meta.scale
    th = sorted(meta.thresholds)
    return float(th[(len(th) - 1) // 2])


def save_forecast_panel(
    path: str | os.PathLike[str],
    x_in: np.ndarray,
    forecast: np.ndarray,
    meta: DatasetMeta,
    *,
    prob_threshold: float | None = None,
    members_shown: int = 3,
    n_cols: int = 6,
    y_true: np.ndarray | None = None,
    timestep_min: float | None = None,
    title: str | None = None,
    dpi: int = 90,
) -> Path:
    """PNG panel: rows observed inputs | (truth) | ensemble mean | members | probability.

    Columns are the last ``n_cols`` observed frames (first row) and ``n_cols``
    evenly spaced leads (other rows).

    Parameters
    ----------
    x_in : ndarray
        ``(T_in, H, W)`` in ``[0, 1]``.
    forecast : ndarray
        ``(M, T_out, H, W)`` in ``[0, 1]``.
    meta : DatasetMeta
        Units and colour map.
    prob_threshold : float, optional
        Threshold in threshold space (default: middle paper threshold).
    y_true : ndarray, optional
        ``(T_out, H, W)`` observed future, drawn as its own row.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    x_in = np.asarray(x_in, dtype=np.float32)
    fc = np.asarray(forecast, dtype=np.float32)
    if x_in.ndim != 3 or fc.ndim != 4:
        raise ValueError(f"expected x_in (T_in, H, W) and forecast (M, T_out, H, W), got {x_in.shape} and {fc.shape}")
    t_in, t_out = x_in.shape[0], fc.shape[1]
    step = meta.timestep_min if timestep_min is None else timestep_min
    thr = default_prob_threshold(meta) if prob_threshold is None else float(prob_threshold)
    n_cols = max(1, min(n_cols, t_out))
    leads = np.unique(np.linspace(0, t_out - 1, n_cols).round().astype(int))
    n_cols = len(leads)
    obs_idx = list(range(max(0, t_in - n_cols), t_in))

    rows: list[tuple[str, list[np.ndarray | None], list[str], str]] = []
    rows.append(
        ("observed", [x_in[i] for i in obs_idx] + [None] * (n_cols - len(obs_idx)), [f"{(i - t_in + 1) * step:+g} min" for i in obs_idx], "value")
    )
    lead_titles = [f"+{(k + 1) * step:g} min" for k in leads]
    if y_true is not None:
        yt = np.asarray(y_true, dtype=np.float32)
        rows.append(("truth", [yt[k] if k < yt.shape[0] else None for k in leads], lead_titles, "value"))
    multi = fc.shape[0] > 1
    rows.append(("ensemble mean" if multi else "forecast", [fc.mean(axis=0)[k] for k in leads], lead_titles, "value"))
    if multi:
        for m in range(min(members_shown, fc.shape[0])):
            rows.append((f"member {m + 1}", [fc[m, k] for k in leads], lead_titles, "value"))
    prob = ((fc * meta.scale) >= thr).mean(axis=0)
    rows.append((f"P(>= {thr:g})", [prob[k] for k in leads], lead_titles, "prob"))

    vcmap, vnorm = value_cmap(meta)
    pcmap, pnorm = prob_cmap()
    fig = Figure(figsize=(1.6 * n_cols + 1.4, 1.65 * len(rows) + 0.5), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (label, imgs, titles, kind) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = imgs[c] if c < len(imgs) else None
            if img is None:
                ax.set_axis_off()
                continue
            if kind == "prob":
                ax.imshow(img, cmap=pcmap, norm=pnorm, interpolation="nearest")
            else:
                ax.imshow(img * meta.scale, cmap=vcmap, norm=vnorm, interpolation="nearest")
            if c < len(titles):
                ax.set_title(titles[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.86, top=0.93 if title else 0.96, bottom=0.02, wspace=0.05, hspace=0.25)
    cax1 = fig.add_axes((0.88, 0.52, 0.02, 0.4))
    fig.colorbar(ScalarMappable(norm=vnorm, cmap=vcmap), cax=cax1).set_label(meta.unit, fontsize=7)
    cax2 = fig.add_axes((0.88, 0.06, 0.02, 0.3))
    fig.colorbar(ScalarMappable(norm=pnorm, cmap=pcmap), cax=cax2).set_label("probability", fontsize=7)
    for cax in (cax1, cax2):
        cax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote %s", path)
    return path
