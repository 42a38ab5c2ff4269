"""Synthetic radar-like storms: the embedded default data set (``make demo``, tests).

Each sequence is a procedural VIL field (SEVIR code space, ``[0, 1] = code / 255``):

* **stratiform areas**: a smooth power-law noise field thresholded into patches
  of light/moderate precipitation (codes ~ 10-100), textured by a second,
  small-scale noise field;
* **convective cells**: anisotropic Gaussian cells that are born (also during the
  forecast horizon), grow, peak (codes up to 255), decay and dissipate, with a
  multiplicative random walk on their intensity. Birth times, lifetimes and the
  random walk are drawn independently of what is observed, so part of the future
  is genuinely unpredictable from the inputs: a deterministic model blurs, an
  ensemble can represent the spread. ``future_seed`` re-draws exactly that part:
  same past, different futures (an oracle ensemble, :meth:`SyntheticStorms.futures`);
* **advection**: everything moves with a smooth, divergence-free, spatially
  varying wind field that changes slowly in time. Textures are advected
  semi-Lagrangianly through an accumulated displacement map (integrated on a
  4x coarser grid, one ``cv2.remap`` per frame), so each frame samples the
  textures once and they do not blur over time; cells move as Lagrangian
  particles with the same wind. Textures also evolve (they rotate slowly between
  two noise realisations).

Hence persistence is beaten by extrapolation (motion is coherent) and
extrapolation is beaten by a model that learns growth and decay.

Speed (about 6.5 ms per 25 x 128 x 128 sequence on one core, ``benchmarks/bench_data.py``):
a fixed per-process bank of FFT power-law noise fields (randomly shifted and flipped per
sequence, periodically extended by index gathers), the coarse wind of all frames in one
vectorised evaluation, the texture sampling map upsampled straight from the coarse grid,
one single-channel ``cv2.remap`` per texture and frame, separable float32 Gaussians
rendered as one small matrix product per frame, in-place float32 arithmetic in reusable
buffers, no Python loop over pixels.

Determinism: a sequence depends only on ``(seed, index)`` and the knobs (the
noise bank is seeded by the frame size), not on the process, thread or worker.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from . import DATASETS
from .transforms import SYNTHETIC_META

log = logging.getLogger(__name__)

#: Offsets that keep the index spaces of the splits disjoint: item ``i`` of split
#: ``s`` is ``generate_sequence(seed, SPLIT_OFFSETS[s] + i)``.
SPLIT_OFFSETS = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}
#: Default number of sequences per split.
DEFAULT_SIZES = {"train": 4096, "val": 256, "test": 512}
_MAX_PER_SPLIT = 1_000_000_000


@functools.lru_cache(maxsize=16)
def _spectral_filter(h: int, w: int, beta: float) -> np.ndarray:
    """Amplitude filter ``|k|^(-beta/2)`` on the rfft2 grid, normalised to unit field variance."""
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    k[0, 0] = np.inf  # zero mean
    amp = k ** (-beta / 2.0)
    # Variance of irfft2 of (a + ib) * amp with a, b ~ N(0,1): sum over the full spectrum.
    full = np.concatenate([amp, amp[:, 1 : (w - 1) // 2 + 1]], axis=1) if w > 1 else amp
    var = 2.0 * np.sum(full**2) / (h * w) ** 2
    return (amp / np.sqrt(var)).astype(np.float32)


def _noise_fields(rng: np.random.Generator, h: int, w: int, beta: float, n: int) -> np.ndarray:
    """``n`` periodic power-law noise fields ``|k|^-beta``, standardised to mean 0, std 1.

    Returns
    -------
    numpy.ndarray
        ``(n, H, W)`` float32.
    """
    filt = _spectral_filter(h, w, beta)
    re = rng.standard_normal((n, *filt.shape), dtype=np.float32)
    im = rng.standard_normal((n, *filt.shape), dtype=np.float32)
    fields = np.fft.irfft2((re + 1j * im) * filt, s=(h, w)).astype(np.float32)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-6
    return fields


#: Number of precomputed noise fields per (size, beta); a sequence draws fields from the
#: bank and randomises them by a periodic shift and flips (8 x H x W variants each).
TEXTURE_BANK_SIZE = 32


@functools.lru_cache(maxsize=8)
def _texture_bank(h: int, w: int, beta: float) -> np.ndarray:
    """Fixed bank of noise fields, identical in every process (seeded by size and beta)."""
    rng = np.random.default_rng(np.random.SeedSequence([7321, h, w, int(round(beta * 1000))]))
    bank = _noise_fields(rng, h, w, beta, TEXTURE_BANK_SIZE)
    bank.setflags(write=False)
    return bank


class _Texture:
    """A bank field, periodically shifted and optionally flipped (a cheap new realisation)."""

    __slots__ = ("field", "shift", "flip")

    def __init__(self, field: np.ndarray, shift: tuple[int, int], flip: tuple[bool, bool]):
        self.field, self.shift, self.flip = field, shift, flip

    def padded(self, m: int = 0) -> np.ndarray:
        """``(H + 2m, W + 2m)`` float32: the field extended periodically by ``m`` pixels.

        Equal to ``np.pad(rolled_and_flipped, m, mode="wrap")``, as two gathers (np.pad's
        wrap mode is ~10x slower).
        """
        idx = []
        for axis in (0, 1):
            n = self.field.shape[axis]
            i = np.arange(-m, n + m) % n
            if self.flip[axis]:
                i = n - 1 - i
            idx.append((i - self.shift[axis]) % n)
        return np.take(np.take(self.field, idx[0], axis=0), idx[1], axis=1)


def _draw_textures(rng: np.random.Generator, h: int, w: int, beta: float, n: int) -> list[_Texture]:
    """``n`` distinct bank fields, each randomly rolled and flipped."""
    bank = _texture_bank(h, w, beta)
    out = []
    for i in rng.choice(len(bank), size=n, replace=False):
        shift = (int(rng.integers(h)), int(rng.integers(w)))
        flip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5))
        out.append(_Texture(bank[i], shift, flip))
    return out


_WS = threading.local()
#: Coarsening factor of the grid on which the displacement field is integrated.
_COARSE = 4


def _edge_corrections(n_fine: int, n_coarse: int) -> list[tuple[slice, np.ndarray]]:
    """Where bilinear upsampling of coarse pixel-centre coordinates misses the fine ones.

    ``cv2.resize`` clamps at the edges, so the first and last ``~factor / 2`` fine pixels
    get the coordinate of the edge coarse pixel. Returns ``(slice, correction)`` pairs to
    add there; inside, the interpolation of the (affine) coordinates is exact.
    """
    f = n_fine / n_coarse
    coarse = ((np.arange(n_coarse, dtype=np.float32) + 0.5) * f - 0.5)[None, :]
    up = cv2.resize(coarse, (n_fine, 1), interpolation=cv2.INTER_LINEAR)[0]
    corr = np.arange(n_fine, dtype=np.float32) - up
    edge = np.flatnonzero(np.abs(corr) > 1e-3)
    lo, hi = edge[edge < n_fine // 2], edge[edge >= n_fine // 2]
    out = []
    for part in (lo, hi):
        if part.size:
            sl = slice(int(part.min()), int(part.max()) + 1)
            out.append((sl, corr[sl].copy()))
    return out


def _workspace(t: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Reusable per-thread scratch arrays for :func:`generate_sequence`."""
    cache = getattr(_WS, "cache", None)
    if cache is None or cache["key"] != (t, h, w):
        coarse = (max(2, -(-h // _COARSE)), max(2, -(-w // _COARSE)))
        cgy, cgx = np.mgrid[0 : coarse[0], 0 : coarse[1]].astype(np.float32)
        cache = {
            "key": (t, h, w),
            "coarse": coarse,
            "cgx": cgx,
            "cgy": cgy,
            "xy": np.empty((h, w, 2), np.float32),
            "corr_x": _edge_corrections(w, coarse[1]),
            "corr_y": _edge_corrections(h, coarse[0]),
            "large": np.empty((t, h, w), np.float32),
            "small": np.empty((t, h, w), np.float32),
            "tmp": np.empty((t, h, w), np.float32),
        }
        _WS.cache = cache
    return cache


def _knobs(difficulty: float, **given: Any) -> dict[str, float]:
    d = float(difficulty)
    if not 0.0 <= d <= 3.0:
        raise ValueError(f"difficulty must be in [0, 3], got {difficulty}")
    knobs = {
        "n_cells": 10.0,  # mean number of cells present at t = 0 (per square domain)
        "initiation_rate": 0.6 * d,  # mean new cells per frame (per square domain)
        "wind_speed": 1.5,  # mean wind speed in px/frame at 128 px
        "wind_variability": 0.2 + 0.15 * d,  # amplitude of the spatial wind modes / mean speed
        "stratiform": 0.25,  # target fraction of the area covered by stratiform rain
        "intensity_noise": 0.06 * d,  # std of the per-frame log-intensity random walk
        "lifetime": 18.0,  # mean cell lifetime in frames
        "texture_evolution": 0.03 + 0.03 * d,  # rad/frame rotation between noise realisations
    }
    for key, value in given.items():
        if value is None:
            continue
        if key not in knobs:
            raise ValueError(
                f"unknown synthetic knob {key!r}; choose from {', '.join(sorted(knobs))}"
            )
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"synthetic knob {key} must be a finite number >= 0, got {value}")
        knobs[key] = float(value)
    if knobs["lifetime"] < 1:
        raise ValueError(f"lifetime must be >= 1 frame, got {knobs['lifetime']}")
    return knobs


def _wind(
    px: np.ndarray, py: np.ndarray, t: float, w: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Divergence-free wind ``u(y, t)``, ``v(x, t)`` in px/frame at positions (broadcasting)."""
    u = (
        w["u0"]
        + w["a1"] * np.sin(w["k1"] * py + w["p1"] + w["om"] * t)
        + w["a3"] * np.sin(w["k3"] * py + w["p3"] - w["om"] * t)
    )
    v = w["v0"] + w["a2"] * np.sin(w["k2"] * px + w["p2"] + w["om"] * t)
    return u, v


def _initiations(rng: np.random.Generator, rate: float, first: int, t: int) -> np.ndarray:
    """Birth times of cells initiated at frames ``first..t-1`` (Poisson counts, in ``(k-1, k]``)."""
    if rate <= 0 or first >= t:
        return np.zeros(0)
    counts = rng.poisson(rate, size=t - first)
    frames = np.repeat(np.arange(first, t, dtype=np.float64), counts)
    return frames - rng.uniform(0, 1, counts.sum())


def _gauss_profile(coords: np.ndarray, centre: np.ndarray, inv_sigma: np.ndarray) -> np.ndarray:
    """``exp(-z^2 / 2)`` with ``z = (coords - centre) * inv_sigma``, float32, ``(t, n, len)``.

    ``z^2`` is capped at 60 so results never become denormal (denormals make the matrix
    products that render the cells much slower).
    """
    z = coords[None, None, :] - centre[..., None]
    z *= inv_sigma[..., None]
    np.square(z, out=z)
    np.minimum(z, np.float32(60.0), out=z)
    z *= np.float32(-0.5)
    return np.exp(z, out=z)


def _draw_cells(
    rng: np.random.Generator,
    birth: np.ndarray,
    t: int,
    k: dict[str, float],
    scale: float,
    large: np.ndarray,
) -> dict[str, np.ndarray]:
    """Attributes of convective cells with the given birth times (frames)."""
    h, w = large.shape
    n = birth.size
    cells = {
        "birth": birth,
        "life": k["lifetime"] * rng.uniform(0.5, 1.6, size=n),
        "peak": 0.2 + 0.8 * rng.beta(1.6, 2.6, size=n),
        "sig": scale * rng.uniform(2.5, 7.0, size=n),
        "aspect": np.exp(rng.uniform(-0.45, 0.45, size=n)),
    }
    # Cells cluster in storm areas: candidates are kept with weight exp(2.5 L), where L is
    # the large-scale field at t = 0 (positions outside the domain use the nearest pixel).
    cand_x = rng.uniform(-0.1 * w, 1.1 * w, size=4 * n)
    cand_y = rng.uniform(-0.1 * h, 1.1 * h, size=4 * n)
    if n:
        lv = large[np.clip(cand_y.astype(int), 0, h - 1), np.clip(cand_x.astype(int), 0, w - 1)]
        wts = np.exp(2.5 * (lv - lv.max()))
        pick = rng.choice(4 * n, size=n, replace=False, p=wts / wts.sum())
    else:
        pick = np.zeros(0, int)
    cells["cx"], cells["cy"] = cand_x[pick], cand_y[pick]
    walk = np.cumsum(rng.standard_normal((t, n)) * k["intensity_noise"], axis=0)
    cells["walk"] = walk - walk[:1]  # log-intensity random walk, 0 at t = 0
    return cells


def generate_sequence(
    seed: int,
    index: int,
    t: int = 25,
    h: int = 128,
    w: int = 128,
    *,
    difficulty: float = 1.0,
    n_cells: float | None = None,
    initiation_rate: float | None = None,
    wind_speed: float | None = None,
    wind_variability: float | None = None,
    stratiform: float | None = None,
    intensity_noise: float | None = None,
    lifetime: float | None = None,
    texture_evolution: float | None = None,
    quantize: bool = True,
    future_seed: int | None = None,
    t_split: int = 5,
) -> np.ndarray:
    """Generate one synthetic storm sequence.

    Parameters
    ----------
    seed, index : int
        The sequence is a deterministic function of ``(seed, index)`` and the
        other arguments (``numpy.random.SeedSequence([seed, index])``).
    t, h, w : int
        Number of frames and frame size in pixels (any size >= 8). The frame always
        shows the same domain: smaller frames are coarser, not smaller crops.
    difficulty : float
        0 = pure advection of slowly evolving fields (no initiation, no
        intensity noise); 1 = default; up to 3 = more initiation, more
        intensity noise, more variable wind. Knobs left as ``None`` follow it.
    n_cells : float, optional
        Mean number of convective cells present at ``t = 0`` in a square domain
        (scaled by ``max(H, W) / min(H, W)`` for elongated frames).
    initiation_rate : float, optional
        Mean number of new cells per frame in a square domain (Poisson).
    wind_speed : float, optional
        Mean wind speed in px/frame at 128 px resolution (scaled with the size).
    wind_variability : float, optional
        Amplitude of the spatial wind modes relative to the mean speed.
    stratiform : float, optional
        Target fraction of the area covered by stratiform precipitation.
    intensity_noise : float, optional
        Standard deviation of the per-frame log-intensity random walk of cells.
    lifetime : float, optional
        Mean convective cell lifetime in frames.
    texture_evolution : float, optional
        Rate (rad/frame) at which textures rotate between two noise realisations.
    quantize : bool
        Round to the 8-bit code grid (``round(255 x) / 255``), like SEVIR.
    future_seed : int, optional
        Draw an alternative future: frames ``< t_split`` are exactly those of the
        default sequence, while cells initiated from ``t_split`` on and the intensity
        random walk after it are re-drawn from ``future_seed``. Different values give
        samples of the future conditional on the same past (e.g. an oracle ensemble
        for checking a probabilistic model).
    t_split : int
        First frame that ``future_seed`` may change (the number of observed frames).

    Returns
    -------
    numpy.ndarray
        ``(T, H, W)`` float32 in ``[0, 1]`` (VIL code / 255).
    """
    for name, val in (("t", t), ("h", h), ("w", w)):
        if int(val) != val or val < (1 if name == "t" else 8):
            raise ValueError(f"{name} must be an integer >= {1 if name == 't' else 8}, got {val}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    t, h, w = int(t), int(h), int(w)
    k = _knobs(
        difficulty,
        n_cells=n_cells,
        initiation_rate=initiation_rate,
        wind_speed=wind_speed,
        wind_variability=wind_variability,
        stratiform=stratiform,
        intensity_noise=intensity_noise,
        lifetime=lifetime,
        texture_evolution=texture_evolution,
    )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    scale = min(h, w) / 128.0
    # Sizes are relative to the frame: a 64 x 64 frame shows the same storms as a 128 x 128
    # one at half the resolution (cell sizes and speeds scale with `scale`, counts do not).
    area = (h * w) / float(min(h, w)) ** 2

    # --- wind field (px / frame) -----------------------------------------------------------
    speed = k["wind_speed"] * scale * rng.uniform(0.4, 1.4)
    ang = rng.uniform(0, 2 * np.pi)
    var = k["wind_variability"] * max(speed, 0.3 * scale)
    wind = {
        "u0": speed * np.cos(ang),
        "v0": speed * np.sin(ang),
        "a1": var * rng.uniform(0.3, 1.0),
        "a2": var * rng.uniform(0.3, 1.0),
        "a3": 0.5 * var * rng.uniform(0.0, 1.0),
        "k1": 2 * np.pi / (h * rng.uniform(0.8, 2.0)),
        "k2": 2 * np.pi / (w * rng.uniform(0.8, 2.0)),
        "k3": 2 * np.pi / (h * rng.uniform(0.3, 0.6)),
        "p1": rng.uniform(0, 2 * np.pi),
        "p2": rng.uniform(0, 2 * np.pi),
        "p3": rng.uniform(0, 2 * np.pi),
        "om": rng.uniform(0.01, 0.05),
    }

    # --- textures: large-scale (stratiform) and small-scale (cell/strat texture), 2 each --
    textures = _draw_textures(rng, h, w, 3.6, 2)  # smooth: stratiform areas (large a, b)
    textures += _draw_textures(rng, h, w, 2.2, 2)  # rough: texture of cells and rain (small)
    large_a = textures[0].padded()
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)

    # --- cells -------------------------------------------------------------------------------
    n0 = rng.poisson(k["n_cells"] * area)
    pre = rng.uniform(-k["lifetime"], 0.0, size=n0)  # cells already alive at t = 0
    new = _initiations(rng, k["initiation_rate"] * area, 1, t)
    cells = _draw_cells(rng, np.concatenate([pre, new]), t, k, scale, large_a)
    if future_seed is not None:
        # Re-draw everything that is invisible before frame `t_split`: cells born later and
        # the intensity random walk after it. Frames < t_split are unchanged.
        if not 1 <= t_split <= t:
            raise ValueError(f"t_split must be in [1, {t}], got {t_split}")
        frng = np.random.default_rng(
            np.random.SeedSequence([int(seed), int(index), 1, int(future_seed)])
        )
        keep = cells["birth"] < t_split - 1  # visible at some frame <= t_split - 1
        kept = {key: val[..., keep] for key, val in cells.items()}
        steps = frng.standard_normal((t - t_split, int(keep.sum()))) * k["intensity_noise"]
        kept["walk"][t_split:] = kept["walk"][t_split - 1] + np.cumsum(steps, axis=0)
        born = _draw_cells(
            frng, _initiations(frng, k["initiation_rate"] * area, t_split, t), t, k, scale, large_a
        )
        cells = {key: np.concatenate([kept[key], born[key]], axis=-1) for key in cells}
    birth, life, peak, sig, aspect = (
        cells[key] for key in ("birth", "life", "peak", "sig", "aspect")
    )
    cx, cy, walk = cells["cx"], cells["cy"], cells["walk"]
    n = birth.size

    # Strat. threshold from the target coverage (fields are ~N(0,1) per pixel).
    cov = min(max(k["stratiform"], 0.0), 0.95)
    thr = float(np.quantile(large_a, 1.0 - cov)) if cov > 0 else np.inf
    thr += rng.uniform(-0.2, 0.2)

    # --- time loop: displacement map + texture sampling; cell positions ---------------------
    # Texture phase: each frame blends two noise realisations, rotating by `texture_evolution`
    # rad/frame (variance preserving); the blend is done on the source grid before sampling.
    # All big temporaries live in a per-thread workspace: fresh multi-MB arrays cost page
    # faults that would otherwise dominate the run time.
    ws = _workspace(t, h, w)
    th = np.float32(k["texture_evolution"]) * np.arange(t, dtype=np.float32)
    cos_th, sin_th = np.cos(th).tolist(), np.sin(th).tolist()
    large, small = ws["large"], ws["small"]
    # The displacement field is smooth (so is the wind): integrate it on a grid coarser by
    # _COARSE and upsample bilinearly each frame.
    ch, cw = ws["coarse"]
    fy, fx = h / ch, w / cw
    cxs = ((np.arange(cw, dtype=np.float32) + 0.5) * fx - 0.5)[None, :]  # fine coords of coarse pts
    cys = ((np.arange(ch, dtype=np.float32) + 0.5) * fy - 0.5)[:, None]
    cgy, cgx = ws["cgy"], ws["cgx"]
    # The wind on the coarse grid is separable (u depends on y, v on x): all frames at once.
    frames = np.arange(1, t, dtype=np.float64)[:, None, None]
    u_all, v_all = _wind(cxs[None], cys[None], frames, wind)  # (t-1, ch, 1), (t-1, 1, cw)
    u_all = u_all.astype(np.float32)
    v_all = v_all.astype(np.float32)
    disp_c = np.zeros((t, ch, cw, 2), dtype=np.float32)
    pos_x = np.empty((t, n))
    pos_y = np.empty((t, n))
    px, py = cx.copy(), cy.copy()
    pos_x[0], pos_y[0] = px, py
    for ti in range(1, t):
        u, v = u_all[ti - 1], v_all[ti - 1]
        # semi-Lagrangian: D_t(x) = v_t(x) + D_{t-1}(x - v_t(x))
        d = cv2.remap(
            disp_c[ti - 1],
            cgx - u / fx,
            cgy - v / fy,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        d[..., 0] += u
        d[..., 1] += v
        disp_c[ti] = d
        cu, cv_ = _wind(px, py, float(ti), wind)
        px = px + cu
        py = py + cv_
        pos_x[ti], pos_y[ti] = px, py

    # Sample the periodic textures at x - D_t. Padding them periodically by the largest
    # displacement lets remap read inside the image (about twice as fast as BORDER_WRAP).
    # The sampling map x - D_t is upsampled directly from the coarse grid (bilinear
    # interpolation reproduces the fine coordinates exactly inside the frame; the clamped
    # edge rows/columns are corrected below), shifted to the source window of the frame.
    m = int(np.ceil(np.abs(disp_c).max())) + 2
    pads = [tex.padded(m) for tex in (textures[0], textures[2], textures[1], textures[3])]
    ph, pw = pads[0].shape
    cmx = cxs - disp_c[..., 0]  # (t, ch, cw) coarse sampling map, x and y
    cmy = cys - disp_c[..., 1]
    # (t, 2) bounds of the map (x, y); reduced per channel (contiguous: ~100x faster)
    lo = np.floor(np.stack([cmx.min(axis=(1, 2)), cmy.min(axis=(1, 2))], -1)).astype(int)
    hi = np.ceil(np.stack([cmx.max(axis=(1, 2)), cmy.max(axis=(1, 2))], -1)).astype(int)
    corr_x, corr_y = ws["corr_x"], ws["corr_y"]  # (edge slice, correction) pairs
    xy = ws["xy"]
    blend = np.empty((ph, pw), np.float32)
    for ti in range(t):
        # 2 px of slack: the edge correction moves coordinates by up to fx / 2 + 0.5.
        x0 = max(int(lo[ti, 0]) + m - 2 - int(fx), 0)
        y0 = max(int(lo[ti, 1]) + m - 2 - int(fy), 0)
        x1 = min(int(hi[ti, 0]) + m + 3 + int(fx), pw)
        y1 = min(int(hi[ti, 1]) + m + 3 + int(fy), ph)
        off = cv2.merge([cmx[ti] + np.float32(m - x0), cmy[ti] + np.float32(m - y0)])
        cv2.resize(off, (w, h), dst=xy, interpolation=cv2.INTER_LINEAR)
        for sl, c in corr_x:
            xy[:, sl, 0] += c
        for sl, c in corr_y:
            xy[sl, :, 1] += c[:, None]
        win = blend[: y1 - y0, : x1 - x0]
        for dst, fa, fb in ((large, pads[0], pads[2]), (small, pads[1], pads[3])):
            cv2.addWeighted(
                fa[y0:y1, x0:x1], cos_th[ti], fb[y0:y1, x0:x1], sin_th[ti], 0.0, dst=win
            )
            cv2.remap(win, xy, None, cv2.INTER_LINEAR, dst=dst[ti], borderMode=cv2.BORDER_REPLICATE)

    # --- compose (vectorised over frames, in place) -----------------------------------------
    # Rational/clipped shapes instead of exp/tanh keep this cheap.
    x = np.empty((t, h, w), dtype=np.float32)
    tmp = ws["tmp"]
    np.clip(small, -1.5, 1.5, out=small)
    large -= thr
    # excess e over the stratiform threshold (cv2: much faster than np.maximum here)
    cv2.threshold(large.reshape(t * h, w), 0.0, 0.0, cv2.THRESH_TOZERO, dst=large.reshape(t * h, w))
    # strat = 0.42 * 1.3 e / (1 + 1.3 e) (saturates like 1 - exp(-1.3 e)) * texture in [0.1, 1]
    np.multiply(large, 1.3, out=x)
    np.add(x, 1.0, out=tmp)
    x *= 0.42
    x /= tmp
    np.multiply(small, 0.9 / 3.0, out=tmp)
    tmp += 0.55
    x *= tmp

    if n:
        times = np.arange(t, dtype=np.float64)[:, None]
        tau = (times - birth[None, :]) / life[None, :]  # (t, n) life fraction
        alive = (tau > 0) & (tau < 1)
        env = np.where(alive, np.sin(np.pi * np.clip(tau, 0, 1)) ** 1.5, 0.0)
        amp = (peak[None, :] * env * np.exp(walk)).astype(np.float32)
        # 1 / sigma (float32): the Gaussians are the bulk of the cell work
        isx = (1.0 / ((sig * aspect)[None, :] * (0.55 + 0.45 * env))).astype(np.float32)
        isy = (1.0 / ((sig / aspect)[None, :] * (0.55 + 0.45 * env))).astype(np.float32)
        gxs = _gauss_profile(xs, pos_x.astype(np.float32), isx)  # (t, n, w)
        gys = _gauss_profile(ys, pos_y.astype(np.float32), isy)  # (t, n, h)
        # Separable rendering: frame = (gy * amp)^T @ gx, a (h, n) x (n, w) product per frame.
        # cv2.gemm rather than np.matmul: OpenBLAS threads oversubscribe a busy machine (and
        # DataLoader workers) and made generation ~3x slower.
        gys *= amp[..., None]
        gya = np.ascontiguousarray(np.swapaxes(gys, 1, 2))  # (t, h, n)
        for ti in range(t):
            cv2.gemm(gya[ti], gxs[ti], 1.0, None, 0.0, dst=tmp[ti])
        small *= 0.45
        small += 1.0  # multiplicative cell texture in [0.33, 1.68]
        tmp *= small
        x += tmp
    np.clip(x, 0.0, 1.0, out=x)
    if quantize:
        x *= 255.0
        x += 0.5
        np.floor(x, out=x)
        x *= 1.0 / 255.0
    return x


@DATASETS.register("synthetic")
class SyntheticStorms(Dataset):
    """Map-style dataset of synthetic storm sequences (see :func:`generate_sequence`).

    Item ``i`` of split ``s`` is ``generate_sequence(seed, SPLIT_OFFSETS[s] + i)``,
    so train, val and test never share a sequence and every item is reproducible
    in any DataLoader worker (no state beyond the constructor arguments).

    Parameters
    ----------
    split : {"train", "val", "test"}
    seq_len : int
        Frames per sequence.
    size : int or (int, int)
        Frame size ``H`` (= ``W``) or ``(H, W)``; default 128.
    num_sequences : int, optional
        Length of the split (defaults: train 4096, val 256, test 512).
    seed : int
        Base seed.
    channels : int
        Must be 1 (VIL is a single channel).
    **knobs
        Forwarded to :func:`generate_sequence` (``difficulty``, ``n_cells``,
        ``initiation_rate``, ``wind_speed``, ...).
    """

    def __init__(
        self,
        split: str = "train",
        seq_len: int = 25,
        size: int | tuple[int, int] = 128,
        num_sequences: int | None = None,
        seed: int = 0,
        channels: int = 1,
        height: int | None = None,
        width: int | None = None,
        **knobs: Any,
    ) -> None:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLIT_OFFSETS)}")
        if channels != 1:
            raise ValueError(f"synthetic storms have 1 channel, got channels={channels}")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        self.height = int(height if height is not None else hw[0])
        self.width = int(width if width is not None else hw[1])
        self.split = split
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        n = DEFAULT_SIZES[split] if num_sequences is None else int(num_sequences)
        if not 0 < n <= _MAX_PER_SPLIT:
            raise ValueError(f"num_sequences must be in [1, {_MAX_PER_SPLIT}], got {num_sequences}")
        self.num_sequences = n
        _knobs(
            knobs.get("difficulty", 1.0),
            **{k: v for k, v in knobs.items() if k not in ("difficulty", "quantize")},
        )
        self.knobs = dict(knobs)
        self.meta = SYNTHETIC_META
        # fail early on bad sizes
        if self.seq_len < 1 or self.height < 8 or self.width < 8:
            raise ValueError(
                f"invalid synthetic shape seq_len={seq_len}, size={self.height}x{self.width}"
            )

    def __len__(self) -> int:
        return self.num_sequences

    def sequence(self, idx: int) -> np.ndarray:
        """Item ``idx`` as ``(T, H, W)`` float32."""
        if not -self.num_sequences <= idx < self.num_sequences:
            raise IndexError(f"index {idx} out of range for {self.num_sequences} sequences")
        idx = idx % self.num_sequences
        return generate_sequence(
            self.seed,
            SPLIT_OFFSETS[self.split] + idx,
            self.seq_len,
            self.height,
            self.width,
            **self.knobs,
        )

    def __getitem__(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(self.sequence(int(idx)))[:, None]

    def futures(self, idx: int, members: int, t_split: int = 5, first_seed: int = 1) -> np.ndarray:
        """Alternative futures of item ``idx`` given its first ``t_split`` frames.

        Samples of the true conditional distribution of the future (see
        ``future_seed`` in :func:`generate_sequence`): an oracle ensemble against
        which probabilistic forecasts can be compared.

        Returns
        -------
        numpy.ndarray
            ``(members, T, H, W)`` float32; every member shares frames ``< t_split``
            with ``self.sequence(idx)``.
        """
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if not -self.num_sequences <= idx < self.num_sequences:
            raise IndexError(f"index {idx} out of range for {self.num_sequences} sequences")
        idx = idx % self.num_sequences
        return np.stack(
            [
                generate_sequence(
                    self.seed,
                    SPLIT_OFFSETS[self.split] + idx,
                    self.seq_len,
                    self.height,
                    self.width,
                    future_seed=first_seed + m,
                    t_split=t_split,
                    **self.knobs,
                )
                for m in range(members)
            ]
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticStorms(split={self.split!r}, n={self.num_sequences}, seq_len={self.seq_len}, "
            f"size={self.height}x{self.width}, seed={self.seed}, knobs={self.knobs})"
        )
