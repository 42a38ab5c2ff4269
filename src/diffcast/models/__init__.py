"""Models: deterministic backbones and the residual diffusion wrapper."""

from .factory import build_model, model_summary

__all__ = ["build_model", "model_summary"]
