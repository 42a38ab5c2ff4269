"""CPU kernels of the :class:`~diffcast.metrics.Evaluator`: NumPy arrays, OpenCV loops.

The Evaluator's CPU path hands its batches here as float32 arrays clipped to ``[0, 1]``; no
``x * scale`` copy is made. Each kernel reproduces a threshold-space rule exactly:

- an event ``float32(x * scale) >= float32(thr)`` is the same set as ``x >= level`` for one
  float32 ``level`` per threshold (:func:`event_levels`), so events are decided on the
  ``[0, 1]`` values with the protocol's float32 rounding;
- counts are integers (``cv2.countNonZero`` of 0/1 masks on per-lead strided views); max
  pooling commutes with the clip and with ``>=``; moving-window (FSS) counts are integers;
- squared and absolute differences are summed in float64 (``cv2.norm`` accumulates in double);
- SSIM runs in float32 on the ``[0, 1]`` values (``C1 = 1e-4``, ``C2 = 9e-4``), agreeing with the
  float64 threshold-space reference to ~1e-8.

Why OpenCV rather than torch here: its separable filter, comparisons, norms and counts are
SIMD loops that accept strided 2-D views and cost 1-3 microseconds per call (a torch CPU call
costs 5-10), and several torch CPU kernels this work needs (``ge`` to bool, ``max_pool2d``,
float64 casts, ``bincount``) run 3-10x slower per element on these arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

try:  # OpenCV is a declared dependency; the Evaluator falls back to torch without it
    import cv2
except ImportError:  # pragma: no cover - only where OpenCV is missing
    cv2 = None

WINDOW = 11
SIGMA = 1.5

#: Pixels per SSIM chunk (8 frames of 128 x 128): the chunk's float32 work arrays stay in
#: cache instead of streaming full-size filtered maps through memory.
SSIM_CHUNK_PIXELS = 1 << 17


def available() -> bool:
    """Whether OpenCV is importable (the kernels need it)."""
    return cv2 is not None


# ---------------------------------------------------------------------------- thresholds
def event_levels(thresholds: Sequence[float], scale: float) -> np.ndarray:
    """Float32 levels in ``[0, 1]`` space equivalent to threshold-space events.

    For float32 ``x`` in ``[0, 1]``, ``float32(x * float32(scale)) >= float32(thr)`` holds
    exactly when ``x >= level``: the rounded product is monotone in ``x``, so the event set is
    an up-set whose least element is found by bisection over the float32 bit patterns.

    Returns
    -------
    ndarray
        ``(K,)`` float32; ``-inf`` when every value is an event, ``+inf`` when none is.
    """
    return _event_levels(tuple(float(t) for t in thresholds), float(scale)).copy()


@functools.lru_cache(maxsize=64)
def _event_levels(thresholds: tuple[float, ...], scale: float) -> np.ndarray:
    """:func:`event_levels`, computed once per thresholds and scale (a Python bisection)."""
    s = np.float32(scale)
    one = int(np.float32(1.0).view(np.uint32))
    out = np.empty(len(thresholds), np.float32)
    for i, thr in enumerate(thresholds):
        t = np.float32(thr)

        def event(bits: int, t: np.float32 = t) -> bool:
            return bool(np.uint32(bits).view(np.float32) * s >= t)

        if event(0):
            out[i] = -np.inf
        elif not event(one):
            out[i] = np.inf
        else:
            lo, hi = 0, one  # event(lo) is false, event(hi) true
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if event(mid) else (mid, hi)
            out[i] = np.uint32(hi).view(np.float32)
    return out


# ---------------------------------------------------------------------------- counting
def count_per_lead(mask: np.ndarray) -> np.ndarray:
    """Nonzero entries per lead time of an ``(N, L, P)`` bool or uint8 array: ``(L,)`` int64."""
    n, n_lead, p = mask.shape
    m = mask.view(np.uint8)
    out = np.zeros(n_lead, np.int64)
    rows = max(1, min(n, (2**31 - 1) // max(p, 1)))  # countNonZero returns a C int
    for lead in range(n_lead):
        for r in range(0, n, rows):
            out[lead] += cv2.countNonZero(m[r : r + rows, lead])
    return out


class EventMasks:
    """Reusable bool buffer for ``x >= level`` of an ``(N, L, C, H, W)`` array.

    With ``gap > 0`` every ``H x W`` plane is followed by ``gap`` zero rows, so a moving-window
    sum over the whole stack sees each plane as zero-padded (FSS); counts are unaffected
    (the gap rows stay zero).
    """

    def __init__(self, shape: tuple[int, ...], gap: int = 0) -> None:
        n, n_lead, c, h, w = shape
        self.shape = tuple(shape)
        self.gap = int(gap)
        if gap:
            self.buffer = np.zeros((n, n_lead, c, h + gap, w), np.bool_)
            self.mask = self.buffer[:, :, :, :h]
        else:
            self.buffer = self.mask = np.empty(shape, np.bool_)

    def compare(self, x: np.ndarray, level: float) -> np.ndarray:
        """Fill the mask with ``x >= level``; returns the ``(N, L, P)`` flat buffer view."""
        np.greater_equal(x, np.float32(level), out=self.mask)
        return self.flat()

    def flat(self) -> np.ndarray:
        """``(N, L, P)`` view of the buffer (gap rows included; they are zero)."""
        return self.buffer.reshape(*self.shape[:2], -1)

    def image(self) -> np.ndarray:
        """The whole buffer as one tall ``(rows, W)`` uint8 image."""
        return self.buffer.view(np.uint8).reshape(-1, self.shape[-1])


def lead_counts(obs_flat: np.ndarray, pred_flat: np.ndarray, hits: np.ndarray, n_points: int) -> np.ndarray:
    """Contingency counts per lead from event masks.

    Parameters
    ----------
    obs_flat : ndarray
        ``(B, L, P)`` observed events.
    pred_flat : ndarray
        ``(M * B, L, P)`` forecast events, members stacked member-major.
    hits : ndarray
        ``(M * B, L, P)`` bool work buffer.
    n_points : int
        Points per lead (members x samples x pixels).

    Returns
    -------
    ndarray
        ``(L, 4)`` float64: hits, misses, false alarms, correct negatives.
    """
    b = obs_flat.shape[0]
    m = pred_flat.shape[0] // b
    np.logical_and(pred_flat.reshape(m, b, *pred_flat.shape[1:]), obs_flat[None],
                   out=hits.reshape(m, b, *pred_flat.shape[1:]))
    obs_yes = count_per_lead(obs_flat) * m
    pred_yes = count_per_lead(pred_flat)
    h = count_per_lead(hits)
    table = np.stack([h, obs_yes - h, pred_yes - h, n_points - obs_yes - pred_yes + h], axis=-1)
    return table.astype(np.float64)


def contingency_counts(obs: np.ndarray, pred: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Contingency counts for all thresholds.

    Parameters
    ----------
    obs : ndarray
        ``(B, L, C, H, W)`` float32 in ``[0, 1]``.
    pred : ndarray
        ``(M * B, L, C, H, W)``: ``M`` members stacked member-major, each scored against ``obs``.
    levels : ndarray
        ``(K,)`` from :func:`event_levels`.

    Returns
    -------
    ndarray
        ``(L, K, 4)`` float64 (summed over members, samples and pixels).
    """
    om, pm = EventMasks(obs.shape), EventMasks(pred.shape)
    hits = np.empty(pm.flat().shape, np.bool_)
    n_points = pred[:, 0].size
    out = np.empty((obs.shape[1], len(levels), 4))
    for k, level in enumerate(levels.tolist()):
        out[:, k] = lead_counts(om.compare(obs, level), pm.compare(pred, level), hits, n_points)
    return out


# ---------------------------------------------------------------------------- pooling
def max_pool(x: np.ndarray, k: int) -> np.ndarray:
    """Max over non-overlapping ``k x k`` blocks of the last two axes.

    Values must be ``>= 0``: the bottom / right edge is zero-padded to a multiple of ``k``
    (the published protocol's padding). ``(..., H, W) -> (..., ceil(H / k), ceil(W / k))``.
    """
    if k == 1:
        return x
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    if ph or pw:
        x = np.pad(x, [(0, 0)] * len(lead) + [(0, ph), (0, pw)])
        h, w = h + ph, w + pw
    v = np.ascontiguousarray(x).reshape(-1, k * w)
    # rows: the k rows of a block are contiguous slices (SIMD); then k strided column slices
    rows = cv2.max(v[:, :w], v[:, w : 2 * w])
    for i in range(2, k):
        cv2.max(rows, v[:, i * w : (i + 1) * w], rows)
    # columns: torch's 1-D max pool beats k strided NumPy maxima by ~2x
    out = F.max_pool1d(torch.from_numpy(rows).unsqueeze(1), k).numpy()
    return out.reshape(*lead, h // k, w // k)


# ---------------------------------------------------------------------------- SSIM
def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """``(size, 1)`` float32 normalised Gaussian (``cv2.getGaussianKernel`` rounded to float32)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32).reshape(-1, 1)


def ssim_planes(
    preds: Sequence[np.ndarray], obs: np.ndarray, data_range: float = 1.0, window: int = WINDOW,
    sigma: float = SIGMA,
) -> np.ndarray:
    """Mean SSIM of every ``H x W`` plane over the valid window positions (the published recipe).

    Parameters
    ----------
    preds : sequence of ndarray
        ``(n, H, W)`` float32 forecasts (e.g. ensemble members), each scored against ``obs``.
    obs : ndarray
        ``(n, H, W)`` float32.
    data_range : float
        ``L`` in ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.

    Returns
    -------
    ndarray
        ``(len(preds), n)`` float64.

    Notes
    -----
    A chunk of planes is filtered as one tall image (``cv2.sepFilter2D``): rows near a plane
    boundary mix neighbouring planes but are exactly the rows the valid crop drops. Four maps
    are filtered, not five: the formula needs only ``sigma_x^2 + sigma_y^2``, so ``x^2 + y^2``
    is filtered once; ``mu_y`` is shared by the forecasts. (Sharing ``E[y^2]`` too would save a
    map per extra forecast but round differently from the one-forecast case, so identical
    members would not score exactly as one.)
    """
    n, h, w = obs.shape
    r0 = (window - 1) // 2
    r1 = window - 1 - r0
    g = gaussian_window(window, sigma)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    f = max(1, min(n, SSIM_CHUNK_PIXELS // (h * w)))
    buf = np.empty((8, f * h, w), np.float32)
    out = np.empty((len(preds), n))
    area = float((h - window + 1) * (w - window + 1))

    def finish(ratio: np.ndarray, cnt: int) -> np.ndarray:
        sums = cv2.reduce(ratio[:, r0 : w - r1], 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F).reshape(cnt, h)
        return sums[:, r0 : h - r1].sum(axis=1) / area

    for start in range(0, n, f):
        cnt = min(f, n - start)
        rows = cnt * h
        y = obs[start : start + cnt].reshape(rows, w)
        q, r, mx, my, eq, er, a, b = (bb[:rows] for bb in buf)
        for i, xs in enumerate(preds):
            x = xs[start : start + cnt].reshape(rows, w)
            cv2.multiply(x, x, q)
            cv2.accumulateSquare(y, q)  # x^2 + y^2
            cv2.multiply(x, y, r)
            cv2.sepFilter2D(x, -1, g, g, dst=mx)
            if i == 0:
                cv2.sepFilter2D(y, -1, g, g, dst=my)
            cv2.sepFilter2D(q, -1, g, g, dst=eq)
            cv2.sepFilter2D(r, -1, g, g, dst=er)
            cv2.multiply(mx, my, a)  # mu_x mu_y
            cv2.multiply(mx, mx, b)
            cv2.accumulateSquare(my, b)  # mu_x^2 + mu_y^2
            cv2.addWeighted(er, 2.0, a, -2.0, c2, er)  # 2 sigma_xy + C2
            cv2.addWeighted(a, 2.0, a, 0.0, c1, a)  # 2 mu_x mu_y + C1
            cv2.multiply(a, er, a)  # numerator
            cv2.addWeighted(eq, 1.0, b, -1.0, c2, eq)  # sigma_x^2 + sigma_y^2 + C2
            np.add(b, np.float32(c1), out=b)  # mu_x^2 + mu_y^2 + C1 (cv2.add with a scalar is 2x slower)
            cv2.multiply(b, eq, b)  # denominator
            cv2.divide(a, b, a)
            out[i, start : start + cnt] = finish(a, cnt)
    return out


# ---------------------------------------------------------------------------- FSS
def fss_gap(scales: Sequence[int]) -> int:
    """Zero rows needed below each plane so that no FSS window reaches the next plane."""
    return max((int(s) // 2 for s in scales), default=0)


def box_counts(image: np.ndarray, scale: int) -> np.ndarray:
    """Events in each ``scale x scale`` window of a uint8 0/1 image, zero padding outside.

    The window is scipy ``uniform_filter``'s (``i - scale // 2 .. i + scale - 1 - scale // 2``).
    Planes stacked in ``image`` must be separated by :func:`fss_gap` zero rows. Returns
    uint16 counts (int32 for windows of more than 65535 pixels).
    """
    lo = int(scale) // 2
    depth = cv2.CV_16U if scale * scale <= 65535 else cv2.CV_32S
    return cv2.boxFilter(image, depth, (scale, scale), anchor=(lo, lo), normalize=False,
                         borderType=cv2.BORDER_CONSTANT)


def fss_group_sums(
    f: np.ndarray, o: np.ndarray, groups: int, h: int, gap: int, o_sq: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``sum f^2``, ``sum f o``, ``sum o^2`` per group of planes from window counts (exact integers).

    Parameters
    ----------
    f, o : ndarray
        :func:`box_counts` (2-D) of a forecast and an observed stack of ``groups`` equal
        groups of ``H + gap``-row planes (:class:`EventMasks` of ``(groups, n, C, H, W)``).
    h, gap : int
        Plane height and gap rows (excluded from the sums).
    o_sq : ndarray, optional
        ``sum o^2`` per group from an earlier call with the same ``o`` (saves a pass).

    Returns
    -------
    (ndarray, ndarray)
        ``(groups, 3)`` float64 sums in counts^2 (divide by ``scale^4`` for fractions), and
        ``sum o^2`` ``(groups,)`` for reuse.
    """
    w = f.shape[-1]
    ff = f.reshape(groups, -1, (h + gap) * w)[..., : h * w]
    oo = o.reshape(groups, -1, (h + gap) * w)[..., : h * w]
    l2 = cv2.NORM_L2SQR
    if o_sq is None:
        o_sq = np.array([cv2.norm(oo[g], l2) for g in range(groups)])
    out = np.empty((groups, 3))
    for g in range(groups):
        sf = cv2.norm(ff[g], l2)
        sd = cv2.norm(ff[g], oo[g], l2)
        out[g] = (sf, (sf + o_sq[g] - sd) / 2.0, o_sq[g])  # f.o = (|f|^2 + |o|^2 - |f - o|^2) / 2
    return out, o_sq


# ---------------------------------------------------------------------------- ensembles
def u8_histogram(values: np.ndarray, n_bins: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Histogram of uint8 ``values`` (``0..n_bins-1``) where ``mask`` is nonzero: ``(n_bins,)`` int64."""
    w = values.shape[-1] if values.ndim else 1
    img = values.reshape(-1, w)
    msk = None if mask is None else mask.reshape(-1, w)
    out = np.zeros(n_bins, np.int64)
    rows = max(1, (1 << 23) // w)  # calcHist returns float32 counts: keep each call below 2^24
    for r in range(0, img.shape[0], rows):
        part = None if msk is None else msk[r : r + rows]
        out += cv2.calcHist([img[r : r + rows]], [0], part, [n_bins], [0, n_bins]).reshape(-1).astype(np.int64)
    return out


def rank_counts(members: np.ndarray, obs: np.ndarray, x_min: float | None = None) -> np.ndarray:
    """Rank histogram counts with ties shared (see :func:`.ensemble.rank_histogram_counts`).

    ``members`` ``(M, ...)`` and ``obs`` ``(...)`` float32; ``x_min`` in the same units.
    Returns ``(M + 1,)`` float64.
    """
    m = members.shape[0]
    keep = None
    if x_min is not None:
        keep = obs >= x_min
        for x in members:
            keep |= x >= x_min
        low = np.float32(-np.inf)  # all values below x_min are tied
        members = np.where(members < x_min, low, members)
        obs = np.where(obs < x_min, low, obs)
    n_less = np.zeros(obs.shape, np.uint8)
    n_eq = np.zeros(obs.shape, np.uint8)
    tmp = np.empty(obs.shape, np.bool_)
    for x in members:
        n_less += np.less(x, obs, out=tmp).view(np.uint8)
        n_eq += np.equal(x, obs, out=tmp).view(np.uint8)
    nb = m + 1
    if nb * nb <= 256:  # one uint8 code per point, OpenCV's histogram
        code = n_less
        code *= nb
        code += n_eq
        hist = u8_histogram(code, nb * nb, None if keep is None else keep.view(np.uint8))
    else:
        code = n_less.astype(np.int32) * nb + n_eq
        hist = np.bincount((code if keep is None else code[keep]).reshape(-1), minlength=nb * nb)
    hist = hist.reshape(nb, nb)  # [n_less, n_eq]
    diff = np.zeros(m + 2)
    for less in range(nb):
        for eq in range(nb - less):
            if hist[less, eq]:
                wgt = hist[less, eq] / (eq + 1.0)
                diff[less] += wgt
                diff[less + eq + 1] -= wgt
    return np.cumsum(diff)[:nb]
