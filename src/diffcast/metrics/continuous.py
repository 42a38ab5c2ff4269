"""Per-frame continuous scores in threshold-space units (``x * scale``).

Conventions (the DiffCast protocol, documented where the published code is silent):

- ``mse`` and ``mae`` are means over the pixels (and channels) of one frame;
- ``rmse`` is ``sqrt(mse)`` of that frame, then averaged over frames (not ``sqrt`` of the
  averaged MSE), as in the published evaluator;
- ``psnr = 20 log10(scale / rmse)`` per frame; a frame with ``rmse == 0`` would give ``inf``,
  so the per-frame PSNR is capped at :data:`PSNR_CAP_DB` (100 dB, i.e. ``rmse = 1e-5 scale``)
  and JSON reports never hold ``inf``.
"""

from __future__ import annotations

import math

import torch

#: Upper bound of a per-frame PSNR in dB (reached when a frame is reproduced exactly).
PSNR_CAP_DB = 100.0


def frame_errors(pred_code: torch.Tensor, obs_code: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    """MSE, MAE, RMSE and PSNR of each frame.

    Parameters
    ----------
    pred_code, obs_code : Tensor
        ``(N, L, C, H, W)`` forecast and observation in threshold-space units.
    scale : float
        Peak value of the threshold space (SEVIR: 255), the PSNR's signal peak.

    Returns
    -------
    dict of str to Tensor
        ``mse``, ``mae``, ``rmse``, ``psnr``: float64 tensors of shape ``(N, L)``.
    """
    # float32 differences (relative error ~1e-7), float64 sums over each frame
    diff = (pred_code - obs_code).reshape(*pred_code.shape[:2], -1)
    npix = diff.shape[-1]
    mse = (diff * diff).sum(-1, dtype=torch.float64) / npix
    mae = diff.abs().sum(-1, dtype=torch.float64) / npix
    rmse = mse.sqrt()
    floor = float(scale) * 10.0 ** (-PSNR_CAP_DB / 20.0)
    psnr = 20.0 * torch.log10(float(scale) / rmse.clamp_min(floor))
    return {"mse": mse, "mae": mae, "rmse": rmse, "psnr": psnr}


def psnr_from_mse(mse: float, scale: float) -> float:
    """Scalar helper: ``20 log10(scale / sqrt(mse))`` capped at :data:`PSNR_CAP_DB`."""
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 20.0 * math.log10(scale / math.sqrt(mse)))
