"""Categorical (yes/no event) verification: contingency tables and the scores built on them.

An *event* is ``value >= threshold`` in the dataset's threshold space (``clip(x, 0, 1) * scale``;
SEVIR: VIL codes 0-255). The published DiffCast evaluator first truncates ``x * scale`` to
``uint16``; for integer thresholds ``floor(v) >= k  <=>  v >= k``, so comparing the continuous
values gives the same events.

Counts are obtained in a single pass for all thresholds: each pixel is mapped to the number of
thresholds it reaches (``bucketize``), a joint histogram of (observed bin, forecast bin) is
built per lead time, and hits / misses / false alarms / correct negatives for every threshold
are suffix sums of that histogram. This is exact (integer counts) and costs O(pixels),
independent of the number of thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Order of the last axis of a counts tensor.
COUNT_NAMES = ("hits", "misses", "false_alarms", "correct_negatives")


def threshold_bins(code: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Number of thresholds reached by each value (``sum_k [code >= thr_k]``).

    Parameters
    ----------
    code : Tensor
        Values in threshold space, any shape.
    thresholds : Tensor
        ``(K,)`` thresholds sorted ascending, same dtype as ``code``.

    Returns
    -------
    Tensor
        Integer tensor (``uint8`` for up to 32 thresholds, else ``int64``) with the shape of
        ``code`` and values in ``0..K``.
    """
    if thresholds.numel() > 32:
        # right=True: index i with thr[i-1] <= v < thr[i], i.e. the count of thresholds <= v.
        return torch.bucketize(code.contiguous(), thresholds, right=True)
    # a few thresholds: K compare-and-add passes are ~3x faster than a binary search per value
    bins = torch.zeros(code.shape, dtype=torch.uint8, device=code.device)
    for t in thresholds.tolist():
        bins.add_(code.ge(t))
    return bins


def contingency_counts(
    obs_code: torch.Tensor, pred_code: torch.Tensor, thresholds: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Contingency counts per lead time and threshold, summed over samples and pixels.

    Parameters
    ----------
    obs_code, pred_code : Tensor
        ``(N, L, ...)`` observed and forecast values in threshold space (``N`` samples,
        ``L`` lead times, any trailing pixel axes). Same shape and dtype.
    thresholds : sequence of float or Tensor
        ``(K,)`` thresholds, sorted ascending.

    Returns
    -------
    Tensor
        ``(L, K, 4)`` float64 counts in the order of :data:`COUNT_NAMES`
        (hits, misses, false alarms, correct negatives).
    """
    if obs_code.shape != pred_code.shape:
        raise ValueError(f"obs and pred shapes differ: {tuple(obs_code.shape)} vs {tuple(pred_code.shape)}")
    thr = torch.as_tensor(thresholds, dtype=obs_code.dtype, device=obs_code.device)
    return counts_from_bins(threshold_bins(obs_code, thr), threshold_bins(pred_code, thr), thr.numel())


def counts_from_bins(
    b_obs: torch.Tensor, b_pred: torch.Tensor, n_thr: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Contingency counts from threshold bins (:func:`threshold_bins`) of shape ``(N, L, ...)``.

    ``mask`` (bool, broadcastable to the bins), when given, keeps only the pixels where it
    is True (pixels with data, see :mod:`.nodata`).

    Returns
    -------
    Tensor
        ``(L, K, 4)`` float64 counts (see :func:`contingency_counts`).
    """
    if b_obs.shape != b_pred.shape:
        raise ValueError(f"obs and pred shapes differ: {tuple(b_obs.shape)} vs {tuple(b_pred.shape)}")
    if b_obs.ndim < 2:
        raise ValueError(f"expected (N, L, ...) arrays, got shape {tuple(b_obs.shape)}")
    nb = n_thr + 1
    n_lead = b_obs.shape[1]
    device = b_obs.device
    lead = torch.arange(n_lead, device=device, dtype=torch.int32).view(1, n_lead, *([1] * (b_obs.ndim - 2)))
    index = (b_obs.to(torch.int32) * nb + b_pred).add_(lead * (nb * nb))
    flat = index.reshape(-1) if mask is None else index[mask.expand(index.shape)]
    joint = torch.bincount(flat, minlength=n_lead * nb * nb).view(n_lead, nb, nb)
    joint = joint.to(torch.float64)
    # suffix[l, i, j] = number of pixels with obs bin >= i and pred bin >= j
    suffix = joint.flip(1).cumsum(1).flip(1).flip(2).cumsum(2).flip(2)
    total = suffix[:, 0, 0].unsqueeze(1)  # (L, 1)
    k = torch.arange(1, nb, device=device)
    obs_yes = suffix[:, k, 0]  # (L, K)
    pred_yes = suffix[:, 0, k]
    hits = suffix[:, k, k]
    misses = obs_yes - hits
    false_alarms = pred_yes - hits
    correct_neg = total - obs_yes - pred_yes + hits
    return torch.stack([hits, misses, false_alarms, correct_neg], dim=-1)


def max_pool_frames(code: torch.Tensor, k: int, pad_value: float = 0.0) -> torch.Tensor:
    """Max-pool the last two axes in non-overlapping ``k x k`` blocks.

    Frames whose size is not a multiple of ``k`` are zero-padded at the bottom / right edge
    (for non-negative values this equals pooling the partial blocks). The published DiffCast
    code pads a full extra block when the size *is* a multiple of ``k``; those blocks hold only
    zeros and add correct negatives, which do not enter CSI.

    Parameters
    ----------
    code : Tensor
        ``(..., H, W)`` non-negative values.
    k : int
        Block size.
    pad_value : float
        Value of the padding (0 for values; the bin of 0 when pooling threshold bins).

    Returns
    -------
    Tensor
        ``(..., ceil(H / k), ceil(W / k))``.
    """
    if k < 1:
        raise ValueError(f"pool size must be >= 1, got {k}")
    if k == 1:
        return code
    lead_shape = code.shape[:-2]
    h, w = code.shape[-2:]
    integer = not torch.is_floating_point(code)
    flat = code.reshape(-1, 1, h, w)
    if integer:  # max_pool2d wants floats; bins are small integers, exact in float32
        flat = flat.to(torch.float32)
    pad_h, pad_w = (-h) % k, (-w) % k
    if pad_h or pad_w:
        flat = F.pad(flat, (0, pad_w, 0, pad_h), value=float(pad_value))
    pooled = F.max_pool2d(flat, kernel_size=k, stride=k)
    if integer:
        pooled = pooled.to(code.dtype)
    return pooled.reshape(*lead_shape, *pooled.shape[-2:])


def _safe_div(num, den, empty_value: float):
    if isinstance(num, np.ndarray):  # NumPy: the Evaluator's compute() (tiny arrays, low call overhead)
        out = num / np.where(den == 0, 1.0, den)
        return np.where(den == 0, empty_value, out)
    out = num / torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.full_like(out, empty_value), out)


def scores_from_counts(counts, empty_value: float = 0.0) -> dict:
    """CSI, POD, FAR and HSS from contingency counts.

    ``CSI = h / (h + m + f)``, ``POD = h / (h + m)``, ``FAR = f / (h + f)``,
    ``HSS = 2 (h cn - m f) / ((h + m)(m + cn) + (h + f)(f + cn))``
    (Heidke skill score as in pysteps ``det_cat_fct``). All scores are invariant to scaling
    the counts, so summed and averaged counts give the same values.

    Parameters
    ----------
    counts : Tensor or ndarray
        ``(..., 4)`` counts in the order of :data:`COUNT_NAMES`.
    empty_value : float
        Value of a score whose denominator is zero (e.g. CSI when neither observation nor
        forecast has an event). ``0.0`` reproduces the published DiffCast evaluator, which
        maps the resulting NaN to 0 with ``numpy.nan_to_num``; pysteps would return NaN.

    Returns
    -------
    dict of str to Tensor (ndarray for an ndarray input)
        ``csi``, ``pod``, ``far``, ``hss``, each of shape ``counts.shape[:-1]``.
    """
    h, m, f, cn = np.moveaxis(counts, -1, 0) if isinstance(counts, np.ndarray) else counts.unbind(-1)
    return {
        "csi": _safe_div(h, h + m + f, empty_value),
        "pod": _safe_div(h, h + m, empty_value),
        "far": _safe_div(f, h + f, empty_value),
        "hss": _safe_div(2.0 * (h * cn - m * f), (h + m) * (m + cn) + (h + f) * (f + cn), empty_value),
    }
