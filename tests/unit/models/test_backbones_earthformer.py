"""Earthformer's cuboid decomposition and attention."""

from __future__ import annotations

import pytest
import torch
from bb_data import single_thread  # noqa: F401 (autouse fixture)

from diffcast.models.backbones import BACKBONES
from diffcast.models.backbones.earthformer import (
    CuboidSelfAttention,
    _partition,
    _unpartition,
    pattern_sizes,
)


@pytest.mark.parametrize("strategy", ["local", "dilated"])
def test_partition_round_trip_and_membership(strategy):
    x = torch.arange(4 * 6 * 6, dtype=torch.float32).reshape(1, 4, 6, 6, 1)
    parts = _partition(x, (2, 3, 2), strategy)
    assert parts.shape == (1, 2 * 2 * 3, 2 * 3 * 2, 1)
    torch.testing.assert_close(_unpartition(parts, (2, 3, 2), (4, 6, 6), strategy), x)
    idx = parts[0, 0, :, 0].long()
    t, h, w = idx // 36, (idx // 6) % 6, idx % 6
    if strategy == "local":  # first cuboid = the contiguous corner block
        assert set(t.tolist()) == {0, 1} and set(h.tolist()) == {0, 1, 2} and set(w.tolist()) == {0, 1}
    else:  # first cuboid = every n-th element
        assert set(t.tolist()) == {0, 2} and set(h.tolist()) == {0, 2, 4} and set(w.tolist()) == {0, 3}


def test_full_cuboid_equals_plain_multihead_attention():
    torch.manual_seed(0)
    attn = CuboidSelfAttention(8, 2, (3, 4, 4))
    x = torch.randn(2, 3, 4, 4, 8)
    out, _ = attn(x)
    tokens = x.reshape(2, 48, 8)
    q, k, v = attn.qkv(tokens).reshape(2, 48, 2, 12).transpose(1, 2).chunk(3, dim=-1)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 4 ** 0.5, dim=-1) @ v
    ref = attn.proj(ref.transpose(1, 2).reshape(2, 48, 8)).reshape(2, 3, 4, 4, 8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ["local", "dilated"])
def test_attention_stays_inside_cuboids_with_padding(strategy):
    torch.manual_seed(0)
    attn = CuboidSelfAttention(8, 2, (2, 3, 3), strategy=strategy)
    x = torch.randn(1, 3, 5, 5, 8)  # not divisible: padded and masked
    out, _ = attn(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    y = x.clone()
    y[0, 0, 0, 0] += 10.0  # token (0, 0, 0)
    out2, _ = attn(y)
    changed = (out2 - out).abs().sum(-1)[0] > 1e-6
    grid = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(6)[:5], torch.arange(6)[:5], indexing="ij"), -1)
    if strategy == "local":
        same = (grid[..., 0] < 2) & (grid[..., 1] < 3) & (grid[..., 2] < 3)
    else:  # padded grid (4, 6, 6) in a (2, 3, 3) cuboid -> strides (2, 2, 2)
        same = (grid % 2 == 0).all(-1)
    assert torch.equal(changed, same)


def test_global_vectors_carry_information_across_cuboids():
    torch.manual_seed(0)
    attn = CuboidSelfAttention(8, 2, (1, 2, 2), use_global=True)
    x, g = torch.randn(1, 2, 4, 4, 8), torch.randn(1, 3, 8)
    _, g_out = attn(x, g)
    y = x.clone()
    y[0, 1, 3, 3] += 5.0
    _, g_out2 = attn(y, g)
    assert g_out.shape == (1, 3, 8) and not torch.allclose(g_out, g_out2)


def test_patterns_and_invalid_pattern():
    assert pattern_sizes("axial", 5, 8, 8) == [(5, 1, 1), (1, 8, 1), (1, 1, 8)]
    assert pattern_sizes("local_4", 5, 8, 2) == [(5, 4, 2)]
    with pytest.raises(ValueError, match="pattern"):
        BACKBONES.build("earthformer", t_in=3, t_out=3, height=16, width=16, preset="tiny", self_pattern="spiral")
    with pytest.raises(ValueError, match="heads"):
        BACKBONES.build("earthformer", t_in=3, t_out=3, height=16, width=16, preset="tiny", heads=3)


@pytest.mark.parametrize("extra", [{"self_pattern": "local_3", "strategy": "dilated", "cross_hw": (3, 3)},
                                   {"num_global_vectors": 0, "enc_depth": (1, 1, 1), "dec_depth": (1, 1, 1)}])
def test_variants_forward_and_backward(extra):
    model = BACKBONES.build("earthformer", t_in=3, t_out=5, height=16, width=16, preset="tiny", **extra)
    x = torch.rand(2, 3, 1, 16, 16)
    mu = model(x)
    assert mu.shape == (2, 5, 1, 16, 16)
    mu.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
