"""Optimiser and learning-rate schedule factories (AdamW, linear warm-up + cosine decay)."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(
    model: nn.Module,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.0,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model``.

    Weight decay applies to tensors with two or more dimensions (weights of
    linear/conv layers); biases and normalisation scales are not decayed
    (the nanoGPT convention).

    Raises
    ------
    ValueError
        If ``model`` has no trainable parameters.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters; nothing to optimise")
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup_steps``, cosine decay to ``min_lr / lr`` at ``max_steps``.

    ``factor(s) = (s + 1) / warmup`` for ``s < warmup``; afterwards
    ``m + (1 - m) * 0.5 * (1 + cos(pi * p))`` with ``p = (s - warmup) / (max_steps - warmup)``
    clipped to ``[0, 1]`` and ``m = min_lr / lr``. A plain object (only numbers as
    attributes) so ``LambdaLR.state_dict()`` stays loadable with ``weights_only=True``.
    """

    def __init__(self, warmup_steps: int, max_steps: int, min_ratio: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.max_steps = int(max_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    max_steps: int,
    lr: float,
    min_lr: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :class:`WarmupCosine`; step it once per optimiser update."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, max_steps, min_lr / lr))
