"""Exponential moving average of model weights (a small replacement for ema-pytorch).

The EMA copy is a separate module with the same structure as the trained model,
so its ``state_dict()`` is a drop-in model file (``ema.safetensors``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copy of a model updated as ``ema = decay * ema + (1 - decay) * w``.

    Parameters
    ----------
    model : nn.Module
        The model being trained (unwrapped, not the DDP wrapper).
    decay : float
        Decay per update, in ``[0, 1)``.
    start : int
        Before this many updates the EMA simply copies the weights (the early,
        rapidly changing weights are not worth averaging).
    every : int
        Average every ``every`` updates (copying still happens before ``start``).

    Notes
    -----
    Floating-point parameters and buffers are averaged; integer buffers (counters)
    are copied. The shadow module is in eval mode and needs no gradients.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995, start: int = 0, every: int = 1) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        if start < 0 or every < 1:
            raise ValueError(f"EMA start must be >= 0 and every >= 1, got start={start}, every={every}")
        self.decay = float(decay)
        self.start = int(start)
        self.every = int(every)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (call after each optimiser step)."""
        self.num_updates += 1
        src = dict(model.state_dict(keep_vars=False))
        copy_only = self.num_updates <= self.start
        if not copy_only and self.num_updates % self.every != 0:
            return
        for name, shadow in self.module.state_dict(keep_vars=False).items():
            w = src[name]
            if copy_only or not torch.is_floating_point(shadow):
                shadow.copy_(w)
            else:
                shadow.lerp_(w.to(shadow.dtype), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the averaged model."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore the averaged weights and the update counter."""
        self.module.load_state_dict(state)
        self.num_updates = int(num_updates)
