"""Building blocks of the Global Temporal UNet and its context encoder.

Module and parameter names follow the published DiffCast checkpoint (see
``OFFICIAL_CHECKPOINT.md``), which builds on lucidrains/denoising-diffusion-pytorch
(MIT) and the temporal attention of SimVP-v2 / TAU (Apache-2.0). Written from the
description of the computation, not copied.

Efficiency: when autograd is off (``torch.no_grad`` / ``torch.inference_mode``,
i.e. sampling) the element-wise tails of the blocks run in place on tensors the
block itself just created (FiLM, SiLU, residual adds, gating products). The
operations and their order are unchanged, so the results are bit-identical to
the out-of-place form used for training; only allocations and memory traffic
are saved.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _inplace_ok() -> bool:
    """In-place element-wise updates are safe: no autograd graph is being recorded."""
    return not torch.is_grad_enabled()


class Residual(nn.Module):
    """``x + fn(x)``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fn(x)
        if _inplace_ok() and y is not x:  # fn's output is a fresh tensor
            return y.add_(x)
        return y + x


class RMSNorm(nn.Module):
    """``F.normalize(x, dim=1) * g * sqrt(C)`` with a learned gain ``g`` of shape ``(1, C, 1, 1)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.normalize(x, dim=1) (x / max(||x||, 1e-12)) written out: its vector norm over the channel axis of an
        # NCHW tensor is a strided reduction that took 10 % of a UNet call on CPU (4-9x slower than this sum of
        # squares; same values to float round-off, 2e-7)
        scale = torch.rsqrt(x.square().sum(1, keepdim=True).clamp_min(1e-24)).mul(x.shape[1] ** 0.5)
        if _inplace_ok():
            return (x * scale).mul_(self.g)
        return x * scale * self.g


class PreNorm(nn.Module):
    """``fn(RMSNorm(x))``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


def Downsample(dim: int, dim_out: int) -> nn.Sequential:  # noqa: N802 (factory named like a module)
    """Space-to-depth by 2 (channel order ``c, p1, p2``) then a 1x1 conv: ``(B, C, H, W) -> (B, dim_out, H/2, W/2)``."""
    # pixel_unshuffle orders output channels as c * 4 + p1 * 2 + p2, the einops
    # pattern 'b c (h p1) (w p2) -> b (c p1 p2) h w' of the original.
    return nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(dim * 4, dim_out, 1))


def Upsample(dim: int, dim_out: int) -> nn.Sequential:  # noqa: N802
    """Nearest-neighbour x2 then a 3x3 conv: ``(B, C, H, W) -> (B, dim_out, 2H, 2W)``."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim_out, 3, padding=1))


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of integer positions: ``(B,) -> (B, dim)``.

    ``f_k = exp(-k ln(10000) / (dim/2 - 1))``, output ``cat(sin(t f), cos(t f))``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"sinusoidal embedding size must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=x.device) * -(math.log(10000) / (half - 1)))
        arg = x.float()[:, None] * freq[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class Block(nn.Module):
    """3x3 conv -> GroupNorm -> optional FiLM ``x (scale + 1) + shift`` -> SiLU."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if _inplace_ok():  # same operations in the same order, on the fresh norm output
            if scale_shift is not None:
                scale, shift = scale_shift
                x.mul_(scale + 1).add_(shift)
            return F.silu(x, inplace=True)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResnetBlock(nn.Module):
    """``block2(block1(x, FiLM(emb))) + res_conv(x)``; FiLM from ``mlp`` = SiLU -> Linear(emb, 2 dim_out)."""

    def __init__(self, dim: int, dim_out: int, emb_dim: int | None = None, groups: int = 8) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, dim_out * 2)) if emb_dim else None
        self.block1 = Block(dim, dim_out, groups=groups)
        self.block2 = Block(dim_out, dim_out, groups=groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        scale_shift = None
        if self.mlp is not None and emb is not None:
            scale, shift = self.mlp(emb)[:, :, None, None].chunk(2, dim=1)
            scale_shift = (scale, shift)
        h = self.block2(self.block1(x, scale_shift=scale_shift))
        if _inplace_ok():
            return h.add_(self.res_conv(x))
        return h + self.res_conv(x)


def dilated_depthwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a depthwise, stride-1, dilated, 'same'-padded ``conv``, by phases.

    With dilation ``d`` the output on the sub-grid ``(i::d, j::d)`` reads the input on
    the same sub-grid only, so the ``d * d`` phases of the zero-padded input are stacked
    in the batch and convolved with the undilated kernel: the same products and sums
    (the result differs from ``conv(x)`` by float round-off, ~1e-6), but oneDNN's
    undilated depthwise kernel is 2-4x faster than its dilated one on AVX2 CPUs
    (forward and backward; ``benchmarks/bench_inference.py``).

    Parameters
    ----------
    x : Tensor
        ``(N, C, H, W)``.
    conv : nn.Conv2d
        ``groups == in_channels == out_channels``, ``stride == 1``, square kernel
        and dilation, ``padding == dilation * (k - 1) // 2``.
    """
    d = conv.dilation[0]
    n, c, h, w = x.shape
    k = conv.kernel_size[0]
    pad = d * (k - 1) // 2
    hp = -(-(h + 2 * pad) // d) * d  # padded size rounded up to a multiple of d
    wp = -(-(w + 2 * pad) // d) * d
    xp = F.pad(x, (pad, wp - w - pad, pad, hp - h - pad))
    ph = xp.reshape(n, c, hp // d, d, wp // d, d).permute(3, 5, 0, 1, 2, 4).reshape(d * d * n, c, hp // d, wp // d)
    y = F.conv2d(ph, conv.weight, conv.bias, groups=c)
    oh, ow = y.shape[-2:]
    y = y.reshape(d, d, n, c, oh, ow).permute(2, 3, 4, 0, 5, 1).reshape(n, c, oh * d, ow * d)
    return y[:, :, :h, :w]


def _phase_applicable(conv: nn.Conv2d) -> bool:
    d, k = conv.dilation, conv.kernel_size
    return (
        d[0] > 1 and d[0] == d[1] and k[0] == k[1] and conv.stride == (1, 1)
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.padding == (d[0] * (k[0] - 1) // 2,) * 2 and conv.padding_mode == "zeros"
    )


class TemporalAttentionModule(nn.Module):
    """Large-kernel attention with squeeze-excite gating (TAU, Tan et al. 2023).

    ``k = conv1(conv_spatial(conv0(a)))`` (depthwise ``2d-1`` conv, depthwise dilated
    conv, 1x1), ``s = sigmoid(fc(mean_hw(a)))``; output ``s * k * a``.

    The dilated convolution runs as :func:`dilated_depthwise_conv` (same math, faster)
    unless :attr:`phase_dilated` is set to ``False`` (class-wide, for benchmarks).
    """

    #: compute ``conv_spatial`` phase by phase (see :func:`dilated_depthwise_conv`)
    phase_dilated: bool = True

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, reduction: int = 16) -> None:
        super().__init__()
        d_k = 2 * dilation - 1
        dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
        self.conv0 = nn.Conv2d(dim, dim, d_k, padding=(d_k - 1) // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(
            dim, dim, dd_k, padding=dilation * (dd_k - 1) // 2, groups=dim, dilation=dilation
        )
        self.conv1 = nn.Conv2d(dim, dim, 1)
        hidden = dim // max(dim // reduction, 4)
        self.fc = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(True), nn.Linear(hidden, dim, bias=False), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv0(x)
        if self.phase_dilated and _phase_applicable(self.conv_spatial):
            a = dilated_depthwise_conv(a, self.conv_spatial)
        else:
            a = self.conv_spatial(a)
        f_x = self.conv1(a)
        se = self.fc(x.mean(dim=(2, 3)))[:, :, None, None]
        if _inplace_ok():
            return f_x.mul_(se).mul_(x)  # (se * f_x) * x, element-wise products commute exactly
        return se * f_x * x


class TemporalAttention(nn.Module):
    """``proj_2(gating(GELU(proj_1(u)))) + u``."""

    def __init__(self, dim: int, kernel_size: int = 21) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = TemporalAttentionModule(dim, kernel_size)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return y.add_(x) if _inplace_ok() else y + x


class Attention(nn.Module):
    """Full multi-head self-attention over all ``H * W`` positions (1x1 conv projections).

    ``window = (wh, ww)`` (``None`` by default) restricts attention to
    non-overlapping windows of that many positions when the map is larger: a model
    trained on small crops and run on a large domain then attends over the same
    extent as in training, and the cost grows linearly with the area instead of
    quadratically (:meth:`diffcast.inference.Nowcaster.from_checkpoint` sets it to
    the training grid's size at this level).
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)
        self.window: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is not None and x.shape[-2] * x.shape[-1] > self.window[0] * self.window[1]:
            return self._windowed(x)
        return self._full(x)

    def _windowed(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        wh, ww = min(self.window[0], h), min(self.window[1], w)
        nh, nw = -(-h // wh), -(-w // ww)
        # windows of equal size that tile the map; the last row/column of windows is shifted
        # inwards to end at the border (overlapping its neighbour) instead of padding
        ys = [min(i * wh, h - wh) for i in range(nh)]
        xs = [min(j * ww, w - ww) for j in range(nw)]
        tiles = torch.stack([x[:, :, y : y + wh, x0 : x0 + ww] for y in ys for x0 in xs], dim=1)
        out_t = self._full(tiles.reshape(b * len(ys) * len(xs), c, wh, ww)).reshape(b, len(ys) * len(xs), c, wh, ww)
        out = torch.empty_like(x)
        k = 0
        for y in ys:
            for x0 in xs:
                out[:, :, y : y + wh, x0 : x0 + ww] = out_t[:, k]
                k += 1
        return out

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, self.dim_head, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q * self.dim_head**-0.5
        attn = torch.einsum("bhdi,bhdj->bhij", q, k).softmax(dim=-1)
        out = torch.einsum("bhij,bhdj->bhdi", attn, v)  # (b, heads, d, n)
        return self.to_out(out.reshape(b, self.heads * self.dim_head, h, w))


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell: ``forward(x, h) -> h'``.

    ``(reset, update) = sigmoid(conv_gates(cat(x, h)))``,
    ``cand = tanh(conv_cans(cat(x, reset * h)))``, ``h' = (1 - update) h + update cand``.
    The convolutions live in one-element ``ModuleList`` s (names ``conv_gates.0``,
    ``conv_cans.0`` as in the published checkpoint).
    """

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        pad = kernel_size // 2
        self.conv_gates = nn.ModuleList([nn.Conv2d(input_dim + hidden_dim, 2 * hidden_dim, kernel_size, padding=pad)])
        self.conv_cans = nn.ModuleList([nn.Conv2d(input_dim + hidden_dim, hidden_dim, kernel_size, padding=pad)])

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.conv_gates[0](torch.cat([x, h], dim=1)))
        reset, update = torch.split(gates, self.hidden_dim, dim=1)
        cand = torch.tanh(self.conv_cans[0](torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * cand
