"""``forecast.html``: one self-contained page that plays a nowcast for a forecaster.

The page holds every frame as a base64 PNG data URI and its own CSS and
JavaScript: no external URL is referenced and nothing is fetched, so it opens
from a mail attachment or an air-gapped disk. A player (play/pause, previous/next,
a slider, speed, arrow keys and space) steps through the observed input frames
(labelled with their valid time) and then the leads (``+5 min, valid 12:05Z``).
Each frame shows side by side: the observations (the inputs, then the observed
future when it is known), the ensemble mean (or the single forecast), one member
and the exceedance probability at each threshold, with a colour bar per panel
kind in the output units (the colour maps of :mod:`diffcast.viz.animate`). Pixels
outside radar coverage or without data are grey (:data:`~diffcast.viz.animate.NO_COVERAGE_RGB`).

Geography: when the grid is georeferenced (a :class:`~diffcast.geo.ProjectedGrid`
with lat/lon), a graticule is drawn over every map panel: lines of constant
latitude and longitude traced as contours of the pixels' lat/lon (so any
projection works) at a spacing of 3-5 lines per axis, labelled in degrees, as an
SVG overlay shared by all frames. Coastlines and borders are not drawn: no source
of them can be had offline. cartopy installs from PyPI, but its wheel ships no
coastline or border shapefiles (only a Natural Earth raster image), and
``cartopy.feature`` downloads Natural Earth on first use, which the nowcast must
never do at run time (Debian's ``python-cartopy-data`` has the crude GSHHS
coastlines, but no borders, and not for a pip install). Image inputs, which
have no grid, get no graticule.

Size: panels larger than :data:`MAX_PANEL_PX` pixels on a side are shown
subsampled (every k-th pixel, k the smallest integer that brings both sides to
at most that); ``forecast.nc`` keeps the full grid. The page is displayed at
:data:`DISPLAY_PX` CSS pixels per panel side (nearest-neighbour scaling).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.contract import DatasetMeta
from ..data.transforms import exceeds
from ..utils.io import atomic_write_text
from .animate import (
    NO_COVERAGE_RGB,
    colorbar_rgb,
    colorize,
    display_unit,
    is_rain_rate,
    prob_cmap,
    threshold_value,
)

log = logging.getLogger(__name__)

#: Largest side of a panel image in the page (pixels); larger grids are subsampled for display.
MAX_PANEL_PX = 800
#: Longest side of a panel on screen (CSS pixels).
DISPLAY_PX = 300
#: Graticule spacings to choose from (degrees).
_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0)


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def graticule_step(span: float, max_lines: int = 5) -> float:
    """The smallest spacing in :data:`_STEPS` giving at most ``max_lines`` lines over ``span`` degrees."""
    for s in _STEPS:
        if span / s <= max_lines:
            return s
    return _STEPS[-1]


def _deg_label(v: float, pos: str, neg: str) -> str:
    v = round(v, 6) + 0.0  # no "-0"
    return f"{abs(v):g}°{pos if v > 0 else neg if v < 0 else ''}"


def graticule_svg(lon: np.ndarray, lat: np.ndarray) -> tuple[str, list[str]]:
    """SVG overlay of lat/lon lines over an ``(H, W)`` map and the labels it carries.

    Parameters
    ----------
    lon, lat : ndarray
        ``(H, W)`` degrees of the pixel centres (row 0 on top, as drawn).

    Returns
    -------
    (str, list of str)
        An ``<svg>`` element in the map's pixel coordinates (``viewBox 0 0 W H``)
        and its labels (``"47°N"``, ``"8.5°E"``).
    """
    import contourpy

    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    h, w = lat.shape
    if np.nanmax(lon) - np.nanmin(lon) > 180:  # a grid across the antimeridian: longitudes 0-360
        lon = np.where(lon < 0, lon + 360.0, lon)
    fs = max(h, w) * 11.0 / DISPLAY_PX
    parts, labels = [], []
    for z, pos, neg, is_lat in ((lat, "N", "S", True), (lon, "E", "W", False)):
        lo, hi = float(np.nanmin(z)), float(np.nanmax(z))
        if not hi > lo:
            continue
        step = graticule_step(hi - lo)
        gen = contourpy.contour_generator(z=z, line_type="Separate")
        for k in range(math.floor(lo / step) + 1, math.ceil(hi / step)):
            level = k * step
            lines = [ln for ln in gen.lines(level) if len(ln) > 1]
            if not lines:
                continue
            text = _deg_label(level if is_lat or level <= 180 else level - 360, pos, neg)
            labels.append(text)
            for ln in lines:
                pts = " ".join(f"{x + 0.5:.2f},{y + 0.5:.2f}" for x, y in ln)
                parts.append(f'<polyline points="{pts}"/>')
            pts = np.concatenate(lines)
            # latitude labels at the left edge, longitude labels along the bottom
            x, y = pts[np.argmin(pts[:, 0])] if is_lat else pts[np.argmax(pts[:, 1])]
            x = min(max(x + 0.5 + 0.2 * fs, 0.2 * fs), w - 2.5 * fs)
            y = min(max(y + 0.5 - 0.3 * fs, 1.1 * fs), h - 0.3 * fs)
            parts.append(f'<text x="{x:.2f}" y="{y:.2f}">{html.escape(text)}</text>')
    svg = (
        f'<svg class="grat" viewBox="0 0 {w} {h}" preserveAspectRatio="none" aria-label="graticule">'
        f'<g class="lines">{"".join(p for p in parts if p.startswith("<polyline"))}</g>'
        f'<g class="labels" font-size="{fs:.2f}">{"".join(p for p in parts if p.startswith("<text"))}</g></svg>'
    )
    return svg, labels


def _colorbar_html(strip: np.ndarray, ticks: Sequence[tuple[float, str]], unit: str, title: str) -> str:
    width = strip.shape[0]
    img = _png(np.repeat(strip[None], 10, axis=0))
    spans = "".join(
        f'<span style="left:{100.0 * p / max(width - 1, 1):.2f}%">{html.escape(t)}</span>' for p, t in ticks
    )
    return (
        f'<div class="cbar"><div class="cbar-title">{html.escape(title)} ({html.escape(unit)})</div>'
        f'<img src="{img}" alt="{html.escape(title)} colour bar"><div class="ticks">{spans}</div></div>'
    )


def _prob_bar(width: int = 256) -> tuple[np.ndarray, list[tuple[float, str]]]:
    cmap, norm = prob_cmap()
    vals = np.linspace(0.0, 1.0, width)
    rgb = (np.asarray(cmap(norm(vals)))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    return rgb, [(t * (width - 1), f"{t:g}") for t in (0.0, 0.25, 0.5, 0.75, 1.0)]


def _hhmm(t: dt.datetime) -> str:
    return t.strftime("%H:%MZ")


def write_forecast_page(
    path: str | os.PathLike[str],
    x_in: np.ndarray,
    forecast: np.ndarray,
    meta: DatasetMeta,
    *,
    thresholds: Sequence[float],
    analysis_time: dt.datetime,
    step_min: float,
    coverage: np.ndarray | None = None,
    grid: Any = None,
    y_true: np.ndarray | None = None,
    input_mask: np.ndarray | None = None,
    title: str = "DiffCast nowcast",
    notes: Sequence[str] = (),
) -> Path:
    """Write ``forecast.html``: a self-contained player over the inputs and the leads of a nowcast.

    Parameters
    ----------
    path : path-like
        Destination ``.html`` (written atomically).
    x_in : ndarray
        ``(T_in, H, W)`` observed frames in ``[0, 1]`` model space (NaN: no data).
    forecast : ndarray
        ``(M, T_out, H, W)`` members in ``[0, 1]``.
    meta : DatasetMeta
        Output units and colour maps (:func:`~diffcast.viz.animate.display_unit`).
    thresholds : sequence of float
        Thresholds in threshold space (``x * meta.scale``, as in ``forecast.nc``'s
        codes); one probability panel each, labelled in the display unit.
    analysis_time : datetime
        Valid time of the last observed frame (UTC).
    step_min : float
        Minutes between frames.
    coverage : ndarray, optional
        ``(H, W)`` bool, True where the last observed frame has data; other pixels
        are grey in every panel.
    grid : ProjectedGrid, optional
        Georeferencing of the frames (``lonlat()``); gives the graticule.
    y_true : ndarray, optional
        ``(T, H, W)`` observed future (``T <= T_out``), shown in the observed panel.
    input_mask : ndarray, optional
        ``(T_in, H, W)`` bool, True where an input frame has no data (default: ``~coverage``).
    title : str
        Heading of the page.
    notes : sequence of str
        Lines shown under the heading (e.g. that the times are nominal).

    Returns
    -------
    Path
        ``path``.
    """
    x_in = np.asarray(x_in, dtype=np.float32)
    fc = np.asarray(forecast, dtype=np.float32)
    if x_in.ndim != 3 or fc.ndim != 4 or x_in.shape[-2:] != fc.shape[-2:]:
        raise ValueError(f"expected x_in (T_in, H, W) and forecast (M, T_out, H, W) on one grid, got {x_in.shape} and {fc.shape}")
    if not thresholds:
        raise ValueError("write_forecast_page needs at least one threshold")
    t_in, (m, t_out, h, w) = x_in.shape[0], fc.shape
    k = max(1, math.ceil(max(h, w) / MAX_PANEL_PX))  # display subsampling
    sub = (slice(None, None, k), slice(None, None, k))
    nodata = None if coverage is None else ~np.asarray(coverage, dtype=bool)
    if nodata is not None and nodata.shape != (h, w):
        raise ValueError(f"coverage must be ({h}, {w}) like the frames, got {nodata.shape}")
    in_mask = nodata if input_mask is None else np.asarray(input_mask, dtype=bool)

    def frame_png(values: np.ndarray, kind: str, mask: np.ndarray | None) -> str:
        bad = np.isnan(values)
        if mask is not None:
            bad |= mask
        return _png(colorize(values[sub], meta, kind, bad[sub]))

    unit = display_unit(meta)
    mm = " " + unit.split(" (")[0]  # "VIL code (0-255)" -> "VIL code"
    # panels: (label, kind, {frame index: data URI}, placeholder text)
    obs: dict[int, str] = {}
    for i in range(t_in):
        mask = in_mask if in_mask is None or in_mask.ndim == 2 else in_mask[i]
        obs[i] = frame_png(x_in[i], "value", mask)
    yt = None if y_true is None else np.asarray(y_true, dtype=np.float32)[:t_out]
    for j in range(0 if yt is None else yt.shape[0]):
        obs[t_in + j] = frame_png(yt[j], "value", nodata)
    panels = [("observed", "value", obs, "not observed yet")]
    mean = fc.mean(axis=0)
    panels.append(("ensemble mean" if m > 1 else "forecast", "value",
                   {t_in + j: frame_png(mean[j], "value", nodata) for j in range(t_out)}, "forecast starts after the analysis"))
    if m > 1:
        panels.append(("member 1", "value", {t_in + j: frame_png(fc[0, j], "value", nodata) for j in range(t_out)},
                       "forecast starts after the analysis"))
    for code in thresholds:
        prob = exceeds(fc, code, meta).mean(axis=0, dtype=np.float32)
        panels.append((f"P(≥ {threshold_value(code, meta):g}{mm})", "prob",
                       {t_in + j: frame_png(prob[j], "prob", nodata) for j in range(t_out)},
                       "forecast starts after the analysis"))

    times = [analysis_time + dt.timedelta(minutes=step_min * (i - t_in + 1)) for i in range(t_in + t_out)]
    frames = [
        {"label": (f"observed {step_min * (i - t_in + 1):+g} min, valid {_hhmm(t)}" if i < t_in
                   else f"+{step_min * (i - t_in + 1):g} min, valid {_hhmm(t)}"),
         "kind": "observed" if i < t_in else "forecast", "valid": t.strftime("%Y-%m-%dT%H:%M:%SZ")}
        for i, t in enumerate(times)
    ]
    overlay, labels = "", []
    if grid is not None:
        lon, lat, _ = grid.lonlat()
        overlay, labels = graticule_svg(lon[sub], lat[sub])
    dh, dw = math.ceil(h / k), math.ceil(w / k)
    css_w, css_h = (DISPLAY_PX, max(1, round(DISPLAY_PX * dh / dw))) if dw >= dh else (max(1, round(DISPLAY_PX * dw / dh)), DISPLAY_PX)
    figs = []
    for p, (label, kind, imgs, empty) in enumerate(panels):
        items = "".join(
            f'<img class="f" data-frame="{i}" src="{uri}" alt="{html.escape(label)}, {html.escape(frames[i]["label"])}"'
            f'{"" if i == 0 else " hidden"}>' for i, uri in sorted(imgs.items())
        )
        figs.append(
            f'<figure class="panel" data-panel="{p}" data-kind="{kind}"><figcaption>{html.escape(label)}</figcaption>'
            f'<div class="map" style="width:{css_w}px;height:{css_h}px">{items}'
            f'<div class="empty"{" hidden" if 0 in imgs else ""}>{html.escape(empty)}</div>{overlay}</div></figure>'
        )
    has_nodata = (nodata is not None and nodata.any()) or bool(np.isnan(x_in).any()) or bool(np.isnan(fc).any())
    bars = _colorbar_html(*colorbar_rgb(meta, 256), unit, "rain rate" if is_rain_rate(meta) else "value")
    bars += _colorbar_html(*_prob_bar(), "0-1", "exceedance probability")
    if has_nodata:
        bars += f'<div class="swatch"><span style="background:rgb{tuple(NO_COVERAGE_RGB)}"></span>no data / outside radar coverage</div>'
    geo = ("graticule: lines of latitude and longitude in degrees (no coastlines or borders: no offline source)"
           if labels else "no georeferencing: no graticule")
    info = [f"analysis {analysis_time:%Y-%m-%d %H:%M}Z", f"{m} member(s)", f"{t_out} leads of {step_min:g} min", geo]
    if k > 1:
        info.append(f"shown at 1/{k} resolution ({h}x{w} grid)")
    note_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    page = _TEMPLATE.format(
        title=html.escape(title), info=html.escape(" · ".join(info)), notes=note_html, n=len(frames) - 1,
        panels="".join(figs), bars=bars,
        frames=json.dumps(frames).replace("</", "<\\/"), css=_CSS, js=_JS,
    )
    path = Path(path)
    atomic_write_text(path, page)
    log.info("wrote %s (%d frames x %d panels, %.1f MB)", path, len(frames), len(panels), len(page) / 1e6)
    return path


_CSS = """
body{font-family:system-ui,sans-serif;margin:12px;color:#222;background:#fff}
h1{font-size:18px;margin:0 0 4px}.info,.note{font-size:13px;color:#555;margin:2px 0}
.controls{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin:10px 0}
.controls button{min-width:36px;font-size:15px}#slider{width:320px}
#label{font-weight:600;font-size:15px;min-width:230px}
.panels{display:flex;flex-wrap:wrap;gap:10px}
.panel{margin:0}.panel figcaption{font-size:13px;font-weight:600;margin-bottom:3px}
.map{position:relative;border:1px solid #888;background:#f4f4f4}
.map img.f{position:absolute;inset:0;width:100%;height:100%;image-rendering:pixelated}
.map .empty{position:absolute;inset:0;display:flex;align-items:center;justify-content:center;
 text-align:center;font-size:12px;color:#777;padding:8px}
[hidden]{display:none!important}
svg.grat{position:absolute;inset:0;width:100%;height:100%;pointer-events:none}
svg.grat .lines polyline{fill:none;stroke:#000;stroke-opacity:.45;stroke-width:1;stroke-dasharray:3 3;
 vector-effect:non-scaling-stroke}
svg.grat .labels text{fill:#000;stroke:#fff;stroke-width:.25em;paint-order:stroke;font-family:sans-serif}
.legend{display:flex;gap:28px;flex-wrap:wrap;margin-top:12px;align-items:flex-start}
.cbar{width:256px;font-size:12px}.cbar img{width:256px;height:12px;display:block;border:1px solid #888}
.cbar .ticks{position:relative;height:16px}.cbar .ticks span{position:absolute;transform:translateX(-50%)}
.swatch{font-size:12px;display:flex;gap:6px;align-items:center;margin-top:14px}
.swatch span{display:inline-block;width:16px;height:12px;border:1px solid #888}
"""

_JS = """
document.body.dataset.errors = "";
window.addEventListener("error", function (e) { document.body.dataset.errors += (e.message || "error") + ";"; });
(function () {
  var frames = JSON.parse(document.getElementById("frames").textContent);
  var n = frames.length, cur = 0, timer = null, steps = 0;
  var slider = document.getElementById("slider"), label = document.getElementById("label");
  var play = document.getElementById("play"), speed = document.getElementById("speed");
  var maps = Array.prototype.slice.call(document.querySelectorAll(".panel .map"));
  function show(i) {
    cur = ((i % n) + n) % n;
    maps.forEach(function (m) {
      var found = false;
      m.querySelectorAll("img.f").forEach(function (im) {
        var on = Number(im.dataset.frame) === cur; im.hidden = !on; found = found || on;
      });
      m.querySelector(".empty").hidden = found;
    });
    slider.value = String(cur);
    label.textContent = frames[cur].label;
    label.className = frames[cur].kind;
    document.body.dataset.frame = String(cur);
    document.body.dataset.steps = String(steps++);
  }
  function delay() { return 600 / Number(speed.value); }
  function tick() { show(cur + 1); timer = setTimeout(tick, cur === n - 1 ? 3 * delay() : delay()); }
  function start() { if (!timer) { timer = setTimeout(tick, delay()); play.textContent = "\u23f8"; } }
  function stop() { if (timer) { clearTimeout(timer); timer = null; } play.textContent = "\u25b6"; }
  play.addEventListener("click", function () { if (timer) { stop(); } else { start(); } });
  document.getElementById("prev").addEventListener("click", function () { stop(); show(cur - 1); });
  document.getElementById("next").addEventListener("click", function () { stop(); show(cur + 1); });
  slider.addEventListener("input", function () { stop(); show(Number(slider.value)); });
  speed.addEventListener("change", function () { if (timer) { stop(); start(); } });
  document.addEventListener("keydown", function (e) {
    if (e.target && e.target.tagName === "SELECT") { return; }
    if (e.key === "ArrowRight") { stop(); show(cur + 1); e.preventDefault(); }
    else if (e.key === "ArrowLeft") { stop(); show(cur - 1); e.preventDefault(); }
    else if (e.key === " ") { if (timer) { stop(); } else { start(); } e.preventDefault(); }
  });
  show(0);
  start();
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>
<body>
<h1>{title}</h1><p class="info">{info}</p>{notes}
<div class="controls">
<button id="prev" title="previous frame (left arrow)">&#x23EE;</button>
<button id="play" title="play / pause (space)">&#x25B6;</button>
<button id="next" title="next frame (right arrow)">&#x23ED;</button>
<input id="slider" type="range" min="0" max="{n}" value="0" step="1" aria-label="frame">
<label>speed <select id="speed"><option value="0.5">0.5x</option><option value="1" selected>1x</option>
<option value="2">2x</option><option value="4">4x</option></select></label>
<span id="label"></span>
</div>
<div class="panels">{panels}</div>
<div class="legend">{bars}</div>
<script type="application/json" id="frames">{frames}</script>
<script>{js}</script>
</body></html>
"""
