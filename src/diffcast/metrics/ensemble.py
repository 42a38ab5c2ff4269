"""Probabilistic scores for ensemble forecasts: CRPS, rank histogram, reliability, Brier, spread.

All functions take the ensemble members along a leading axis (``(M, ...)``) and the
observation without it (``(...)``), work on any real values (the Evaluator passes
threshold-space values) and are vectorised: no Python loops over frames or pixels.

The published DiffCast evaluator's "CRPS" (``cal_cprs2``) ranks the *rows of a single
deterministic frame* as if they were ensemble members; that is not a CRPS and is not
reproduced here. :func:`crps_ensemble` is the proper ensemble CRPS, which reduces to the
absolute error for one member.
"""

from __future__ import annotations

import numpy as np
import torch


def _check_members(members: torch.Tensor, obs: torch.Tensor) -> None:
    if members.shape[1:] != obs.shape:
        raise ValueError(
            f"members must have shape (M, *obs.shape) = (M, {', '.join(map(str, obs.shape))}), "
            f"got {tuple(members.shape)}"
        )


def crps_terms(members: torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of the ensemble CRPS at every point.

    Returns ``skill = mean_i |x_i - y|`` and ``pair_sum = sum_ij |x_i - x_j|`` (over ordered
    pairs), float64 with the shape of ``obs``. The pair sum uses the sorted members:
    ``sum_ij |x_i - x_j| = 2 sum_k x_(k) (2k - M - 1)``; sorting and differences run in the
    input precision, the weighted sums in float64.
    """
    _check_members(members, obs)
    m = members.shape[0]
    # contiguous same-dtype passes over the (few) members; float64 throughout
    obs64 = obs.to(torch.float64)
    x64 = members.to(torch.float64)
    skill = torch.zeros_like(obs64)
    for x in x64:
        skill.add_((x - obs64).abs_())
    skill /= m
    if m == 1:
        return skill, torch.zeros_like(skill)
    xs, _ = torch.sort(x64, dim=0)
    pair = torch.zeros_like(skill)
    for k in range(m):
        w = 2.0 * (2 * (k + 1) - m - 1)
        if w != 0.0:
            pair.add_(xs[k], alpha=w)
    return skill, pair


def crps_ensemble(members: torch.Tensor, obs: torch.Tensor, fair: bool = False) -> torch.Tensor:
    """Continuous ranked probability score of an ensemble at every point.

    ``CRPS = mean_i |x_i - y| - 1 / (2 M^2) sum_ij |x_i - x_j|`` (standard estimator: the CRPS
    of the empirical CDF, identical to Hersbach's decomposition used by pysteps), or with
    ``1 / (2 M (M - 1))`` for the *fair* estimator (Ferro 2014), unbiased for the CRPS of the
    distribution the members are drawn from. With one member both reduce to ``|x - y|``
    (the fair estimator is undefined for ``M = 1`` and falls back to the standard one).

    Parameters
    ----------
    members : Tensor
        ``(M, ...)`` ensemble members.
    obs : Tensor
        ``(...)`` observation.
    fair : bool
        Use the fair estimator.

    Returns
    -------
    Tensor
        ``(...)`` CRPS in the units of the inputs, float64.
    """
    m = members.shape[0]
    skill, pair = crps_terms(members, obs)
    if m == 1:
        return skill
    return skill - pair / (2.0 * m * (m - 1) if fair else 2.0 * m * m)


def rank_histogram_counts(
    members: torch.Tensor, obs: torch.Tensor, x_min: float | None = None
) -> torch.Tensor:
    """Counts of the observation's rank among the members (``M + 1`` bins).

    Ties (e.g. zero rain in the observation and several members) are shared equally among
    the tied ranks: a point whose observation equals ``e`` members and exceeds ``l`` adds
    ``1 / (e + 1)`` to each of the bins ``l .. l + e``. pysteps
    (``ensscores.rankhist_accum``) picks one of those bins at random; this is its expected
    value, deterministic and exact under streaming. As in pysteps, when ``x_min`` is given
    points where the observation and all members are below ``x_min`` are left out and values
    below ``x_min`` are treated as equal.

    Parameters
    ----------
    members : Tensor
        ``(M, ...)`` ensemble members.
    obs : Tensor
        ``(...)`` observation.
    x_min : float, optional
        Minimum intensity (same units as the inputs).

    Returns
    -------
    Tensor
        ``(M + 1,)`` float64 (fractional) counts.
    """
    _check_members(members, obs)
    m = members.shape[0]
    x = members.reshape(m, -1)
    y = obs.reshape(-1)
    if x_min is not None:
        keep = (y >= x_min) | (x >= x_min).any(dim=0)
        x = x[:, keep]
        y = y[keep]
        low = torch.tensor(x_min - 1.0, dtype=x.dtype, device=x.device)
        x = torch.where(x < x_min, low, x)
        y = torch.where(y < x_min, low, y)
    n_less = (x < y).sum(dim=0)
    n_eq = (x == y).sum(dim=0)
    w = 1.0 / (n_eq.to(torch.float64) + 1.0)
    diff = torch.zeros(m + 2, dtype=torch.float64, device=x.device)
    diff.index_add_(0, n_less, w)
    diff.index_add_(0, n_less + n_eq + 1, -w)
    return diff.cumsum(0)[: m + 1]


def reliability_bin_edges(n_bins: int = 10, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Probability bin edges of pysteps ``reldiag_init``: ``linspace(-1e-6, 1 + 1e-6, n + 1)``.

    A probability ``p`` falls in bin ``i`` when ``edge[i] < p <= edge[i + 1]``
    (``numpy.digitize(..., right=True)``).
    """
    # numpy's linspace, not torch's: the two round differently and an edge sits near 0.5
    return torch.from_numpy(np.linspace(-1e-6, 1 + 1e-6, int(n_bins + 1))).to(dtype)


def reliability_sums(prob: torch.Tensor, event: torch.Tensor, n_bins: int = 10) -> torch.Tensor:
    """Per-bin sums for a reliability diagram.

    Parameters
    ----------
    prob : Tensor
        Forecast probabilities of the event, any shape, in ``[0, 1]``.
    event : Tensor
        Observed event (bool or 0/1), same shape.
    n_bins : int
        Number of equal-width probability bins (pysteps' edges, see
        :func:`reliability_bin_edges`).

    Returns
    -------
    Tensor
        ``(n_bins, 3)`` float64: number of points, sum of forecast probabilities, number of
        observed events per bin. Forecast probability of a bin = column 1 / column 0,
        observed frequency = column 2 / column 0.
    """
    p = prob.reshape(-1).to(torch.float64)
    o = event.reshape(-1).to(torch.float64)
    edges = reliability_bin_edges(n_bins).to(p.device)
    idx = (torch.bucketize(p, edges, right=False) - 1).clamp(0, n_bins - 1)
    out = torch.zeros(n_bins, 3, dtype=torch.float64, device=p.device)
    out[:, 0] = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    out[:, 1] = torch.bincount(idx, weights=p, minlength=n_bins)
    out[:, 2] = torch.bincount(idx, weights=o, minlength=n_bins)
    return out


def exceedance_probability(members: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fraction of members ``>= threshold`` at each point: ``(M, ...) -> (...)`` float64."""
    # integer counts, one exact division (a float32 mean would round k / M)
    return members.ge(threshold).sum(dim=0, dtype=torch.int32).to(torch.float64) / members.shape[0]


def brier_score(prob: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Mean Brier score ``mean((p - o)^2)`` over all points (0 is perfect)."""
    return (prob.to(torch.float64) - event.to(torch.float64)).square().mean()


def ensemble_spread_skill(members: torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ensemble variance and mean squared error of the ensemble mean.

    Parameters
    ----------
    members : Tensor
        ``(M, ...)`` with ``M >= 2``.
    obs : Tensor
        ``(...)``.

    Returns
    -------
    (Tensor, Tensor)
        Unbiased (``ddof = 1``) member variance and squared error of the ensemble mean at
        each point, float64, shape ``(...)``. The spread-skill ratio is
        ``sqrt((M + 1) / M) * sqrt(mean var) / sqrt(mean sq. err.)`` (Fortin et al. 2014),
        which is 1 for a perfectly dispersed ensemble.
    """
    _check_members(members, obs)
    if members.shape[0] < 2:
        raise ValueError("the ensemble spread needs at least 2 members")
    x = members.to(torch.float64)
    var = x.var(dim=0, unbiased=True)
    err = (x.mean(dim=0) - obs.to(torch.float64)).square()
    return var, err
