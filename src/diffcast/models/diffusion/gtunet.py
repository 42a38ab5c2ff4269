"""The Global Temporal UNet denoiser of DiffCast (Yu et al., CVPR 2024, sec. 3.3).

Time is folded into channels: a segment of ``seg`` frames with ``C`` channels
becomes ``seg * C`` image channels. The condition (previous segment's residual)
and the noisy residual segment are concatenated (condition first), and each down
level concatenates the context-encoder feature of its resolution before its
first ResnetBlock. Every ResnetBlock is modulated by ``cat(time_mlp(t),
frag_idx_mlp(k))`` (diffusion step and segment index).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import (
    Attention,
    Downsample,
    PreNorm,
    Residual,
    ResnetBlock,
    SinusoidalPosEmb,
    TemporalAttention,
    Upsample,
)


def _embedding_mlp(dim: int, out: int) -> nn.Sequential:
    # names .1 and .3 as in the published checkpoint
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, out), nn.GELU(), nn.Linear(out, out))


class GTUNet(nn.Module):
    """Global Temporal UNet.

    Parameters
    ----------
    dim : int
        Base width (64 in the paper).
    dim_mults : sequence of int
        Width multipliers per level (paper ``(1, 2, 4, 8)``).
    segment : int
        Frames per segment (5 in the paper).
    channels : int
        Channels per frame.
    groups : int
        GroupNorm groups of every ResnetBlock (8).
    attn_heads, attn_dim_head : int
        Mid-level full attention (4 heads of 32).
    ta_kernel : int
        Kernel size of the temporal large-kernel attention (21).

    Notes
    -----
    The context features expected by :meth:`forward` have the widths
    :attr:`context_dims` (the input width of each level) at resolutions
    ``H / 2**i``.
    """

    def __init__(
        self,
        dim: int = 64,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        segment: int = 5,
        channels: int = 1,
        groups: int = 8,
        attn_heads: int = 4,
        attn_dim_head: int = 32,
        ta_kernel: int = 21,
    ) -> None:
        super().__init__()
        dim_mults = tuple(int(m) for m in dim_mults)
        if not dim_mults or any(m <= 0 for m in dim_mults):
            raise ValueError(f"dim_mults must be a non-empty sequence of positive integers, got {dim_mults}")
        if dim % groups:
            raise ValueError(f"dim ({dim}) must be divisible by the GroupNorm groups ({groups})")
        self.dim = dim
        self.dim_mults = dim_mults
        self.segment = segment
        self.channels = channels
        frame_ch = segment * channels
        dims = [dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.context_dims = [d_in for d_in, _ in in_out]
        emb_dim = dim * 4
        cond_dim = emb_dim * 2

        self.init_conv = nn.Conv2d(2 * frame_ch, dim, 7, padding=3)
        self.time_mlp = _embedding_mlp(dim, emb_dim)
        self.frag_idx_mlp = _embedding_mlp(dim, emb_dim)

        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        ResnetBlock(d_in * 2, d_in, cond_dim, groups),
                        ResnetBlock(d_in, d_in, cond_dim, groups),
                        Residual(PreNorm(d_in, TemporalAttention(d_in, ta_kernel))),
                        nn.Conv2d(d_in, d_out, 3, padding=1) if last else Downsample(d_in, d_out),
                    ]
                )
            )
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, cond_dim, groups)
        self.mid_attn = Residual(PreNorm(mid, Attention(mid, attn_heads, attn_dim_head)))
        self.mid_block2 = ResnetBlock(mid, mid, cond_dim, groups)
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            self.ups.append(
                nn.ModuleList(
                    [
                        ResnetBlock(d_out + d_in, d_out, cond_dim, groups),
                        ResnetBlock(d_out + d_in, d_out, cond_dim, groups),
                        Residual(PreNorm(d_out, TemporalAttention(d_out, ta_kernel))),
                        nn.Conv2d(d_out, d_in, 3, padding=1) if last else Upsample(d_out, d_in),
                    ]
                )
            )
        self.final_res_block = ResnetBlock(dim * 2, dim, cond_dim, groups)
        self.final_conv = nn.Conv2d(dim, frame_ch, 1)

    @property
    def downsample_factor(self) -> int:
        """Frame height and width must be divisible by this."""
        return 2 ** (len(self.dim_mults) - 1)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None,
        ctx: Sequence[torch.Tensor],
        idx: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the objective (v in the paper) for one segment.

        Parameters
        ----------
        x_t : Tensor
            Noisy residual segment ``(B, seg, C, H, W)`` in ``[-1, 1]`` space.
        t : Tensor
            Diffusion steps ``(B,)`` (integers in ``[0, T)``).
        cond : Tensor or None
            Previous segment's residual ``(B, seg, C, H, W)``; ``None`` = zeros.
        ctx : sequence of Tensor
            One feature per level, ``(B, context_dims[i], H / 2**i, W / 2**i)``.
        idx : Tensor
            Segment indices ``(B,)``.

        Returns
        -------
        Tensor
            ``(B, seg, C, H, W)``.
        """
        b, s, c, h, w = x_t.shape
        x = x_t.reshape(b, s * c, h, w)
        cond = torch.zeros_like(x) if cond is None else cond.reshape(b, s * c, h, w)
        x = self.init_conv(torch.cat((cond, x), dim=1))
        r0 = x  # never modified in place: every later x is a new tensor
        emb = torch.cat((self.time_mlp(t), self.frag_idx_mlp(idx)), dim=1)

        skips = []
        for level, (block1, block2, attn, down) in enumerate(self.downs):
            x = block1(torch.cat((x, ctx[level]), dim=1), emb)
            skips.append(x)
            x = attn(block2(x, emb))
            skips.append(x)
            x = down(x)

        x = self.mid_block2(self.mid_attn(self.mid_block1(x, emb)), emb)

        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat((x, skips.pop()), dim=1), emb)
            x = block2(torch.cat((x, skips.pop()), dim=1), emb)
            x = up(attn(x))

        x = self.final_res_block(torch.cat((x, r0), dim=1), emb)
        return self.final_conv(x).reshape(b, s, c, h, w)
