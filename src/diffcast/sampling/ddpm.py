"""Ancestral DDPM sampling (Ho et al. 2020, algorithm 2) on a respaced grid."""

from __future__ import annotations

import math

import torch

from . import SAMPLERS
from .base import Sampler, randn_like


@SAMPLERS.register("ddpm")
class DDPMSampler(Sampler):
    """Ancestral sampler: ``x_prev ~ q(x_prev | x_t, x0_hat)``.

    On a respaced grid the step from ``t`` to ``p`` uses the effective
    ``beta = 1 - abar_t / abar_p`` (Nichol & Dhariwal 2021, sec. 4); the
    posterior mean is ``c1 x0_hat + c2 x_t`` with ``c1 = sqrt(abar_p) beta / (1 - abar_t)``,
    ``c2 = sqrt(1 - beta) (1 - abar_p) / (1 - abar_t)`` and the variance is
    ``beta (1 - abar_p) / (1 - abar_t)`` (DDPM eq. 7). The last step returns
    ``x0_hat``. With all ``T`` steps this is the original ancestral sampler.
    """

    name = "ddpm"
    stochastic = True

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        i = self._next_index(timestep)
        t, p = self._grid[i], self._prev[i]
        x0, _ = self.convert_model_output(model_output, t, sample)
        a_t, a_p = self.abar(t), self.abar(p)
        if p < 0:
            return x0
        beta = 1.0 - a_t / a_p
        c1 = math.sqrt(a_p) * beta / (1.0 - a_t)
        c2 = math.sqrt(1.0 - beta) * (1.0 - a_p) / (1.0 - a_t)
        var = beta * (1.0 - a_p) / (1.0 - a_t)
        mean = c1 * x0 + c2 * sample
        return mean + math.sqrt(max(var, 0.0)) * randn_like(sample, generator)
