"""Learned backbones fit a fixed small batch of moving blobs (tiny presets, CPU)."""

from __future__ import annotations

import pytest
import torch
from bb_data import moving_blobs, single_thread  # noqa: F401 (autouse fixture)

from diffcast.models.backbones import BACKBONES

LEARNED = {
    "convgru": {},
    "simvp": {},
    "simvp_gsta": {"translator": "gsta", "mode": "direct"},
    "phydnet": {},
    "earthformer": {},
}


def _train(key: str, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    name = key.split("_")[0]
    if name not in BACKBONES:
        pytest.skip(f"{name} not registered")
    torch.manual_seed(0)
    seq = moving_blobs(batch=4, t=8, size=16, sigma=2.5)
    x, y = seq[:, :4], seq[:, 4:]
    model = BACKBONES.build(name, t_in=4, t_out=4, height=16, width=16, preset="tiny", **LEARNED[key]).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = last = None
    for _ in range(steps):
        _, terms = model.forward_with_loss(x, y)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = terms["mse"].item() if first is None else first
        last = terms["mse"].item()
    return first, last


@pytest.mark.parametrize("key", sorted(LEARNED))
def test_a_few_steps_reduce_the_loss(key):
    first, last = _train(key, steps=8)
    assert last < first


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(LEARNED))
def test_tiny_preset_fits_a_fixed_batch(key):
    first, last = _train(key, steps=250)
    assert last < first / 10, (first, last)
