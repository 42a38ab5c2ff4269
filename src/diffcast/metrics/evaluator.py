"""Streaming evaluator implementing the DiffCast verification protocol (plus proper scores).

Protocol (Yu et al., CVPR 2024, and the published ``utils/metrics.py``):

- inputs in ``[0, 1]`` are clipped and multiplied by ``scale`` (SEVIR: 255); an event is
  ``value >= threshold``;
- contingency counts are accumulated per lead time and threshold over all samples; CSI, POD,
  FAR and HSS of a lead come from the sample-averaged counts (= summed counts: the scores are
  scale invariant); a threshold's score is the mean over lead times; ``csi_m`` (``hss_m`` ...)
  is the mean over thresholds;
- pooled CSI: frames max-pooled in ``k x k`` blocks, counts summed over samples *and* lead
  times, one CSI per threshold from those totals, then the mean over thresholds
  (``csi_pool{k}_m``); ``csi_pool{k}_by_lead`` is added for plots;
- MSE, MAE, RMSE, PSNR, SSIM (and LPIPS) per frame in threshold-space units, averaged over
  samples per lead time, then over lead times (see :mod:`.continuous` and :mod:`.ssim`).

Zero denominators (no event in observation or forecast) give ``empty_value`` (default 0,
what the published code's ``nan_to_num`` yields); the event counts are reported under
``events`` so such cases can be told apart. Reports never contain NaN or inf.

Ensembles ``(M, B, T, C, H, W)``: the deterministic scores at the top level treat every
member as a sample (counts and frame scores averaged over members and samples; for
``M = 1`` this is exactly the paper's protocol, which scores one sample per input), and the
same scores computed on the ensemble mean are under ``ensemble_mean``. CRPS (standard
and fair estimators), Brier score, reliability, rank histogram and spread-skill ratio are
computed over all members.

Computation: for CPU tensors the sums come from a walk over the batch in cache-sized chunks
(:mod:`.chunked`) with compiled Numba kernels that read each frame once (:mod:`.fused`) or,
without Numba, NumPy + OpenCV kernels (:mod:`.kernels`); elsewhere (or ``backend="torch"``)
from torch operations on the tensors' device. All reproduce the protocol's float32 threshold
test exactly and agree with each other to float32 rounding in the continuous scores.

No data: :meth:`Evaluator.update` takes a ``mask`` (True where the observation has data,
e.g. ``~isnan(y_true)`` for the mlcast dataset's items). Every score is then computed over
the pixels with data only, by the rules of :mod:`.nodata` (contingency counts over those
pixels; a pooled cell counts where one of its pixels has data, pooling those only; FSS with
no data as no event and sums over the data; MSE/MAE and the other frame scores per frame
over its data, frames weighted by their fraction of data; SSIM over the windows fully on
data; LPIPS on fully covered frames only; CRPS, Brier, reliability, rank histogram and
spread over the points with data), on the torch code path (on CPU several times slower
than the Numba kernels, which unmasked batches keep). A window (sample) without any
data is skipped and counted (``no_data`` in the report, with the covered fraction). A mask
that is True everywhere, or none, leaves the protocol's numbers unchanged bit for bit;
without a mask NaN is an error.

State is a flat dict of float64 tensors (:meth:`Evaluator.state_dict`); all entries are
sums, so :meth:`Evaluator.merge` (or summing gathered states) is exact and streaming over
batches gives the same result as one big batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from . import chunked, fused, kernels, nodata
from .contingency import counts_from_bins, max_pool_frames, scores_from_counts, threshold_bins
from .continuous import frame_errors
from .ensemble import crps_terms, rank_histogram_counts, reliability_bin_edges
from .spatial import fss_from_sums, fss_sums
from .ssim import WINDOW, ssim_frames

log = logging.getLogger(__name__)

#: Per-frame scores kept as (sum, count) per lead time, in this column order.
FRAME_SCORES = ("mse", "mae", "rmse", "psnr", "ssim", "lpips")

#: Computation backends of :class:`Evaluator`.
BACKENDS = ("auto", "numba", "opencv", "torch")


def threshold_key(value: float) -> str:
    """JSON key of a threshold or scale: ``16.0 -> "16"``, ``0.5 -> "0.5"``."""
    return f"{float(value):g}"


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be floating point (values in [0, 1]), got dtype {x.dtype}")
    return x


def _clip01(x: torch.Tensor, name: str) -> torch.Tensor:
    """float32, contiguous, clipped to ``[0, 1]``; NaN / inf rejected.

    One ``aminmax`` pass checks both (NaN propagates into it) and tells whether the clip, a
    copy, is needed at all.
    """
    x = x.to(torch.float32).contiguous()
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf values")
    if lo < 0.0 or hi > 1.0:
        x = x.clamp(0.0, 1.0)
    return x


def _clean(v: float) -> float:
    return float(v) if math.isfinite(v) else 0.0


def _clean_list(v: np.ndarray) -> list:
    """Nested lists of floats with NaN / inf replaced by 0 (as :func:`_clean`)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(np.isfinite(v), v, 0.0).tolist()


class Evaluator:
    """Streaming accumulator of nowcast verification scores.

    Parameters
    ----------
    thresholds : sequence of float
        Event thresholds in threshold space (``x * scale``), e.g. SEVIR
        ``(16, 74, 133, 160, 181, 219)``.
    scale : float
        Factor from ``[0, 1]`` to threshold space; also the PSNR peak and the SSIM data range.
    pool_sizes : sequence of int
        Block sizes of the pooled CSI (paper: 4 and 16).
    fss_scales : sequence of int
        Neighbourhood sizes (pixels) of the fractions skill score; empty to skip FSS.
    lead_times : int, optional
        Number of forecast frames; fixes the state shapes before the first update
        (needed when states of several processes are gathered).
    members : int, optional
        Ensemble size; fixed at the first update when not given.
    ssim : bool
        Compute SSIM (needs frames of at least 11 x 11 pixels; skipped with a note otherwise).
    lpips : nn.Module, optional
        An LPIPS network (:func:`diffcast.metrics.lpips.load_lpips`) taking ``(N, C, H, W)``
        in ``[-1, 1]``; LPIPS is left out when ``None``.
    lpips_skipped : str, optional
        Why LPIPS is not computed; reported under ``skipped``.
    n_bins : int
        Probability bins of the reliability diagram.
    reliability_min_count : int
        Bins with fewer points are reported as ``null``.
    rank_min : float, optional
        Minimum intensity of the rank histogram (pysteps ``X_min``, threshold space).
    empty_value : float
        Score given when a denominator is zero (see module docstring).
    lpips_batch : int
        Frames per LPIPS forward pass.
    backend : {"auto", "numba", "opencv", "torch"}
        ``"numba"``: compiled kernels that compute every per-frame score in one pass
        (:mod:`.fused`), CPU tensors only; ``"opencv"``: NumPy + OpenCV kernels
        (:mod:`.kernels`), CPU tensors only; ``"torch"``: torch operations on the tensors'
        device; ``"auto"``: for CPU tensors Numba when it works here (compiled once, then
        cached on disk), else OpenCV, else torch; torch for other devices. All give the same
        numbers (integer counts are identical, float scores agree to ~1e-7).
    num_threads : int, optional
        Worker threads of the CPU paths (lead times are shared out; results do not depend
        on it); default ``torch.get_num_threads()``, the process's torch setting. OpenCV's own
        thread pool (``cv2.setNumThreads``) is left as the user set it.

    Examples
    --------
    >>> ev = Evaluator(thresholds=(16, 74, 133), scale=255.0)
    >>> for y_true, y_pred in batches:          # (B, T, C, H, W) in [0, 1]
    ...     ev.update(y_true, y_pred)
    >>> ev.compute()["csi_m"]
    """

    def __init__(
        self,
        thresholds: Sequence[float],
        scale: float = 255.0,
        pool_sizes: Sequence[int] = (4, 16),
        fss_scales: Sequence[int] = (),
        lead_times: int | None = None,
        members: int | None = None,
        ssim: bool = True,
        lpips: torch.nn.Module | None = None,
        lpips_skipped: str | None = None,
        n_bins: int = 10,
        reliability_min_count: int = 10,
        rank_min: float | None = None,
        empty_value: float = 0.0,
        lpips_batch: int = 64,
        backend: str = "auto",
        num_threads: int | None = None,
    ) -> None:
        thr = [float(t) for t in thresholds]
        if not thr:
            raise ValueError("at least one threshold is needed")
        if sorted(set(thr)) != thr:
            raise ValueError(f"thresholds must be strictly increasing, got {thr}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        for k in (*pool_sizes, *fss_scales):
            if int(k) != k or k < 1:
                raise ValueError(f"pool sizes and FSS scales must be positive integers, got {k}")
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
        if backend in ("opencv", "numba") and not kernels.available():
            raise ValueError(f"backend {backend!r} needs OpenCV (pip install opencv-python-headless)")
        if backend == "numba" and not fused.available():
            raise ValueError("backend 'numba' needs a working Numba (pip install numba); see the log for why it failed")
        self.thresholds = tuple(thr)
        self.scale = float(scale)
        self.pool_sizes = tuple(int(k) for k in pool_sizes)
        self.fss_scales = tuple(int(s) for s in fss_scales)
        self.ssim = bool(ssim)
        self.lpips = lpips
        self.n_bins = int(n_bins)
        self.reliability_min_count = int(reliability_min_count)
        self.rank_min = None if rank_min is None else float(rank_min)
        self.empty_value = float(empty_value)
        self.lpips_batch = int(lpips_batch)
        self.backend = backend
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.num_threads = None if num_threads is None else int(num_threads)
        self._levels = kernels.event_levels(self.thresholds, self.scale)
        self._rank_level = None if self.rank_min is None else float(kernels.event_levels([self.rank_min], self.scale)[0])
        self.skipped: dict[str, str] = {}
        if lpips is None:
            self.skipped["lpips"] = lpips_skipped or "no LPIPS weights given"
        self.lead_times: int | None = None
        self.members: int | None = None if members is None else int(members)
        self._state: dict[str, torch.Tensor] = {}
        if lead_times is not None:
            self._allocate(int(lead_times), self.members)

    # ------------------------------------------------------------------ state
    def _det_shapes(self, prefix: str, n_lead: int) -> dict[str, tuple[int, ...]]:
        k = len(self.thresholds)
        shapes = {f"{prefix}.counts": (n_lead, k, 4), f"{prefix}.frame_sum": (n_lead, len(FRAME_SCORES)),
                  f"{prefix}.frame_n": (n_lead, len(FRAME_SCORES))}
        for p in self.pool_sizes:
            shapes[f"{prefix}.pool{p}"] = (n_lead, k, 4)
        for s in self.fss_scales:
            shapes[f"{prefix}.fss{s}"] = (n_lead, k, 3)
        return shapes

    def _shapes(self, n_lead: int, members: int | None) -> dict[str, tuple[int, ...]]:
        k = len(self.thresholds)
        shapes: dict[str, tuple[int, ...]] = {"n_samples": (1,)}
        # windows skipped for having no data at all; observed pixels with data, all observed pixels
        shapes["nodata.windows"] = (1,)
        shapes["nodata.pixels"] = (2,)
        shapes.update(self._det_shapes("det", n_lead))
        shapes["prob.crps"] = (n_lead, 3)  # standard sum, fair sum, number of points
        if members is not None and members >= 2:
            shapes.update(self._det_shapes("mean", n_lead))
            shapes["prob.brier"] = (n_lead, k)
            shapes["prob.reliability"] = (k, self.n_bins, 3)
            shapes["prob.rank"] = (members + 1,)
            shapes["prob.spread"] = (n_lead, 2)  # sum of member variance, sum of sq. error of the mean
        return shapes

    def _allocate(self, n_lead: int, members: int | None) -> None:
        if n_lead < 1:
            raise ValueError(f"lead_times must be >= 1, got {n_lead}")
        if members is not None and members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.lead_times = n_lead
        self.members = members
        self._state = {
            name: torch.zeros(shape, dtype=torch.float64) for name, shape in self._shapes(n_lead, members).items()
        }

    def _config_tensors(self) -> dict[str, torch.Tensor]:
        f64 = torch.float64
        return {
            "config.thresholds": torch.tensor(self.thresholds, dtype=f64),
            "config.scale": torch.tensor([self.scale], dtype=f64),
            "config.pool_sizes": torch.tensor(self.pool_sizes, dtype=f64),
            "config.fss_scales": torch.tensor(self.fss_scales, dtype=f64),
            "config.lead_members": torch.tensor([self.lead_times or 0, self.members or 0], dtype=f64),
            "config.options": torch.tensor(
                [self.n_bins, self.reliability_min_count, float("nan") if self.rank_min is None else self.rank_min,
                 self.empty_value, float(self.ssim)],
                dtype=f64,
            ),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All sums plus the configuration, as float64 CPU tensors (gather- and file-friendly)."""
        out = {k: v.clone() for k, v in self._state.items()}
        out.update(self._config_tensors())
        return out

    @classmethod
    def from_state(
        cls, state: Mapping[str, torch.Tensor], lpips: torch.nn.Module | None = None,
        skipped: Mapping[str, str] | None = None,
    ) -> Evaluator:
        """Rebuild an evaluator from :meth:`state_dict` (LPIPS network not included)."""
        try:
            opts = state["config.options"].tolist()
            lead, members = (int(v) for v in state["config.lead_members"].tolist())
            ev = cls(
                thresholds=state["config.thresholds"].tolist(),
                scale=float(state["config.scale"][0]),
                pool_sizes=[int(v) for v in state["config.pool_sizes"].tolist()],
                fss_scales=[int(v) for v in state["config.fss_scales"].tolist()],
                n_bins=int(opts[0]),
                reliability_min_count=int(opts[1]),
                rank_min=None if math.isnan(opts[2]) else opts[2],
                empty_value=opts[3],
                ssim=bool(opts[4]),
                lpips=lpips,
            )
        except KeyError as exc:
            raise ValueError(f"not an Evaluator state: missing {exc.args[0]!r}") from None
        ev.skipped = dict(skipped or {})
        if lead:
            ev._allocate(lead, members or None)
            for name in ev._state:
                if name not in state:
                    if name.startswith("nodata."):  # a state saved before no-data masks: zero
                        continue
                    raise ValueError(f"Evaluator state lacks {name!r}")
                ev._state[name] = state[name].detach().to("cpu", torch.float64).clone().reshape(ev._state[name].shape)
        return ev

    def reset(self) -> None:
        """Zero all sums (configuration and state shapes are kept)."""
        for v in self._state.values():
            v.zero_()

    def merge(self, other: Evaluator) -> Evaluator:
        """Add ``other``'s sums to this evaluator (in place) and return ``self``."""
        if (other.thresholds, other.scale, other.pool_sizes, other.fss_scales, other.n_bins) != (
            self.thresholds, self.scale, self.pool_sizes, self.fss_scales, self.n_bins
        ):
            raise ValueError("cannot merge evaluators with different thresholds, scale, pool sizes, FSS scales or bins")
        if other.lead_times is None:
            return self
        if self.lead_times is None:
            self._allocate(other.lead_times, other.members)
        if (other.lead_times, other.members) != (self.lead_times, self.members):
            raise ValueError(
                f"cannot merge: lead times / members differ ({self.lead_times}, {self.members}) vs "
                f"({other.lead_times}, {other.members})"
            )
        for name, value in other._state.items():
            self._state[name] += value
        for key, why in other.skipped.items():
            self.skipped.setdefault(key, why)
        return self

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def update(self, y_true: Any, y_pred: Any, mask: Any = None) -> None:
        """Accumulate one batch.

        Parameters
        ----------
        y_true : array or Tensor
            ``(B, T, C, H, W)`` observations in ``[0, 1]`` (clipped).
        y_pred : array or Tensor
            ``(B, T, C, H, W)`` forecast, or ``(M, B, T, C, H, W)`` ensemble, in ``[0, 1]``.
        mask : array or Tensor of bool, optional
            True where the observation has data, broadcastable to ``(B, T, C, H, W)``
            (:func:`.nodata.nodata_mask` makes it from NaN). Pixels without data are left out
            of every score (module docstring) and may hold anything, NaN included, in
            ``y_true`` and ``y_pred``; windows without any data are skipped and counted.
            ``None`` or all True: the unmasked protocol, bit for bit.

        Raises
        ------
        ValueError
            Wrong shapes or dtypes, NaN or inf (without a mask, or at pixels with data), a
            mask that is not boolean or does not broadcast.
        """
        obs = _to_tensor(y_true, "y_true")
        pred = _to_tensor(y_pred, "y_pred")
        if obs.ndim != 5:
            raise ValueError(f"y_true must have shape (B, T, C, H, W), got {tuple(obs.shape)}")
        if pred.ndim == 5:
            pred = pred.unsqueeze(0)
        if pred.ndim != 6 or pred.shape[1:] != obs.shape:
            raise ValueError(
                f"y_pred must have shape (B, T, C, H, W) = {tuple(obs.shape)} or (M, B, T, C, H, W), "
                f"got {tuple(pred.shape)}"
            )
        if any(s == 0 for s in pred.shape):
            raise ValueError(f"empty batch: y_pred has shape {tuple(pred.shape)}")
        m, b, n_lead = pred.shape[0], pred.shape[1], pred.shape[2]
        if self.lead_times is not None and n_lead != self.lead_times:
            raise ValueError(f"expected {self.lead_times} lead times, got {n_lead}")
        if self.members is not None and m != self.members:
            raise ValueError(f"expected {self.members} ensemble member(s), got {m}; use one Evaluator per ensemble size")
        pred = pred.to(obs.device)
        if mask is not None:
            valid = self._check_mask(mask, obs)
            if not bool(valid.all()):
                self._update_masked(obs, pred, valid)
                return
            # data everywhere: the unmasked protocol below
        if self._use_cpu_kernels(obs):
            sums = self._cpu_sums(obs, pred)  # validates before any state changes
            self._allocate_for(n_lead, m)
            self._update_cpu(obs, pred, sums)
            return
        obs01 = _clip01(obs, "y_true")
        pred01 = _clip01(pred, "y_pred")
        self._allocate_for(n_lead, m)
        obs_code = obs01 * self.scale
        pred_code = pred01 * self.scale
        flat = pred_code.reshape(m * b, *obs.shape[1:])
        obs_rep = obs_code.unsqueeze(0).expand(m, *obs.shape).reshape(m * b, *obs.shape[1:])
        self._update_det("det", obs_rep, flat, obs_once=obs_code)
        self._state["n_samples"] += b
        self._state["nodata.pixels"] += obs.numel()
        self._update_prob(obs_code, pred_code, obs01, pred01)
        if m >= 2:
            mean_code = pred_code.mean(dim=0)
            self._update_det("mean", obs_code, mean_code)

    def _use_cpu_kernels(self, x: torch.Tensor) -> bool:
        """Whether the CPU path (:mod:`.chunked`, with Numba or OpenCV kernels) takes this batch."""
        if self.backend == "torch":
            return False
        on_cpu = x.device.type == "cpu"
        if self.backend in ("opencv", "numba") and not on_cpu:
            raise ValueError(
                f"backend {self.backend!r} needs CPU tensors, got {x.device}; use backend='torch' or 'auto'"
            )
        return on_cpu and kernels.available()

    def _cpu_kernel(self) -> str:
        if self.backend in ("numba", "opencv"):
            return self.backend
        return "numba" if fused.available() else "opencv"

    # ------------------------------------------------------------ CPU path (Numba or OpenCV kernels)
    def _cpu_sums(self, obs: torch.Tensor, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """State increments of one batch from :func:`.chunked.update_sums` (validates the data)."""
        if obs.dtype not in (torch.float32, torch.float64):
            obs = obs.to(torch.float32)
        if pred.dtype not in (torch.float32, torch.float64):
            pred = pred.to(torch.float32)
        h, w = obs.shape[-2:]
        ssim = self.ssim and min(h, w) >= WINDOW
        sums = chunked.update_sums(
            obs.detach().numpy(), pred.detach().numpy(), self._levels, self.scale, self.pool_sizes, self.fss_scales, ssim,
            self._rank_level, threads=self.num_threads or torch.get_num_threads(), kernel=self._cpu_kernel(),
        )
        out = {k: torch.from_numpy(v) for k, v in sums.items()}
        hist = out.pop("prob.member_hist", None)
        if hist is not None:
            m = pred.shape[0]
            n_thr = len(self.thresholds)
            brier = torch.zeros(hist.shape[0], n_thr, dtype=torch.float64)
            rel = torch.zeros(n_thr, self.n_bins, 3, dtype=torch.float64)
            for k in range(n_thr):
                brier[:, k], rel[k] = self._brier_reliability(hist[:, k, :, 0], hist[:, k, :, 1], m)
            out["prob.brier"] = brier
            out["prob.reliability"] = rel
        return out

    def _update_cpu(self, obs: torch.Tensor, pred: torch.Tensor, sums: dict[str, torch.Tensor]) -> None:
        h, w = obs.shape[-2:]
        if not (self.ssim and min(h, w) >= WINDOW):
            self._note_ssim_skipped(h, w)
        if self.lpips is not None:  # LPIPS is a network: the torch path's code, on clipped copies
            m, b = pred.shape[:2]
            obs_code = _clip01(obs, "y_true") * self.scale
            pred_code = _clip01(pred, "y_pred") * self.scale
            rep = obs_code.repeat(m, 1, 1, 1, 1)
            for prefix, x, y in [("det", pred_code.reshape(m * b, *obs.shape[1:]), rep)] + (
                [("mean", pred_code.mean(0), obs_code)] if m >= 2 else []
            ):
                lp = self._lpips_frames(x, y)
                if lp is not None:
                    sums[f"{prefix}.frame_sum"][:, 5] = lp.sum(0)
                    sums[f"{prefix}.frame_n"][:, 5] = x.shape[0]
        for name, value in sums.items():
            self._add(name, value)
        self._state["n_samples"] += obs.shape[0]
        self._state["nodata.pixels"] += obs.numel()

    def _note_ssim_skipped(self, h: int, w: int) -> None:
        if self.ssim:
            self.skipped["ssim"] = f"frames of {h}x{w} pixels are smaller than the {WINDOW}x{WINDOW} SSIM window"
        else:
            self.skipped["ssim"] = "disabled"

    def _brier_reliability(
        self, total: torch.Tensor, hits: torch.Tensor, m: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Brier sums per lead ``(L,)`` and reliability sums ``(n_bins, 3)`` of one threshold from
        the per-lead histograms of the member count ``k`` (all points / points with an event)."""
        # p = k / M takes M + 1 values: sum (p - o)^2 = sum_k [n_k p_k^2 - 2 p_k e_k + e_k]
        k_vals = torch.arange(m + 1, dtype=torch.float64) / m
        bins = (torch.bucketize(k_vals, reliability_bin_edges(self.n_bins), right=False) - 1).clamp(0, self.n_bins - 1)
        brier = (total * k_vals**2 - 2.0 * hits * k_vals + hits).sum(-1)
        tot_k, hit_k = total.sum(0), hits.sum(0)
        rel = torch.zeros(self.n_bins, 3, dtype=torch.float64)
        rel[:, 0].index_add_(0, bins, tot_k)
        rel[:, 1].index_add_(0, bins, tot_k * k_vals)
        rel[:, 2].index_add_(0, bins, hit_k)
        return brier, rel

    def _allocate_for(self, n_lead: int, m: int) -> None:
        if self.lead_times is None:
            self._allocate(n_lead, self.members or m)
        elif self.members is None:
            self._allocate_members(m)

    def _allocate_members(self, members: int) -> None:
        # lead_times was given but members not: extend the state with the ensemble entries
        old = self._state
        self._allocate(self.lead_times, members)
        for k, v in old.items():
            self._state[k] = v

    def _add(self, name: str, value: torch.Tensor) -> None:
        self._state[name] += value.detach().to("cpu", torch.float64)

    def _update_det(
        self, prefix: str, obs_code: torch.Tensor, pred_code: torch.Tensor, obs_once: torch.Tensor | None = None
    ) -> None:
        """Deterministic scores; ``obs_once`` is the un-repeated observation when ``obs_code``
        repeats it for each member (FSS then filters it once)."""
        thr = torch.tensor(self.thresholds, dtype=obs_code.dtype, device=obs_code.device)
        n_thr = len(self.thresholds)
        if obs_once is None:
            b_obs = threshold_bins(obs_code, thr)
        else:  # bin the observation once, repeat the (uint8) bins for the members
            b_once = threshold_bins(obs_once, thr)
            reps = obs_code.shape[0] // obs_once.shape[0]
            b_obs = b_once.unsqueeze(0).expand(reps, *b_once.shape).reshape(obs_code.shape)
        b_pred = threshold_bins(pred_code, thr)
        self._add(f"{prefix}.counts", counts_from_bins(b_obs, b_pred, n_thr))
        # max-pooling commutes with the monotone value -> bin map: pool the bins once computed
        pad_bin = float(sum(t <= 0.0 for t in self.thresholds))
        for p in self.pool_sizes:
            self._add(
                f"{prefix}.pool{p}",
                counts_from_bins(max_pool_frames(b_obs, p, pad_bin), max_pool_frames(b_pred, p, pad_bin), n_thr),
            )
        for s in self.fss_scales:
            self._add(f"{prefix}.fss{s}", fss_sums(pred_code, obs_code if obs_once is None else obs_once, thr, s))
        n, n_lead = obs_code.shape[:2]
        errs = frame_errors(pred_code, obs_code, self.scale)
        sums = torch.zeros(n_lead, len(FRAME_SCORES), dtype=torch.float64)
        counts = torch.zeros_like(sums)
        for j, key in enumerate(("mse", "mae", "rmse", "psnr")):
            sums[:, j] = errs[key].sum(0).cpu()
            counts[:, j] = n
        h, w = obs_code.shape[-2:]
        if self.ssim and min(h, w) >= WINDOW:
            ssim = ssim_frames(pred_code, obs_code, data_range=self.scale).mean(dim=-1)  # mean over channels
            sums[:, 4] = ssim.sum(0).cpu()
            counts[:, 4] = n
        else:
            self._note_ssim_skipped(h, w)
        if self.lpips is not None:
            lp = self._lpips_frames(pred_code, obs_code)
            if lp is not None:
                sums[:, 5] = lp.sum(0).cpu()
                counts[:, 5] = n
        self._add(f"{prefix}.frame_sum", sums)
        self._add(f"{prefix}.frame_n", counts)

    def _lpips_frames(self, pred_code: torch.Tensor, obs_code: torch.Tensor) -> torch.Tensor | None:
        """LPIPS of each frame on ``[-1, 1]`` images (as the published evaluator): ``(N, L)``."""
        n, n_lead, c, h, w = pred_code.shape
        try:
            dev = next(self.lpips.parameters()).device
        except StopIteration:
            dev = pred_code.device
        x = (pred_code / self.scale * 2.0 - 1.0).reshape(n * n_lead, c, h, w)
        y = (obs_code / self.scale * 2.0 - 1.0).reshape(n * n_lead, c, h, w)
        out = []
        try:
            for i in range(0, x.shape[0], self.lpips_batch):
                xb = x[i : i + self.lpips_batch].to(dev)
                yb = y[i : i + self.lpips_batch].to(dev)
                if c not in (1, 3):  # score each channel as a grey image
                    d = self.lpips(xb.reshape(-1, 1, h, w), yb.reshape(-1, 1, h, w)).view(-1, c).mean(1)
                else:
                    d = self.lpips(xb, yb)
                out.append(d.to(torch.float64).cpu())
        except ValueError as exc:
            self.skipped["lpips"] = str(exc)
            self.lpips = None
            return None
        return torch.cat(out).view(n, n_lead)

    def _update_prob(
        self, obs_code: torch.Tensor, pred_code: torch.Tensor, obs01: torch.Tensor, pred01: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> None:
        """CRPS, Brier, reliability, ranks and spread; with ``valid`` (the no-data path) over the points with
        data only, the same float32 operations followed by the mask."""
        m, b, n_lead = pred_code.shape[:3]

        def per_lead(x: torch.Tensor) -> torch.Tensor:  # (B, L, C, H, W) -> (L,): contiguous reductions first
            return x.sum(dim=(-3, -2, -1), dtype=torch.float64).sum(0).cpu()

        skill, pair_sum = crps_terms(pred_code, obs_code)
        if valid is not None:
            skill, pair_sum = skill.masked_fill(~valid, 0.0), pair_sum.masked_fill(~valid, 0.0)
        crps = torch.zeros(n_lead, 3, dtype=torch.float64)
        crps[:, 0] = per_lead(skill) - per_lead(pair_sum) / (2.0 * m * m)
        crps[:, 1] = per_lead(skill) - per_lead(pair_sum) / (2.0 * m * (m - 1)) if m >= 2 else crps[:, 0]
        crps[:, 2] = obs_code[:, 0].numel() if valid is None else per_lead(valid)  # points (with data) per lead
        self._add("prob.crps", crps)
        if m < 2:
            return
        n_thr = len(self.thresholds)
        brier = torch.zeros(n_lead, n_thr, dtype=torch.float64)
        rel = torch.zeros(n_thr, self.n_bins, 3, dtype=torch.float64)
        # histogram the member counts k (per lead) with and without an observed event
        lead = torch.arange(n_lead, device=obs_code.device, dtype=torch.int32).view(1, n_lead, 1, 1, 1) * (m + 1)
        sel = None if valid is None else valid.reshape(-1)  # the points with data
        for j, thr in enumerate(self.thresholds):  # a handful of thresholds; frames stay vectorised
            # a loop over the few members keeps every pass contiguous (a reduction over the
            # leading axis is strided and several times slower on CPU)
            n_exceed = torch.zeros(obs_code.shape, dtype=torch.uint8, device=obs_code.device)
            for x in pred_code:  # same-dtype adds (a bool -> int promotion takes a slow path)
                n_exceed.add_(x.ge(thr).view(torch.uint8))
            index = (n_exceed.to(torch.int32) + lead).reshape(-1)
            event = obs_code.ge(thr).reshape(-1)
            if sel is not None:
                index, event = index[sel], event[sel]
            total = torch.bincount(index, minlength=n_lead * (m + 1)).view(n_lead, m + 1).to(torch.float64).cpu()
            hits = torch.bincount(index[event], minlength=n_lead * (m + 1)).view(n_lead, m + 1).to(torch.float64).cpu()
            brier[:, j], rel[j] = self._brier_reliability(total, hits, m)
        self._add("prob.brier", brier)
        self._add("prob.reliability", rel)
        # ranks on the clipped [0, 1] values, as the OpenCV path (x_min mapped to that space)
        ranked = (pred01, obs01) if valid is None else (pred01[:, valid], obs01[valid])
        self._add("prob.rank", rank_histogram_counts(*ranked, x_min=self._rank_level))
        mean = pred_code[0].clone()
        for x in pred_code[1:]:
            mean.add_(x)
        mean.div_(m)
        var = torch.zeros_like(mean)
        for x in pred_code:
            var.add_((x - mean).square_())
        var.div_(m - 1)
        err = (mean - obs_code).square_()
        if valid is not None:
            var.masked_fill_(~valid, 0.0)
            err.masked_fill_(~valid, 0.0)
        self._add("prob.spread", torch.stack([per_lead(var), per_lead(err)], dim=-1))

    # ------------------------------------------------------------------ no data (masked torch path)
    @staticmethod
    def _check_mask(mask: Any, obs: torch.Tensor) -> torch.Tensor:
        """The mask as a bool tensor of ``obs``'s shape (a broadcast view) on its device."""
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(np.ascontiguousarray(mask))
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            what = type(mask).__name__ if not isinstance(mask, torch.Tensor) else f"dtype {mask.dtype}"
            raise ValueError(f"mask must be a boolean array or tensor (True where there are data), got {what}")
        lead = obs.ndim - mask.ndim
        if lead < 0 or any(a not in (1, b) for a, b in zip(mask.shape, obs.shape[lead:])):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to y_true {tuple(obs.shape)}")
        return mask.to(obs.device).expand(obs.shape)

    def _update_masked(self, obs: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor) -> None:
        """:meth:`update` over the pixels with data (``valid``), with the torch operations of :mod:`.nodata`."""
        m, b, n_lead = pred.shape[:3]
        # values where there are no data are never scored: zero them so NaN there is harmless
        obs01 = _clip01(obs.masked_fill(~valid, 0.0), "y_true (at pixels with data)")
        pred01 = _clip01(pred.masked_fill(~valid, 0.0), "y_pred (at pixels with data)")
        self._allocate_for(n_lead, m)
        has_data = valid.reshape(b, -1).any(dim=1)
        n_keep = int(has_data.sum())
        self._state["nodata.windows"] += b - n_keep
        if n_keep == 0:
            return
        if n_keep < b:
            obs01, pred01, valid = obs01[has_data], pred01[:, has_data], valid[has_data]
            b = n_keep
        self._state["nodata.pixels"] += torch.tensor([float(valid.sum()), float(valid.numel())], dtype=torch.float64)
        obs_code = obs01 * self.scale
        pred_code = pred01 * self.scale
        shape = obs_code.shape[1:]
        flat = pred_code.reshape(m * b, *shape)
        obs_rep = obs_code.unsqueeze(0).expand(m, *obs_code.shape).reshape(m * b, *shape)
        valid_rep = valid.unsqueeze(0).expand(m, *valid.shape).reshape(m * b, *shape)
        self._update_det_masked("det", obs_rep, flat, valid_rep, obs_once=obs_code, valid_once=valid)
        self._state["n_samples"] += b
        self._update_prob(obs_code, pred_code, obs01, pred01, valid)
        if m >= 2:
            self._update_det_masked("mean", obs_code, pred_code.mean(dim=0), valid)

    def _update_det_masked(
        self, prefix: str, obs_code: torch.Tensor, pred_code: torch.Tensor, valid: torch.Tensor,
        obs_once: torch.Tensor | None = None, valid_once: torch.Tensor | None = None,
    ) -> None:
        """:meth:`_update_det` over the pixels with data (rules in :mod:`.nodata`)."""
        thr = torch.tensor(self.thresholds, dtype=obs_code.dtype, device=obs_code.device)
        n_thr = len(self.thresholds)
        b_obs = threshold_bins(obs_code, thr)
        b_pred = threshold_bins(pred_code, thr)
        self._add(f"{prefix}.counts", nodata.masked_counts(b_obs, b_pred, valid, n_thr))
        for p in self.pool_sizes:
            self._add(f"{prefix}.pool{p}", nodata.masked_pool_counts(b_obs, b_pred, valid, p, n_thr))
        for s in self.fss_scales:
            self._add(f"{prefix}.fss{s}", nodata.masked_fss_sums(
                pred_code, obs_code if obs_once is None else obs_once, valid if valid_once is None else valid_once, thr, s,
            ))
        n, n_lead = obs_code.shape[:2]
        errs, weight = nodata.masked_frame_errors(pred_code, obs_code, valid, self.scale)
        sums = torch.zeros(n_lead, len(FRAME_SCORES), dtype=torch.float64)
        counts = torch.zeros_like(sums)
        for j, key in enumerate(("mse", "mae", "rmse", "psnr")):  # frames weighted by their fraction of data
            sums[:, j] = (errs[key] * weight).sum(0).cpu()
            counts[:, j] = weight.sum(0).cpu()
        h, w = obs_code.shape[-2:]
        if self.ssim and min(h, w) >= WINDOW:
            ssim, sw = nodata.masked_ssim_frames(pred_code, obs_code, valid, self.scale)
            sums[:, 4] = (ssim * sw).sum(0).cpu()
            counts[:, 4] = sw.sum(0).cpu()
        else:
            self._note_ssim_skipped(h, w)
        if self.lpips is not None:  # fully covered frames only
            complete = valid.reshape(n, n_lead, -1).all(dim=-1)
            if bool(complete.any()):
                lp = self._lpips_frames(pred_code[complete].unsqueeze(1), obs_code[complete].unsqueeze(1))
                if lp is not None:
                    lead = complete.nonzero()[:, 1].cpu()
                    sums[:, 5].index_add_(0, lead, lp[:, 0])
                    counts[:, 5] = complete.sum(0, dtype=torch.float64).cpu()
        self._add(f"{prefix}.frame_sum", sums)
        self._add(f"{prefix}.frame_n", counts)

    # ------------------------------------------------------------------ compute
    def _det_scores(self, prefix: str) -> dict[str, Any]:
        # NumPy on the (tiny) state arrays: a torch call per score costs ~10x more here
        s = {k: v.numpy() for k, v in self._state.items() if k.startswith(prefix + ".")}
        keys = [threshold_key(t) for t in self.thresholds]
        out: dict[str, Any] = {}

        def per_key(v: np.ndarray) -> dict[str, float]:
            return dict(zip(keys, _clean_list(v)))

        def per_key_lead(v: np.ndarray) -> dict[str, list[float]]:  # (L, K) -> {key: [L values]}
            return dict(zip(keys, _clean_list(v.T)))

        counts = s[f"{prefix}.counts"]  # (L, K, 4)
        by_lead = scores_from_counts(counts, self.empty_value)  # each (L, K)
        for name, val in by_lead.items():
            per_thr = val.mean(0)  # mean over lead times
            out[name] = per_key(per_thr)
            out[f"{name}_by_lead"] = per_key_lead(val)
            out[f"{name}_m"] = _clean(per_thr.mean())
            out[f"{name}_m_by_lead"] = _clean_list(val.mean(1))
        h, m, f, _ = np.moveaxis(counts.sum(0), -1, 0)
        out["events"] = {
            k: {"obs": o, "fcst": fc, "hits": hi}
            for k, o, fc, hi in zip(keys, _clean_list(h + m), _clean_list(h + f), _clean_list(h))
        }
        for p in self.pool_sizes:
            c = s[f"{prefix}.pool{p}"]
            total = scores_from_counts(c.sum(0), self.empty_value)["csi"]  # (K,)
            lead = scores_from_counts(c, self.empty_value)["csi"]  # (L, K)
            out[f"csi_pool{p}"] = per_key(total)
            out[f"csi_pool{p}_m"] = _clean(total.mean())
            out[f"csi_pool{p}_by_lead"] = per_key_lead(lead)
        if self.fss_scales:
            out["fss"], out["fss_by_lead"], out["fss_m"] = {}, {}, {}
            for sc in self.fss_scales:
                sums = s[f"{prefix}.fss{sc}"]
                total = fss_from_sums(sums.sum(0), self.empty_value)
                lead = fss_from_sums(sums, self.empty_value)
                key = threshold_key(sc)
                out["fss"][key] = per_key(total)
                out["fss_by_lead"][key] = per_key_lead(lead)
                out["fss_m"][key] = _clean(total.mean())
        fsum, fn = s[f"{prefix}.frame_sum"], s[f"{prefix}.frame_n"]
        for j, name in enumerate(FRAME_SCORES):
            if bool((fn[:, j] > 0).all()):
                per_lead = fsum[:, j] / fn[:, j]
                out[name] = _clean(per_lead.mean())
                out[f"{name}_by_lead"] = _clean_list(per_lead)
        return out

    def compute(self) -> dict[str, Any]:
        """Scores as a JSON-serialisable dict (threshold keys are strings such as ``"16"``).

        Raises
        ------
        ValueError
            If nothing has been accumulated.
        """
        if self.lead_times is None or float(self._state["n_samples"][0]) == 0:
            n_skip = int(self._state["nodata.windows"][0]) if self._state else 0
            raise ValueError(
                f"no samples accumulated: all {n_skip} window(s) had no data" if n_skip
                else "no samples accumulated: call update() before compute()"
            )
        s = self._state
        out: dict[str, Any] = {
            "n_samples": int(s["n_samples"][0]),
            "members": int(self.members or 1),
            "lead_times": int(self.lead_times),
            "scale": self.scale,
            "thresholds": list(self.thresholds),
            "pool_sizes": list(self.pool_sizes),
            "fss_scales": list(self.fss_scales),
            "conventions": {
                "events": "value >= threshold, value = clip(x, 0, 1) * scale",
                "empty": f"scores with a zero denominator are {self.empty_value:g}; see 'events' for counts",
                "continuous_units": "threshold space (x * scale); rmse = mean over frames of sqrt(frame MSE); "
                "psnr per frame, capped at 100 dB",
                "members": "top-level deterministic scores average over all members as samples; "
                "'ensemble_mean' scores the ensemble mean",
                "crps_units": "crps in threshold space (= mae for one member); crps_norm = crps / scale",
            },
        }
        out.update(self._det_scores("det"))
        crps = s["prob.crps"]
        per_lead = crps[:, 0] / crps[:, 2]
        out["crps"] = _clean(per_lead.mean())
        out["crps_by_lead"] = [_clean(x) for x in per_lead.tolist()]
        out["crps_norm"] = _clean(per_lead.mean() / self.scale)
        m = self.members or 1
        if m >= 2:
            keys = [threshold_key(t) for t in self.thresholds]
            fair = crps[:, 1] / crps[:, 2]
            out["crps_fair"] = _clean(fair.mean())
            out["crps_fair_by_lead"] = [_clean(x) for x in fair.tolist()]
            brier = s["prob.brier"] / crps[:, 2:3]  # (L, K)
            out["brier"] = {k: _clean(v) for k, v in zip(keys, brier.mean(0).tolist())}
            out["brier_by_lead"] = {k: [_clean(x) for x in brier[:, i].tolist()] for i, k in enumerate(keys)}
            rel = s["prob.reliability"]
            edges = torch.linspace(0.0, 1.0, self.n_bins + 1)
            out["reliability"] = {"bin_edges": [float(e) for e in edges.tolist()]}
            for i, k in enumerate(keys):
                cnt, psum, osum = rel[i].unbind(-1)
                ok = cnt >= max(self.reliability_min_count, 1)
                safe = torch.where(ok, cnt, torch.ones_like(cnt))
                out["reliability"][k] = {
                    "forecast_probability": [float(v) if o else None for v, o in zip((psum / safe).tolist(), ok.tolist())],
                    "observed_frequency": [float(v) if o else None for v, o in zip((osum / safe).tolist(), ok.tolist())],
                    "count": [int(v) for v in cnt.tolist()],
                }
            rank = s["prob.rank"]
            total = float(rank.sum())
            out["rank_histogram"] = [float(v) / total if total > 0 else 0.0 for v in rank.tolist()]
            out["rank_histogram_counts"] = [float(v) for v in rank.tolist()]
            sp = s["prob.spread"]
            spread = (sp[:, 0] / crps[:, 2]).sqrt()
            skill = (sp[:, 1] / crps[:, 2]).sqrt()
            factor = math.sqrt((m + 1) / m)
            ratio_lead = torch.where(skill > 0, factor * spread / skill.clamp_min(1e-300), torch.zeros_like(skill))
            tot_spread = math.sqrt(float(sp[:, 0].sum() / crps[:, 2].sum()))
            tot_skill = math.sqrt(float(sp[:, 1].sum() / crps[:, 2].sum()))
            out["spread"] = _clean(tot_spread)
            out["ensemble_mean_rmse_pooled"] = _clean(tot_skill)
            out["spread_skill_ratio"] = _clean(factor * tot_spread / tot_skill) if tot_skill > 0 else 0.0
            out["spread_skill_ratio_by_lead"] = [_clean(x) for x in ratio_lead.tolist()]
            out["ensemble_mean"] = self._det_scores("mean")
        skipped = dict(self.skipped)
        n_skip, (with_data, pixels) = float(s["nodata.windows"][0]), s["nodata.pixels"].tolist()
        if n_skip > 0 or with_data < pixels:  # a mask was used: say so (absent otherwise, as before masks)
            out["no_data"] = {
                "windows_skipped": int(n_skip),
                "covered_fraction": with_data / pixels if pixels > 0 else 0.0,
                # scored points per lead (the CRPS count) over the pixels of one lead
                "covered_fraction_by_lead": [_clean(float(c) * int(self.lead_times) / pixels) if pixels > 0 else 0.0
                                             for c in crps[:, 2].tolist()],
                "rule": "every score over the observed pixels with data only (diffcast.metrics.nodata); "
                "windows without any data are skipped",
            }
            why = {"ssim": f"no {WINDOW}x{WINDOW} window fully covered by data at some lead time",
                   "lpips": "no frame fully covered by data at some lead time"}
            for name in FRAME_SCORES:
                if name not in out and name not in skipped:
                    skipped[name] = why.get(name, "no pixel with data at some lead time")
        out["skipped"] = dict(sorted(skipped.items()))
        return out
