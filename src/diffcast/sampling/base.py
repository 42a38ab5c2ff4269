"""Common machinery of the samplers: timestep respacing and objective conversion.

A sampler sees only tensors and the schedule's ``alphas_cumprod`` (never a
model). The loop reads as in diffusers::

    sampler = SAMPLERS.build("ddim", alphas_cumprod=abar, prediction_type="v")
    sampler.set_timesteps(50)
    x = noise
    for t in sampler.timesteps:
        x = sampler.step(denoiser(x, t), t, x, generator=gen)

Timestep respacing (``timestep_spacing``), for ``n`` of ``T`` training steps.
Every sampler visits the listed timesteps in order; the step taken at
``timesteps[i]`` lands on ``timesteps[i + 1]``, and the last step lands on the
clean data (``abar = 1``, written ``t = -1``). The pairs come from the list
itself, never from ``t - T // n``, so nothing is truncated inconsistently.

``"trailing"`` (default)
    ``t_i = round(T - i T / n) - 1``: starts at ``T - 1`` (the training noise
    level) and ends at ``round(T / n) - 1`` (Lin et al. 2024, "Common diffusion
    noise schedules and sample steps are flawed", table 2).
``"leading"``
    ``t_i = (n - 1 - i) (T // n)``: ends at 0 but starts below ``T - 1``.
``"linspace"``
    ``round(linspace(T - 1, 0, n))``: both ends included.
``"diffcast"``
    The original DiffCast / denoising-diffusion-pytorch DDIM respacing:
    ``times = int(linspace(-1, T - 1, n + 1))`` (truncation toward zero),
    reversed, consecutive pairs ``(t, t_next)``; the last pair ends at ``-1``.
    For ``n = 250, T = 1000`` it equals ``"trailing"``.
``"karras"``
    Karras et al. 2022 (EDM, eq. 5, ``rho = 7``) in the noise level
    ``sigma_t = sqrt((1 - abar_t) / abar_t)`` of the training schedule, from
    ``min(sigma_{T-1}, 80)`` down to ``sigma_0``, each mapped to the training timestep
    of the nearest ``log sigma``, the first replaced by ``T - 1``: many steps at low
    noise, where fine detail forms.
``"logsnr"``
    Uniform in half log-SNR ``lambda_t = log(sqrt(abar_t / (1 - abar_t)))`` over the
    same range (the time-uniform grid of DPM-Solver, Lu et al. 2022), nearest training
    timestep, the first replaced by ``T - 1``.

``"logsnr_trailing"``
    The ``logsnr`` grid without its clean end point: ``n`` points uniform in half
    log-SNR from the top down to one step above ``lambda_0`` (``frac = i / n``), so the
    last step jumps from there to the clean data. For few-step samplers (distilled
    students): ``logsnr`` with 2 steps is ``[T - 1, 0]``, whose second step, from
    ``t = 0``, does nothing.

The last three need the schedule (``alphas_cumprod``); when neighbouring noise levels
fall on the same training timestep, neighbours are moved apart by one step, so the
grid stays strictly decreasing.
"""

from __future__ import annotations

import math

import torch

SPACINGS = ("trailing", "leading", "linspace", "diffcast", "karras", "logsnr", "logsnr_trailing")
#: Karras et al. (2022) rho of the ``"karras"`` spacing.
KARRAS_RHO = 7.0
#: Largest noise level of the ``"karras"`` and ``"logsnr"`` grids below ``t = T - 1``
#: (EDM's ``sigma_max``; the grid itself always starts at ``T - 1``).
SIGMA_MAX = 80.0

_PREDICTION_ALIASES = {
    "eps": "eps",
    "epsilon": "eps",
    "pred_noise": "eps",
    "x0": "x0",
    "sample": "x0",
    "pred_x0": "x0",
    "v": "v",
    "v_prediction": "v",
    "pred_v": "v",
}


def canonical_prediction_type(name: str) -> str:
    """``"eps"``, ``"x0"`` or ``"v"`` for any of their diffusers / lucidrains names."""
    try:
        return _PREDICTION_ALIASES[str(name)]
    except KeyError:
        raise ValueError(
            f"unknown prediction_type {name!r}; choose one of: eps, x0, v "
            "(or epsilon, sample, v_prediction)"
        ) from None


def _nearest_timesteps(log_sigma_train: torch.Tensor, log_sigma: torch.Tensor) -> list[int]:
    """Training timesteps nearest to the decreasing targets ``log_sigma``, strictly decreasing;
    the first is always ``T - 1`` (sampling starts from pure noise, the training end point)."""
    idx = (log_sigma[:, None] - log_sigma_train[None, :]).abs().argmin(dim=1).tolist()
    idx[0] = len(log_sigma_train) - 1
    # Ties (several targets on one training step, at either end of a steep schedule): move
    # the less noisy one down, then lift any step pushed below 0 back up.
    for i in range(1, len(idx)):
        idx[i] = min(idx[i], idx[i - 1] - 1)
    idx[-1] = max(idx[-1], 0)
    for i in range(len(idx) - 2, -1, -1):
        idx[i] = max(idx[i], idx[i + 1] + 1)
    return idx


def respace(
    spacing: str, num_train_timesteps: int, steps: int, alphas_cumprod: torch.Tensor | None = None
) -> tuple[list[int], list[int]]:
    """Timesteps and the timestep each one steps to (``-1`` = clean data).

    Parameters
    ----------
    spacing : str
        One of :data:`SPACINGS`.
    num_train_timesteps : int
        ``T``, the number of training diffusion steps.
    steps : int
        Number of sampling steps, ``1 <= steps <= T``.
    alphas_cumprod : Tensor, optional
        ``(T,)`` training schedule; needed by ``"karras"`` and ``"logsnr"``.

    Returns
    -------
    timesteps, prev : list of int
        Both of length ``steps``; ``timesteps`` strictly decreasing,
        ``prev[i] = timesteps[i + 1]`` and ``prev[-1] = -1``.
    """
    T = int(num_train_timesteps)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"number of sampling steps must be an integer in [1, {T}], got {steps!r}")
    if spacing == "trailing":
        ts = [int(round(T - i * T / steps)) - 1 for i in range(steps)]
    elif spacing == "leading":
        ts = [(steps - 1 - i) * (T // steps) for i in range(steps)]
    elif spacing == "linspace":
        ts = [int(round(v)) for v in torch.linspace(T - 1, 0, steps, dtype=torch.float64).tolist()]
    elif spacing == "diffcast":
        # float32 linspace and int() truncation toward zero, as the original.
        times = list(reversed(torch.linspace(-1, T - 1, steps + 1).int().tolist()))
        ts, prev = times[:-1], times[1:]
        if prev[-1] != -1:
            raise ValueError("diffcast spacing must end at -1")  # cannot happen for steps <= T
        return ts, prev
    elif spacing in ("karras", "logsnr", "logsnr_trailing"):
        if alphas_cumprod is None or len(alphas_cumprod) != T:
            raise ValueError(f"timestep_spacing {spacing!r} needs the training schedule (alphas_cumprod of length {T})")
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        log_sigma = 0.5 * (torch.log1p(-abar) - torch.log(abar))  # increasing in t
        # Schedules that end at abar ~ 0 (sigmoid, cosine: sigma_{T-1} ~ 1e3-1e4) would spend
        # half the grid where the signal is already gone; cap the top at EDM's sigma_max.
        hi = torch.clamp(log_sigma[-1], max=math.log(SIGMA_MAX))
        lo = log_sigma[0]
        if spacing == "logsnr_trailing":
            frac = torch.arange(steps, dtype=torch.float64) / steps
        else:
            frac = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        if spacing == "karras":
            inv = 1.0 / KARRAS_RHO
            s_hi, s_lo = hi.exp() ** inv, lo.exp() ** inv
            target = KARRAS_RHO * torch.log(s_hi + frac * (s_lo - s_hi))
        else:
            target = hi + frac * (lo - hi)
        ts = _nearest_timesteps(log_sigma, target)
        if ts[0] > T - 1:
            raise ValueError(f"timestep spacing {spacing!r} cannot place {steps} distinct steps in {T}")
    else:
        raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    if any(a <= b for a, b in zip(ts[:-1], ts[1:])):
        raise ValueError(f"timestep spacing {spacing!r} with {steps} steps gives repeated timesteps")
    return ts, ts[1:] + [-1]


def randn_like(sample: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``sample``, drawn on the generator's device."""
    device = generator.device if generator is not None else sample.device
    z = torch.randn(sample.shape, generator=generator, device=device, dtype=sample.dtype)
    return z.to(sample.device)


class Sampler:
    """Base class: respacing, objective conversion, ``add_noise``.

    Parameters
    ----------
    alphas_cumprod : Tensor
        ``(T,)`` cumulative products ``abar_t`` of the training schedule
        (float64 preferred; kept in float64 internally).
    prediction_type : str
        What the network outputs: ``"v"``, ``"eps"`` or ``"x0"`` (diffusers
        names accepted).
    timestep_spacing : str
        See the module docstring.
    clip_sample : bool
        Clamp the predicted ``x0`` to ``[-clip_range, clip_range]`` (and
        re-derive the noise from it) before each update.
    clip_range : float
        Bound for ``clip_sample``.
    """

    #: registry name; set by subclasses
    name = "base"
    #: whether ``step`` draws noise (ancestral / SDE samplers)
    stochastic = False
    #: whether the sampler has an ``eta`` parameter
    accepts_eta = False
    #: model evaluations per respaced step
    evals_per_step = 1

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "v",
        timestep_spacing: str = "trailing",
        clip_sample: bool = True,
        clip_range: float = 1.0,
    ) -> None:
        abar = torch.as_tensor(alphas_cumprod).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        if abar.numel() < 2 or not torch.all((abar > 0) & (abar < 1)):
            raise ValueError("alphas_cumprod must be a 1-D tensor of values in (0, 1) with at least 2 entries")
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"unknown timestep_spacing {timestep_spacing!r}; choose one of: {', '.join(SPACINGS)}")
        if clip_range <= 0:
            raise ValueError(f"clip_range must be > 0, got {clip_range}")
        self.alphas_cumprod = abar
        self.num_train_timesteps = int(abar.numel())
        self.prediction_type = canonical_prediction_type(prediction_type)
        self.timestep_spacing = timestep_spacing
        self.clip_sample = bool(clip_sample)
        self.clip_range = float(clip_range)
        self.init_noise_sigma = 1.0
        # Coefficient tables as the original keeps them: float64 formulas, float32 storage.
        self._sqrt_a = abar.sqrt().float()
        self._sqrt_1ma = (1 - abar).sqrt().float()
        self._sqrt_recip = torch.sqrt(1.0 / abar).float()
        self._sqrt_recipm1 = torch.sqrt(1.0 / abar - 1).float()
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.long)
        self._grid: list[int] = []
        self._prev: list[int] = []
        self._step_index = 0

    # --------------------------------------------------------------- timesteps
    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Choose ``num_inference_steps`` sampling steps; resets the sampler's state."""
        ts, prev = respace(self.timestep_spacing, self.num_train_timesteps, num_inference_steps, self.alphas_cumprod)
        self.num_inference_steps = num_inference_steps
        self._grid, self._prev = ts, prev
        self.timesteps = torch.tensor(self._schedule(ts, prev), dtype=torch.long, device=device)
        self._step_index = 0
        self._reset_state()

    def set_grid(self, timesteps: list[int], final: int = -1, device: torch.device | str | None = None) -> None:
        """Step through an explicit grid: ``timesteps`` (strictly decreasing training steps),
        the last step landing on ``final`` (``-1``: the clean data; a training step: a noisy
        sample there, e.g. for integrating one interval of the ODE). Resets the state."""
        ts = [int(t) for t in timesteps]
        grid = ts + [int(final)]
        if not ts or any(a <= b for a, b in zip(grid[:-1], grid[1:])) or ts[0] >= self.num_train_timesteps or final < -1:
            raise ValueError(f"grid {grid} must decrease strictly from at most {self.num_train_timesteps - 1} to >= -1")
        self.num_inference_steps = len(ts)
        self._grid, self._prev = ts, ts[1:] + [int(final)]
        self.timesteps = torch.tensor(self._schedule(self._grid, self._prev), dtype=torch.long, device=device)
        self._step_index = 0
        self._reset_state()

    def _schedule(self, ts: list[int], prev: list[int]) -> list[int]:
        """The timesteps the model is evaluated at (one per grid step by default)."""
        return list(ts)

    def _reset_state(self) -> None:
        """Clear solver history (multistep samplers)."""

    def _next_index(self, t: int | torch.Tensor) -> int:
        t = int(t)
        i = self._step_index
        if not len(self.timesteps):
            raise ValueError(f"{type(self).__name__}.step() called before set_timesteps()")
        if i >= len(self.timesteps) or int(self.timesteps[i]) != t:
            expected = int(self.timesteps[i]) if i < len(self.timesteps) else "none (loop finished)"
            raise ValueError(
                f"{type(self).__name__}.step() got t={t} but the next timestep is {expected}; "
                "step through sampler.timesteps in order and call set_timesteps() before each loop"
            )
        self._step_index += 1
        return i

    def abar(self, t: int) -> float:
        """``abar_t`` as a Python float (1.0 for ``t < 0``, the clean data)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    # --------------------------------------------------------------- objectives
    def convert_model_output(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0_hat, eps_hat)`` from the network output at step ``t`` (a scalar int).

        Uses the original DiffCast formulas (denoising-diffusion-pytorch,
        MIT): ``x0 = sqrt(abar) x - sqrt(1 - abar) v``; after optional clamping,
        ``eps = (sqrt(1/abar) x - x0) / sqrt(1/abar - 1)``.
        """
        t = int(t)
        dt = sample.dtype
        sa, s1 = self._sqrt_a[t].to(dt), self._sqrt_1ma[t].to(dt)
        sr, srm1 = self._sqrt_recip[t].to(dt), self._sqrt_recipm1[t].to(dt)
        if self.prediction_type == "eps":
            eps = model_output
            x0 = sr * sample - srm1 * eps
        elif self.prediction_type == "x0":
            x0 = model_output
            eps = None
        else:
            x0 = sa * sample - s1 * model_output
            eps = None
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
            eps = None
        if eps is None:
            eps = (sr * sample - x0) / srm1
        return x0, eps

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """Forward process ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (DDPM eq. 4).

        ``timesteps`` is an int or a ``(B,)`` tensor (one per leading index).
        """
        t = torch.as_tensor(timesteps, device="cpu").long().reshape(-1)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        a = self.alphas_cumprod[t].sqrt().to(original_samples.dtype).to(original_samples.device).reshape(shape)
        s = (1 - self.alphas_cumprod[t]).sqrt().to(original_samples.dtype).to(original_samples.device).reshape(shape)
        return a * original_samples + s * noise

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """Identity (diffusers API compatibility: VP samplers need no input scaling)."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One update from ``timestep`` to the next listed timestep; returns the new sample."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(T={self.num_train_timesteps}, prediction_type={self.prediction_type!r}, "
            f"timestep_spacing={self.timestep_spacing!r}, clip_sample={self.clip_sample}, "
            f"steps={self.num_inference_steps})"
        )


def _sqrt(x: float) -> float:
    return math.sqrt(max(x, 0.0))
