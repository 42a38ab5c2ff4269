"""The prototypes in ``benchmarks/bench_inference.py`` compute what they replace."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_inference.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("diffcast_bench_inference", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("k", "d", "h", "w"), [(7, 3, 20, 17), (3, 2, 9, 12), (5, 3, 16, 16), (7, 3, 4, 5)])
def test_dilated_depthwise_conv_by_phases_equals_conv(k, d, h, w):
    from diffcast.models.diffusion.layers import dilated_depthwise_conv

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, k, padding=d * (k - 1) // 2, dilation=d, groups=6)
    x = torch.randn(2, 6, h, w, requires_grad=True)
    got = dilated_depthwise_conv(x, conv)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=d, groups=6)
    assert got.shape == ref.shape == (2, 6, h, w)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    gx, gw = torch.autograd.grad(got, (x, conv.weight), g)
    rx, rw = torch.autograd.grad(ref, (x, conv.weight), g)
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-4)


def test_native_dilated_switch_changes_only_the_kernel(bench):
    from diffcast.models.diffusion.layers import TemporalAttention, TemporalAttentionModule

    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), TemporalAttention(16, 21))
    x = torch.randn(1, 3, 23, 19)
    fast = block(x)
    with bench.native_dilated():
        assert TemporalAttentionModule.phase_dilated is False
        native = block(x)
    assert TemporalAttentionModule.phase_dilated is True
    torch.testing.assert_close(fast, native, rtol=1e-5, atol=1e-5)


def test_context_levelwise_equals_context_net(bench):
    from diffcast.models.diffusion.context import ContextNet

    torch.manual_seed(0)
    net = ContextNet(dim=8, dim_mults=(1, 2), channels=1, groups=4).eval()
    frames = torch.rand(2, 6, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        ref_g, ref_l = net(frames, 2)
    got_g, got_l = bench.context_levelwise(net, frames, 2)
    for a, b in zip(got_g + got_l, list(ref_g) + list(ref_l)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
