"""The ConvGRU context encoder of DiffCast (``ctx_net``).

Scans the whole sequence ``cat(x_in, mu)`` (in ``[-1, 1]`` space) one frame at a
time; each level is ResnetBlock -> ConvGRU -> Downsample, and the GRU state of a
level is its context feature. The features after frame ``local_index`` form the
*local* context (used for the first segment) and those after the last frame the
*global* context (all later segments). Unlike the original, the GRU states are
passed explicitly rather than stored on the module, so the encoder is re-entrant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvGRUCell, Downsample, ResnetBlock


class ContextNet(nn.Module):
    """Multi-scale ConvGRU context encoder.

    Parameters
    ----------
    dim : int
        Base width; must equal the UNet's.
    dim_mults : sequence of int
        Must equal the UNet's; level ``i`` has width ``[dim, *dim * mults][i]``.
    channels : int
        Channels per frame.
    groups : int
        GroupNorm groups.
    """

    def __init__(self, dim: int = 64, dim_mults: Sequence[int] = (1, 2, 4, 8), channels: int = 1, groups: int = 8) -> None:
        super().__init__()
        dims = [dim, *(dim * int(m) for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.dims = [d_in for d_in, _ in in_out]
        self.init_conv = nn.Conv2d(channels, dim, 7, padding=3)
        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            mods = [ResnetBlock(d_in, d_in, None, groups), ConvGRUCell(d_in, d_in, 3)]
            if not last:
                mods.append(Downsample(d_in, d_out))
            self.downs.append(nn.ModuleList(mods))

    def step(self, frame: torch.Tensor, states: list[torch.Tensor]) -> list[torch.Tensor]:
        """Advance every level by one frame ``(B, C, H, W)``; returns the new states."""
        x = self.init_conv(frame)
        new = []
        for level, mods in enumerate(self.downs):
            x = mods[0](x)
            x = mods[1](x, states[level])
            new.append(x)
            if len(mods) > 2:
                x = mods[2](x)
        return new

    def forward(self, frames: torch.Tensor, local_index: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Scan ``frames`` ``(B, T, C, H, W)``; returns ``(global_ctx, local_ctx)``.

        Each is a list with one ``(B, dims[i], H / 2**i, W / 2**i)`` tensor per
        level. ``local_ctx`` is the state after frame ``local_index`` (0-based).
        """
        b, n, _, h, w = frames.shape
        if not 0 <= local_index < n:
            raise ValueError(f"local context index {local_index} outside a sequence of {n} frames")
        states = [
            frames.new_zeros(b, d, h // 2**i, w // 2**i) for i, d in enumerate(self.dims)
        ]
        local = states
        for i in range(n):
            states = self.step(frames[:, i], states)
            if i == local_index:
                local = states
        return states, local
