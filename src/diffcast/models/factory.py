"""Build a model from a plain config dict, the same dict stored in checkpoints.

Model config layout (all keys plain JSON/YAML values)::

    type: backbone | diffcast
    t_in: 5
    t_out: 20
    channels: 1
    height: 128
    width: 128
    backbone: {name: phydnet, ...backbone kwargs (e.g. preset: paper | tiny)}
    diffusion: {...ResidualDiffusion kwargs}   # only for type == diffcast
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .backbones import BACKBONES

MODEL_TYPES = ("backbone", "diffcast")


def _shape_kwargs(cfg: dict[str, Any]) -> dict[str, int]:
    return {k: int(cfg[k]) for k in ("t_in", "t_out", "channels", "height", "width") if k in cfg}


def build_backbone(cfg: dict[str, Any]) -> nn.Module:
    """Build the backbone described by ``cfg["backbone"]`` with the shape keys of ``cfg``."""
    bb = dict(cfg.get("backbone") or {})
    if "name" not in bb:
        raise ValueError(f"model config needs backbone.name (one of: {', '.join(BACKBONES.names())})")
    name = bb.pop("name")
    return BACKBONES.build(name, **_shape_kwargs(cfg), **bb)


def build_model(cfg: dict[str, Any]) -> nn.Module:
    """Build a backbone alone or DiffCast on a backbone from a model config dict."""
    kind = cfg.get("type", "diffcast")
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model type {kind!r}; choose one of: {', '.join(MODEL_TYPES)}")
    backbone = build_backbone(cfg)
    if kind == "backbone":
        return backbone
    from .diffusion.residual import ResidualDiffusion

    return ResidualDiffusion(backbone=backbone, **_shape_kwargs(cfg), **dict(cfg.get("diffusion") or {}))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def model_summary(model: nn.Module) -> dict[str, int]:
    """Parameter counts of a model and its direct children."""
    out = {"total": count_parameters(model)}
    for name, child in model.named_children():
        out[name] = count_parameters(child)
    return out
