"""DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095), data-prediction form.

The network output (v, eps or x0) is turned into ``x0_hat`` through the schedule,
so any trained DiffCast model can use it without retraining; with a
v-prediction model this is the "data prediction computed from v" variant.

With ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``,
``lambda_t = log(alpha_t / sigma_t)`` and ``h = lambda_t - lambda_s`` the
first-order update is (DPM-Solver++ eq. 8 / algorithm 1)::

    x_t = sigma_t / sigma_s x_s - alpha_t (exp(-h) - 1) D0

with ``D0 = x0_hat(s)``; the second- and third-order multistep updates add
finite-difference terms of the previous ``x0_hat`` (algorithm 2; the 3M form
follows the same multistep construction as diffusers' DPMSolverMultistepScheduler,
Apache-2.0, written from the equations). The order is lowered near the start
(too little history) and at the end (``lower_order_final``), and the step onto
the clean data (``sigma = 0``) returns ``x0_hat``.
"""

from __future__ import annotations

import math

import torch

from . import SAMPLERS
from .base import Sampler


class DPMSolverMultistep(Sampler):
    """DPM-Solver++ (multistep, data prediction) of a given order (1, 2 or 3)."""

    name = "dpmpp"

    def __init__(self, alphas_cumprod: torch.Tensor, order: int = 2, **kwargs) -> None:
        super().__init__(alphas_cumprod, **kwargs)
        if order not in (1, 2, 3):
            raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order!r}")
        self.order = order
        self._history: list[tuple[float, torch.Tensor]] = []

    def _reset_state(self) -> None:
        self._history = []

    def _lam(self, t: int) -> float:
        a = self.abar(t)
        return 0.5 * (math.log(a) - math.log1p(-a))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        i = self._next_index(timestep)
        s, t = self._grid[i], self._prev[i]
        x0, _ = self.convert_model_output(model_output, s, sample)
        lam_s = self._lam(s)
        self._history = ([(lam_s, x0)] + self._history)[:3]
        if t < 0:
            return x0
        n = len(self._grid)
        order = min(self.order, len(self._history), n - i)
        a_s, a_t = self.abar(s), self.abar(t)
        alpha_t, sigma_t, sigma_s = math.sqrt(a_t), math.sqrt(1 - a_t), math.sqrt(1 - a_s)
        lam_t = self._lam(t)
        h = lam_t - lam_s
        phi = math.expm1(-h)  # exp(-h) - 1
        m0 = x0
        out = (sigma_t / sigma_s) * sample - (alpha_t * phi) * m0
        if order >= 2:
            lam_1, m1 = self._history[1]
            r0 = (lam_s - lam_1) / h
            d1_0 = (m0 - m1) / r0
            if order == 2:
                out = out - (0.5 * alpha_t * phi) * d1_0
            else:
                lam_2, m2 = self._history[2]
                r1 = (lam_1 - lam_2) / h
                d1_1 = (m1 - m2) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                out = out + (alpha_t * (phi / h + 1.0)) * d1 - (alpha_t * ((phi + h) / h**2 - 0.5)) * d2
        return out


@SAMPLERS.register("dpmpp_1")
class DPMSolverPP1(DPMSolverMultistep):
    """First-order DPM-Solver++ (equivalent to deterministic DDIM)."""

    name = "dpmpp_1"

    def __init__(self, alphas_cumprod: torch.Tensor, **kwargs) -> None:
        super().__init__(alphas_cumprod, order=1, **kwargs)


@SAMPLERS.register("dpmpp_2m")
class DPMSolverPP2M(DPMSolverMultistep):
    """DPM-Solver++(2M): second-order multistep, data prediction."""

    name = "dpmpp_2m"

    def __init__(self, alphas_cumprod: torch.Tensor, **kwargs) -> None:
        super().__init__(alphas_cumprod, order=2, **kwargs)


@SAMPLERS.register("dpmpp_3m")
class DPMSolverPP3M(DPMSolverMultistep):
    """DPM-Solver++(3M): third-order multistep, data prediction."""

    name = "dpmpp_3m"

    def __init__(self, alphas_cumprod: torch.Tensor, **kwargs) -> None:
        super().__init__(alphas_cumprod, order=3, **kwargs)
