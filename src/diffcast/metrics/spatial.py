"""Fractions skill score (FSS, Roberts and Lean 2008), vectorised over frames and thresholds.

Follows pysteps ``spatialscores.fss_accum``: binary fields ``value >= threshold``, fractions
from a ``scale x scale`` moving average with zero padding (``scipy.ndimage.uniform_filter``,
``mode="constant"``; for an even ``scale`` the window covers ``i - scale // 2 .. i + scale // 2 - 1``),
and the three sums ``sum f^2``, ``sum f o``, ``sum o^2`` accumulated over frames;
``FSS = 1 - (sum f^2 - 2 sum f o + sum o^2) / (sum f^2 + sum o^2)``.
The moving sums use integral images, so the cost does not grow with the scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Order of the last axis of the FSS sums.
FSS_SUM_NAMES = ("sum_fct_sq", "sum_fct_obs", "sum_obs_sq")


def box_sum(binary: torch.Tensor, scale: int) -> torch.Tensor:
    """Number of events in each ``scale x scale`` window (zero padding), like scipy's uniform_filter x scale^2.

    Works in float32 on 0/1 inputs; the integral image holds integers below 2^24 for frames
    up to 4096 x 4096 pixels, so the window counts are exact.

    Parameters
    ----------
    binary : Tensor
        ``(..., H, W)`` 0/1 (or bool) values.
    scale : int
        Window size in pixels (``1`` returns the input as float32).

    Returns
    -------
    Tensor
        float32 window counts, same shape.
    """
    if scale < 1:
        raise ValueError(f"FSS scale must be >= 1 pixel, got {scale}")
    if scale == 1:
        return binary.to(torch.float32)
    h, w = binary.shape[-2:]
    lo = scale // 2
    hi = scale - 1 - lo
    # separable: running sums along W, then along H (leading zero for the differences)
    x = F.pad(binary.to(torch.float32), (lo + 1, hi))
    cw = x.cumsum(-1)
    rows = cw[..., scale:] - cw[..., :w]
    ch = F.pad(rows, (0, 0, lo + 1, hi)).cumsum(-2)
    return ch[..., scale:, :] - ch[..., :h, :]


def box_fraction(binary: torch.Tensor, scale: int) -> torch.Tensor:
    """Moving average over ``scale x scale`` windows with zero padding (scipy ``uniform_filter``).

    Parameters
    ----------
    binary : Tensor
        ``(..., H, W)`` 0/1 values.
    scale : int
        Window size in pixels.

    Returns
    -------
    Tensor
        float64 fractions, same shape.
    """
    return box_sum(binary, scale).to(torch.float64) / float(scale * scale)


def fss_sums(
    pred_code: torch.Tensor, obs_code: torch.Tensor, thresholds: torch.Tensor, scale: int
) -> torch.Tensor:
    """FSS sums per lead time and threshold.

    Parameters
    ----------
    pred_code : Tensor
        ``(N, L, C, H, W)`` forecast values in threshold space. ``N`` may be a multiple
        ``M * B`` of the observations' ``B`` (ensemble members stacked member-major, as
        ``members.reshape(M * B, ...)``); each member is then scored against the same
        observation, whose fractions are computed once.
    obs_code : Tensor
        ``(B, L, C, H, W)`` observations in threshold space.
    thresholds : Tensor
        ``(K,)`` thresholds.
    scale : int
        Neighbourhood size in pixels.

    Returns
    -------
    Tensor
        ``(L, K, 3)`` float64 sums in the order of :data:`FSS_SUM_NAMES`, summed over samples
        (and members), channels and pixels.
    """
    n, n_lead = pred_code.shape[:2]
    b = obs_code.shape[0]
    if pred_code.shape[1:] != obs_code.shape[1:] or n % b:
        raise ValueError(f"pred {tuple(pred_code.shape)} and obs {tuple(obs_code.shape)} do not match")
    reps = n // b
    norm = float(scale) ** 4
    # lead-major layout so that the per-lead reductions run over contiguous memory
    pred_l = pred_code.transpose(0, 1).contiguous()
    obs_l = obs_code.transpose(0, 1).contiguous()
    out = []
    for thr in thresholds.tolist():  # a handful of thresholds; frames stay vectorised
        # exact integer window counts; the dot products run as float32 BLAS (relative
        # error ~1e-7, far below any reported digit) and are carried on in float64
        f = box_sum(pred_l >= thr, scale).reshape(n_lead, reps, -1)  # (L, M, B*C*H*W)
        o = box_sum(obs_l >= thr, scale).reshape(n_lead, -1, 1)  # (L, B*C*H*W, 1)
        ff = (f.unsqueeze(-2) @ f.unsqueeze(-1)).reshape(n_lead, reps).to(torch.float64).sum(-1)
        fo = torch.bmm(f, o).reshape(n_lead, reps).to(torch.float64).sum(-1)
        oo = torch.bmm(o.transpose(1, 2), o).reshape(n_lead).to(torch.float64) * reps
        out.append(torch.stack([ff, fo, oo], dim=-1) / norm)
    return torch.stack(out, dim=1)


def fss_from_sums(sums, empty_value: float = 0.0):
    """FSS from ``(..., 3)`` sums (Tensor or ndarray); ``empty_value`` where neither field has an event."""
    ff, fo, oo = np.moveaxis(sums, -1, 0) if isinstance(sums, np.ndarray) else sums.unbind(-1)
    den = ff + oo
    num = ff - 2.0 * fo + oo
    if isinstance(sums, np.ndarray):
        return np.where(den == 0, empty_value, 1.0 - num / np.where(den == 0, 1.0, den))
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.full_like(den, empty_value), 1.0 - num / safe)
