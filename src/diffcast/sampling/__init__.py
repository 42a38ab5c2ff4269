"""Samplers with the diffusers contract (``set_timesteps``, ``timesteps``, ``step``).

No model imports here: samplers see only tensors and a noise schedule.
Registered names: ``ddpm`` (ancestral), ``ddim`` (``eta``), ``dpmpp_1``,
``dpmpp_2m``, ``dpmpp_3m`` (DPM-Solver++ multistep), ``heun`` (EDM Heun),
``unipc``, ``unipc_3`` (UniPC-bh2 predictor-corrector, orders 2 and 3).

>>> sampler = SAMPLERS.build("ddim", alphas_cumprod=abar, prediction_type="v", eta=0.0)
"""

from ..registry import Registry

SAMPLERS = Registry("sampler")

from . import ddim, ddpm, dpm_solver, heun, unipc  # noqa: E402,F401
from .base import SPACINGS, Sampler, respace  # noqa: E402

__all__ = ["SAMPLERS", "SPACINGS", "Sampler", "respace"]
