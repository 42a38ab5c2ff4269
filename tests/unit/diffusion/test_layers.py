"""Building blocks against independent references; GTUNet structure against the published listing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from diffcast.models.diffusion.context import ContextNet
from diffcast.models.diffusion.gtunet import GTUNet
from diffcast.models.diffusion.layers import (
    Attention,
    ConvGRUCell,
    Downsample,
    RMSNorm,
    SinusoidalPosEmb,
    TemporalAttentionModule,
)

LISTING = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "official_state_dict_diffcast_phydnet.json"


def test_downsample_space_to_depth_order():
    x = torch.randn(2, 3, 8, 6)
    d = Downsample(3, 5)
    ref = x.reshape(2, 3, 4, 2, 3, 2).permute(0, 1, 3, 5, 2, 4).reshape(2, 12, 4, 3)  # b (c p1 p2) h w
    torch.testing.assert_close(d[0](x), ref)
    assert d(x).shape == (2, 5, 4, 3)


def test_sinusoidal_embedding_formula():
    e = SinusoidalPosEmb(8)(torch.tensor([0, 3, 999]))
    f = [math.exp(-k * math.log(10000) / 3) for k in range(4)]
    ref = torch.tensor([[math.sin(t * fk) for fk in f] + [math.cos(t * fk) for fk in f] for t in (0, 3, 999)])
    torch.testing.assert_close(e, ref, rtol=1e-5, atol=1e-4)


def test_rmsnorm():
    x = torch.randn(2, 4, 3, 3)
    n = RMSNorm(4)
    ref = x / x.pow(2).sum(1, keepdim=True).sqrt() * 2.0
    torch.testing.assert_close(n(x), ref)


def test_attention_matches_sdpa():
    torch.manual_seed(0)
    att = Attention(16, heads=2, dim_head=8)
    x = torch.randn(2, 16, 4, 4)
    q, k, v = att.to_qkv(x).chunk(3, dim=1)
    sh = lambda t: t.reshape(2, 2, 8, 16).transpose(2, 3)  # noqa: E731  (b, h, n, d)
    o = F.scaled_dot_product_attention(sh(q), sh(k), sh(v))  # softmax(q k^T / sqrt(d)) v
    ref = att.to_out(o.transpose(2, 3).reshape(2, 16, 4, 4))
    torch.testing.assert_close(att(x), ref, rtol=1e-5, atol=1e-5)


def test_convgru_equations():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 4)
    x, h = torch.randn(1, 3, 5, 5), torch.randn(1, 4, 5, 5)
    g = torch.sigmoid(cell.conv_gates[0](torch.cat([x, h], 1)))
    reset, update = g[:, :4], g[:, 4:]
    cand = torch.tanh(cell.conv_cans[0](torch.cat([x, reset * h], 1)))
    torch.testing.assert_close(cell(x, h), (1 - update) * h + update * cand)


def test_temporal_attention_kernel_geometry():
    m = TemporalAttentionModule(64)
    assert m.conv0.kernel_size == (5, 5) and m.conv0.padding == (2, 2)
    assert m.conv_spatial.kernel_size == (7, 7) and m.conv_spatial.dilation == (3, 3) and m.conv_spatial.padding == (9, 9)
    assert m.fc[0].weight.shape == (16, 64)


def test_paper_parameter_counts_and_listing():
    unet, ctx = GTUNet(), ContextNet()
    assert sum(p.numel() for p in unet.parameters()) == 39_593_349
    assert sum(p.numel() for p in ctx.parameters()) == 6_676_544
    if not LISTING.is_file():
        pytest.skip(f"{LISTING} not found")
    listing = json.loads(LISTING.read_text())
    for prefix, mod in (("model.", unet), ("ctx_net.", ctx)):
        ref = {e["key"][len(prefix):]: tuple(e["shape"]) for e in listing if e["key"].startswith(prefix)}
        ours = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
        assert ours == ref


def test_gtunet_shapes_and_gradients():
    torch.manual_seed(0)
    unet = GTUNet(dim=16, dim_mults=(1, 2), segment=3, channels=2, attn_heads=2, attn_dim_head=8)
    ctx = ContextNet(dim=16, dim_mults=(1, 2), channels=2)
    frames = torch.randn(2, 7, 2, 8, 8)
    g, loc = ctx(frames, local_index=2)
    assert [tuple(c.shape) for c in g] == [(2, 16, 8, 8), (2, 16, 4, 4)]
    x = torch.randn(2, 3, 2, 8, 8, requires_grad=True)
    out = unet(x, torch.tensor([5, 700]), torch.randn(2, 3, 2, 8, 8), g, torch.tensor([0, 1]))
    assert out.shape == (2, 3, 2, 8, 8)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in unet.parameters())


def test_context_local_is_state_after_index():
    torch.manual_seed(0)
    ctx = ContextNet(dim=8, dim_mults=(1, 2), channels=1)
    frames = torch.randn(1, 6, 1, 8, 8)
    g, loc = ctx(frames, local_index=2)
    g3, _ = ctx(frames[:, :3], local_index=0)
    for a, b in zip(loc, g3):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="local context index"):
        ctx(frames, local_index=6)
