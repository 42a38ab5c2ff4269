"""Scores over the pixels that have data: the :class:`~.evaluator.Evaluator`'s no-data rules.

A *mask* is a bool tensor, True where the observation has data (radar coverage); the
mlcast dataset marks pixels without data as NaN and the evaluation turns those into a
mask. Every score is computed over the pixels with data only; the rules, chosen so that a
rectangular covered region scores exactly like the frames cropped to it:

- contingency counts (CSI, POD, FAR, HSS, event counts): pixels without data are not counted;
- pooled CSI (``k x k`` max-pooling): a pooled cell is counted where at least one of its
  ``k * k`` pixels has data, and its observed and forecast values are the maxima over the
  pixels with data only (a mask aligned to the ``k x k`` cells thus gives the pooled frames
  of the crop);
- FSS: pixels without data are non-events in both the forecast and the observed binary
  fields (pysteps sets non-finite values below the threshold, and the zero padding treats
  the outside of the frame the same way), and the three sums run over the pixels with data
  only (the no-data area is scored like the outside of the domain);
- MSE, MAE, RMSE, PSNR: per frame over its pixels with data, then the frames of a lead are
  averaged with weights equal to their fraction of pixels with data (a frame without data
  weighs 0). The MSE and MAE of a lead are then the means over all its pixels with data;
  with full coverage every weight is exactly 1 and the protocol's plain mean over frames is
  recovered;
- SSIM: per frame, the mean of the SSIM map over the ``11 x 11`` windows that lie entirely on
  pixels with data (a window touching a pixel without data is left out, so the values there
  never enter); frames weighted by their fraction of such windows;
- LPIPS: only frames with data at every pixel (a network sees the whole image: any fill
  value would be scored as structure); partly covered frames are left out;
- CRPS, Brier score, reliability, rank histogram, spread and skill: over the points with
  data only.
"""

from __future__ import annotations

import torch

from .contingency import counts_from_bins, max_pool_frames
from .continuous import PSNR_CAP_DB
from .spatial import box_sum
from .ssim import SIGMA, WINDOW, ssim_map


def nodata_mask(y_true: torch.Tensor) -> torch.Tensor | None:
    """``~isnan(y_true)`` (True where there are data), or ``None`` when ``y_true`` holds no NaN.

    ``None`` keeps the Evaluator on its unmasked path, whose numbers are those of the
    published protocol.
    """
    nan = torch.isnan(y_true)
    return ~nan if bool(nan.any()) else None


def masked_counts(b_obs: torch.Tensor, b_pred: torch.Tensor, valid: torch.Tensor, n_thr: int) -> torch.Tensor:
    """Contingency counts over the pixels with data.

    Parameters
    ----------
    b_obs, b_pred : Tensor
        ``(N, L, ...)`` threshold bins (:func:`~.contingency.threshold_bins`).
    valid : Tensor
        bool, broadcastable to ``b_obs``: True where the observation has data.
    n_thr : int
        Number of thresholds.

    Returns
    -------
    Tensor
        ``(L, K, 4)`` float64 counts (hits, misses, false alarms, correct negatives).
    """
    return counts_from_bins(b_obs, b_pred, n_thr, mask=valid)


def masked_pool_counts(
    b_obs: torch.Tensor, b_pred: torch.Tensor, valid: torch.Tensor, k: int, n_thr: int
) -> torch.Tensor:
    """Contingency counts of ``k x k`` max-pooled bins over the pooled cells with data.

    A cell counts where at least one of its pixels has data; its value is the maximum over
    those pixels only (bins of pixels without data are set to 0, the lowest bin, before
    pooling: they never raise the maximum of a cell with data). Partial cells at the
    bottom / right edge pool their pixels inside the frame, as the unmasked protocol does.

    Parameters
    ----------
    b_obs, b_pred : Tensor
        ``(N, L, C, H, W)`` threshold bins.
    valid : Tensor
        bool, broadcastable to ``b_obs``.
    k : int
        Block size.
    n_thr : int
        Number of thresholds.

    Returns
    -------
    Tensor
        ``(L, K, 4)`` float64 counts.
    """
    valid = valid.expand(b_obs.shape)
    po = max_pool_frames(b_obs.masked_fill(~valid, 0), k, 0.0)
    pp = max_pool_frames(b_pred.masked_fill(~valid, 0), k, 0.0)
    pv = max_pool_frames(valid.to(torch.uint8), k, 0.0).bool()
    return counts_from_bins(po, pp, n_thr, mask=pv)


def masked_fss_sums(
    pred_code: torch.Tensor, obs_code: torch.Tensor, valid: torch.Tensor, thresholds: torch.Tensor, scale: int
) -> torch.Tensor:
    """FSS sums over the pixels with data (module docstring: no data = no event, sums over data).

    Parameters
    ----------
    pred_code : Tensor
        ``(N, L, C, H, W)`` forecasts, ``N = M * B`` (members stacked member-major) or ``B``.
    obs_code : Tensor
        ``(B, L, C, H, W)`` observations.
    valid : Tensor
        bool ``(B, L, C, H, W)``: True where the observation has data.
    thresholds : Tensor
        ``(K,)`` thresholds.
    scale : int
        Neighbourhood size in pixels.

    Returns
    -------
    Tensor
        ``(L, K, 3)`` float64 sums ``sum f^2, sum f o, sum o^2`` (:data:`~.spatial.FSS_SUM_NAMES`).
    """
    n, n_lead = pred_code.shape[:2]
    b = obs_code.shape[0]
    if pred_code.shape[1:] != obs_code.shape[1:] or n % b or valid.shape != obs_code.shape:
        raise ValueError(
            f"pred {tuple(pred_code.shape)}, obs {tuple(obs_code.shape)} and mask {tuple(valid.shape)} do not match"
        )
    reps = n // b
    norm = float(scale) ** 4
    pred_l = pred_code.transpose(0, 1)
    obs_l = obs_code.transpose(0, 1)
    v_l = valid.transpose(0, 1)  # (L, B, C, H, W)
    v_rep = v_l.repeat(1, reps, 1, 1, 1)  # member-major, as pred
    w = v_l.reshape(n_lead, 1, -1).to(torch.float32)
    out = []
    for thr in thresholds.tolist():
        # exact integer window counts, zeroed where there are no data (the sums run over data only);
        # dot products as float32 BLAS like fss_sums (relative error ~1e-7), carried on in float64
        f = box_sum((pred_l >= thr) & v_rep, scale).reshape(n_lead, reps, -1)
        o = box_sum((obs_l >= thr) & v_l, scale).reshape(n_lead, -1, 1)
        fw = f * w
        ff = (fw.unsqueeze(-2) @ f.unsqueeze(-1)).reshape(n_lead, reps).to(torch.float64).sum(-1)
        fo = torch.bmm(fw, o).reshape(n_lead, reps).to(torch.float64).sum(-1)
        ow = o * w.reshape(n_lead, -1, 1)
        oo = torch.bmm(ow.transpose(1, 2), o).reshape(n_lead).to(torch.float64) * reps
        out.append(torch.stack([ff, fo, oo], dim=-1) / norm)
    return torch.stack(out, dim=1)


def masked_frame_errors(
    pred_code: torch.Tensor, obs_code: torch.Tensor, valid: torch.Tensor, scale: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """MSE, MAE, RMSE and PSNR of each frame over its pixels with data, and the frame weights.

    Parameters
    ----------
    pred_code, obs_code : Tensor
        ``(N, L, C, H, W)`` in threshold-space units (any values where there are no data).
    valid : Tensor
        bool, broadcastable to ``obs_code``.
    scale : float
        Peak value of the threshold space (the PSNR's signal peak).

    Returns
    -------
    (dict of str to Tensor, Tensor)
        ``mse``, ``mae``, ``rmse``, ``psnr`` float64 ``(N, L)`` (0 for frames without data), and
        the weights ``(N, L)``: each frame's fraction of pixels with data.
    """
    n, n_lead = pred_code.shape[:2]
    v = valid.expand(obs_code.shape).reshape(n, n_lead, -1)
    diff = (pred_code - obs_code).reshape(n, n_lead, -1).masked_fill(~v, 0.0)
    count = v.sum(-1, dtype=torch.float64)
    safe = count.clamp_min(1.0)
    mse = (diff * diff).sum(-1, dtype=torch.float64) / safe
    mae = diff.abs().sum(-1, dtype=torch.float64) / safe
    rmse = mse.sqrt()
    floor = float(scale) * 10.0 ** (-PSNR_CAP_DB / 20.0)
    psnr = torch.where(count > 0, 20.0 * torch.log10(float(scale) / rmse.clamp_min(floor)), torch.zeros_like(rmse))
    return {"mse": mse, "mae": mae, "rmse": rmse, "psnr": psnr}, count / v.shape[-1]


def masked_ssim_frames(
    pred: torch.Tensor, obs: torch.Tensor, valid: torch.Tensor, data_range: float,
    window: int = WINDOW, sigma: float = SIGMA, backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM of each frame over the windows that lie entirely on pixels with data, and the frame weights.

    The SSIM map is that of :func:`~.ssim.ssim_frames` (11 x 11 Gaussian windows fully inside
    the frame, float32); its mean is taken over the windows whose every pixel has data, so
    the values at pixels without data (even NaN) never enter. For a covered rectangle this is
    the SSIM of the frame cropped to it.

    Parameters
    ----------
    pred, obs : Tensor
        ``(..., C, H, W)`` frames in the same units.
    valid : Tensor
        bool, broadcastable to ``obs``.
    data_range : float
        Dynamic range ``L`` of the values.
    window, sigma : int, float
        Gaussian window size and standard deviation (pixels).
    backend : {"auto", "cv2", "torch"}
        Filtering backend of :func:`~.ssim.ssim_map`.

    Returns
    -------
    (Tensor, Tensor)
        float64 SSIM of shape ``pred.shape[:-3]`` (channels pooled: the mean over all their
        complete windows; 0 for a frame without a complete window) and the weights: each
        frame's fraction of complete windows.
    """
    if pred.shape != obs.shape:
        raise ValueError(f"pred and obs shapes differ: {tuple(pred.shape)} vs {tuple(obs.shape)}")
    h, w = pred.shape[-2:]
    if h < window or w < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got {h}x{w}")
    valid = valid.expand(obs.shape)
    lead_shape = pred.shape[:-3]
    x = pred.masked_fill(~valid, 0.0).reshape(-1, h, w).to(torch.float32) / data_range
    y = obs.masked_fill(~valid, 0.0).reshape(-1, h, w).to(torch.float32) / data_range
    smap = ssim_map(x, y, window, sigma, backend)  # (S, h', w')
    full = box_sum((~valid).reshape(-1, h, w), window)  # pixels without data around each centre
    lo = window // 2
    full = full[:, lo : lo + smap.shape[-2], lo : lo + smap.shape[-1]] == 0  # window around that centre
    c = pred.shape[-3]
    n_win = full.reshape(-1, c, smap[0].numel()).sum((1, 2), dtype=torch.float64)
    total = torch.where(full, smap, torch.zeros_like(smap)).to(torch.float64).reshape(-1, c, smap[0].numel()).sum((1, 2))
    ssim = total / n_win.clamp_min(1.0)
    weight = n_win / float(c * smap[0].numel())
    return ssim.reshape(lead_shape), weight.reshape(lead_shape)
