"""diffcast: probabilistic precipitation nowcasting with residual diffusion.

Implements DiffCast (Yu et al., CVPR 2024, "A Unified Framework via Residual
Diffusion for Precipitation Nowcasting"): a deterministic backbone predicts the
mean motion ``mu`` and a conditional diffusion model samples the residual ``r``
so that the forecast is ``y = mu + r``.
"""

__version__ = "0.1.0"

from .api import nowcast  # noqa: E402  (numpy only at import; torch and pysteps load on first call)

__all__ = ["__version__", "nowcast"]
