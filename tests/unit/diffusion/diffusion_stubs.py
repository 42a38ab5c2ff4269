"""Stub backbones for the diffusion tests (one registered as ``_diffusion_test_stub``)."""

from __future__ import annotations

import torch
from torch import nn

from diffcast.models.backbones import BACKBONES
from diffcast.models.backbones.base import Backbone
from diffcast.models.diffusion.residual import ResidualDiffusion

STUB = "_diffusion_test_stub"


class StubBackbone(Backbone):
    """``mu = sigmoid(conv(last frame))`` repeated ``t_out`` times; optionally counts calls."""

    def __init__(self, t_in=5, t_out=10, channels=1, height=8, width=8, trainable=True, **_):
        super().__init__(t_in, t_out, channels, height, width)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.trainable = trainable
        self.calls = 0

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        last = x_in[:, -1]
        mu = torch.sigmoid(self.conv(last) * 4 - 2)
        return mu.unsqueeze(1).expand(-1, self.t_out, -1, -1, -1).contiguous()


class FixedBackbone(Backbone):
    """Parameter-free: ``mu`` = last observed frame (like persistence)."""

    trainable = False

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        return x_in[:, -1:].expand(-1, self.t_out, -1, -1, -1).contiguous()


if STUB not in BACKBONES:
    BACKBONES.register(STUB)(StubBackbone)


#: smaller than the "tiny" preset so the tests stay fast on a busy 2-core machine
TEST_ARCH = {"dim": 8, "groups": 4, "attn_heads": 1, "attn_dim_head": 8}


def tiny_model(t_in=5, t_out=10, size=8, backbone=None, **kw) -> ResidualDiffusion:
    torch.manual_seed(0)
    bb = backbone if backbone is not None else StubBackbone(t_in, t_out, 1, size, size)
    return ResidualDiffusion(
        bb, t_in=t_in, t_out=t_out, channels=1, height=size, width=size, preset="tiny", **{**TEST_ARCH, **kw}
    )


def fit_fixed_batch(m: ResidualDiffusion, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """Adam (lr 5e-3) on one batch with the same diffusion steps and noise every step; the losses."""
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    losses = []
    for _ in range(steps):
        terms = m.loss(x, y, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    return losses
