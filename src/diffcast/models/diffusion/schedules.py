"""Noise schedules and diffusion objectives, as pure functions of the config.

Everything here is recomputed from a few config values (``schedule``,
``timesteps``, ``objective``, ``min_snr_gamma``); nothing is ever read back from
a weights file. Schedules are computed in float64 (``sigmoid_official`` keeps
the original's two float32 end points, so that converted checkpoints get its
exact schedule) and handed out as float64 (the samplers keep float64
internally) or float32 (the 13 buffers of the original implementation, see
:func:`schedule_buffers`).

Notation: ``abar_t`` = alphas_cumprod[t], ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
(DDPM eq. 4), ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022,
progressive distillation, appendix D).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ...sampling.base import _PREDICTION_ALIASES

SCHEDULES = ("linear", "cosine", "sigmoid", "sigmoid_official")
OBJECTIVES = ("eps", "x0", "v")

# diffusers' and lucidrains' names for the objectives: one table, kept with the samplers
# (models may import sampling, never the other way round).
_OBJECTIVE_ALIASES = _PREDICTION_ALIASES


def canonical_objective(name: str) -> str:
    """Map an objective / prediction-type name to ``"eps"``, ``"x0"`` or ``"v"``.

    Accepts the diffusers names (``epsilon``, ``sample``, ``v_prediction``) and
    the denoising-diffusion-pytorch names (``pred_noise``, ``pred_x0``, ``pred_v``).
    """
    try:
        return _OBJECTIVE_ALIASES[str(name)]
    except KeyError:
        raise ValueError(
            f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)} "
            "(or the diffusers names epsilon, sample, v_prediction)"
        ) from None


def linear_beta_schedule(timesteps: int) -> torch.Tensor:
    """Linear betas of DDPM (Ho et al. 2020), rescaled so any ``timesteps`` spans the same range.

    Returns
    -------
    Tensor
        ``(timesteps,)`` float64.
    """
    scale = 1000.0 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas clipped to 0.999.

    Returns
    -------
    Tensor
        ``(timesteps,)`` float64.
    """
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    abar = torch.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2
    abar = abar / abar[0]
    return torch.clip(1 - abar[1:] / abar[:-1], 0, 0.999)


def _sigmoid_betas(
    timesteps: int, start: float, end: float, tau: float, endpoint_dtype: torch.dtype
) -> torch.Tensor:
    """Sigmoid-schedule betas; ``sigmoid(start/tau)`` and ``sigmoid(end/tau)`` and their difference in ``endpoint_dtype``."""
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau, dtype=endpoint_dtype).sigmoid()
    v_end = torch.tensor(end / tau, dtype=endpoint_dtype).sigmoid()
    # The casts are written out: float64 - float64(v_end), divided by float64(v_end - v_start)
    # with the subtraction done in endpoint_dtype (what torch's type promotion does with 0-dim
    # float32 tensors in the original).
    abar = (-((t * (end - start) + start) / tau).sigmoid() + v_end.double()) / (v_end - v_start).double()
    abar = abar / abar[0]
    return torch.clip(1 - abar[1:] / abar[:-1], 0, 0.999)


def sigmoid_beta_schedule(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid schedule (Jabri et al. 2022, arXiv:2212.11972, fig. 8): DiffCast's schedule.

    ``abar(s) = (sigmoid(end/tau) - sigmoid((s (end - start) + start) / tau)) /
    (sigmoid(end/tau) - sigmoid(start/tau))`` on ``s = linspace(0, 1, T+1)``,
    normalised by its first value; ``beta = clip(1 - abar[1:] / abar[:-1], 0, 0.999)``.
    Computed in float64 throughout (our default for training). The original
    DiffCast code evaluates the two end points in float32: see
    :func:`sigmoid_official_beta_schedule`.

    Returns
    -------
    Tensor
        ``(timesteps,)`` float64.
    """
    return _sigmoid_betas(timesteps, start, end, tau, torch.float64)


def sigmoid_official_beta_schedule(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0
) -> torch.Tensor:
    """The sigmoid schedule with the original DiffCast / denoising-diffusion-pytorch arithmetic.

    Same formula as :func:`sigmoid_beta_schedule`, but ``sigmoid(start/tau)``,
    ``sigmoid(end/tau)`` and their difference are float32 (the original builds
    them with ``torch.tensor(start / tau).sigmoid()`` under the default float32
    dtype) inside an otherwise float64 computation. The betas differ from the
    float64 schedule by up to ~1.3e-5 relative (step 998 of 1000), enough to
    matter when checking a published checkpoint's buffers; converted official
    checkpoints use this schedule so they sample exactly as the original.
    Ported from denoising-diffusion-pytorch (Phil Wang, MIT licence) via DiffCast.

    Returns
    -------
    Tensor
        ``(timesteps,)`` float64.
    """
    return _sigmoid_betas(timesteps, start, end, tau, torch.float32)


_BETA_FNS = {
    "linear": linear_beta_schedule,
    "cosine": cosine_beta_schedule,
    "sigmoid": sigmoid_beta_schedule,
    "sigmoid_official": sigmoid_official_beta_schedule,
}

#: The two arithmetic variants of the sigmoid schedule (the converter accepts a file of either).
SIGMOID_VARIANTS = ("sigmoid", "sigmoid_official")


def make_betas(schedule: str = "sigmoid", timesteps: int = 1000, **kwargs: float) -> torch.Tensor:
    """Betas ``(timesteps,)`` float64 of a named schedule (one of :data:`SCHEDULES`).

    ``sigmoid`` is computed in float64 throughout; ``sigmoid_official`` is the
    original DiffCast / denoising-diffusion-pytorch arithmetic (float32 sigmoid
    end points), used for converted official checkpoints.
    """
    if schedule not in _BETA_FNS:
        raise ValueError(f"unknown noise schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if not isinstance(timesteps, int) or timesteps < 2:
        raise ValueError(f"timesteps must be an integer >= 2, got {timesteps!r}")
    return _BETA_FNS[schedule](timesteps, **kwargs)


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """``abar_t = prod_{s <= t} (1 - beta_s)`` in the dtype of ``betas``."""
    return torch.cumprod(1.0 - betas, dim=0)


def loss_weight(alphas_cumprod: torch.Tensor, objective: str, min_snr_gamma: float | None = None) -> torch.Tensor:
    """Per-step weight of the objective's MSE (denoising-diffusion-pytorch convention).

    With ``snr = abar / (1 - abar)`` the weights are ``1`` (eps), ``snr`` (x0) and
    ``snr / (snr + 1)`` (v), which all turn the objective's MSE into the
    epsilon-MSE; ``min_snr_gamma`` replaces the numerator ``snr`` by
    ``min(snr, gamma)`` (Min-SNR weighting, Hang et al. 2023, arXiv:2303.09556).

    Returns
    -------
    Tensor
        ``(T,)`` in the dtype of ``alphas_cumprod``.
    """
    objective = canonical_objective(objective)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = snr.clamp(max=float(min_snr_gamma)) if min_snr_gamma is not None else snr
    if objective == "eps":
        return clipped / snr
    if objective == "x0":
        return clipped
    return clipped / (snr + 1)


def schedule_buffers(
    schedule: str = "sigmoid",
    timesteps: int = 1000,
    objective: str = "v",
    min_snr_gamma: float | None = None,
    **schedule_kwargs: float,
) -> dict[str, torch.Tensor]:
    """The 13 derived tensors of the original implementation, float64 -> float32.

    Names as in the published checkpoint (``betas``, ``alphas_cumprod``,
    ``alphas_cumprod_prev``, ``sqrt_alphas_cumprod``,
    ``sqrt_one_minus_alphas_cumprod``, ``log_one_minus_alphas_cumprod``,
    ``sqrt_recip_alphas_cumprod``, ``sqrt_recipm1_alphas_cumprod``,
    ``posterior_variance``, ``posterior_log_variance_clipped``,
    ``posterior_mean_coef1``, ``posterior_mean_coef2``, ``loss_weight``); each
    ``(timesteps,)`` float32, every formula evaluated in float64 first.
    """
    betas = make_betas(schedule, timesteps, **schedule_kwargs)
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, dim=0)
    abar_prev = F.pad(abar[:-1], (1, 0), value=1.0)
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)  # DDPM eq. 7
    out = {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": abar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
        "log_one_minus_alphas_cumprod": torch.log(1.0 - abar),
        "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / abar - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": torch.log(post_var.clamp(min=1e-20)),
        "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        "loss_weight": loss_weight(abar, objective, min_snr_gamma),
    }
    return {k: v.to(torch.float32) for k, v in out.items()}


BUFFER_NAMES = tuple(schedule_buffers("linear", 2).keys())


# ---------------------------------------------------------------- objectives
def _coef(values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` broadcast against ``like`` (batch dimension first), in ``like``'s dtype."""
    if not torch.is_tensor(t):
        t = torch.tensor([int(t)], device=values.device)
    t = t.to(values.device).long().reshape(-1)
    out = values[t].to(device=like.device, dtype=like.dtype)
    if out.numel() == 1:
        return out.reshape((1,) * like.ndim)
    if out.numel() != like.shape[0]:
        raise ValueError(f"got {out.numel()} timesteps for a batch of {like.shape[0]}")
    return out.reshape(-1, *((1,) * (like.ndim - 1)))


def q_sample(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """Forward process ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (DDPM eq. 4)."""
    a = _coef(alphas_cumprod.sqrt(), t, x0)
    s = _coef((1 - alphas_cumprod).sqrt(), t, x0)
    return a * x0 + s * noise


def objective_target(
    objective: str, alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int
) -> torch.Tensor:
    """What a network trained with ``objective`` should output: eps, x0 or v."""
    objective = canonical_objective(objective)
    if objective == "eps":
        return noise
    if objective == "x0":
        return x0
    a = _coef(alphas_cumprod.sqrt(), t, x0)
    s = _coef((1 - alphas_cumprod).sqrt(), t, x0)
    return a * noise - s * x0


def predict_x0_eps(
    objective: str,
    alphas_cumprod: torch.Tensor,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor | int,
    clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert an objective: ``(x0_hat, eps_hat)`` from a network output at step ``t``.

    If ``clip`` is given, ``x0_hat`` is clamped to ``[-clip, clip]`` and ``eps_hat``
    re-derived from the clamped ``x0_hat`` (as DiffCast's DDIM does).
    """
    objective = canonical_objective(objective)
    sqrt_a = _coef(alphas_cumprod.sqrt(), t, x_t)
    sqrt_1ma = _coef((1 - alphas_cumprod).sqrt(), t, x_t)
    if objective == "eps":
        eps = model_output
        x0 = (x_t - sqrt_1ma * eps) / sqrt_a
    elif objective == "x0":
        x0 = model_output
        eps = (x_t - sqrt_a * x0) / sqrt_1ma
    else:
        x0 = sqrt_a * x_t - sqrt_1ma * model_output
        eps = sqrt_1ma * x_t + sqrt_a * model_output
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x_t - sqrt_a * x0) / sqrt_1ma
    return x0, eps
