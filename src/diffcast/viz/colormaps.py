"""Colour maps for precipitation fields.

The SEVIR VIL colour map follows the one published with SEVIR and reused by
Earthformer and DiffCast (MIT licence, MIT Lincoln Laboratory ``sevir`` repo,
``vil_cmap``): boundaries 0, 16, 31, 59, 74, 100, 133, 160, 181, 219, 255 in VIL
code units, black below 16, grey, four greens, yellow, two oranges, dark red.

:func:`colorize_vil` maps arrays to RGB ``uint8`` through a 256-entry lookup
table, without creating a matplotlib figure (fast enough for GIF frames).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..data.transforms import SEVIR_VIL_BOUNDS

#: RGB colours (0-1) of the bins between consecutive :data:`SEVIR_VIL_BOUNDS`.
VIL_COLORS = (
    (0.0, 0.0, 0.0),  # [0, 16): no / negligible precipitation
    (0.30196078431372547, 0.30196078431372547, 0.30196078431372547),  # [16, 31)
    (0.1568627450980392, 0.7450980392156863, 0.1568627450980392),  # [31, 59)
    (0.09803921568627451, 0.5882352941176471, 0.09803921568627451),  # [59, 74)
    (0.0392156862745098, 0.4117647058823529, 0.0392156862745098),  # [74, 100)
    (0.0392156862745098, 0.29411764705882354, 0.0392156862745098),  # [100, 133)
    (0.9607843137254902, 0.9607843137254902, 0.0),  # [133, 160)
    (0.9294117647058824, 0.6745098039215687, 0.0),  # [160, 181)
    (0.9411764705882353, 0.43137254901960786, 0.0),  # [181, 219)
    (0.6274509803921569, 0.0, 0.0),  # [219, 255]
)
#: Colour for values above 255 (cannot occur for valid codes) and for NaN.
VIL_OVER = (0.9058823529411765, 0.0, 1.0)
VIL_BAD = (0.0, 0.0, 0.0)


def vil_cmap() -> tuple[Any, Any]:
    """The SEVIR VIL colour map as ``(cmap, norm)`` for matplotlib, in code units (0-255).

    Examples
    --------
    >>> cmap, norm = vil_cmap()
    >>> ax.imshow(x * 255, cmap=cmap, norm=norm)  # doctest: +SKIP
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(list(VIL_COLORS), name="sevir_vil").with_extremes(
        under=VIL_COLORS[0], over=VIL_OVER, bad=VIL_BAD
    )
    # Put 255 itself in the last bin (BoundaryNorm bins are half-open).
    bounds = list(SEVIR_VIL_BOUNDS[:-1]) + [SEVIR_VIL_BOUNDS[-1] + 1e-3]
    norm = BoundaryNorm(bounds, cmap.N)
    return cmap, norm


@functools.lru_cache(maxsize=1)
def vil_lut() -> np.ndarray:
    """``(256, 3)`` uint8 lookup table: RGB of every integer VIL code 0-255."""
    codes = np.arange(256)
    idx = np.searchsorted(np.asarray(SEVIR_VIL_BOUNDS[1:-1]), codes, side="right")
    lut = np.round(np.asarray(VIL_COLORS)[idx] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colorize_vil(x: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """Colour ``[0, 1]`` VIL fields with the SEVIR colour map, without matplotlib.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Any shape ``(...)``, values in ``[0, 1]`` (``x * scale`` = VIL code).
        NaN is drawn black.
    scale : float
        Factor to code units (255 for SEVIR-like data).

    Returns
    -------
    numpy.ndarray
        ``(..., 3)`` uint8 RGB.
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    code = np.nan_to_num(arr * scale, nan=0.0)
    code = np.clip(np.floor(code + 0.5), 0, 255).astype(np.uint8)
    return vil_lut()[code]


def dbz_cmap(vmin: float = 5.0, vmax: float = 70.0) -> tuple[Any, Any]:
    """``(cmap, norm)`` for reflectivity in dBZ: ``turbo`` above ``vmin``, white below."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    cmap = colormaps["turbo"].with_extremes(under="white", bad="lightgrey")
    return cmap, Normalize(vmin=vmin, vmax=vmax)


def colorize(x: np.ndarray, cmap: Any, norm: Any, scale: float = 1.0) -> np.ndarray:
    """Colour ``x * scale`` with any matplotlib ``(cmap, norm)``; returns ``(..., 3)`` uint8."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    vals = np.asarray(x, dtype=np.float64) * scale
    rgba = cmap(norm(np.ma.masked_invalid(vals)), bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def colorize_meta(x: np.ndarray, meta: Any) -> np.ndarray:
    """Colour ``[0, 1]`` values with the colour map that suits ``meta`` (VIL or dBZ)."""
    if str(meta.unit).lower().startswith("vil"):
        return colorize_vil(x, meta.scale)
    cmap, norm = dbz_cmap(
        vmin=min(meta.thresholds) / 2 if meta.thresholds else 5.0, vmax=min(meta.scale, 70.0)
    )
    return colorize(x, cmap, norm, scale=meta.scale)
