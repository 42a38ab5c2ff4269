"""Verification scores: pure torch/numpy, vectorised, with streaming accumulators.

Imports nothing from :mod:`diffcast.models`. The main entry is :class:`Evaluator`
(the DiffCast protocol plus CRPS, Brier, reliability, rank histogram, spread-skill and FSS;
pixels without data left out by the rules of :mod:`.nodata`);
its CPU path walks the batch by lead times (:mod:`.chunked`) with compiled Numba kernels that
score each frame in one pass (:mod:`.fused`), or NumPy + OpenCV kernels (:mod:`.kernels`)
where Numba does not work.
"""

from .contingency import (
    COUNT_NAMES,
    contingency_counts,
    counts_from_bins,
    max_pool_frames,
    scores_from_counts,
    threshold_bins,
)
from .continuous import PSNR_CAP_DB, frame_errors
from .ensemble import (
    brier_score,
    crps_ensemble,
    crps_terms,
    ensemble_spread_skill,
    exceedance_probability,
    rank_histogram_counts,
    reliability_bin_edges,
    reliability_sums,
)
from .evaluator import FRAME_SCORES, Evaluator, threshold_key
from .lpips import LPIPSAlex, load_lpips
from .nodata import (
    masked_counts,
    masked_frame_errors,
    masked_fss_sums,
    masked_pool_counts,
    masked_ssim_frames,
    nodata_mask,
)
from .spatial import box_fraction, fss_from_sums, fss_sums
from .ssim import ssim_frames, ssim_map

__all__ = [
    "COUNT_NAMES",
    "FRAME_SCORES",
    "PSNR_CAP_DB",
    "Evaluator",
    "LPIPSAlex",
    "box_fraction",
    "brier_score",
    "contingency_counts",
    "counts_from_bins",
    "crps_ensemble",
    "crps_terms",
    "ensemble_spread_skill",
    "exceedance_probability",
    "frame_errors",
    "fss_from_sums",
    "fss_sums",
    "load_lpips",
    "masked_counts",
    "masked_frame_errors",
    "masked_fss_sums",
    "masked_pool_counts",
    "masked_ssim_frames",
    "max_pool_frames",
    "nodata_mask",
    "rank_histogram_counts",
    "reliability_bin_edges",
    "reliability_sums",
    "scores_from_counts",
    "ssim_frames",
    "ssim_map",
    "threshold_bins",
    "threshold_key",
]
