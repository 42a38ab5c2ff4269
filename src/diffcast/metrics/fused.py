"""Numba kernels of the Evaluator's CPU path: every per-frame score in one call.

:func:`frame_stats` takes a block of observed frames and one or more forecasts of them
(ensemble members, the ensemble mean) and returns, per frame, the contingency counts at
every event level, the squared and absolute error sums, the same counts of the frame
max-pooled by a chain of sizes (4, then 16 from that) and the SSIM, reading each frame from
the cache instead of making one pass over main memory per score; :func:`frame_stats_src`
does so reading the frames straight from the ``(B, L, C, H, W)`` inputs. The rules are those of :mod:`.kernels` (whose OpenCV versions remain
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
import time

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
    """``numba.njit`` with the kernels' options, caching the machine code on disk where
    Numba finds a writable cache folder (else compiling in every process)."""
    opts = dict(nogil=True, boundscheck=False, error_model="numpy", **flags)

    def decorate(fn):
        try:
            return numba.njit(cache=True, **opts)(fn)
        except RuntimeError as err:  # "cannot cache function ...: no locator available"
            if "cannot cache" not in str(err):
                raise
            _STATE["uncached"] = str(err)
            return numba.njit(cache=False, **opts)(fn)

    return decorate


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
        """``#{x >= l}``, ``#{min(x, y) >= l}``, ``#{y >= l}`` for six levels, as float32 sums,
        and the float64 sums of ``(x - y)^2`` and ``|x - y|`` (cheap next to the compares)."""
        one = np.float32(1.0)
        z = np.float32(0.0)
        c0, c1, c2, c3, c4, c5 = z, z, z, z, z, z
        h0, h1, h2, h3, h4, h5 = z, z, z, z, z, z
        o0, o1, o2, o3, o4, o5 = z, z, z, z, z, z
        s2 = 0.0
        s1 = 0.0
        for p in range(x.shape[0]):
            a = x[p]
            b = y[p]
            d = np.float64(a) - np.float64(b)
            s2 += d * d
            s1 += abs(d)
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
        counts = ((c0, c1, c2, c3, c4, c5), (h0, h1, h2, h3, h4, h5), (o0, o1, o2, o3, o4, o5))
        return counts, s2, s1

    @_jit()
    def _count6(x, y, lv, out):  # pragma: no cover - compiled
        """Add the counts of :func:`_count6_block` for the six levels ``lv`` to ``out`` ``(3, 6)``
        int64 (exact: float32 sums of 0 / 1 over blocks of fewer than 2^24 points); returns the
        error sums."""
        s2 = 0.0
        s1 = 0.0
        for s in range(0, x.shape[0], _COUNT_BLOCK):
            (c, h, o), e2, e1 = _count6_block(x[s : s + _COUNT_BLOCK], y[s : s + _COUNT_BLOCK],
                                              lv[0], lv[1], lv[2], lv[3], lv[4], lv[5])
            s2 += e2
            s1 += e1
            for k in range(LEVELS_PER_PASS):
                out[0, k] += np.int64(c[k])
                out[1, k] += np.int64(h[k])
                out[2, k] += np.int64(o[k])
        return s2, s1

    @_jit()
    def _counts(x, y, groups, work, pred_yes, hits, obs_yes):  # pragma: no cover - compiled
        """Counts at every level (``groups`` ``(P, 6)``: the levels padded with +inf) into
        ``pred_yes``, ``hits`` and, when it has entries, ``obs_yes`` ``(K,)``; returns the error
        sums (from the first pass)."""
        n_k = pred_yes.shape[0]
        s2 = 0.0
        s1 = 0.0
        for gi in range(groups.shape[0]):
            work[:] = 0
            e2, e1 = _count6(x, y, groups[gi], work)
            if gi == 0:
                s2, s1 = e2, e1
            for t in range(LEVELS_PER_PASS):
                k = gi * LEVELS_PER_PASS + t
                if k < n_k:
                    pred_yes[k] = work[0, t]
                    hits[k] = work[1, t]
                    if obs_yes.shape[0]:
                        obs_yes[k] = work[2, t]
        return s2, s1

    @_jit()
    def _pool(x, h, w, k, out, rowmax):  # pragma: no cover - compiled
        """Max over ``k x k`` blocks of the ``h x w`` plane ``x`` (flat, values >= 0, zero padding);
        ``rowmax`` holds ``2 w`` floats of work space."""
        hp, wp = out.shape
        rm = rowmax[:w]
        pair = rowmax[w : 2 * w]
        for bi in range(hp):
            i0 = bi * k
            if k == 4 and i0 + 4 <= h:  # the common case in one pass over four rows
                r0, r1 = x[i0 * w : (i0 + 1) * w], x[(i0 + 1) * w : (i0 + 2) * w]
                r2, r3 = x[(i0 + 2) * w : (i0 + 3) * w], x[(i0 + 3) * w : (i0 + 4) * w]
                for j in range(w):
                    a = r0[j] if r0[j] > r1[j] else r1[j]
                    b = r2[j] if r2[j] > r3[j] else r3[j]
                    rm[j] = a if a > b else b
            else:
                rm[:] = 0.0
                for i in range(i0, min(h, i0 + k)):
                    row = x[i * w : (i + 1) * w]
                    for j in range(w):
                        v = row[j]
                        rm[j] = v if v > rm[j] else rm[j]
            o = out[bi]
            if k == 4 and w % 4 == 0:  # maxima of neighbours, then of neighbouring pairs
                for j in range(w - 1):
                    a, b = rm[j], rm[j + 1]
                    pair[j] = a if a > b else b
                for bj in range(wp):
                    a, b = pair[4 * bj], pair[4 * bj + 2]
                    o[bj] = a if a > b else b
            else:
                for bj in range(wp):
                    m = np.float32(0.0)
                    for j in range(bj * k, min(w, bj * k + k)):
                        v = rm[j]
                        m = v if v > m else m
                    o[bj] = m

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
    def _hssim(vx, vy, vq, vr, hv, w, wv, g, c1, c2, acc):  # pragma: no cover - compiled
        """Row pass of the four column-filtered maps (``hv`` rows of ``w``, flat, padded by
        ``WINDOW - 1``), the SSIM ratio, and its mean over the ``hv x wv`` valid positions.

        Whole rows of ``w`` are computed (full SIMD width); the last ``WINDOW - 1`` columns
        read into the next row and are left out of the mean.
        """
        g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
        two = np.float32(2.0)
        acc[:] = 0.0
        for i in range(hv):
            o = i * w
            ax, ay = vx[o : o + w + WINDOW - 1], vy[o : o + w + WINDOW - 1]
            aq, ar = vq[o : o + w + WINDOW - 1], vr[o : o + w + WINDOW - 1]
            for p in range(w):
                mx = (g5 * ax[p + 5] + g4 * (ax[p + 4] + ax[p + 6]) + g3 * (ax[p + 3] + ax[p + 7])
                      + g2 * (ax[p + 2] + ax[p + 8]) + g1 * (ax[p + 1] + ax[p + 9]) + g0 * (ax[p] + ax[p + 10]))
                my = (g5 * ay[p + 5] + g4 * (ay[p + 4] + ay[p + 6]) + g3 * (ay[p + 3] + ay[p + 7])
                      + g2 * (ay[p + 2] + ay[p + 8]) + g1 * (ay[p + 1] + ay[p + 9]) + g0 * (ay[p] + ay[p + 10]))
                eq = (g5 * aq[p + 5] + g4 * (aq[p + 4] + aq[p + 6]) + g3 * (aq[p + 3] + aq[p + 7])
                      + g2 * (aq[p + 2] + aq[p + 8]) + g1 * (aq[p + 1] + aq[p + 9]) + g0 * (aq[p] + aq[p + 10]))
                er = (g5 * ar[p + 5] + g4 * (ar[p + 4] + ar[p + 6]) + g3 * (ar[p + 3] + ar[p + 7])
                      + g2 * (ar[p + 2] + ar[p + 8]) + g1 * (ar[p + 1] + ar[p + 9]) + g0 * (ar[p] + ar[p + 10]))
                a = mx * my
                b = mx * mx + my * my
                acc[p] += ((two * a + c1) * (two * (er - a) + c2)) / ((b + c1) * (eq - b + c2))
        s = 0.0
        for j in range(wv):
            s += acc[j]
        return s / (hv * wv)

    @_jit(fastmath=_CONTRACT)
    def _products(x, y, q, r):  # pragma: no cover - compiled
        for p in range(x.shape[0]):
            a = x[p]
            b = y[p]
            q[p] = a * a + b * b
            r[p] = a * b

    @_jit()
    def _scratch(h, w, levels, steps):  # pragma: no cover - compiled
        """Work arrays of :func:`_frames` for ``h x w`` frames and the pool chain ``steps``."""
        npx = h * w
        nv = max(h - (WINDOW - 1), 0) * w
        n_k = levels.shape[0]
        groups = np.full((-(-n_k // LEVELS_PER_PASS), LEVELS_PER_PASS), np.inf, np.float32)
        groups.reshape(-1)[:n_k] = levels
        maps = np.zeros((4, nv + WINDOW - 1), np.float32)  # vx, vy, vq, vr (+ padding, stays 0)
        # pooled planes of the chain, one after the other: (rows, cols, offset) per step
        shapes = np.zeros((steps.shape[0], 3), np.int64)
        hs, ws, off = h, w, 0
        for s in range(steps.shape[0]):
            hs, ws = -(-hs // steps[s]), -(-ws // steps[s])
            shapes[s, 0], shapes[s, 1], shapes[s, 2] = hs, ws, off
            off += hs * ws
        return (groups, np.zeros((3, LEVELS_PER_PASS), np.int64), np.empty((2, npx), np.float32), maps,
                np.empty(w, np.float64), np.empty(2 * w, np.float32), shapes, np.empty((2, max(off, 1)), np.float32))

    @_jit()
    def _pool_chain(x, h, w, steps, shapes, out, rowmax):  # pragma: no cover - compiled
        """Pool ``x`` by each factor of ``steps`` in turn, the planes into ``out`` (flat)."""
        src, hs, ws = x, h, w
        for s in range(steps.shape[0]):
            rows, cols, off = shapes[s, 0], shapes[s, 1], shapes[s, 2]
            dst = out[off : off + rows * cols]
            _pool(src, hs, ws, steps[s], dst.reshape((rows, cols)), rowmax)
            src, hs, ws = dst, rows, cols

    @_jit()
    def _frames(obs, preds, steps, do_counts, do_errors, do_ssim, g, c1, c2, scratch,
                obs_yes, pred_yes, hits, sq, ab, ssim, pobs_yes, ppred_yes, phits):  # pragma: no cover
        """The body of :func:`frame_stats`, with its work arrays from :func:`_scratch`."""
        n_g, n_f, h, w = preds.shape
        hv, wv = h - (WINDOW - 1), w - (WINDOW - 1)
        groups, work, qr, maps, acc, rowmax, shapes, chain = scratch
        q, r = qr[0], qr[1]
        vx, vy, vq, vr = maps[0], maps[1], maps[2], maps[3]
        n_s = steps.shape[0]
        no_obs = obs_yes[0, :0]
        for f in range(n_f):
            y = obs[f].reshape(-1)
            if n_s:
                _pool_chain(y, h, w, steps, shapes, chain[0], rowmax)
            if do_ssim:
                _vpass(y, w, hv, g, vy)
            for i in range(n_g):
                x = preds[i, f].reshape(-1)
                if do_counts:  # with the error sums in the same pass
                    s2, s1 = _counts(x, y, groups, work, pred_yes[i, f], hits[i, f], obs_yes[f] if i == 0 else no_obs)
                elif do_errors:
                    s2, s1 = _errors(x, y)
                if do_errors:
                    sq[i, f] = s2
                    ab[i, f] = s1
                if n_s:
                    _pool_chain(x, h, w, steps, shapes, chain[1], rowmax)
                    for s in range(n_s):
                        lo, hi = shapes[s, 2], shapes[s, 2] + shapes[s, 0] * shapes[s, 1]
                        _counts(chain[1, lo:hi], chain[0, lo:hi], groups, work, ppred_yes[i, f, s], phits[i, f, s],
                                pobs_yes[f, s] if i == 0 else no_obs)
                if do_ssim:
                    _products(x, y, q, r)
                    _vpass(x, w, hv, g, vx)
                    _vpass(q, w, hv, g, vq)
                    _vpass(r, w, hv, g, vr)
                    ssim[i, f] = _hssim(vx, vy, vq, vr, hv, w, wv, g, c1, c2, acc)

    @_jit()
    def frame_stats(obs, preds, levels, steps, do_counts, do_errors, do_ssim, g, c1, c2,
                    obs_yes, pred_yes, hits, sq, ab, ssim, pobs_yes, ppred_yes, phits):  # pragma: no cover
        """Per-frame scores of ``G`` forecasts ``preds`` ``(G, F, H, W)`` against ``obs`` ``(F, H, W)``.

        Outputs (filled where the flag is set): ``obs_yes`` ``(F, K)``, ``pred_yes`` and
        ``hits`` ``(G, F, K)`` int64; ``sq``, ``ab``, ``ssim`` ``(G, F)`` float64; the same
        counts of the max-pooled frames ``pobs_yes`` ``(F, S, K)``, ``ppred_yes`` and ``phits``
        ``(G, F, S, K)``, pooled by ``steps[0]``, then that by ``steps[1]``, and so on.
        ``g`` holds the first six taps of the symmetric 11-tap Gaussian.
        """
        scratch = _scratch(obs.shape[1], obs.shape[2], levels, steps)
        _frames(obs, preds, steps, do_counts, do_errors, do_ssim, g, c1, c2, scratch,
                obs_yes, pred_yes, hits, sq, ab, ssim, pobs_yes, ppred_yes, phits)

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
    def frame_stats_src(src_obs, src_pred, b0, n, l0, nl, levels, steps, do_counts, do_errors, do_ssim, g,
                        c1, c2, obs_yes, pred_yes, hits, sq, ab, ssim, pobs_yes, ppred_yes, phits):  # pragma: no cover
        """:func:`frame_stats` of one forecast read straight from the inputs.

        ``src_obs`` ``(B, L, C, H, W)`` and ``src_pred`` (the same shape) in C order, any float
        dtype; frames ``[b0, b0 + n) x [l0, l0 + nl)`` are clipped into a one-frame buffer
        (no chunk copy) and stored lead-major (``f = (j n + t) C + c``). Returns the number
        of NaN / inf values met (outputs are then undefined).
        """
        c_n, h, w = src_obs.shape[2], src_obs.shape[3], src_obs.shape[4]
        scratch = _scratch(h, w, levels, steps)
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
                    _frames(yb, xb, steps, do_counts, do_errors, do_ssim, g, c1, c2, scratch,
                            obs_yes[f : f + 1], pred_yes[:, f : f + 1], hits[:, f : f + 1], sq[:, f : f + 1],
                            ab[:, f : f + 1], ssim[:, f : f + 1], pobs_yes[f : f + 1], ppred_yes[:, f : f + 1],
                            phits[:, f : f + 1])
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
    got = stats(obs, obs[None].copy(), levels, pool_steps=(4, 2))
    if not abs(got["ssim"][0, 0] - 1.0) < 1e-6:  # SSIM of a frame with itself
        raise RuntimeError(f"self-check failed: SSIM(x, x) = {got['ssim'][0, 0]}")
    buf = np.empty((1, 1, 1, 12, 13), np.float32)
    for dtype in (np.float32, np.float64):
        src = obs.astype(dtype).reshape(1, 1, 1, 12, 13)
        load(src, 0, 1, 0, 1, buf)
        stats_src(src, src, 0, 1, 0, 1, levels, pool_steps=(4,))


def available() -> bool:
    """Whether the Numba kernels work here (compiled, or loaded from the cache, once per process)."""
    if numba is None:
        return False
    with _LOCK:
        if "ok" not in _STATE:
            t0 = time.perf_counter()
            try:
                _compile()
                _STATE["ok"] = True
                took = time.perf_counter() - t0
                if "uncached" in _STATE:
                    log.warning("compiled the Evaluator's Numba kernels in %.1f s; they are compiled again in "
                                "every process (%s; set NUMBA_CACHE_DIR to a writable folder)", took, _STATE["uncached"])
                elif took > 2.0:  # a first run (or a changed numba): say where the seconds went
                    log.info("compiled the Evaluator's Numba kernels in %.1f s (cached for later runs)", took)
            except Exception as err:  # noqa: BLE001 - any failure means: use the OpenCV kernels
                log.warning("Numba kernels unavailable (%s: %s); the Evaluator uses OpenCV", type(err).__name__, err)
                _STATE["ok"] = False
    return bool(_STATE["ok"])


_NAMES = ("obs_yes", "pred_yes", "hits", "sq", "ab", "ssim", "pool_obs_yes", "pool_pred_yes", "pool_hits")
#: SSIM constants of values in [0, 1] (data range 1).
_C1, _C2 = np.float32(0.01**2), np.float32(0.03**2)


def ssim_taps() -> np.ndarray:
    """First six taps of the 11-tap Gaussian (float32, the same rounding as :mod:`.kernels`)."""
    return np.ascontiguousarray(gaussian_window().reshape(-1)[: (WINDOW + 1) // 2])


def pool_chain(pool_sizes) -> tuple[int, ...] | None:
    """Factors that pool ``pool_sizes`` one from the other (``(4, 16) -> (4, 4)``), or ``None``
    when the sizes are not a chain of multiples (or include 1)."""
    sizes = sorted(int(p) for p in pool_sizes)
    if any(p < 2 for p in sizes) or any(b <= a or b % a for a, b in zip(sizes, sizes[1:])):
        return None
    return tuple(b // a for a, b in zip([1] + sizes, sizes))


def _outputs(n_g: int, n_f: int, n_k: int, n_s: int) -> tuple[np.ndarray, ...]:
    return (
        np.zeros((n_f, n_k), np.int64), np.zeros((n_g, n_f, n_k), np.int64), np.zeros((n_g, n_f, n_k), np.int64),
        np.zeros((n_g, n_f)), np.zeros((n_g, n_f)), np.zeros((n_g, n_f)),
        np.zeros((n_f, n_s, n_k), np.int64), np.zeros((n_g, n_f, n_s, n_k), np.int64),
        np.zeros((n_g, n_f, n_s, n_k), np.int64),
    )


def _steps(pool_steps) -> np.ndarray:
    steps = np.array([int(k) for k in pool_steps], np.int64)
    if (steps < 2).any():
        raise ValueError(f"pool steps must be >= 2, got {tuple(pool_steps)}")
    return steps


def stats(obs: np.ndarray, preds: np.ndarray, levels: np.ndarray, pool_steps=(), counts: bool = True,
          errors: bool = True, ssim: bool = True) -> dict[str, np.ndarray]:
    """:func:`frame_stats` with allocated outputs, as a dict.

    Parameters
    ----------
    obs : ndarray
        ``(F, H, W)`` float32 in ``[0, 1]``, C order.
    preds : ndarray
        ``(G, F, H, W)`` float32 in ``[0, 1]``, C order.
    levels : ndarray
        ``(K,)`` float32 event levels (:func:`.kernels.event_levels`).
    pool_steps : sequence of int
        Pooling factors applied one after the other (:func:`pool_chain`); the pooled frames'
        counts are returned per step.
    counts, errors, ssim : bool
        Which full-resolution scores to compute (SSIM needs frames of at least 11 x 11).

    Returns
    -------
    dict
        ``obs_yes`` ``(F, K)``, ``pred_yes`` / ``hits`` ``(G, F, K)``, ``sq`` / ``ab`` / ``ssim``
        ``(G, F)``, ``pool_obs_yes`` ``(F, S, K)``, ``pool_pred_yes`` / ``pool_hits``
        ``(G, F, S, K)``.
    """
    n_g, n_f, h, w = preds.shape
    if obs.shape != (n_f, h, w):
        raise ValueError(f"obs {obs.shape} does not match preds {preds.shape}")
    _check_frame(h, w, ssim)
    steps = _steps(pool_steps)
    out = _outputs(n_g, n_f, len(levels), len(steps))
    frame_stats(obs, preds, np.asarray(levels, np.float32), steps, bool(counts), bool(errors), bool(ssim),
                ssim_taps(), _C1, _C2, *out)
    return dict(zip(_NAMES, out))


def _check_frame(h: int, w: int, ssim: bool) -> None:
    if h * w >= 2**31:
        raise ValueError(f"frames of {h} x {w} pixels are too large for the kernels' int32 indexing")
    if ssim and min(h, w) < WINDOW:
        raise ValueError(f"SSIM needs frames of at least {WINDOW} x {WINDOW}, got {h} x {w}")


def stats_src(src_obs: np.ndarray, src_pred: np.ndarray, b0: int, n: int, l0: int, nl: int, levels: np.ndarray,
              pool_steps=(), counts: bool = True, errors: bool = True, ssim: bool = True) -> dict[str, np.ndarray]:
    """:func:`stats` of frames ``[b0, b0 + n) x [l0, l0 + nl)`` read straight from
    ``(B, L, C, H, W)`` inputs (C order, float32 or float64; clipped on the way, no copy of
    the chunk). Frames are ordered lead-major, ``G = 1``.

    Raises
    ------
    ValueError
        If a frame read contains NaN or inf (``y_true`` or ``y_pred`` named by which).
    """
    _, _, c, h, w = src_obs.shape
    _check_frame(h, w, ssim)
    steps = _steps(pool_steps)
    out = _outputs(1, nl * n * c, len(levels), len(steps))
    bad = frame_stats_src(src_obs, src_pred, int(b0), int(n), int(l0), int(nl), np.asarray(levels, np.float32),
                          steps, bool(counts), bool(errors), bool(ssim), ssim_taps(), _C1, _C2, *out)
    if bad:
        obs_bad = not np.isfinite(src_obs[b0 : b0 + n, l0 : l0 + nl]).all()
        raise ValueError(f"{'y_true' if obs_bad else 'y_pred'} contains NaN or inf values")
    return dict(zip(_NAMES, out))
