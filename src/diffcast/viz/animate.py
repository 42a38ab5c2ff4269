"""Pictures of a nowcast: an animated GIF and a PNG panel.

Frames are drawn in the units a user reads (:func:`display_values`): the
dataset's threshold space (``x * meta.scale``) for SEVIR-like VIL data (the SEVIR
VIL colour map, :func:`diffcast.viz.colormaps.vil_cmap`) and reflectivity (a
sequential map over 0-70 dBZ), and rain rate in mm/h (a logarithmic map over
0.1-100 mm/h) when the metadata's physical unit is mm/h
(:func:`diffcast.pipeline.units.rain_rate_meta`). Probabilities use a separate 0-1
map. Pixels outside radar coverage are drawn in a neutral grey
(:data:`NO_COVERAGE_RGB`). Matplotlib is used through its object API (no pyplot,
no global backend switch); GIFs are assembled with Pillow. Every file is written
atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..data.contract import DatasetMeta
from ..data.transforms import exceeds
from ..utils.io import atomic_path

log = logging.getLogger(__name__)

#: Colour of pixels outside radar coverage (a neutral grey, in none of the value or probability maps).
NO_COVERAGE_RGB = (160, 160, 160)
#: Range of the rain-rate colour map (mm/h); rates below it are drawn as no rain.
RAIN_RATE_RANGE = (0.1, 100.0)
#: Pixels colourised at a time by :func:`colorize` (bounds matplotlib's float64 RGBA).
COLORIZE_CHUNK = 1 << 16


def is_rain_rate(meta: DatasetMeta) -> bool:
    """True when ``meta`` gives rain rates (physical unit mm/h) from its threshold space."""
    return meta.physical_unit in ("mm/h", "mm h-1")


def display_unit(meta: DatasetMeta) -> str:
    """Unit of the values drawn and of the probability thresholds: mm/h for rain rates, else the threshold space's."""
    return "mm/h" if is_rain_rate(meta) else meta.unit


def display_values(x: np.ndarray, meta: DatasetMeta) -> np.ndarray:
    """``[0, 1]`` values in :func:`display_unit` (mm/h, or threshold space ``x * scale``)."""
    if is_rain_rate(meta):
        return np.asarray(meta.to_physical(x), dtype=np.float32)
    return np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32)), 0.0, 1.0) * meta.scale


def threshold_value(code: float, meta: DatasetMeta) -> float:
    """A threshold in threshold space (``x * scale``) in :func:`display_unit` (6 significant digits)."""
    if not is_rain_rate(meta):
        return float(code)
    v = float(np.asarray(meta.to_physical(np.float32(code / meta.scale))))
    return float(f"{v:.6g}")


@dataclass
class Panel:
    """One image column of an animation.

    Attributes
    ----------
    label : str
        Title drawn above the panel.
    frames : ndarray or PerLead
        ``(T, H, W)`` values in ``[0, 1]`` (``kind="value"``) or probabilities
        (``kind="prob"``); frame ``i`` is shown in animation frame ``i`` (a panel
        with fewer frames stays blank afterwards; use ``offset`` to start later).
    kind : str
        ``"value"`` or ``"prob"``.
    offset : int
        Animation frame at which this panel's first frame appears.
    nodata : ndarray, optional
        ``(H, W)`` bool, True outside radar coverage (drawn grey); ``(T, H, W)``
        gives one mask per frame (e.g. NaN that advection brings into a forecast).
    """

    label: str
    frames: np.ndarray
    kind: str = "value"
    offset: int = 0
    nodata: np.ndarray | None = None


class PerLead:
    """``(T, H, W)`` frames made when drawn, ``frame(k)`` for frame ``k``: a :class:`Panel`'s
    frames without holding all of them (whole radar domains)."""

    ndim = 3

    def __init__(self, frame: Any, shape: tuple[int, ...]) -> None:
        self._frame, self.shape = frame, tuple(shape)

    def __getitem__(self, k: int) -> np.ndarray:
        return self._frame(k)


def _is_vil(meta: DatasetMeta) -> bool:
    return meta.unit.lower().startswith("vil")


def value_cmap(meta: DatasetMeta) -> tuple[Any, Any]:
    """``(cmap, norm)`` for values in :func:`display_unit` (:func:`display_values`).

    No-coverage pixels are masked values (``bad``) and drawn in :data:`NO_COVERAGE_RGB`.
    """
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    bad = tuple(c / 255.0 for c in NO_COVERAGE_RGB)
    if _is_vil(meta):
        from .colormaps import vil_cmap

        cmap, norm = vil_cmap()
        return cmap.with_extremes(bad=bad), norm
    cmap = colormaps["turbo"].with_extremes(under="white", bad=bad)
    if is_rain_rate(meta):
        return cmap, LogNorm(vmin=RAIN_RATE_RANGE[0], vmax=RAIN_RATE_RANGE[1])
    lo = min(meta.thresholds) / 2 if meta.thresholds else 1e-3
    return cmap, Normalize(vmin=lo, vmax=min(meta.scale, 70.0))


def prob_cmap() -> tuple[Any, Any]:
    """``(cmap, norm)`` for exceedance probabilities."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    bad = tuple(c / 255.0 for c in NO_COVERAGE_RGB)
    return colormaps["magma_r"].with_extremes(bad=bad), Normalize(vmin=0.0, vmax=1.0)


def colorize(
    values: np.ndarray, meta: DatasetMeta, kind: str = "value", nodata: np.ndarray | None = None
) -> np.ndarray:
    """Map ``[0, 1]`` values (or probabilities) to RGB.

    Parameters
    ----------
    values : ndarray
        ``(..., H, W)`` in ``[0, 1]``.
    meta : DatasetMeta
        Gives the display units and colour map.
    kind : str
        ``"value"`` or ``"prob"``.
    nodata : ndarray, optional
        ``(H, W)`` bool, True outside radar coverage: drawn in :data:`NO_COVERAGE_RGB`.

    Returns
    -------
    ndarray
        ``(..., H, W, 3)`` uint8.
    """
    if kind not in ("value", "prob"):
        raise ValueError(f"kind must be 'value' or 'prob', got {kind!r}")
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    cmap, norm = prob_cmap() if kind == "prob" else value_cmap(meta)
    flat = v.reshape(-1)
    rgb = np.empty(flat.shape + (3,), np.uint8)
    # pixel by pixel, in chunks: matplotlib's float64 RGBA (32 bytes a pixel) of a whole radar
    # frame would be 8x the uint8 image
    for a in range(0, flat.size, COLORIZE_CHUNK):
        part = flat[a : a + COLORIZE_CHUNK]
        if kind == "prob":
            rgba = cmap(norm(part))
        else:
            shown = display_values(part, meta)
            if is_rain_rate(meta):  # LogNorm maps 0 to nan (drawn as bad): no rain is "under"
                shown = np.where(shown > 0, shown, 0.5 * RAIN_RATE_RANGE[0])
            rgba = cmap(np.ma.getdata(norm(shown)))  # matplotlib's LogNorm takes at most 2-D input: 1-D here
        rgb[a : a + part.size] = (np.asarray(rgba)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb = rgb.reshape(v.shape + (3,))
    if nodata is not None:
        rgb[..., np.asarray(nodata, dtype=bool), :] = NO_COVERAGE_RGB
    return rgb


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
    colorbar: bool = False,
    outline: bool = False,
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
    colorbar : bool
        Draw the value colour bar (in :func:`display_unit`) and, when a panel has
        no-coverage pixels, a grey "no coverage" swatch under the caption line.
    outline : bool
        Draw a thin grey frame around each panel (panels with little rain stay apart).
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
    bar_y = height
    if colorbar:
        height += _BAR_H + 14 + gap
    # colour one frame at a time: matplotlib's float64 RGBA of a whole animation is 32 bytes a pixel
    has_nodata = any(p.nodata is not None and np.asarray(p.nodata).any() for p in panels)

    def draw_frame(i: int) -> Image.Image:
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        for j, p in enumerate(panels):
            x0 = gap + j * (pw + gap)
            draw.text((x0, 1), p.label[: max(4, pw // 6)], fill=(0, 0, 0))
            k = i - p.offset
            if 0 <= k < p.frames.shape[0]:
                nodata = p.nodata if p.nodata is None or np.ndim(p.nodata) == 2 else p.nodata[k]  # per-frame masks
                rgb = colorize(p.frames[k], meta, p.kind, nodata)
                canvas.paste(Image.fromarray(_upscale(rgb, scale)), (x0, head))
            else:
                draw.rectangle([x0, head, x0 + pw - 1, head + ph - 1], fill=(235, 235, 235))
            if outline:
                draw.rectangle([x0 - 1, head - 1, x0 + pw, head + ph], outline=(120, 120, 120))
        caption = " ".join(s for s in (title, frame_labels[i] if frame_labels and i < len(frame_labels) else f"frame {i}") if s)
        draw.text((gap, head + ph + 2), caption[: width // 6], fill=(0, 0, 0))
        if colorbar:
            _draw_colorbar(canvas, meta, gap, bar_y, min(width - 2 * gap, 420), has_nodata)
        return canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fp:
        write_gif_stream(fp, (draw_frame(i) for i in range(n_frames)), duration_ms)  # one frame in memory
    log.info("wrote %s (%d frames)", path, n_frames)
    return path


def write_gif_stream(fp: BinaryIO, frames: Iterable[Any], duration_ms: int) -> int:
    """Write palette (``"P"``) frames to ``fp`` as an endlessly looping animated GIF, one at a time.

    Pillow's ``save(save_all=True)`` keeps every frame (and a copy of each) until the
    end; here each frame is encoded as soon as it is drawn, with its own colour table
    (the first frame's is the global one), full size, shown ``duration_ms`` and then
    cleared (disposal 2), so memory holds one frame whatever the animation's length.
    Uses Pillow's documented ``GifImagePlugin.getheader`` / ``getdata``. Returns the
    number of frames written.
    """
    from PIL import GifImagePlugin

    n = 0
    for im in frames:
        if im.mode != "P":
            raise ValueError(f"GIF frames must be palette images, got mode {im.mode}")
        info: dict[str, Any] = {"duration": duration_ms, "disposal": 2, "loop": 0}
        header, _ = GifImagePlugin.getheader(im, None, info)  # also normalises the frame's palette in place
        if n == 0:
            for chunk in header:
                fp.write(chunk)
        # frames after the first carry their own colour table (the first's is the global one)
        for chunk in GifImagePlugin.getdata(im, (0, 0), duration=duration_ms, disposal=2, include_color_table=n > 0):
            fp.write(chunk)
        n += 1
    if n == 0:
        raise ValueError("a GIF needs at least one frame")
    fp.write(b";")
    return n


_BAR_H = 8


def colorbar_rgb(meta: DatasetMeta, width: int) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """The value colour map as a ``(width, 3)`` uint8 strip and its ticks ``[(pixel, label)]``.

    Values run over the map's range in :func:`display_unit` (logarithmically for rain rate).
    """
    cmap, norm = value_cmap(meta)
    lo, hi = float(norm.vmin), float(norm.vmax)
    if is_rain_rate(meta):
        vals = np.geomspace(lo, hi, width)
        ticks = [t for t in (0.1, 1.0, 10.0, 100.0) if lo <= t <= hi]
    else:
        vals = np.linspace(lo, hi, width)
        ticks = [float(f"{t:.3g}") for t in np.linspace(lo, hi, 5)]
    rgba = np.asarray(cmap(norm(vals)))
    rgb = (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8).reshape(width, 3)
    pos = [(float(np.interp(t, vals, np.arange(width))), f"{t:g}") for t in ticks]
    return rgb, pos


def _draw_colorbar(canvas: Any, meta: DatasetMeta, x0: int, y0: int, width: int, nodata: bool) -> None:
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(canvas)
    unit = display_unit(meta)
    label_w = 6 * len(unit) + 6
    swatch_w = 80 if nodata else 0
    bar_w = max(40, width - label_w - swatch_w)
    rgb, ticks = colorbar_rgb(meta, bar_w)
    draw.text((x0, y0 - 2), unit, fill=(0, 0, 0))
    bx = x0 + label_w
    canvas.paste(Image.fromarray(np.repeat(rgb[None], _BAR_H, axis=0)), (bx, y0))
    for px, text in ticks:
        x = bx + int(round(px))
        draw.line([(x, y0 + _BAR_H), (x, y0 + _BAR_H + 2)], fill=(0, 0, 0))
        draw.text((min(max(bx, x - 3 * len(text)), bx + bar_w - 6 * len(text)), y0 + _BAR_H + 2), text, fill=(0, 0, 0))
    if nodata:
        sx = bx + bar_w + 10
        draw.rectangle([sx, y0, sx + 10, y0 + _BAR_H], fill=NO_COVERAGE_RGB)
        draw.text((sx + 14, y0 - 2), "no coverage", fill=(0, 0, 0))


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
    coverage: np.ndarray | None = None,
) -> Path:
    """Animated GIF of a nowcast: observed frames, then the forecast.

    Panels: observed/truth | ensemble mean | up to ``members_shown`` members |
    probability of exceeding ``prob_threshold`` (threshold space; labelled in
    :func:`display_unit`). The observed frames play first (in every panel's first
    column only), then the leads.

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
    coverage : ndarray, optional
        ``(H, W)`` bool, True where the last observed frame has data; other pixels
        are drawn in :data:`NO_COVERAGE_RGB` in every panel.
    """
    x_in = np.asarray(x_in, dtype=np.float32)
    fc = np.asarray(forecast, dtype=np.float32)
    if x_in.ndim != 3 or fc.ndim != 4:
        raise ValueError(f"expected x_in (T_in, H, W) and forecast (M, T_out, H, W), got {x_in.shape} and {fc.shape}")
    t_in, t_out = x_in.shape[0], fc.shape[1]
    thr = default_prob_threshold(meta) if prob_threshold is None else float(prob_threshold)
    nodata = _nodata(coverage, x_in.shape[-2:])
    first = x_in if y_true is None else np.concatenate([x_in, np.asarray(y_true, dtype=np.float32)[:t_out]])
    panels = [Panel("observed" if y_true is None else "observed / truth", first, nodata=nodata)]
    # mean and probability one lead at a time, as each frame is drawn: not (T, H, W) arrays for all leads
    mean = fc[0] if fc.shape[0] == 1 else PerLead(lambda k: fc[:, k].mean(axis=0), fc.shape[1:])
    panels.append(Panel("ensemble mean" if fc.shape[0] > 1 else "forecast", mean, offset=t_in, nodata=nodata))
    if fc.shape[0] > 1:
        for m in range(min(members_shown, fc.shape[0])):
            panels.append(Panel(f"member {m + 1}", fc[m], offset=t_in, nodata=nodata))
    label = f"P(>={threshold_value(thr, meta):g}{' mm/h' if is_rain_rate(meta) else ''})"
    prob = PerLead(lambda k: np.mean(exceeds(fc[:, k], thr, meta), axis=0, dtype=np.float32), fc.shape[1:])
    panels.append(Panel(label, prob, kind="prob", offset=t_in, nodata=nodata))
    step = meta.timestep_min if timestep_min is None else timestep_min
    return save_panels_gif(path, panels, meta, _lead_labels(t_in, t_out, step), title=title)


def _nodata(coverage: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if coverage is None:
        return None
    cov = np.asarray(coverage, dtype=bool)
    if cov.shape != tuple(shape):
        raise ValueError(f"coverage must be {tuple(shape)} like the frames, got {cov.shape}")
    return ~cov


def default_prob_threshold(meta: DatasetMeta) -> float:
    """The middle paper threshold of ``meta`` in threshold space (e.g. VIL code 133 for SEVIR, 1 mm/h as dBZ for rain rate)."""
    if not meta.thresholds:
        return 0.5 * meta.scale
    th = sorted(meta.thresholds)
    return float(th[(len(th) - 1) // 2])


#: Width of one frame of the PNG panel, inches.
PANEL_CELL_INCH = 1.6


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
    coverage: np.ndarray | None = None,
) -> Path:
    """PNG panel: rows observed inputs | (truth) | ensemble mean | members | probability.

    Columns are the last ``n_cols`` observed frames (first row) and ``n_cols``
    evenly spaced leads (other rows). Values are drawn in :func:`display_unit`.

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
    coverage : ndarray, optional
        ``(H, W)`` bool, True where the last observed frame has data; other pixels
        are drawn in :data:`NO_COVERAGE_RGB` (and a note says so).
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
    nodata = _nodata(coverage, x_in.shape[-2:])
    n_cols = max(1, min(n_cols, t_out))
    leads = np.unique(np.linspace(0, t_out - 1, n_cols).round().astype(int))
    n_cols = len(leads)
    # Each frame is drawn about 1.6 inch wide: keep every s-th pixel, s leaving at least twice the pixels
    # drawn (the "nearest" look is unchanged), so a 2200 x 1900 domain does not cost matplotlib gigabytes.
    # Means and exceedances are pointwise, so taking them after the stride changes no pixel shown.
    s = max(1, int(max(x_in.shape[-2:]) // (2 * PANEL_CELL_INCH * dpi)))
    if s > 1:
        x_in, fc = x_in[..., ::s, ::s], fc[:, leads, ::s, ::s]
        nodata = None if nodata is None else nodata[::s, ::s]
        y_true = None if y_true is None else np.asarray(y_true)[..., ::s, ::s]
    else:
        fc = fc[:, leads]
    # fc now holds the shown leads only: column c is lead leads[c]
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
    mean = fc.mean(axis=0)
    rows.append(("ensemble mean" if multi else "forecast", list(mean), lead_titles, "value"))
    if multi:
        for m in range(min(members_shown, fc.shape[0])):
            rows.append((f"member {m + 1}", list(fc[m]), lead_titles, "value"))
    prob = exceeds(fc, thr, meta).mean(axis=0, dtype=np.float32)
    unit = display_unit(meta)
    rows.append((f"P(>= {threshold_value(thr, meta):g}{' mm/h' if is_rain_rate(meta) else ''})", list(prob), lead_titles, "prob"))

    def shown(img: np.ndarray, kind: str) -> np.ndarray:
        v = np.asarray(img, dtype=np.float32) if kind == "prob" else display_values(img, meta)
        if kind == "value" and is_rain_rate(meta):  # LogNorm masks 0: draw no rain as "under"
            v = np.where(v > 0, v, 0.5 * RAIN_RATE_RANGE[0])
        return v if nodata is None else np.ma.masked_array(v, mask=nodata)

    vcmap, vnorm = value_cmap(meta)
    pcmap, pnorm = prob_cmap()
    fig = Figure(figsize=(PANEL_CELL_INCH * n_cols + 1.4, 1.65 * len(rows) + 0.5), dpi=dpi)
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
                ax.imshow(shown(img, kind), cmap=pcmap, norm=pnorm, interpolation="nearest")
            else:
                ax.imshow(shown(img, kind), cmap=vcmap, norm=vnorm, interpolation="nearest")
            if c < len(titles):
                ax.set_title(titles[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.86, top=0.93 if title else 0.96, bottom=0.02, wspace=0.05, hspace=0.25)
    cax1 = fig.add_axes((0.88, 0.52, 0.02, 0.4))
    fig.colorbar(ScalarMappable(norm=vnorm, cmap=vcmap), cax=cax1).set_label(unit, fontsize=7)
    cax2 = fig.add_axes((0.88, 0.06, 0.02, 0.3))
    fig.colorbar(ScalarMappable(norm=pnorm, cmap=pcmap), cax=cax2).set_label("probability", fontsize=7)
    for cax in (cax1, cax2):
        cax.tick_params(labelsize=6)
    if nodata is not None and nodata.any():
        fig.text(0.87, 0.44, "grey: no radar\ncoverage", fontsize=6, va="center",
                 bbox={"facecolor": tuple(c / 255 for c in NO_COVERAGE_RGB), "edgecolor": "none", "pad": 1.5})
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote %s", path)
    return path
