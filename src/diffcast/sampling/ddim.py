"""DDIM sampling (Song et al. 2021, eq. 12), as DiffCast uses it."""

from __future__ import annotations

import math

import torch

from . import SAMPLERS
from .base import Sampler, randn_like


@SAMPLERS.register("ddim")
class DDIMSampler(Sampler):
    """DDIM with stochasticity ``eta`` (0 = deterministic).

    At each pair ``(t, t_next)``: ``x0_hat`` (clamped when ``clip_sample``), the
    noise re-derived from it, then (DDIM eq. 12)
    ``x = sqrt(abar_next) x0 + sqrt(1 - abar_next - sigma^2) eps + sigma z`` with
    ``sigma = eta sqrt((1 - abar_t / abar_next) (1 - abar_next) / (1 - abar_t))``;
    the last pair returns ``x0_hat``. With ``timestep_spacing="diffcast"`` and
    ``prediction_type="v"`` this is the computation of the published DiffCast
    model. Unlike the original, no ``z`` is drawn when ``sigma = 0``, so the
    random stream differs (pass the initial noise to reproduce a sample).

    Parameters
    ----------
    eta : float
        0 gives the deterministic DDIM; 1 the DDPM-like ancestral variance.
    """

    name = "ddim"
    accepts_eta = True

    def __init__(self, alphas_cumprod: torch.Tensor, eta: float = 0.0, **kwargs) -> None:
        super().__init__(alphas_cumprod, **kwargs)
        if not (isinstance(eta, (int, float)) and eta >= 0):
            raise ValueError(f"eta must be a number >= 0, got {eta!r}")
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        i = self._next_index(timestep)
        t, t_next = self._grid[i], self._prev[i]
        x0, eps = self.convert_model_output(model_output, t, sample)
        if t_next < 0:
            return x0
        a, a_next = self.abar(t), self.abar(t_next)
        sigma = self.eta * math.sqrt(max((1 - a / a_next) * (1 - a_next) / (1 - a), 0.0))
        c = math.sqrt(max(1 - a_next - sigma**2, 0.0))
        out = x0 * math.sqrt(a_next) + c * eps
        if sigma > 0:
            out = out + sigma * randn_like(sample, generator)
        return out
