"""Heun's second-order predictor-corrector for the probability-flow ODE.

Two forms, both with two model evaluations per step (Euler predictor, then a
corrector using the model at the predicted point):

``"heun"`` (exponential form, recommended)
    The predictor is the exponential-integrator Euler step (= DDIM, eta 0); the
    corrector integrates exactly the linear interpolation, in
    ``lambda = log(alpha / sigma)``, of the two data predictions (the
    trapezoidal idea of Heun in the exponential-integrator framework of
    DPM-Solver, Lu et al. 2022, and DEIS, Zhang & Chen 2023)::

        x_p = sigma_p / sigma_i x_i + alpha_p [ (1 - e^-h) D_i + (h - 1 + e^-h) / h (D_p - D_i) ]

    with ``h = lambda_p - lambda_i``. It stays accurate when one step spans a
    huge noise range, as the first step does on the sigmoid/cosine schedules.
``"heun_edm"`` (Karras et al. 2022, "EDM", algorithm 1)
    Euler + trapezoid in the variance-exploding coordinates ``y = x / sqrt(abar)``,
    ``sigma = sqrt((1 - abar) / abar)``, ``dy / dsigma = (y - x0_hat) / sigma``.
    EDM pairs it with a sigma grid of ratio close to one; on the integer grid of
    a VP schedule whose last beta is clipped (sigma_999 ~ 1800 for the sigmoid
    schedule vs ~ 60 at t = 998) the first trapezoid step is badly wrong, so
    use it only with the linear schedule.

Because the network is trained on integer steps, both use the respaced integer
grid; the step onto the clean data (``sigma = 0``) is a single Euler step (x0_hat).

Following the diffusers contract (one ``step`` per model evaluation), the
evaluated timesteps are ``[t_0, t_1, t_1, t_2, t_2, ..., t_{n-1}]``: the
repeated entry is the correction evaluation (2 n - 1 evaluations for n steps).
"""

from __future__ import annotations

import math

import torch

from . import SAMPLERS
from .base import Sampler


class _Heun(Sampler):
    """Deterministic Heun predictor-corrector on the respaced integer grid."""

    evals_per_step = 2
    exponential = True

    def _schedule(self, ts: list[int], prev: list[int]) -> list[int]:
        out: list[int] = []
        self._stage: list[tuple[int, int]] = []  # (grid index, 0 = Euler / 1 = correction)
        for i, (t, p) in enumerate(zip(ts, prev)):
            out.append(t)
            self._stage.append((i, 0))
            if p >= 0:
                out.append(p)
                self._stage.append((i, 1))
        return out

    def _reset_state(self) -> None:
        self._saved: tuple[torch.Tensor, torch.Tensor] | None = None

    def _sigma(self, t: int) -> float:
        a = self.abar(t)
        return math.sqrt((1 - a) / a)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        k = self._next_index(timestep)
        i, stage = self._stage[k]
        t, p = self._grid[i], self._prev[i]
        x0, _ = self.convert_model_output(model_output, int(timestep), sample)
        if self.exponential:
            return self._step_exponential(stage, t, p, x0, sample)
        if stage == 0:
            if p < 0:
                return x0  # Euler step onto sigma = 0 gives x0_hat
            s_i, s_p = self._sigma(t), self._sigma(p)
            y = sample / math.sqrt(self.abar(t))
            d = (y - x0) / s_i
            self._saved = (y, d)
            y_euler = y + (s_p - s_i) * d
            return y_euler * math.sqrt(self.abar(p))
        # correction at t_{i+1} = p
        if self._saved is None:
            raise ValueError("HeunSampler: correction step without a preceding Euler step")
        y, d = self._saved
        self._saved = None
        s_i, s_p = self._sigma(t), self._sigma(p)
        y_euler = sample / math.sqrt(self.abar(p))
        d_p = (y_euler - x0) / s_p
        y_new = y + (s_p - s_i) * 0.5 * (d + d_p)
        return y_new * math.sqrt(self.abar(p))

    def _lam(self, t: int) -> float:
        a = self.abar(t)
        return 0.5 * (math.log(a) - math.log1p(-a))

    def _step_exponential(self, stage: int, t: int, p: int, x0: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        if p < 0:
            if stage:
                raise ValueError("HeunSampler: no correction onto the clean data")
            return x0
        a_t, a_p = self.abar(t), self.abar(p)
        ratio = math.sqrt((1 - a_p) / (1 - a_t))
        h = self._lam(p) - self._lam(t)
        alpha_p = math.sqrt(a_p)
        one_m = -math.expm1(-h)  # 1 - exp(-h)
        if stage == 0:
            self._saved = (sample, x0)
            return ratio * sample + (alpha_p * one_m) * x0
        if self._saved is None:
            raise ValueError("HeunSampler: correction step without a preceding Euler step")
        x_i, d_i = self._saved
        self._saved = None
        w = (h - one_m) / h  # (h - 1 + e^-h) / h
        return ratio * x_i + alpha_p * (one_m * d_i + w * (x0 - d_i))


@SAMPLERS.register("heun")
class HeunSampler(_Heun):
    """Heun predictor-corrector in exponential-integrator form (see module docstring)."""

    name = "heun"
    exponential = True


@SAMPLERS.register("heun_edm")
class HeunEDMSampler(_Heun):
    """EDM Heun in variance-exploding coordinates (see module docstring)."""

    name = "heun_edm"
    exponential = False
