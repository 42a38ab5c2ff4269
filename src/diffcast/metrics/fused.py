"""Numba kernels of the Evaluator's CPU path: every per-frame score in one call.

:func:`frame_stats` takes a block of observed frames and one or more forecasts of them
(ensemble members, the ensemble mean) and returns, per frame, the contingency counts at
every event level, the squared and absolute error sums, the max-pooled frame of the first
pool size and the SSIM, reading each frame from the cache instead of making one pass over
main memory per score. The rules are those of :mod:`.kernels` (whose OpenCV versions remain
the fallback when Numba is missing):

- events ``x >= level`` on the clipped ``[0, 1]`` float32 values, one float32 level per
  threshold (:func:`.kernels.event_levels`), counted as integers; hits are
  ``min(x, y) >= level``;
- error sums in float64 (summed in SIMD lanes, so the order differs from a sequential loop
  at the 1e-16 level);
- SSIM in float32 on ``[0, 1]`` values from four filtered maps (``mu_x``, ``mu_y``,
  ``E[x^2 + y^2]``, ``E[xy]``), the separable 11-tap Gaussian applied down the columns
  first and then along the rows, only the valid window positions averaged (in float64).

Why these loops are fast: every loop is a flat walk over a plane with constant offsets
(the column pass indexes with unsigned integers so that Numba emits no negative-index
check), which LLVM turns into 16-wide AVX-512 (or 8-wide AVX2) code; the Gaussian's
symmetry halves the multiplies. Numba compiles the kernels on first use and caches the
machine code next to this file (or in the user cache); :func:`available` tells whether
that works here.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .kernels import WINDOW, gaussian_window

log = logging.getLogger(__name__)

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency
    numba = None

_STATE: dict[str, object] = {}
_LOCK = threading.Lock()


def _jit(**flags):
    opts = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")
    opts.update(flags)
    return numba.njit(**opts)


if numba is not None:
    U = np.uint64
    _CONTRACT = {"contract"}
    _REDUCE = {"contract", "reassoc", "nsz"}

    @_jit(fastmath=_REDUCE)
    def _errors(x, y):  # pragma: no cover - compiled
        s2 = 0.0
        s1 = 0.0
        for p in range(x.shape[0]):
            d = np.float64(x[p]) - np.float64(y[p])
            s2 += d * d
            s1 += abs(d)
        return s2, s1

    #: Pixels per block of the event counts: float32 sums of 0 / 1 stay exact below 2^24.
    _COUNT_BLOCK = 1 << 24
    #: Event levels counted per pass over a frame (unused slots get +inf).
    LEVELS_PER_PASS = 6

    @_jit(fastmath=_REDUCE)
    def _count6_block(x, y, l0, l1, l2, l3, l4, l5):  # pragma: no cover - compiled
        """``#{x >= l}``, ``#{min(x, y) >= l}``, ``#{y >= l}`` for six levels, as float32 sums."""
        one = np.float32(1.0)
        z = np.float32(0.0)
        c0, c1, c2, c3, c4, c5 = z, z, z, z, z, z
        h0, h1, h2, h3, h4, h5 = z, z, z, z, z, z
        o0, o1, o2, o3, o4, o5 = z, z, z, z, z, z
        for p in range(x.shape[0]):
            a = x[p]
            b = y[p]
            m = a if a < b else b
            c0 += one if a >= l0 else z
            c1 += one if a >= l1 else z
            c2 += one if a >= l2 else z
            c3 += one if a >= l3 else z
            c4 += one if a >= l4 else z
            c5 += one if a >= l5 else z
            h0 += one if m >= l0 else z
            h1 += one if m >= l1 else z
            h2 += one if m >= l2 else z
            h3 += one if m >= l3 else z
            h4 += one if m >= l4 else z
            h5 += one if m >= l5 else z
            o0 += one if b >= l0 else z
            o1 += one if b >= l1 else z
            o2 += one if b >= l2 else z
            o3 += one if b >= l3 else z
            o4 += one if b >= l4 else z
            o5 += one if b >= l5 else z
        return (c0, c1, c2, c3, c4, c5), (h0, h1, h2, h3, h4, h5), (o0, o1, o2, o3, o4, o5)

    @_jit()
    def _count6(x, y, lv, out):  # pragma: no cover - compiled
        """Add the counts of :func:`_count6_block` for the six levels ``lv`` to ``out`` ``(3, 6)``
        int64 (exact: float32 sums of 0 / 1 over blocks of fewer than 2^24 points)."""
        for s in range(0, x.shape[0], _COUNT_BLOCK):
            c, h, o = _count6_block(x[s : s + _COUNT_BLOCK], y[s : s + _COUNT_BLOCK],
                                    lv[0], lv[1], lv[2], lv[3], lv[4], lv[5])
            for k in range(LEVELS_PER_PASS):
                out[0, k] += np.int64(c[k])
                out[1, k] += np.int64(h[k])
                out[2, k] += np.int64(o[k])

    @_jit()
    def _counts(x, y, groups, work, pred_yes, hits, obs_yes):  # pragma: no cover - compiled
        """Counts at every level (``groups`` ``(P, 6)``: the levels padded with +inf) into
        ``pred_yes``, ``hits`` and, when it has entries, ``obs_yes`` ``(K,)``."""
        n_k = pred_yes.shape[0]
        for gi in range(groups.shape[0]):
            work[:] = 0
            _count6(x, y, groups[gi], work)
            for t in range(LEVELS_PER_PASS):
                k = gi * LEVELS_PER_PASS + t
                if k < n_k:
                    pred_yes[k] = work[0, t]
                    hits[k] = work[1, t]
                    if obs_yes.shape[0]:
                        obs_yes[k] = work[2, t]

    @_jit()
    def _pool(x, h, w, k, out, rowmax):  # pragma: no cover - compiled
        """Max over ``k x k`` blocks of the ``h x w`` plane ``x`` (flat, values >= 0, zero padding)."""
        hp, wp = out.shape
        for bi in range(hp):
            rowmax[:] = 0.0
            for i in range(bi * k, min(h, bi * k + k)):
                row = x[i * w : (i + 1) * w]
                for j in range(w):
                    v = row[j]
                    rowmax[j] = v if v > rowmax[j] else rowmax[j]
            o = out[bi]
            if k == 4 and w % 4 == 0:  # constant stride: vectorised with shuffles
                for bj in range(wp):
                    a = rowmax[4 * bj]
                    b = rowmax[4 * bj + 1]
                    c = rowmax[4 * bj + 2]
                    d = rowmax[4 * bj + 3]
                    a = a if a > b else b
                    c = c if c > d else d
                    o[bj] = a if a > c else c
            else:
                for bj in range(wp):
                    m = np.float32(0.0)
                    for j in range(bj * k, min(w, bj * k + k)):
                        v = rowmax[j]
                        m = v if v > m else m
                    o[bj] = m

    @_jit()
    def _pool_frames(x, k, out):  # pragma: no cover - compiled
        """:func:`_pool` of every ``(H, W)`` plane of ``x`` ``(F, H, W)`` into ``out`` ``(F, Hp, Wp)``."""
        n_f, h, w = x.shape
        rowmax = np.empty(w, np.float32)
        for f in range(n_f):
            _pool(x[f].reshape(-1), h, w, k, out[f], rowmax)

    @_jit(fastmath=_CONTRACT)
    def _vpass(a, w, hv, g, out):  # pragma: no cover - compiled
        """Column pass: ``out[i w + j] = sum_k g[k] a[(i + k) w + j]`` for the ``hv`` output rows.

        Two output rows per step share eleven of their twelve row loads.
        """
        g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
        w1, w2, w3, w4, w5 = U(w), U(2 * w), U(3 * w), U(4 * w), U(5 * w)
        w6, w7, w8, w9, w10, w11 = U(6 * w), U(7 * w), U(8 * w), U(9 * w), U(10 * w), U(11 * w)
        pairs = hv // 2
        for i in range(pairs):
            base = U(2 * i * w)
            for j in range(w):
                p = base + U(j)
                a0, a1, a2, a3, a4, a5 = a[p], a[p + w1], a[p + w2], a[p + w3], a[p + w4], a[p + w5]
                a6, a7, a8, a9, a10, a11 = a[p + w6], a[p + w7], a[p + w8], a[p + w9], a[p + w10], a[p + w11]
                v0 = (g5 * a5 + g4 * (a4 + a6) + g3 * (a3 + a7) + g2 * (a2 + a8) + g1 * (a1 + a9) + g0 * (a0 + a10))
                v1 = (g5 * a6 + g4 * (a5 + a7) + g3 * (a4 + a8) + g2 * (a3 + a9) + g1 * (a2 + a10) + g0 * (a1 + a11))
                out[p] = v0
                out[p + w1] = v1
        for jj in range(2 * pairs * w, hv * w):
            p = U(jj)
            out[p] = (g5 * a[p + w5] + g4 * (a[p + w4] + a[p + w6]) + g3 * (a[p + w3] + a[p + w7])
                      + g2 * (a[p + w2] + a[p + w8]) + g1 * (a[p + w1] + a[p + w9]) + g0 * (a[p] + a[p + w10]))

    @_jit(fastmath=_CONTRACT)
    def _hssim(vx, vy, vq, vr, n, g, c1, c2, ratio):  # pragma: no cover - compiled
        """Row pass of the four column-filtered maps and the SSIM ratio at flat positions ``p < n``."""
        g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
        two = np.float32(2.0)
        for p in range(n):
            mx = (g5 * vx[p + 5] + g4 * (vx[p + 4] + vx[p + 6]) + g3 * (vx[p + 3] + vx[p + 7])
                  + g2 * (vx[p + 2] + vx[p + 8]) + g1 * (vx[p + 1] + vx[p + 9]) + g0 * (vx[p] + vx[p + 10]))
            my = (g5 * vy[p + 5] + g4 * (vy[p + 4] + vy[p + 6]) + g3 * (vy[p + 3] + vy[p + 7])
                  + g2 * (vy[p + 2] + vy[p + 8]) + g1 * (vy[p + 1] + vy[p + 9]) + g0 * (vy[p] + vy[p + 10]))
            eq = (g5 * vq[p + 5] + g4 * (vq[p + 4] + vq[p + 6]) + g3 * (vq[p + 3] + vq[p + 7])
                  + g2 * (vq[p + 2] + vq[p + 8]) + g1 * (vq[p + 1] + vq[p + 9]) + g0 * (vq[p] + vq[p + 10]))
            er = (g5 * vr[p + 5] + g4 * (vr[p + 4] + vr[p + 6]) + g3 * (vr[p + 3] + vr[p + 7])
                  + g2 * (vr[p + 2] + vr[p + 8]) + g1 * (vr[p + 1] + vr[p + 9]) + g0 * (vr[p] + vr[p + 10]))
            a = mx * my
            b = mx * mx + my * my
            ratio[p] = ((two * a + c1) * (two * (er - a) + c2)) / ((b + c1) * (eq - b + c2))

    @_jit(fastmath=_CONTRACT)
    def _products(x, y, q, r):  # pragma: no cover - compiled
        for p in range(x.shape[0]):
            a = x[p]
            b = y[p]
            q[p] = a * a + b * b
            r[p] = a * b

    @_jit()
    def _ssim_mean(ratio, hv, w, wv, acc):  # pragma: no cover - compiled
        for j in range(w):
            acc[j] = 0.0
        for i in range(hv):
            row = ratio[i * w : (i + 1) * w]
            for j in range(w):
                acc[j] += row[j]
        s = 0.0
        for j in range(wv):
            s += acc[j]
        return s / (hv * wv)

    @_jit()
    def _scratch(h, w, levels):  # pragma: no cover - compiled
        """Work arrays of :func:`_frames` for ``h x w`` frames."""
        npx = h * w
        nv = max(h - (WINDOW - 1), 0) * w
        n_k = levels.shape[0]
        groups = np.full((-(-n_k // LEVELS_PER_PASS), LEVELS_PER_PASS), np.inf, np.float32)
        groups.reshape(-1)[:n_k] = levels
        maps = np.zeros((5, nv), np.float32)  # vx, vy, vq, vr, ratio (last WINDOW - 1 entries stay 0)
        return (groups, np.zeros((3, LEVELS_PER_PASS), np.int64), np.empty((2, npx), np.float32), maps,
                np.empty(w, np.float64), np.empty(w, np.float32))

    @_jit()
    def _frames(obs, preds, pool, do_counts, do_errors, do_ssim, g, c1, c2, scratch,
                obs_yes, pred_yes, hits, sq, ab, ssim, pool_obs, pool_pred):  # pragma: no cover
        """The body of :func:`frame_stats`, with its work arrays from :func:`_scratch`."""
        n_g, n_f, h, w = preds.shape
        hv, wv = h - (WINDOW - 1), w - (WINDOW - 1)
        nv = max(hv, 0) * w
        nr = max(nv - (WINDOW - 1), 0)
        groups, work, qr, maps, acc, rowmax = scratch
        q, r = qr[0], qr[1]
        vx, vy, vq, vr, ratio = maps[0], maps[1], maps[2], maps[3], maps[4]
        no_obs = obs_yes[0, :0]
        for f in range(n_f):
            y = obs[f].reshape(-1)
            if pool > 1:
                _pool(y, h, w, pool, pool_obs[f], rowmax)
            if do_ssim:
                _vpass(y, w, hv, g, vy)
            for i in range(n_g):
                x = preds[i, f].reshape(-1)
                if do_counts:
                    _counts(x, y, groups, work, pred_yes[i, f], hits[i, f], obs_yes[f] if i == 0 else no_obs)
                if do_errors:
                    s2, s1 = _errors(x, y)
                    sq[i, f] = s2
                    ab[i, f] = s1
                if pool > 1:
                    _pool(x, h, w, pool, pool_pred[i, f], rowmax)
                if do_ssim:
                    _products(x, y, q, r)
                    _vpass(x, w, hv, g, vx)
                    _vpass(q, w, hv, g, vq)
                    _vpass(r, w, hv, g, vr)
                    _hssim(vx, vy, vq, vr, nr, g, c1, c2, ratio)
                    ssim[i, f] = _ssim_mean(ratio, hv, w, wv, acc)

    @_jit()
    def frame_stats(obs, preds, levels, pool, do_counts, do_errors, do_ssim, g, c1, c2,
                    obs_yes, pred_yes, hits, sq, ab, ssim, pool_obs, pool_pred):  # pragma: no cover
        """Per-frame scores of ``G`` forecasts ``preds`` ``(G, F, H, W)`` against ``obs`` ``(F, H, W)``.

        Outputs (filled where the flag is set): ``obs_yes`` ``(F, K)``, ``pred_yes`` and
        ``hits`` ``(G, F, K)`` int64; ``sq``, ``ab``, ``ssim`` ``(G, F)`` float64;
        ``pool_obs`` ``(F, Hp, Wp)`` and ``pool_pred`` ``(G, F, Hp, Wp)`` float32 when
        ``pool > 1``. ``g`` holds the first six taps of the symmetric 11-tap Gaussian.
        """
        scratch = _scratch(obs.shape[1], obs.shape[2], levels)
        _frames(obs, preds, pool, do_counts, do_errors, do_ssim, g, c1, c2, scratch,
                obs_yes, pred_yes, hits, sq, ab, ssim, pool_obs, pool_pred)

    @_jit(fastmath=_REDUCE)
    def _load_plane(s, d):  # pragma: no cover - compiled
        """Clip the flat plane ``s`` to [0, 1] into float32 ``d``; returns 1 if it holds NaN / inf."""
        z = s.dtype.type(0.0)
        one = s.dtype.type(1.0)
        acc = z
        for p in range(s.shape[0]):
            v = s[p]
            acc += v * z  # 0 for finite values; NaN propagates (no nnan / ninf flag here)
            v = v if v > z else z
            d[p] = np.float32(v if v < one else one)
        return 0 if acc == 0 else 1

    @_jit()
    def frame_stats_src(src_obs, src_pred, b0, n, l0, nl, levels, pool, do_counts, do_errors, do_ssim, g,
                        c1, c2, obs_yes, pred_yes, hits, sq, ab, ssim, pool_obs, pool_pred):  # pragma: no cover
        """:func:`frame_stats` of one forecast read straight from the inputs.

        ``src_obs`` ``(B, L, C, H, W)`` and ``src_pred`` (the same shape) in C order, any float
        dtype; frames ``[b0, b0 + n) x [l0, l0 + nl)`` are clipped into a one-frame buffer
        (no chunk copy) and stored lead-major (``f = (j n + t) C + c``). Returns the number
        of NaN / inf values met (outputs are then undefined).
        """
        c_n, h, w = src_obs.shape[2], src_obs.shape[3], src_obs.shape[4]
        scratch = _scratch(h, w, levels)
        yb = np.empty((1, h, w), np.float32)
        xb = np.empty((1, 1, h, w), np.float32)
        bad = 0
        for j in range(nl):
            for t in range(n):
                for c in range(c_n):
                    f = (j * n + t) * c_n + c
                    bad += _load_plane(src_obs[b0 + t, l0 + j, c].reshape(-1), yb.reshape(-1))
                    bad += _load_plane(src_pred[b0 + t, l0 + j, c].reshape(-1), xb.reshape(-1))
                    if bad:
                        return bad
                    _frames(yb, xb, pool, do_counts, do_errors, do_ssim, g, c1, c2, scratch,
                            obs_yes[f : f + 1], pred_yes[:, f : f + 1], hits[:, f : f + 1], sq[:, f : f + 1],
                            ab[:, f : f + 1], ssim[:, f : f + 1], pool_obs[f : f + 1], pool_pred[:, f : f + 1])
        return bad

    @_jit()
    def load(src, b0, n, l0, nl, out):  # pragma: no cover - compiled
        """Copy ``src[b0:b0+n, l0:l0+nl]`` (``(B, L, C, H, W)``, C order) into ``out``
        ``(nl, n, C, H, W)`` float32, clipped to [0, 1]; returns the number of NaN / inf."""
        bad = 0
        for j in range(nl):
            for t in range(n):
                bad += _load_plane(src[b0 + t, l0 + j].reshape(-1), out[j, t].reshape(-1))
        return bad


def _compile() -> None:
    """Compile (or load from the cache) every kernel on a tiny problem and check one number."""
    levels = np.array([0.25, 0.5], np.float32)
    rng = np.random.default_rng(0)
    obs = rng.random((1, 12, 13), dtype=np.float32)
    got = stats(obs, obs[None].copy(), levels, pool=4)
    if not abs(got["ssim"][0, 0] - 1.0) < 1e-6:  # SSIM of a frame with itself
        raise RuntimeError(f"self-check failed: SSIM(x, x) = {got['ssim'][0, 0]}")
    buf = np.empty((1, 1, 1, 12, 13), np.float32)
    for dtype in (np.float32, np.float64):
        src = obs.astype(dtype).reshape(1, 1, 1, 12, 13)
        load(src, 0, 1, 0, 1, buf)
        stats_src(src, src, 0, 1, 0, 1, levels, pool=4)
    max_pool(obs, 2)


def available() -> bool:
    """Whether the Numba kernels work here (compiled, or loaded from the cache, once per process)."""
    if numba is None:
        return False
    with _LOCK:
        if "ok" not in _STATE:
            try:
                _compile()
                _STATE["ok"] = True
            except Exception as err:  # noqa: BLE001 - any failure means: use the OpenCV kernels
                log.warning("Numba kernels unavailable (%s: %s); the Evaluator uses OpenCV", type(err).__name__, err)
                _STATE["ok"] = False
    return bool(_STATE["ok"])


_NAMES = ("obs_yes", "pred_yes", "hits", "sq", "ab", "ssim", "pool_obs", "pool_pred")
#: SSIM constants of values in [0, 1] (data range 1).
_C1, _C2 = np.float32(0.01**2), np.float32(0.03**2)


def ssim_taps() -> np.ndarray:
    """First six taps of the 11-tap Gaussian (float32, the same rounding as :mod:`.kernels`)."""
    return np.ascontiguousarray(gaussian_window().reshape(-1)[: (WINDOW + 1) // 2])


def _outputs(n_g: int, n_f: int, n_k: int, h: int, w: int, pool: int) -> tuple[np.ndarray, ...]:
    hp, wp = (-(-h // pool), -(-w // pool)) if pool > 1 else (1, 1)
    return (
        np.zeros((n_f, n_k), np.int64), np.zeros((n_g, n_f, n_k), np.int64), np.zeros((n_g, n_f, n_k), np.int64),
        np.zeros((n_g, n_f)), np.zeros((n_g, n_f)), np.zeros((n_g, n_f)),
        np.empty((n_f, hp, wp), np.float32), np.empty((n_g, n_f, hp, wp), np.float32),
    )


def stats(obs: np.ndarray, preds: np.ndarray, levels: np.ndarray, pool: int = 1, counts: bool = True,
          errors: bool = True, ssim: bool = True, data_range: float = 1.0) -> dict[str, np.ndarray]:
    """:func:`frame_stats` with allocated outputs, as a dict.

    Parameters
    ----------
    obs : ndarray
        ``(F, H, W)`` float32 in ``[0, 1]``, C order.
    preds : ndarray
        ``(G, F, H, W)`` float32 in ``[0, 1]``, C order.
    levels : ndarray
        ``(K,)`` float32 event levels (:func:`.kernels.event_levels`).
    pool : int
        Block size of the returned max-pooled frames (1: none).
    counts, errors, ssim : bool
        Which scores to compute (SSIM needs frames of at least 11 x 11).

    Returns
    -------
    dict
        ``obs_yes`` ``(F, K)``, ``pred_yes`` / ``hits`` ``(G, F, K)``, ``sq`` / ``ab`` / ``ssim``
        ``(G, F)``, ``pool_obs`` ``(F, Hp, Wp)`` and ``pool_pred`` ``(G, F, Hp, Wp)``.
    """
    n_g, n_f, h, w = preds.shape
    if obs.shape != (n_f, h, w):
        raise ValueError(f"obs {obs.shape} does not match preds {preds.shape}")
    if h * w >= 2**31:
        raise ValueError(f"frames of {h} x {w} pixels are too large for the int32 counters")
    if ssim and min(h, w) < WINDOW:
        raise ValueError(f"SSIM needs frames of at least {WINDOW} x {WINDOW}, got {h} x {w}")
    out = _outputs(n_g, n_f, len(levels), h, w, pool)
    c1 = np.float32((0.01 * data_range) ** 2)
    c2 = np.float32((0.03 * data_range) ** 2)
    frame_stats(obs, preds, np.asarray(levels, np.float32), int(pool), bool(counts), bool(errors), bool(ssim),
                ssim_taps(), c1, c2, *out)
    return dict(zip(_NAMES, out))


def stats_src(src_obs: np.ndarray, src_pred: np.ndarray, b0: int, n: int, l0: int, nl: int, levels: np.ndarray,
              pool: int = 1, counts: bool = True, errors: bool = True, ssim: bool = True) -> dict[str, np.ndarray]:
    """:func:`stats` of frames ``[b0, b0 + n) x [l0, l0 + nl)`` read straight from
    ``(B, L, C, H, W)`` inputs (C order, float32 or float64; clipped on the way, no copy of
    the chunk). Frames are ordered lead-major, ``G = 1``.

    Raises
    ------
    ValueError
        If a frame read contains NaN or inf (``y_true`` or ``y_pred`` named by which).
    """
    _, _, c, h, w = src_obs.shape
    if ssim and min(h, w) < WINDOW:
        raise ValueError(f"SSIM needs frames of at least {WINDOW} x {WINDOW}, got {h} x {w}")
    out = _outputs(1, nl * n * c, len(levels), h, w, pool)
    bad = frame_stats_src(src_obs, src_pred, int(b0), int(n), int(l0), int(nl), np.asarray(levels, np.float32),
                          int(pool), bool(counts), bool(errors), bool(ssim), ssim_taps(), _C1, _C2, *out)
    if bad:
        obs_bad = not np.isfinite(src_obs[b0 : b0 + n, l0 : l0 + nl]).all()
        raise ValueError(f"{'y_true' if obs_bad else 'y_pred'} contains NaN or inf values")
    return dict(zip(_NAMES, out))


def max_pool(x: np.ndarray, k: int) -> np.ndarray:
    """Max over non-overlapping ``k x k`` blocks of the last two axes (values ``>= 0``, zero
    padding at the bottom / right edge), as :func:`.kernels.max_pool`."""
    if k == 1:
        return x
    *lead, h, w = x.shape
    planes = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, h, w)
    out = np.empty((planes.shape[0], -(-h // k), -(-w // k)), np.float32)
    _pool_frames(planes, int(k), out)
    return out.reshape(*lead, *out.shape[1:])


def contingency_counts(obs: np.ndarray, pred: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """:func:`.kernels.contingency_counts` with the Numba counters.

    ``obs`` ``(B, L, C, H, W)``, ``pred`` ``(M * B, L, C, H, W)`` (members stacked
    member-major) float32 in ``[0, 1]``; returns ``(L, K, 4)`` float64 hits, misses, false
    alarms and correct negatives summed over members, samples and pixels.
    """
    b, n_lead, c, h, w = obs.shape
    m = pred.shape[0] // b
    k = len(levels)
    o = np.ascontiguousarray(obs.swapaxes(0, 1)).reshape(-1, h, w)  # lead-major frames
    p = np.ascontiguousarray(pred.reshape(m, b, n_lead, c, h, w).swapaxes(1, 2)).reshape(m, -1, h, w)
    st = stats(o, p, levels, errors=False, ssim=False)
    obs_yes = st["obs_yes"].reshape(n_lead, -1, k).sum(1) * m
    pred_yes = st["pred_yes"].reshape(m, n_lead, -1, k).sum(axis=(0, 2))
    hits = st["hits"].reshape(m, n_lead, -1, k).sum(axis=(0, 2))
    n_points = m * b * c * h * w
    table = np.stack([hits, obs_yes - hits, pred_yes - hits, n_points - obs_yes - pred_yes + hits], axis=-1)
    return table.astype(np.float64)
