"""The Evaluator's CPU update: every score of one batch in one pass over the data.

The batch is walked in chunks of one lead time and a few samples (about 2^17 pixels per
member), copied (and clipped) once into small contiguous float32 buffers; every score then
reads the chunk from the cache, and counts land directly in their lead time. On a full
``(8, 20, 1, 128, 128)`` batch this replaces ~20 passes over 10 MB arrays in main memory
by one. The arithmetic is in :mod:`.fused` (Numba: each frame scored in one call, the
default) or :mod:`.kernels` (NumPy + OpenCV, one pass over the chunk per score). With the
Numba kernels a single forecast (no FSS, pool sizes a chain of multiples) is not copied at
all: the kernel clips each frame into a one-frame buffer straight from the input, and the
pooled frames are counted as they are made.

Ensembles: the members of a chunk are also sorted per pixel (a Batcher network of
element-wise min / max). Sums of events over members do not change under that permutation,
and the ``j``-th smallest member exceeds a threshold exactly where at least ``M - j`` members
do, so the contingency passes also give the member-count histograms of the Brier score and
the reliability diagram, and the sorted values the CRPS pair term
``sum_ij |x_i - x_j| = 2 sum_k x_(k) (2k - M - 1)``.

Lead times are independent, so with ``threads > 1`` they are shared out to worker threads
(Numba, NumPy and OpenCV release the GIL; the threads are kept between calls); every lead
is summed in the same order whatever the thread count, so the results do not depend on it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import fused, kernels
from .continuous import PSNR_CAP_DB
from .kernels import cv2

#: Pixels per member in one chunk (a chunk's float32 buffers stay in the L2 / L3 cache).
CHUNK_PIXELS = 1 << 17

#: The same for the Numba kernels, which read each frame once from the chunk (bigger chunks:
#: fewer Python calls; still enough chunks to share the lead times out to threads).
FUSED_CHUNK_PIXELS = 1 << 18

#: Per-chunk kernels of :func:`update_sums`.
KERNELS = ("numba", "opencv")


def sorting_network(n: int) -> list[tuple[int, int]]:
    """Compare-exchange pairs of Batcher's odd-even merge sort for ``n`` items (any ``n``)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k > 0:
            j = k % p
            while j + k < n:
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
                j += 2 * k
            k //= 2
        p *= 2
    return pairs


def sort_members(members: list[np.ndarray], tmp: np.ndarray) -> list[np.ndarray]:
    """Sort same-shape arrays element-wise, ascending; returns the list of sorted arrays.

    The arrays' memory is reused (their contents are destroyed); ``tmp`` is one more buffer.
    """
    s = list(members)
    for i, j in sorting_network(len(s)):
        np.minimum(s[i], s[j], out=tmp)
        np.maximum(s[i], s[j], out=s[j])
        s[i], tmp = tmp, s[i]
    return s


def _load(src: np.ndarray, out: np.ndarray, name: str) -> None:
    """Copy a chunk ``(n, nl, ...)`` of a (strided) input into ``out`` ``(nl, n, ...)`` as float32
    clipped to [0, 1]; reject NaN / inf."""
    # clip, then round to float32, as np.clip(x, 0, 1).astype(float32); always cheaper than
    # testing whether the chunk needs it (cv2.minMaxLoc alone costs more than np.clip)
    np.clip(src.swapaxes(0, 1), 0.0, 1.0, out=out)
    # double accumulation: NaN and inf propagate, finite float32 values cannot overflow
    if not np.isfinite(cv2.sumElems(src.reshape(src.shape[0], -1))[0]):
        raise ValueError(f"{name} contains NaN or inf values")


class _Det:
    """Per-lead deterministic sums of ``M`` forecasts (members) against the observations.

    Chunks arrive lead-major: ``obs`` ``(nl, n, C, H, W)`` for leads ``l0 .. l0 + nl`` and
    samples ``b0 .. b0 + n``, forecasts ``(M, nl, n, C, H, W)``.
    """

    def __init__(self, shape, members, levels, pool_sizes, fss_scales, ssim, kernel="opencv"):
        b, n_lead, c, h, w = shape
        self.kernel = kernel
        k = len(levels)
        self.shape, self.m, self.levels = shape, members, levels
        self.fss_scales, self.ssim = tuple(fss_scales), ssim
        self.obs_yes = np.zeros((n_lead, k), np.int64)  # observed events (counted once)
        self.pred_yes = np.zeros((n_lead, k, members), np.int64)  # per member (or sorted rank)
        self.hits = np.zeros((n_lead, k, members), np.int64)
        self.fss = {s: np.zeros((n_lead, k, 3)) for s in fss_scales}
        self.sq = np.zeros((members, b, n_lead))
        self.ab = np.zeros((members, b, n_lead))
        self.ssim_planes = np.zeros((members, b, n_lead, c))
        self.pool_sizes = tuple(sorted(pool_sizes))
        # Numba, sizes a chain of multiples: the kernel counts the pooled frames as it goes
        # (per lead and size: observed events once, forecast events and hits over forecasts)
        self.chain = fused.pool_chain(self.pool_sizes) if kernel == "numba" else None
        self.pool_counts = {p: np.zeros((n_lead, 3, k), np.int64) for p in self.pool_sizes if self.chain is not None}
        # otherwise pooled frames are kept (1/16 of the data and less) and counted once at the end
        self.pooled = {}
        for p in self.pool_sizes if self.chain is None else ():
            hp, wp = -(-h // p), -(-w // p)
            self.pooled[p] = (np.empty((b, n_lead, c, hp, wp), np.float32),
                              np.empty((members, b, n_lead, c, hp, wp), np.float32))

    def add_pools_and_errors(self, l0, b0, obs, members):
        nl, n = obs.shape[:2]
        src = {1: (obs, members)}
        for p in self.pool_sizes:  # pool16 = pool4 of pool4
            base = max(q for q in src if p % q == 0)
            po = kernels.max_pool(src[base][0], p // base)
            pp = kernels.max_pool(src[base][1], p // base)
            self.pooled[p][0][b0 : b0 + n, l0 : l0 + nl] = po.swapaxes(0, 1)
            self.pooled[p][1][:, b0 : b0 + n, l0 : l0 + nl] = pp.swapaxes(1, 2)
            src[p] = (po, pp)
        w = obs.shape[-1]
        l2, l1 = cv2.NORM_L2SQR, cv2.NORM_L1
        for i in range(self.m):
            for j in range(nl):
                for t in range(n):
                    x = members[i, j, t].reshape(-1, w)
                    y = obs[j, t].reshape(-1, w)
                    self.sq[i, b0 + t, l0 + j] = cv2.norm(x, y, l2)
                    self.ab[i, b0 + t, l0 + j] = cv2.norm(x, y, l1)

    def add_fused(self, l0, b0, obs, members, counts, ssim):
        """Everything :meth:`add_pools_and_errors`, :meth:`add_counts` (when ``counts``) and the
        SSIM add do, from one :func:`.fused.stats` call on a chunk ``(nl, n, C, H, W)``."""
        nl, n, c, h, w = obs.shape
        g = members.shape[0]
        st = fused.stats(obs.reshape(-1, h, w), members.reshape(g, -1, h, w), self.levels,
                         pool_steps=self.chain or (), counts=counts, ssim=ssim)
        self._add_fused(l0, b0, nl, n, c, st, counts, ssim)
        if self.chain is None:
            for p in self.pool_sizes:
                self.pooled[p][0][b0 : b0 + n, l0 : l0 + nl] = kernels.max_pool(obs, p).swapaxes(0, 1)
                self.pooled[p][1][:, b0 : b0 + n, l0 : l0 + nl] = kernels.max_pool(members, p).swapaxes(1, 2)

    def add_fused_src(self, l0, nl, b0, n, obs, pred, ssim):
        """:meth:`add_fused` of one forecast read straight from ``(B, L, C, H, W)`` inputs
        (needs a pool chain: the full-resolution frames are not kept)."""
        st = fused.stats_src(obs, pred, b0, n, l0, nl, self.levels, pool_steps=self.chain, ssim=ssim)
        self._add_fused(l0, b0, nl, n, obs.shape[2], st, True, ssim)

    def _add_fused(self, l0, b0, nl, n, c, st, counts, ssim):
        """Add :func:`.fused.stats` outputs of lead-major frames ``(nl, n, c)``."""
        g = st["sq"].shape[0]
        if counts:
            self.add_fused_counts(l0, nl, st, n * c)
        self.sq[:, b0 : b0 + n, l0 : l0 + nl] = st["sq"].reshape(g, nl, n, c).sum(-1).swapaxes(1, 2)
        self.ab[:, b0 : b0 + n, l0 : l0 + nl] = st["ab"].reshape(g, nl, n, c).sum(-1).swapaxes(1, 2)
        if ssim:
            self.ssim_planes[:, b0 : b0 + n, l0 : l0 + nl] = st["ssim"].reshape(g, nl, n, c).swapaxes(1, 2)
        if self.chain is not None:
            k = len(self.levels)
            s = len(self.pool_sizes)
            obs_yes = st["pool_obs_yes"].reshape(nl, n * c, s, k).sum(1)
            pred_yes = st["pool_pred_yes"].reshape(g, nl, n * c, s, k).sum(axis=(0, 2))
            hits = st["pool_hits"].reshape(g, nl, n * c, s, k).sum(axis=(0, 2))
            for i, p in enumerate(self.pool_sizes):
                acc = self.pool_counts[p][l0 : l0 + nl]
                acc[:, 0] += obs_yes[:, i]
                acc[:, 1] += pred_yes[:, i]
                acc[:, 2] += hits[:, i]

    def add_fused_counts(self, l0, nl, st, per_lead):
        """Add :func:`.fused.stats` counts of ``nl`` leads (``per_lead`` frames each)."""
        k = len(self.levels)
        g = st["pred_yes"].shape[0]
        self.obs_yes[l0 : l0 + nl] += st["obs_yes"].reshape(nl, per_lead, k).sum(1)
        self.pred_yes[l0 : l0 + nl] += st["pred_yes"].reshape(g, nl, per_lead, k).sum(2).transpose(1, 2, 0)
        self.hits[l0 : l0 + nl] += st["hits"].reshape(g, nl, per_lead, k).sum(2).transpose(1, 2, 0)

    def add_counts(self, l0, obs, ranked, work):
        """Event counts; ``ranked`` are the members, or the members sorted per pixel."""
        nl = obs.shape[0]
        om, pm, hit = work
        o2 = obs.reshape(nl, -1)
        for k, level in enumerate(self.levels.tolist()):
            lv = np.float32(level)
            np.greater_equal(o2, lv, out=om)
            for j in range(nl):
                self.obs_yes[l0 + j, k] += cv2.countNonZero(om[j].view(np.uint8))
            for i, x in enumerate(ranked):
                np.greater_equal(x.reshape(nl, -1), lv, out=pm)
                np.logical_and(pm, om, out=hit)
                for j in range(nl):
                    self.pred_yes[l0 + j, k, i] += cv2.countNonZero(pm[j].view(np.uint8))
                    self.hits[l0 + j, k, i] += cv2.countNonZero(hit[j].view(np.uint8))

    def finish(self, prefix, scale):
        """State increments named as the Evaluator's state (threshold-space units)."""
        b, n_lead, c, h, w = self.shape
        m = self.m
        out = {}
        n_points = m * b * c * h * w
        hits = self.hits.sum(-1)
        obs_yes = self.obs_yes * m
        pred_yes = self.pred_yes.sum(-1)
        out[f"{prefix}.counts"] = np.stack(
            [hits, obs_yes - hits, pred_yes - hits, n_points - obs_yes - pred_yes + hits], axis=-1
        ).astype(np.float64)
        for p in self.pool_sizes:
            if self.chain is not None:
                pc = self.pool_counts[p]
                npool = m * b * c * (-(-h // p)) * (-(-w // p))
                o_yes, p_yes, hit = pc[:, 0] * m, pc[:, 1], pc[:, 2]
                out[f"{prefix}.pool{p}"] = np.stack(
                    [hit, o_yes - hit, p_yes - hit, npool - o_yes - p_yes + hit], axis=-1
                ).astype(np.float64)
                continue
            po, pp = self.pooled[p]
            out[f"{prefix}.pool{p}"] = kernels.contingency_counts(po, pp.reshape(-1, *po.shape[1:]), self.levels)
        for s in self.fss_scales:
            out[f"{prefix}.fss{s}"] = self.fss[s]
        npix = c * h * w
        mse = self.sq.reshape(m * b, n_lead) * (scale * scale / npix)
        rmse = np.sqrt(mse)
        floor = scale * 10.0 ** (-PSNR_CAP_DB / 20.0)
        psnr = 20.0 * np.log10(scale / np.maximum(rmse, floor))
        cols = [mse, self.ab.reshape(m * b, n_lead) * (scale / npix), rmse, psnr]
        if self.ssim:
            cols.append(self.ssim_planes.reshape(m * b, n_lead, c).mean(-1))
        frame_sum = np.zeros((n_lead, 6))
        frame_n = np.zeros((n_lead, 6))
        for j, col in enumerate(cols):
            frame_sum[:, j] = col.sum(0)
            frame_n[:, j] = m * b
        out[f"{prefix}.frame_sum"] = frame_sum
        out[f"{prefix}.frame_n"] = frame_n
        return out


class _Buffers:
    """Work arrays for chunks of ``nl`` leads x ``n`` samples."""

    def __init__(self, m: int, nl: int, n: int, plane: tuple[int, int, int], gap: int, fss: bool) -> None:
        npix = int(np.prod(plane))
        self.ob = np.empty((nl, n, *plane), np.float32)
        self.pb = np.empty((m, nl, n, *plane), np.float32)
        self.masks = tuple(np.empty((nl, n * npix), np.bool_) for _ in range(3))
        if m >= 2:
            self.tmp = np.empty((nl, n, *plane), np.float32)
            self.mb = np.empty((1, nl, n, *plane), np.float32)
        if fss:
            self.fss = (kernels.EventMasks((nl, n, *plane), gap), kernels.EventMasks((nl, n, *plane), gap))


class _Worker:
    """The per-chunk pipeline of one thread (buffers made once per chunk shape)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buffers: dict[tuple[int, int], _Buffers] = {}

    def chunks(self, chunks: Sequence[tuple[int, int, int, int]]) -> None:
        for chunk in chunks:
            self.chunk(*chunk)

    def chunk(self, l0: int, nl: int, b0: int, n: int) -> None:
        r = self.run
        m = r.m
        if r.direct:
            # one forecast: the kernel reads (and clips) each frame from the inputs, no chunk copy
            r.det.add_fused_src(l0, nl, b0, n, r.obs, r.pred[0], r.ssim)
            return
        if (nl, n) not in self.buffers:
            self.buffers[nl, n] = _Buffers(m, nl, n, r.obs.shape[2:], r.gap, bool(r.fss_scales))
        buf = self.buffers[nl, n]
        o, p = buf.ob, buf.pb
        if r.kernel == "numba":
            if fused.load(r.obs, b0, n, l0, nl, o):
                raise ValueError("y_true contains NaN or inf values")
            for i in range(m):
                if fused.load(r.pred[i], b0, n, l0, nl, p[i]):
                    raise ValueError("y_pred contains NaN or inf values")
        else:
            _load(r.obs[b0 : b0 + n, l0 : l0 + nl], o, "y_true")
            for i in range(m):
                _load(r.pred[i, b0 : b0 + n, l0 : l0 + nl], p[i], "y_pred")
        targets = [(r.det, p)]
        if m >= 2:
            mean = buf.mb
            np.copyto(mean[0], p[0])
            for i in range(1, m):
                mean[0] += p[i]
            mean[0] /= np.float32(m)
            targets.append((r.mean, mean))
        if r.kernel == "numba":
            # one pass per frame; the members' counts come from the sorted members below
            for det, x in targets:
                det.add_fused(l0, b0, o, x, counts=m < 2 or det is r.mean, ssim=r.ssim)
        else:
            for det, x in targets:
                det.add_pools_and_errors(l0, b0, o, x)
        if r.fss_scales:
            self.fss(l0, o, targets, buf.fss)
        if r.ssim and r.kernel != "numba":
            h, w = o.shape[-2:]
            blocks = [x[i].reshape(-1, h, w) for _, x in targets for i in range(x.shape[0])]
            s = kernels.ssim_planes(blocks, o.reshape(-1, h, w)).reshape(len(blocks), nl, n, -1)
            r.det.ssim_planes[:, b0 : b0 + n, l0 : l0 + nl] = s[:m].swapaxes(1, 2)
            if m >= 2:
                r.mean.ssim_planes[:, b0 : b0 + n, l0 : l0 + nl] = s[m:].swapaxes(1, 2)
        if m < 2:
            if r.kernel != "numba":
                r.det.add_counts(l0, o, [p[0]], buf.masks)
            return
        flat = mean[0].reshape(nl, -1)
        for i in range(m):
            pf = p[i].reshape(nl, -1)
            for j in range(nl):
                r.var[l0 + j] += cv2.norm(pf[j], flat[j], cv2.NORM_L2SQR)
        if r.kernel != "numba":
            r.mean.add_counts(l0, o, [mean[0]], buf.masks)
        r.rank[l0] += kernels.rank_counts(p, o, x_min=r.rank_level)
        ranked = sort_members([p[i] for i in range(m)], buf.tmp)
        if r.kernel == "numba":
            h, w = o.shape[-2:]
            st = fused.stats(o.reshape(-1, h, w), np.stack([x.reshape(-1, h, w) for x in ranked]), r.levels,
                             errors=False, ssim=False)
            r.det.add_fused_counts(l0, nl, st, int(np.prod(o.shape[1:3])))
        else:
            r.det.add_counts(l0, o, ranked, buf.masks)
        for i, x in enumerate(ranked):
            if r.weights[i]:
                xf = x.reshape(nl, -1)
                for j in range(nl):
                    r.pair[l0 + j] += r.weights[i] * cv2.sumElems(xf[j])[0]

    def fss(self, l0: int, obs: np.ndarray, targets, masks) -> None:
        """FSS sums of every forecast; the observed window counts are made once per threshold."""
        r = self.run
        nl, h = obs.shape[0], obs.shape[-2]
        om, pm = masks
        for k, level in enumerate(r.levels.tolist()):
            om.compare(obs, level)
            obox = {s: kernels.box_counts(om.image(), s) for s in r.fss_scales}
            osq = dict.fromkeys(r.fss_scales)
            for det, x in targets:
                for i in range(x.shape[0]):
                    pm.compare(x[i], level)
                    for s in r.fss_scales:
                        sums, osq[s] = kernels.fss_group_sums(kernels.box_counts(pm.image(), s), obox[s], nl, h, r.gap,
                                                              osq[s])
                        det.fss[s][l0 : l0 + nl, k] += sums / float(s) ** 4


_POOL: dict[str, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide executor with at least ``threads - 1`` workers (made once, then reused:
    starting threads for every batch cost about a millisecond)."""
    with _POOL_LOCK:
        pool = _POOL.get("pool")
        if pool is None or _POOL["size"] < threads - 1:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max(1, threads - 1), thread_name_prefix="diffcast-metrics")
            _POOL.update(pool=pool, size=max(1, threads - 1))
        return pool


class _Run:
    """Inputs, configuration and accumulators of one :func:`update_sums` call."""

    def __init__(self, obs, pred, levels, pool_sizes, fss_scales, ssim, rank_level, kernel="opencv", threads=1):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if kernel == "numba":  # the Numba loader reads C-ordered float32 / float64 arrays
            obs, pred = (np.ascontiguousarray(a) for a in (obs, pred))
        self.kernel = kernel
        self.obs, self.pred, self.levels = obs, pred, levels
        self.m, self.b, n_lead = pred.shape[:3]
        self.fss_scales, self.ssim, self.rank_level = tuple(fss_scales), ssim, rank_level
        # one forecast, no FSS, pool sizes a chain of multiples: the Numba kernel reads the
        # inputs directly (the full-resolution frames are never needed again)
        self.direct = (kernel == "numba" and self.m == 1 and not self.fss_scales
                       and fused.pool_chain(pool_sizes) is not None)
        npix = int(np.prod(obs.shape[2:]))
        if self.direct:  # no buffers: one chunk of all samples per thread's share of the leads
            self.bs = self.b
            self.nl = -(-n_lead // max(1, min(int(threads), n_lead)))
        else:  # chunks: all samples of a few leads, or a few samples of one lead, ~CHUNK_PIXELS each
            size = FUSED_CHUNK_PIXELS if kernel == "numba" else CHUNK_PIXELS
            self.bs = max(1, min(self.b, size // npix))
            self.nl = max(1, min(n_lead, size // (npix * self.b))) if self.bs == self.b else 1
        self.chunks = [
            (l0, min(self.nl, n_lead - l0), b0, min(self.bs, self.b - b0))
            for l0 in range(0, n_lead, self.nl)
            for b0 in range(0, self.b, self.bs)
        ]
        self.gap = kernels.fss_gap(fss_scales)
        self.det = _Det(obs.shape, self.m, levels, pool_sizes, fss_scales, ssim, kernel)
        if self.m >= 2:
            self.mean = _Det(obs.shape, 1, levels, pool_sizes, fss_scales, ssim, kernel)
            self.pair = np.zeros(n_lead)
            self.var = np.zeros(n_lead)
            self.rank = np.zeros((n_lead, self.m + 1))  # at each chunk's first lead
            self.weights = [2.0 * (2 * (i + 1) - self.m - 1) for i in range(self.m)]


def update_sums(
    obs: np.ndarray,
    pred: np.ndarray,
    levels: np.ndarray,
    scale: float,
    pool_sizes: Sequence[int],
    fss_scales: Sequence[int],
    ssim: bool,
    rank_level: float | None,
    threads: int = 1,
    kernel: str = "opencv",
) -> dict[str, np.ndarray]:
    """All sums of one batch, named as :class:`~diffcast.metrics.Evaluator` state entries.

    Parameters
    ----------
    obs : ndarray
        ``(B, L, C, H, W)`` observations, floating point (clipped to ``[0, 1]`` here).
    pred : ndarray
        ``(M, B, L, C, H, W)`` members.
    levels : ndarray
        Event levels in ``[0, 1]`` space (:func:`.kernels.event_levels`).
    scale : float
        Threshold-space factor (units of the returned sums).
    pool_sizes, fss_scales : sequence of int
        As the Evaluator's.
    ssim : bool
        Compute SSIM (frames must be at least 11 x 11).
    rank_level : float, optional
        Rank-histogram minimum in ``[0, 1]`` space.
    threads : int
        Worker threads (lead times are shared out; the results do not depend on it).
    kernel : {"opencv", "numba"}
        Per-chunk kernels: :mod:`.kernels` (NumPy + OpenCV, a pass over the chunk per score)
        or :mod:`.fused` (Numba, one pass per frame; needs :func:`.fused.available`).

    Returns
    -------
    dict
        float64 arrays: ``det.*``, ``prob.crps`` and, for ``M >= 2``, ``mean.*``,
        ``prob.spread``, ``prob.rank`` and ``prob.member_hist`` ``(L, K, M + 1, 2)`` (points
        with ``k`` members exceeding each threshold, all / with an observed event), from
        which the Evaluator forms the Brier and reliability sums.

    Raises
    ------
    ValueError
        If ``obs`` or ``pred`` contain NaN or inf.
    """
    run = _Run(obs, pred, levels, pool_sizes, fss_scales, ssim, rank_level, kernel, threads)
    m, b, n_lead = pred.shape[:3]
    npix = int(np.prod(obs.shape[2:]))
    # chunks cover disjoint leads (or disjoint samples of one lead: those go to one worker)
    by_lead: dict[int, list] = {}
    for chunk in run.chunks:
        by_lead.setdefault(chunk[0], []).append(chunk)
    groups = list(by_lead.values())
    threads = max(1, min(int(threads), len(groups)))
    if threads == 1:
        _Worker(run).chunks(run.chunks)
    else:
        pool = _pool(threads)
        # the calling thread takes the first share (one thread start fewer per call)
        jobs = [pool.submit(_Worker(run).chunks, [c for g in groups[t::threads] for c in g]) for t in range(1, threads)]
        try:
            _Worker(run).chunks([c for g in groups[0::threads] for c in g])
        finally:
            for job in jobs:
                job.result()  # re-raises a worker's ValueError
    out = run.det.finish("det", scale)
    skill = run.det.ab.sum(axis=(0, 1)) * (scale / m)  # sum over points of mean_i |x_i - y|
    crps = np.zeros((n_lead, 3))
    crps[:, 2] = b * npix
    if m < 2:
        crps[:, 0] = crps[:, 1] = skill
        out["prob.crps"] = crps
        return out
    pair = run.pair * scale
    crps[:, 0] = skill - pair / (2.0 * m * m)
    crps[:, 1] = skill - pair / (2.0 * m * (m - 1))
    out["prob.crps"] = crps
    out.update(run.mean.finish("mean", scale))
    sq_mean = run.mean.sq.sum(axis=(0, 1))
    out["prob.spread"] = np.stack([run.var / (m - 1), sq_mean], axis=-1) * scale**2
    out["prob.rank"] = run.rank.sum(0)
    # at least j members exceed <=> the (M - j)-th smallest (0-based) exceeds
    det = run.det
    k_thr = len(levels)
    at_least = np.zeros((n_lead, k_thr, m + 2), np.int64)
    at_least_hit = np.zeros_like(at_least)
    at_least[:, :, 0] = b * npix
    at_least_hit[:, :, 0] = det.obs_yes
    for j in range(1, m + 1):
        at_least[:, :, j] = det.pred_yes[:, :, m - j]
        at_least_hit[:, :, j] = det.hits[:, :, m - j]
    hist = np.stack([at_least[..., :-1] - at_least[..., 1:], at_least_hit[..., :-1] - at_least_hit[..., 1:]], -1)
    out["prob.member_hist"] = hist.astype(np.float64)
    return out
