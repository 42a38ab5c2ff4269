"""SimVP (Gao et al., CVPR 2022; Tan et al. 2022 for the gSTA translator).

Spatial encoder (per frame) -> spatio-temporal translator (frames folded into
channels) -> spatial decoder (per frame) with a skip from the first encoder
layer. Module names follow the OpenSTL/DiffCast layout (``enc.enc.*``,
``hid.enc.*``, ``hid.dec.*``, ``dec.dec.*``, ``dec.readout``) so the published
DiffCast-SimVP backbone (``backbone_net.*`` in its checkpoint) loads after
stripping the prefix. Written from the papers and the published tensor listing
(OpenSTL is Apache-2.0).

Two modes: ``iterated`` maps ``t_in -> t_in`` frames and is applied
``t_out / t_in`` times on its own output (what DiffCast does for 5 -> 20);
``direct`` maps ``t_in -> t_out`` in one pass.
"""

from __future__ import annotations

import torch
from torch import nn

from . import BACKBONES
from .base import Backbone, apply_preset

TRANSLATORS = ("incepu", "gsta")
MODES = ("iterated", "direct")


class BasicConv2d(nn.Module):
    """Conv (or conv + PixelShuffle x2 when upsampling) -> GroupNorm(2) -> SiLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, upsampling: bool = False) -> None:
        super().__init__()
        if upsampling:
            self.conv = nn.Sequential(nn.Conv2d(c_in, c_out * 4, kernel_size, 1, padding), nn.PixelShuffle(2))
        else:
            self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding)
        self.norm = nn.GroupNorm(2, c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvSC(nn.Module):
    """3x3 conv block, optionally stride-2 (downsampling) or pixel-shuffle (upsampling)."""

    def __init__(self, c_in: int, c_out: int, downsampling: bool = False, upsampling: bool = False) -> None:
        super().__init__()
        stride = 2 if downsampling else 1
        self.conv = BasicConv2d(c_in, c_out, 3, stride, (3 - stride + 1) // 2, upsampling=upsampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _samplings(n: int) -> list[bool]:
    """Which of ``n`` spatial layers resample: (False, True, False, True, ...)."""
    return [i % 2 == 1 for i in range(n)]


class Encoder(nn.Module):
    def __init__(self, c_in: int, c_hid: int, n_s: int) -> None:
        super().__init__()
        s = _samplings(n_s)
        self.enc = nn.Sequential(
            ConvSC(c_in, c_hid, downsampling=s[0]), *[ConvSC(c_hid, c_hid, downsampling=d) for d in s[1:]]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.enc[0](x)
        z = skip
        for layer in self.enc[1:]:
            z = layer(z)
        return z, skip


class Decoder(nn.Module):
    def __init__(self, c_hid: int, c_out: int, n_s: int) -> None:
        super().__init__()
        s = list(reversed(_samplings(n_s)))
        self.dec = nn.Sequential(*[ConvSC(c_hid, c_hid, upsampling=u) for u in s])
        self.readout = nn.Conv2d(c_hid, c_out, 1)

    def forward(self, z: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        for layer in self.dec[:-1]:
            z = layer(z)
        return self.readout(self.dec[-1](z + skip))


class GroupConv2d(nn.Module):
    """Grouped conv -> GroupNorm(groups) -> LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        if c_in % groups:
            groups = 1
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, 1, kernel_size // 2, groups=groups)
        self.norm = nn.GroupNorm(groups, c_out)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Inception(nn.Module):
    """1x1 reduction, then the sum of grouped convs with kernels 3, 5, 7, 11 (SimVP-v1)."""

    def __init__(self, c_in: int, c_hid: int, c_out: int, kernels=(3, 5, 7, 11), groups: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_hid, 1)
        self.layers = nn.Sequential(*[GroupConv2d(c_hid, c_out, k, groups) for k in kernels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        y = 0
        for layer in self.layers:
            y = y + layer(x)
        return y


class IncepU(nn.Module):
    """SimVP-v1 translator: U-shaped stack of ``n_t`` Inception blocks with skips."""

    def __init__(self, c_in: int, c_hid: int, n_t: int, c_out: int | None = None, groups: int = 8) -> None:
        super().__init__()
        c_out = c_in if c_out is None else c_out
        self.n_t = n_t
        self.enc = nn.Sequential(
            Inception(c_in, c_hid // 2, c_hid, groups=groups),
            *[Inception(c_hid, c_hid // 2, c_hid, groups=groups) for _ in range(n_t - 1)],
        )
        self.dec = nn.Sequential(
            Inception(c_hid, c_hid // 2, c_hid, groups=groups),
            *[Inception(2 * c_hid, c_hid // 2, c_hid, groups=groups) for _ in range(n_t - 2)],
            Inception(2 * c_hid, c_hid // 2, c_out, groups=groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        z = x
        for i, layer in enumerate(self.enc):
            z = layer(z)
            if i < self.n_t - 1:
                skips.append(z)
        z = self.dec[0](z)
        for i in range(1, self.n_t):
            z = self.dec[i](torch.cat([z, skips[-i]], dim=1))
        return z


class LargeKernelAttention(nn.Module):
    """Gated large-kernel attention (VAN / SimVP-v2): depthwise 5x5, dilated depthwise, 1x1 -> (f, g)."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3) -> None:
        super().__init__()
        d_k = 2 * dilation - 1
        dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
        self.conv0 = nn.Conv2d(dim, dim, d_k, padding=(d_k - 1) // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, dd_k, padding=dilation * (dd_k - 1) // 2, groups=dim, dilation=dilation)
        self.conv1 = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, g = self.conv1(self.conv_spatial(self.conv0(x))).chunk(2, dim=1)
        return torch.sigmoid(g) * f


class SpatialAttention(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 21) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim, kernel_size)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class MixMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class GSTABlock(nn.Module):
    """gSTA block: ``x + s1 * attn(BN(x))``, ``x + s2 * mlp(BN(x))``, then an optional 1x1 reduction."""

    def __init__(self, c_in: int, c_out: int, mlp_ratio: float = 4.0, init_value: float = 1e-2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.attn = SpatialAttention(c_in)
        self.norm2 = nn.BatchNorm2d(c_in)
        self.mlp = MixMlp(c_in, int(c_in * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(init_value * torch.ones(c_in))
        self.layer_scale_2 = nn.Parameter(init_value * torch.ones(c_in))
        self.reduction = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1[:, None, None] * self.attn(self.norm1(x))
        x = x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))
        return self.reduction(x)


class GSTA(nn.Module):
    """SimVP-v2 translator: ``n_t`` gSTA blocks (c_in -> c_hid -> ... -> c_out)."""

    def __init__(self, c_in: int, c_hid: int, n_t: int, c_out: int | None = None, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        c_out = c_in if c_out is None else c_out
        dims = [c_in] + [c_hid] * (n_t - 1) + [c_out]
        self.enc = nn.Sequential(*[GSTABlock(dims[i], dims[i + 1], mlp_ratio) for i in range(n_t)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


@BACKBONES.register("simvp")
class SimVP(Backbone):
    """SimVP backbone.

    Parameters
    ----------
    t_in, t_out : int
        Observed and forecast frames. In ``iterated`` mode ``t_out`` must be a
        multiple of ``t_in``.
    channels, height, width : int
        Frame layout; ``height`` and ``width`` must be divisible by
        ``2 ** (n_s // 2)``.
    preset : {"paper", "tiny"}
        ``paper`` = DiffCast's SimVP-v1 (hid_s 64, hid_t 256, n_s 2, n_t 6,
        IncepU, iterated); ``tiny`` for CPU tests.
    hid_s, hid_t : int
        Spatial and translator channels.
    n_s : int
        Spatial encoder/decoder layers (every second one resamples by 2).
    n_t : int
        Translator blocks (``>= 2``).
    translator : {"incepu", "gsta"}
        SimVP-v1 Inception-UNet or SimVP-v2 gated spatio-temporal attention.
    mode : {"iterated", "direct"}
        See the module docstring.
    groups : int
        Groups of the IncepU convolutions.
    mlp_ratio : float
        gSTA MLP expansion.

    Notes
    -----
    The output is not squashed (no sigmoid), as in DiffCast. In ``direct`` mode
    every output frame uses the last input frame's encoder skip.
    """

    PRESETS = {
        "paper": {"hid_s": 64, "hid_t": 256, "n_s": 2, "n_t": 6, "translator": "incepu", "mode": "iterated",
                  "groups": 8, "mlp_ratio": 4.0},
        "tiny": {"hid_s": 8, "hid_t": 32, "n_s": 2, "n_t": 2, "translator": "incepu", "mode": "iterated",
                 "groups": 4, "mlp_ratio": 2.0},
    }

    def __init__(self, t_in: int, t_out: int, channels: int = 1, height: int = 128, width: int = 128,
                 preset: str = "paper", **kwargs) -> None:
        super().__init__(t_in, t_out, channels, height, width)
        cfg = apply_preset("simvp", self.PRESETS, preset, kwargs)
        for key in ("hid_s", "hid_t", "n_s", "n_t", "groups"):
            if not isinstance(cfg[key], int) or cfg[key] <= 0:
                raise ValueError(f"simvp {key} must be a positive integer, got {cfg[key]!r}")
        if cfg["translator"] not in TRANSLATORS:
            raise ValueError(f"unknown simvp translator {cfg['translator']!r}; choose one of: {', '.join(TRANSLATORS)}")
        if cfg["mode"] not in MODES:
            raise ValueError(f"unknown simvp mode {cfg['mode']!r}; choose one of: {', '.join(MODES)}")
        if cfg["n_t"] < 2:
            raise ValueError(f"simvp n_t must be >= 2, got {cfg['n_t']}")
        factor = 2 ** (cfg["n_s"] // 2)
        if height % factor or width % factor:
            raise ValueError(f"simvp with n_s={cfg['n_s']} needs height and width divisible by {factor}, got {height}x{width}")
        if cfg["mode"] == "iterated" and t_out % t_in:
            raise ValueError(
                f"simvp mode='iterated' applies a {t_in} -> {t_in} model repeatedly, so t_out ({t_out}) must be a "
                f"multiple of t_in ({t_in}); use mode='direct' or change t_out"
            )
        if cfg["translator"] == "incepu" and cfg["hid_t"] % 2:
            raise ValueError(f"simvp incepu needs an even hid_t, got {cfg['hid_t']}")
        self.config = cfg
        self.mode = cfg["mode"]
        self.block_out = t_in if self.mode == "iterated" else t_out
        hid_s, hid_t = cfg["hid_s"], cfg["hid_t"]
        self.enc = Encoder(channels, hid_s, cfg["n_s"])
        c_in, c_out = t_in * hid_s, self.block_out * hid_s
        if cfg["translator"] == "incepu":
            self.hid = IncepU(c_in, hid_t, cfg["n_t"], c_out=c_out, groups=cfg["groups"])
        else:
            self.hid = GSTA(c_in, hid_t, cfg["n_t"], c_out=c_out, mlp_ratio=float(cfg["mlp_ratio"]))
        self.dec = Decoder(hid_s, channels, cfg["n_s"])

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One pass: (B, t_in, C, H, W) -> (B, block_out, C, H, W)."""
        b, t, c, h, w = x.shape
        z, skip = self.enc(x.reshape(b * t, c, h, w))
        _, cz, hz, wz = z.shape
        y = self.hid(z.reshape(b, t * cz, hz, wz)).reshape(b * self.block_out, cz, hz, wz)
        if self.block_out != t:
            skip = skip.reshape(b, t, *skip.shape[1:])[:, -1:]
            skip = skip.expand(-1, self.block_out, -1, -1, -1).reshape(b * self.block_out, *skip.shape[2:])
        return self.dec(y, skip).reshape(b, self.block_out, c, h, w)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Forecast ``t_out`` frames.

        Parameters
        ----------
        x_in : Tensor, shape (B, T_in, C, H, W)

        Returns
        -------
        Tensor, shape (B, T_out, C, H, W) (not clipped)
        """
        self.check_input(x_in)
        if self.mode == "direct":
            return self.step(x_in)
        outs, x = [], x_in
        for _ in range(self.t_out // self.t_in):
            x = self.step(x)
            outs.append(x)
        return torch.cat(outs, dim=1)
