"""Earthformer (Gao et al., NeurIPS 2022): cuboid attention for Earth-system forecasting.

A compact, single-file version that keeps the structure of the published model
(amazon-science/earth-forecasting-transformer, Apache-2.0; written from the
paper, not copied):

1. initial patch embedding: stacked 3x3 conv stages, each followed by 2x2 patch
   merging (space-to-depth + linear), then a learned (t + h + w) position embedding;
2. hierarchical encoder: per level, stacks of cuboid self-attention blocks (the
   (T, H, W) grid is decomposed into non-overlapping cuboids, attention runs
   within each cuboid; a pattern is a sequence of cuboid sizes, e.g. ``axial`` =
   (T,1,1), (1,H,1), (1,1,W)), optional global vectors that every cuboid reads
   and that summarise all tokens, then 2x2 patch merging to the next level;
3. decoder: a learned initial query at the coarsest level; per level
   (coarse -> fine) cuboid self-attention, cuboid cross-attention to the
   encoder memory of that level (each spatial ``cross_hw`` window of the
   forecast attends to the same window over all observed frames and to the
   encoder's global vectors), then nearest x2 upsampling + 3x3 conv;
4. final patch expansion mirroring the embedding (nearest x2 + conv stages) and a
   1x1 projection to the frame channels. The output is not squashed.

Simplifications (documented, not hidden): no relative position bias, no shifted
cuboids, the decoder's self-attention does not use global vectors.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import BACKBONES
from .base import Backbone, apply_preset

STRATEGIES = ("local", "dilated")


def pattern_sizes(pattern: str, t: int, h: int, w: int) -> list[tuple[int, int, int]]:
    """Cuboid sizes of a named self-attention pattern on a (t, h, w) grid.

    ``axial``: (t,1,1), (1,h,1), (1,1,w); ``divided_st``: (t,1,1), (1,h,w);
    ``full``: (t,h,w); ``local_<n>``: (t,n,n) windows.
    """
    if pattern == "axial":
        return [(t, 1, 1), (1, h, 1), (1, 1, w)]
    if pattern == "divided_st":
        return [(t, 1, 1), (1, h, w)]
    if pattern == "full":
        return [(t, h, w)]
    if pattern.startswith("local_") and pattern[6:].isdigit() and int(pattern[6:]) > 0:
        n = int(pattern[6:])
        return [(t, min(n, h), min(n, w))]
    raise ValueError(f"unknown earthformer pattern {pattern!r}; choose axial, divided_st, full or local_<n>")


def _partition(x: torch.Tensor, size: tuple[int, int, int], strategy: str) -> torch.Tensor:
    """(B, T, H, W, C) with dims divisible by ``size`` -> (B, n_cuboids, cuboid_len, C)."""
    b, t, h, w, c = x.shape
    (bt, bh, bw), (nt, nh, nw) = size, (t // size[0], h // size[1], w // size[2])
    if strategy == "local":  # contiguous blocks
        x = x.reshape(b, nt, bt, nh, bh, nw, bw, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    else:  # dilated: every n-th element along each axis
        x = x.reshape(b, bt, nt, bh, nh, bw, nw, c).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, nt * nh * nw, bt * bh * bw, c)


def _unpartition(x: torch.Tensor, size: tuple[int, int, int], grid: tuple[int, int, int], strategy: str) -> torch.Tensor:
    """Inverse of :func:`_partition`; ``grid`` = padded (T, H, W)."""
    b, _, _, c = x.shape
    (bt, bh, bw), (t, h, w) = size, grid
    nt, nh, nw = t // bt, h // bh, w // bw
    x = x.reshape(b, nt, nh, nw, bt, bh, bw, c)
    if strategy == "local":
        x = x.permute(0, 1, 4, 2, 5, 3, 6, 7)
    else:
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, t, h, w, c)


def _pad_to(x: torch.Tensor, size: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad (B, T, H, W, C) at the end of T, H, W to multiples of ``size``."""
    pads = [(-d) % s for d, s in zip(x.shape[1:4], size)]
    if any(pads):
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    return x, tuple(pads)


def _attend(q, k, v, key_mask=None):
    """Scaled dot-product attention; q (..., Lq, d), k/v (..., Lk, d), key_mask (..., 1, Lk) bool (True = keep)."""
    if key_mask is not None:
        key_mask = key_mask.expand(*q.shape[:-2], 1, k.shape[-2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)


class CuboidSelfAttention(nn.Module):
    """Multi-head attention inside cuboids, with optional global vectors.

    Local tokens attend to the tokens of their cuboid and to the global vectors;
    global vectors attend to all tokens and to each other.
    """

    def __init__(self, dim: int, heads: int, size: tuple[int, int, int], strategy: str = "local",
                 use_global: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        self.heads, self.size, self.strategy, self.use_global = heads, tuple(size), strategy, use_global
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)
        if use_global:
            self.g_qkv = nn.Linear(dim, 3 * dim)
            self.g_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (..., L, C) -> (..., heads, L, d)
        return x.reshape(*x.shape[:-1], self.heads, -1).transpose(-3, -2)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, h, w, c = x.shape
        size = tuple(min(s, d) for s, d in zip(self.size, (t, h, w)))
        xp, pads = _pad_to(x, size)
        grid = tuple(xp.shape[1:4])
        qkv = self.qkv(xp)
        q, k, v = self._heads(_partition(qkv, size, self.strategy)).chunk(3, dim=-1)  # (B, N, heads, L, d)
        mask = None
        if any(pads):
            valid = torch.zeros(1, *grid, 1, dtype=torch.bool, device=x.device)
            valid[:, :t, :h, :w] = True
            mask = _partition(valid, size, self.strategy)[..., 0][:, :, None, None, :]  # (1, N, 1, 1, L)
        if self.use_global and g is not None:
            gq, gk, gv = self._heads(self.g_qkv(g)).chunk(3, dim=-1)  # (B, heads, G, d)
            n = q.shape[1]
            k = torch.cat([k, gk[:, None].expand(-1, n, -1, -1, -1)], dim=-2)
            v = torch.cat([v, gv[:, None].expand(-1, n, -1, -1, -1)], dim=-2)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(*mask.shape[:-1], gk.shape[-2])], dim=-1)
        out = _attend(q, k, v, mask).transpose(-3, -2).reshape(b, -1, math.prod(size), c)
        out = _unpartition(out, size, grid, self.strategy)[:, :t, :h, :w]
        out = self.drop(self.proj(out))
        g_out = None
        if self.use_global and g is not None:
            tokens = qkv[:, :t, :h, :w].reshape(b, t * h * w, 3 * c)
            _, tok_k, tok_v = self._heads(tokens).chunk(3, dim=-1)
            keys, vals = torch.cat([tok_k, gk], dim=-2), torch.cat([tok_v, gv], dim=-2)
            g_out = self.g_proj(_attend(gq, keys, vals).transpose(1, 2).reshape(b, -1, c))
        return out, g_out


class CuboidCrossAttention(nn.Module):
    """Each (T_q, hw) window of the queries attends to the same (T_mem, hw) window of the memory."""

    def __init__(self, dim: int, heads: int, hw: tuple[int, int] = (1, 1), drop: float = 0.0) -> None:
        super().__init__()
        self.heads, self.hw = heads, tuple(hw)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, g_mem: torch.Tensor | None = None) -> torch.Tensor:
        b, t, h, w, c = x.shape
        size_q = (t, min(self.hw[0], h), min(self.hw[1], w))
        size_m = (mem.shape[1],) + size_q[1:]
        xp, pads = _pad_to(x, size_q)
        mp, _ = _pad_to(mem, size_m)
        grid = tuple(xp.shape[1:4])

        def heads(z):
            return z.reshape(*z.shape[:-1], self.heads, -1).transpose(-3, -2)

        q = heads(_partition(self.q(xp), size_q, "local"))
        k, v = heads(_partition(self.kv(mp), size_m, "local")).chunk(2, dim=-1)
        mask = None
        if any(pads):
            valid = torch.zeros(1, *mp.shape[1:4], 1, dtype=torch.bool, device=x.device)
            valid[:, :, :h, :w] = True
            mask = _partition(valid, size_m, "local")[..., 0][:, :, None, None, :]
        if g_mem is not None:
            gk, gv = heads(self.kv(g_mem)).chunk(2, dim=-1)
            n = q.shape[1]
            k = torch.cat([k, gk[:, None].expand(-1, n, -1, -1, -1)], dim=-2)
            v = torch.cat([v, gv[:, None].expand(-1, n, -1, -1, -1)], dim=-2)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(*mask.shape[:-1], gk.shape[-2])], dim=-1)
        out = _attend(q, k, v, mask).transpose(-3, -2).reshape(b, -1, math.prod(size_q), c)
        out = _unpartition(out, size_q, grid, "local")[:, :t, :h, :w]
        return self.drop(self.proj(out))


class FFN(nn.Module):
    def __init__(self, dim: int, ratio: float, drop: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim), nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CuboidBlock(nn.Module):
    """A stack of cuboid self-attention layers (one per pattern entry), each pre-norm + FFN."""

    def __init__(self, dim: int, heads: int, sizes: list[tuple[int, int, int]], strategy: str, use_global: bool,
                 mlp_ratio: float, drop: float) -> None:
        super().__init__()
        self.use_global = use_global
        self.attn = nn.ModuleList([CuboidSelfAttention(dim, heads, s, strategy, use_global, drop) for s in sizes])
        self.norm_attn = nn.ModuleList([nn.LayerNorm(dim) for _ in sizes])
        self.ffn = nn.ModuleList([FFN(dim, mlp_ratio, drop) for _ in sizes])
        self.norm_ffn = nn.ModuleList([nn.LayerNorm(dim) for _ in sizes])
        if use_global:
            self.norm_g = nn.ModuleList([nn.LayerNorm(dim) for _ in sizes])
            self.ffn_g = nn.ModuleList([FFN(dim, mlp_ratio, drop) for _ in sizes])
            self.norm_g_ffn = nn.ModuleList([nn.LayerNorm(dim) for _ in sizes])

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        for i, attn in enumerate(self.attn):
            gn = self.norm_g[i](g) if self.use_global and g is not None else None
            dx, dg = attn(self.norm_attn[i](x), gn)
            x = x + dx
            x = x + self.ffn[i](self.norm_ffn[i](x))
            if dg is not None:
                g = g + dg
                g = g + self.ffn_g[i](self.norm_g_ffn[i](g))
        return x, g


class CrossBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hw: tuple[int, int], mlp_ratio: float, drop: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = CuboidCrossAttention(dim, heads, hw, drop)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = FFN(dim, mlp_ratio, drop)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, g_mem: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm(x), mem, g_mem)
        return x + self.ffn(self.norm_ffn(x))


class PatchMerging(nn.Module):
    """2x2 space-to-depth on (B, T, H, W, C) -> LayerNorm -> Linear(4 C -> C_out)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        x = x.reshape(b, t, h // 2, 2, w // 2, 2, c).permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class Upsample(nn.Module):
    """Nearest x2 upsampling + 3x3 conv per frame on (B, T, H, W, C)."""

    def __init__(self, dim: int, out_dim: int, norm_act: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, padding=1)
        self.post = nn.Sequential(nn.GroupNorm(_groups(out_dim), out_dim), nn.LeakyReLU(0.2)) if norm_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        y = F.interpolate(x.reshape(b * t, h, w, c).permute(0, 3, 1, 2), scale_factor=2, mode="nearest")
        y = self.post(self.conv(y))
        return y.permute(0, 2, 3, 1).reshape(b, t, 2 * h, 2 * w, -1)


def _groups(c: int) -> int:
    for g in (16, 8, 4, 2):
        if c % g == 0:
            return g
    return 1


class PosEmbed(nn.Module):
    """Learned additive position embedding ``e_t + e_h + e_w`` on (B, T, H, W, C)."""

    def __init__(self, dim: int, t: int, h: int, w: int) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.zeros(t, 1, 1, dim))
        self.h = nn.Parameter(torch.zeros(1, h, 1, dim))
        self.w = nn.Parameter(torch.zeros(1, 1, w, dim))
        for p in (self.t, self.h, self.w):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.t + self.h + self.w


@BACKBONES.register("earthformer")
class Earthformer(Backbone):
    """Earthformer cuboid-attention encoder-decoder.

    Parameters
    ----------
    t_in, t_out : int
        Observed and forecast frames (any positive values; direct t_in -> t_out).
    channels, height, width : int
        Frame layout; ``height`` and ``width`` must be divisible by
        ``2 ** (len(stem_dims) + len(enc_depth) - 1)``.
    preset : {"paper", "tiny"}
        ``paper``: base_units 128, 4 heads, two levels of depth 1, axial
        self-attention, 1x1 cross-attention windows, 8 global vectors, patch
        embedding by 4 (the published SEVIR configuration adapted to 128 x 128);
        ``tiny``: 16 units for CPU tests.
    base_units : int
        Channels at the first level (doubled at every level).
    heads : int
        Attention heads (must divide every level's width).
    enc_depth, dec_depth : sequence of int
        Blocks per level (same number of levels).
    self_pattern : str
        See :func:`pattern_sizes`.
    strategy : {"local", "dilated"}
        How cuboids are cut from the grid.
    cross_hw : tuple of 2 int
        Spatial window of the cross-attention.
    num_global_vectors : int
        0 disables global vectors.
    stem_dims : sequence of int
        Widths of the patch-embedding conv stages (each halves H and W).
    mlp_ratio : float
        FFN expansion.
    dropout : float
        Dropout of attention outputs and FFNs.
    """

    PRESETS = {
        "paper": {"base_units": 128, "heads": 4, "enc_depth": (1, 1), "dec_depth": (1, 1), "self_pattern": "axial",
                  "strategy": "local", "cross_hw": (1, 1), "num_global_vectors": 8, "stem_dims": (64, 128),
                  "mlp_ratio": 4.0, "dropout": 0.1},
        "tiny": {"base_units": 16, "heads": 2, "enc_depth": (1, 1), "dec_depth": (1, 1), "self_pattern": "axial",
                 "strategy": "local", "cross_hw": (1, 1), "num_global_vectors": 2, "stem_dims": (8,),
                 "mlp_ratio": 2.0, "dropout": 0.0},
    }

    def __init__(self, t_in: int, t_out: int, channels: int = 1, height: int = 128, width: int = 128,
                 preset: str = "paper", **kwargs) -> None:
        super().__init__(t_in, t_out, channels, height, width)
        cfg = apply_preset("earthformer", self.PRESETS, preset, kwargs)
        enc_depth, dec_depth = tuple(int(d) for d in cfg["enc_depth"]), tuple(int(d) for d in cfg["dec_depth"])
        stem_dims = tuple(int(d) for d in cfg["stem_dims"])
        base, heads, n_glob = cfg["base_units"], cfg["heads"], cfg["num_global_vectors"]
        levels = len(enc_depth)
        if levels < 1 or len(dec_depth) != levels or min(enc_depth + dec_depth) < 1:
            raise ValueError(f"earthformer enc_depth and dec_depth need the same number (>= 1) of positive entries, "
                             f"got {enc_depth} and {dec_depth}")
        dims = [base * 2**i for i in range(levels)]
        if not isinstance(heads, int) or heads <= 0 or any(d % heads for d in dims):
            raise ValueError(f"earthformer heads ({heads!r}) must divide every level width {dims}")
        if cfg["strategy"] not in STRATEGIES:
            raise ValueError(f"unknown earthformer strategy {cfg['strategy']!r}; choose one of: {', '.join(STRATEGIES)}")
        if not isinstance(n_glob, int) or n_glob < 0:
            raise ValueError(f"earthformer num_global_vectors must be a non-negative integer, got {n_glob!r}")
        if not stem_dims or min(stem_dims) <= 0:
            raise ValueError(f"earthformer stem_dims must be non-empty and positive, got {stem_dims}")
        factor = 2 ** (len(stem_dims) + levels - 1)
        if height % factor or width % factor:
            raise ValueError(f"earthformer with {len(stem_dims)} stem stages and {levels} levels needs height and "
                             f"width divisible by {factor}, got {height}x{width}")
        cross_hw = tuple(int(v) for v in cfg["cross_hw"])
        self.config = {**cfg, "enc_depth": enc_depth, "dec_depth": dec_depth, "stem_dims": stem_dims, "cross_hw": cross_hw}
        drop, ratio, strat = float(cfg["dropout"]), float(cfg["mlp_ratio"]), cfg["strategy"]
        h0, w0 = height >> len(stem_dims), width >> len(stem_dims)
        grids = [(h0 >> i, w0 >> i) for i in range(levels)]
        pattern_sizes(cfg["self_pattern"], t_in, *grids[0])  # validates the name

        # 1. patch embedding
        stem, prev = [], channels
        for d in stem_dims:
            stem.append(nn.ModuleDict({
                "conv": nn.Sequential(nn.Conv2d(prev, d, 3, padding=1), nn.GroupNorm(_groups(d), d), nn.LeakyReLU(0.2)),
                "merge": PatchMerging(d, d),
            }))
            prev = d
        self.stem = nn.ModuleList(stem)
        self.stem_proj = nn.Linear(prev, dims[0])
        self.enc_pos = PosEmbed(dims[0], t_in, *grids[0])
        # 2. encoder
        self.use_global = n_glob > 0
        if self.use_global:
            self.global_vectors = nn.Parameter(torch.randn(n_glob, dims[0]) * 0.02)
        self.encoder = nn.ModuleList([
            nn.ModuleList([CuboidBlock(dims[i], heads, pattern_sizes(cfg["self_pattern"], t_in, *grids[i]), strat,
                                       self.use_global, ratio, drop) for _ in range(enc_depth[i])])
            for i in range(levels)
        ])
        self.enc_merge = nn.ModuleList([PatchMerging(dims[i], dims[i + 1]) for i in range(levels - 1)])
        if self.use_global:
            self.global_proj = nn.ModuleList([nn.Linear(dims[i], dims[i + 1]) for i in range(levels - 1)])
        # 3. decoder
        self.dec_init = PosEmbed(dims[-1], t_out, *grids[-1])
        self.decoder_self = nn.ModuleList([
            nn.ModuleList([CuboidBlock(dims[i], heads, pattern_sizes(cfg["self_pattern"], t_out, *grids[i]), strat,
                                       False, ratio, drop) for _ in range(dec_depth[i])])
            for i in range(levels)
        ])
        self.decoder_cross = nn.ModuleList([CrossBlock(dims[i], heads, cross_hw, ratio, drop) for i in range(levels)])
        self.dec_up = nn.ModuleList([Upsample(dims[i + 1], dims[i]) for i in range(levels - 1)])
        # 4. final patch expansion and projection
        rev = list(reversed(stem_dims))
        self.final_up = nn.ModuleList([Upsample(dims[0] if i == 0 else rev[i - 1], rev[i], norm_act=True)
                                       for i in range(len(rev))])
        self.head = nn.Conv2d(rev[-1], channels, 1)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Forecast ``t_out`` frames in one pass.

        Parameters
        ----------
        x_in : Tensor, shape (B, T_in, C, H, W)

        Returns
        -------
        Tensor, shape (B, T_out, C, H, W) (not clipped)
        """
        self.check_input(x_in)
        b, t = x_in.shape[:2]
        z = x_in.permute(0, 1, 3, 4, 2)  # (B, T, H, W, C)
        for stage in self.stem:
            bt, h, w, c = b * t, z.shape[2], z.shape[3], z.shape[4]
            y = stage["conv"](z.reshape(bt, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            z = stage["merge"](y.reshape(b, t, h, w, -1))
        z = self.enc_pos(self.stem_proj(z))
        g = self.global_vectors.expand(b, -1, -1) if self.use_global else None
        memory, g_memory = [], []
        for i, blocks in enumerate(self.encoder):
            for block in blocks:
                z, g = block(z, g)
            memory.append(z)
            g_memory.append(g)
            if i < len(self.enc_merge):
                z = self.enc_merge[i](z)
                g = self.global_proj[i](g) if g is not None else None
        levels = len(memory)
        d = self.dec_init(z.new_zeros(b, self.t_out, *memory[-1].shape[2:]))
        for i in reversed(range(levels)):
            for block in self.decoder_self[i]:
                d, _ = block(d)
            d = self.decoder_cross[i](d, memory[i], g_memory[i])
            if i > 0:
                d = self.dec_up[i - 1](d)
        for up in self.final_up:
            d = up(d)
        bt, h, w, c = b * self.t_out, d.shape[2], d.shape[3], d.shape[4]
        y = self.head(d.reshape(bt, h, w, c).permute(0, 3, 1, 2))
        return y.reshape(b, self.t_out, self.channels, h, w)
