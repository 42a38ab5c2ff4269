"""The Evaluator's CPU update: every score of one batch in one pass over the data.

The batch is walked in chunks of one lead time and a few samples (about 2^17 pixels per
member), copied (and clipped) once into small contiguous float32 buffers; every score then
reads the chunk from the cache, and counts land directly in their lead time. On a full
``(8, 20, 1, 128, 128)`` batch this replaces ~20 passes over 10 MB arrays in main memory
by one. The arithmetic is in :mod:`.kernels`.

Ensembles: the members of a chunk are also sorted per pixel (a Batcher network of
element-wise min / max). Sums of events over members do not change under that permutation,
and the ``j``-th smallest member exceeds a threshold exactly where at least ``M - j`` members
do, so the contingency passes also give the member-count histograms of the Brier score and
the reliability diagram, and the sorted values the CRPS pair term
``sum_ij |x_i - x_j| = 2 sum_k x_(k) (2k - M - 1)``.

Lead times are independent, so with ``threads > 1`` they are shared out to worker threads
(NumPy and OpenCV release the GIL); every lead is summed in the same order whatever the
thread count, so the results do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import kernels
from .continuous import PSNR_CAP_DB
from .kernels import cv2

#: Pixels per member in one chunk (a chunk's float32 buffers stay in the L2 / L3 cache).
CHUNK_PIXELS = 1 << 17


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
    """Copy a (strided) chunk into ``out`` as float32 clipped to [0, 1]; reject NaN / inf."""
    v = src.reshape(src.shape[0], -1)
    # clip, then round to float32, as np.clip(x, 0, 1).astype(float32); always cheaper than
    # testing whether the chunk needs it (cv2.minMaxLoc is slower than np.clip)
    np.clip(v, 0.0, 1.0, out=out.reshape(v.shape))
    # double accumulation: NaN and inf propagate, finite float32 values cannot overflow
    if not np.isfinite(cv2.sumElems(v)[0]):
        raise ValueError(f"{name} contains NaN or inf values")


class _Det:
    """Per-lead deterministic sums of ``M`` forecasts (members) against the observations."""

    def __init__(self, shape, members, levels, pool_sizes, fss_scales, ssim):
        b, n_lead, c, h, w = shape
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
        # pooled frames are kept (1/16 of the data and less) and counted once at the end
        self.pool_sizes = tuple(sorted(pool_sizes))
        self.pooled = {}
        for p in self.pool_sizes:
            hp, wp = -(-h // p), -(-w // p)
            self.pooled[p] = (np.empty((b, n_lead, c, hp, wp), np.float32),
                              np.empty((members, b, n_lead, c, hp, wp), np.float32))

    def add_pools_and_errors(self, lead, b0, obs, members):
        bs = obs.shape[0]
        src = {1: (obs, members)}
        for p in self.pool_sizes:  # pool16 = pool4 of pool4
            base = max(q for q in src if p % q == 0)
            po = kernels.max_pool(src[base][0], p // base)
            pp = kernels.max_pool(src[base][1], p // base)
            self.pooled[p][0][b0 : b0 + bs, lead] = po
            self.pooled[p][1][:, b0 : b0 + bs, lead] = pp
            src[p] = (po, pp)
        w = obs.shape[-1]
        l2, l1 = cv2.NORM_L2SQR, cv2.NORM_L1
        for i in range(self.m):
            for j in range(bs):
                x = members[i, j].reshape(-1, w)
                y = obs[j].reshape(-1, w)
                self.sq[i, b0 + j, lead] = cv2.norm(x, y, l2)
                self.ab[i, b0 + j, lead] = cv2.norm(x, y, l1)

    def add_counts(self, lead, obs, ranked, work):
        """Event counts; ``ranked`` are the members, or the members sorted per pixel."""
        bs = obs.shape[0]
        om, pm, hit = (work[k][:bs] for k in ("obs_mask", "pred_mask", "hit_mask"))
        o2 = obs.reshape(bs, -1)
        for k, level in enumerate(self.levels.tolist()):
            lv = np.float32(level)
            np.greater_equal(o2, lv, out=om)
            self.obs_yes[lead, k] += cv2.countNonZero(om.view(np.uint8))
            for i, x in enumerate(ranked):
                np.greater_equal(x.reshape(bs, -1), lv, out=pm)
                np.logical_and(pm, om, out=hit)
                self.pred_yes[lead, k, i] += cv2.countNonZero(pm.view(np.uint8))
                self.hits[lead, k, i] += cv2.countNonZero(hit.view(np.uint8))

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


class _Worker:
    """Buffers of one thread and the per-chunk pipeline."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        m, bs, c, h, w = run.m, run.bs, *run.obs.shape[2:]
        npix = c * h * w
        self.ob = np.empty((bs, c, h, w), np.float32)
        self.pb = np.empty((m, bs, c, h, w), np.float32)
        self.work = {k: np.empty((bs, npix), np.bool_) for k in ("obs_mask", "pred_mask", "hit_mask")}
        if m >= 2:
            self.tmp = np.empty((bs, c, h, w), np.float32)
            self.mb = np.empty((1, bs, c, h, w), np.float32)
        self.fss_masks: dict[int, tuple[kernels.EventMasks, kernels.EventMasks]] = {}

    def leads(self, leads: Sequence[int]) -> None:
        r = self.run
        for lead in leads:
            for b0 in range(0, r.b, r.bs):
                self.chunk(lead, b0, min(r.bs, r.b - b0))

    def chunk(self, lead: int, b0: int, n: int) -> None:
        r = self.run
        m = r.m
        o, p = self.ob[:n], self.pb[:, :n]
        _load(r.obs[b0 : b0 + n, lead], o, "y_true")
        for i in range(m):
            _load(r.pred[i, b0 : b0 + n, lead], p[i], "y_pred")
        targets = [(r.det, p)]
        if m >= 2:
            mean = self.mb[:, :n]
            np.copyto(mean[0], p[0])
            for i in range(1, m):
                mean[0] += p[i]
            mean[0] /= np.float32(m)
            targets.append((r.mean, mean))
        for det, x in targets:
            det.add_pools_and_errors(lead, b0, o, x)
        if r.fss_scales:
            self.fss(lead, o, targets)
        if r.ssim:
            h, w = o.shape[-2:]
            blocks = [x[i].reshape(-1, h, w) for _, x in targets for i in range(x.shape[0])]
            s = kernels.ssim_planes(blocks, o.reshape(-1, h, w))
            r.det.ssim_planes[:, b0 : b0 + n, lead] = s[:m].reshape(m, n, -1)
            if m >= 2:
                r.mean.ssim_planes[:, b0 : b0 + n, lead] = s[m:].reshape(1, n, -1)
        if m < 2:
            r.det.add_counts(lead, o, [p[0]], self.work)
            return
        flat = mean[0].reshape(n, -1)
        for i in range(m):
            r.var[lead] += cv2.norm(p[i].reshape(n, -1), flat, cv2.NORM_L2SQR)
        r.mean.add_counts(lead, o, [mean[0]], self.work)
        r.rank[lead] += kernels.rank_counts(p, o, x_min=r.rank_level)
        ranked = sort_members([p[i] for i in range(m)], self.tmp[:n])
        r.det.add_counts(lead, o, ranked, self.work)
        for i, x in enumerate(ranked):
            if r.weights[i]:
                r.pair[lead] += r.weights[i] * cv2.sumElems(x.reshape(n, -1))[0]

    def fss(self, lead: int, obs: np.ndarray, targets) -> None:
        """FSS sums of every forecast; the observed window counts are made once per threshold."""
        r = self.run
        n = obs.shape[0]
        if n not in self.fss_masks:
            shape = (n, 1, *obs.shape[1:])
            self.fss_masks[n] = (kernels.EventMasks(shape, r.gap), kernels.EventMasks(shape, r.gap))
        om, pm = self.fss_masks[n]
        shape = om.shape
        for k, level in enumerate(r.levels.tolist()):
            om.compare(obs[:, None], level)
            obox = {s: kernels.box_counts(om.image(), s) for s in r.fss_scales}
            for det, x in targets:
                for i in range(x.shape[0]):
                    pm.compare(x[i][:, None], level)
                    for s in r.fss_scales:
                        sums = kernels.fss_lead_sums(kernels.box_counts(pm.image(), s), obox[s], shape, r.gap)
                        det.fss[s][lead, k] += sums[0] / float(s) ** 4


class _Run:
    """Inputs, configuration and accumulators of one :func:`update_sums` call."""

    def __init__(self, obs, pred, levels, pool_sizes, fss_scales, ssim, rank_level):
        self.obs, self.pred, self.levels = obs, pred, levels
        self.m, self.b, n_lead = pred.shape[:3]
        npix = int(np.prod(obs.shape[2:]))
        self.bs = max(1, min(self.b, CHUNK_PIXELS // npix))
        self.fss_scales, self.ssim, self.rank_level = tuple(fss_scales), ssim, rank_level
        self.gap = kernels.fss_gap(fss_scales)
        self.det = _Det(obs.shape, self.m, levels, pool_sizes, fss_scales, ssim)
        if self.m >= 2:
            self.mean = _Det(obs.shape, 1, levels, pool_sizes, fss_scales, ssim)
            self.pair = np.zeros(n_lead)
            self.var = np.zeros(n_lead)
            self.rank = np.zeros((n_lead, self.m + 1))
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
    run = _Run(obs, pred, levels, pool_sizes, fss_scales, ssim, rank_level)
    m, b, n_lead = pred.shape[:3]
    npix = int(np.prod(obs.shape[2:]))
    threads = max(1, min(int(threads), n_lead))
    if threads == 1:
        _Worker(run).leads(range(n_lead))
    else:
        with ThreadPoolExecutor(threads) as pool:
            jobs = [pool.submit(_Worker(run).leads, range(t, n_lead, threads)) for t in range(threads)]
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
