"""Samplers with the diffusers contract (``set_timesteps``, ``timesteps``, ``step``).

No model imports here: samplers see only tensors and a noise schedule.
"""

from ..registry import Registry

SAMPLERS = Registry("sampler")

__all__ = ["SAMPLERS"]
