"""PhyDNet (Le Guen & Thome, CVPR 2020) as used by DiffCast (Yu et al., CVPR 2024).

A frame encoder feeds two recurrent branches: PhyCell, whose prediction step
``h + F(h)`` is a convolution constrained towards finite-difference (PDE)
operators by a moment loss, and a 3-layer ConvLSTM for the residual dynamics.
The decoder sums the two branches' decoded states and ends in a sigmoid.

Module names reproduce the published DiffCast checkpoint's ``backbone_net.*``
layout (the OpenSTL PhyDNet_Model layout, Apache-2.0): top-level ``phycell``,
``convcell``, ``encoder`` (which registers the same two cells again, so both
names appear in the state dict) and ``k2m`` (moment matrices as float64
buffers). ``load_state_dict(strict=True)`` works after stripping the
``backbone_net.`` prefix. Written from the papers and
``reference/OFFICIAL_CHECKPOINT.md``; the moment-matrix code is our own.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import BACKBONES
from .base import Backbone, apply_preset


class K2M(nn.Module):
    """Convolution kernel -> moment matrix (PhyDNet, Le Guen & Thome 2020, sec. 3.2).

    For a kernel ``k`` of shape (l0, l1) the moment matrix is
    ``m[i, j] = sum_{p, q} k[p, q] (p - c0)^i / i! (q - c1)^j / j!`` with
    ``c = (l - 1) // 2``, i.e. ``m = M0 @ k @ M1.T`` with
    ``M[i, p] = (p - c)^i / i!``. A kernel whose moment matrix has a single 1
    at ``(i, j)`` approximates ``d^(i+j) / dx^i dy^j``.

    Parameters
    ----------
    shape : tuple of int
        Kernel size (l0, l1).

    Notes
    -----
    Buffers ``_M0``, ``_invM0``, ``_M1``, ``_invM1`` (float64) are part of the
    state dict, matching the published checkpoint.
    """

    def __init__(self, shape: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        for j, size in enumerate(self.shape):
            offsets = torch.arange(size, dtype=torch.float64) - (size - 1) // 2
            mat = torch.stack([offsets**i / math.factorial(i) for i in range(size)])
            self.register_buffer(f"_M{j}", mat)
            self.register_buffer(f"_invM{j}", torch.linalg.inv(mat))

    def forward(self, kernel: torch.Tensor) -> torch.Tensor:
        """Moments of ``kernel`` (..., l0, l1) -> (..., l0, l1), in ``kernel``'s dtype."""
        m0, m1 = self._M0.to(kernel.dtype), self._M1.to(kernel.dtype)
        return m0 @ kernel @ m1.transpose(0, 1)

    def inverse(self, moments: torch.Tensor) -> torch.Tensor:
        """Kernel with the given moment matrix (inverse of :meth:`forward`)."""
        i0, i1 = self._invM0.to(moments.dtype), self._invM1.to(moments.dtype)
        return i0 @ moments @ i1.transpose(0, 1)


def moment_constraints(kernel_size: int) -> torch.Tensor:
    """PhyDNet's target moments: (k*k, k, k) zeros with ``c[i*k + j, i, j] = 1``."""
    c = torch.zeros(kernel_size * kernel_size, kernel_size, kernel_size)
    for i in range(kernel_size):
        for j in range(kernel_size):
            c[i * kernel_size + j, i, j] = 1.0
    return c


class DCGANConv(nn.Module):
    """3x3 conv (pad 1) -> GroupNorm(16) -> LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(16, c_out), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class DCGANUpConv(nn.Module):
    """3x3 transposed conv (pad 1, output_padding 1 when stride 2) -> GroupNorm(16) -> LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(c_in, c_out, 3, stride, 1, output_padding=1 if stride == 2 else 0),
            nn.GroupNorm(16, c_out),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class EncoderE(nn.Module):
    def __init__(self, channels: int, nf: int, patch_size: int) -> None:
        super().__init__()
        self.c1 = DCGANConv(channels, nf, 2)
        self.c2 = DCGANConv(nf, nf, 1)
        self.c3 = DCGANConv(nf, 2 * nf, 2 if patch_size == 4 else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(x)))


class DecoderD(nn.Module):
    def __init__(self, channels: int, nf: int, patch_size: int) -> None:
        super().__init__()
        self.upc1 = DCGANUpConv(2 * nf, nf, 2 if patch_size == 4 else 1)
        self.upc2 = DCGANUpConv(nf, nf, 1)
        self.upc3 = nn.ConvTranspose2d(nf, channels, 3, 2, 1, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upc3(self.upc2(self.upc1(x)))


class EncoderSpecific(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.c1 = DCGANConv(nf, nf, 1)
        self.c2 = DCGANConv(nf, nf, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(self.c1(x))


class DecoderSpecific(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.upc1 = DCGANUpConv(nf, nf, 1)
        self.upc2 = DCGANUpConv(nf, nf, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upc2(self.upc1(x))


class PhyCellCell(nn.Module):
    """PhyCell: ``h~ = h + F(h)`` (physical prediction), ``h' = h~ + K (x - h~)`` (correction).

    ``F`` = conv k x k (dim -> k*k) -> GroupNorm(k, k*k) -> conv 1x1 (k*k -> dim);
    ``K = sigmoid(convgate([x, h]))`` with a 3x3 gate convolution.
    """

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        hid = kernel_size * kernel_size
        self.F = nn.Sequential()
        self.F.add_module("conv1", nn.Conv2d(dim, hid, kernel_size, 1, kernel_size // 2))
        self.F.add_module("bn1", nn.GroupNorm(kernel_size, hid))
        self.F.add_module("conv2", nn.Conv2d(hid, dim, 1))
        self.convgate = nn.Conv2d(2 * dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.convgate(torch.cat([x, h], dim=1)))
        h_tilde = h + self.F(h)
        return h_tilde + gate * (x - h_tilde)


class PhyCell(nn.Module):
    """Stack of PhyCell cells (one in DiffCast); state = list of hidden tensors."""

    def __init__(self, dim: int, n_layers: int = 1, kernel_size: int = 7) -> None:
        super().__init__()
        self.dim = dim
        self.cell_list = nn.ModuleList([PhyCellCell(dim, kernel_size) for _ in range(n_layers)])

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> list[torch.Tensor]:
        new = []
        for j, cell in enumerate(self.cell_list):
            x = cell(x if j == 0 else new[-1], state[j])
            new.append(x)
        return new


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell, gates from one 3x3 conv in the order (i, f, o, g)."""

    def __init__(self, c_in: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(c_in + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM; layer j > 0 takes layer j-1's new hidden state as input."""

    def __init__(self, c_in: int, hidden: tuple[int, ...], kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = tuple(hidden)
        ins = (c_in,) + self.hidden[:-1]
        self.cell_list = nn.ModuleList([ConvLSTMCell(ins[j], self.hidden[j], kernel_size) for j in range(len(hidden))])

    def forward(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        new = []
        for j, cell in enumerate(self.cell_list):
            h, c = cell(x if j == 0 else new[-1][0], *state[j])
            new.append((h, c))
        return new


class EncoderRNN(nn.Module):
    """One PhyDNet step: frame -> (next frame, new states). Registers the shared cells."""

    def __init__(self, phycell: PhyCell, convcell: ConvLSTM, channels: int, nf: int, patch_size: int) -> None:
        super().__init__()
        self.encoder_E = EncoderE(channels, nf, patch_size)
        self.encoder_Ep = EncoderSpecific(2 * nf)
        self.encoder_Er = EncoderSpecific(2 * nf)
        self.decoder_Dp = DecoderSpecific(2 * nf)
        self.decoder_Dr = DecoderSpecific(2 * nf)
        self.decoder_D = DecoderD(channels, nf, patch_size)
        self.phycell = phycell
        self.convcell = convcell

    def forward(self, frame: torch.Tensor, phy_state: list, lstm_state: list) -> tuple[torch.Tensor, list, list]:
        e = self.encoder_E(frame)
        phy_state = self.phycell(self.encoder_Ep(e), phy_state)
        lstm_state = self.convcell(self.encoder_Er(e), lstm_state)
        merged = self.decoder_Dp(phy_state[-1]) + self.decoder_Dr(lstm_state[-1][0])
        return torch.sigmoid(self.decoder_D(merged)), phy_state, lstm_state


@BACKBONES.register("phydnet")
class PhyDNet(Backbone):
    """PhyDNet backbone (PhyCell + ConvLSTM), DiffCast's published configuration.

    Parameters
    ----------
    t_in, t_out : int
        Observed and forecast frames (any positive values).
    channels, height, width : int
        Frame layout; ``height`` and ``width`` must be divisible by ``patch_size``.
    preset : {"paper", "tiny"}
        ``paper``: nf 32, ConvLSTM (128, 128, 64), PhyCell 7x7, patch 4
        (3,091,732 parameters, the published checkpoint); ``tiny`` for CPU tests.
    nf : int
        Encoder width; the recurrent branches work on ``2 nf`` channels at
        ``H / patch_size``. ``nf`` and ``2 nf`` must be multiples of 16 (GroupNorm).
    lstm_hidden : sequence of int
        ConvLSTM layer widths; the last must equal ``2 nf``.
    phycell_kernel : int
        Odd PhyCell kernel size ``k`` (``F`` has ``k*k`` channels, GroupNorm(k)).
    patch_size : {2, 4}
        Spatial downsampling of the encoder.
    moment_weight : float
        Weight of the moment loss in ``terms["loss"]``.

    Notes
    -----
    Inference (as DiffCast): states start at zero, frames ``0 .. t_in-2`` are
    encoded (outputs discarded), then the last observed frame and each output in
    turn are fed back ``t_out`` times. ``mu`` is in (0, 1) (sigmoid).
    """

    PRESETS = {
        "paper": {"nf": 32, "lstm_hidden": (128, 128, 64), "phycell_kernel": 7, "patch_size": 4, "moment_weight": 1.0},
        "tiny": {"nf": 16, "lstm_hidden": (32,), "phycell_kernel": 7, "patch_size": 4, "moment_weight": 1.0},
    }

    def __init__(self, t_in: int, t_out: int, channels: int = 1, height: int = 128, width: int = 128,
                 preset: str = "paper", **kwargs) -> None:
        super().__init__(t_in, t_out, channels, height, width)
        cfg = apply_preset("phydnet", self.PRESETS, preset, kwargs)
        nf, k, ps = cfg["nf"], cfg["phycell_kernel"], cfg["patch_size"]
        hidden = tuple(int(h) for h in cfg["lstm_hidden"])
        if not isinstance(nf, int) or nf <= 0 or nf % 16:
            raise ValueError(f"phydnet nf must be a positive multiple of 16 (GroupNorm(16)), got {nf!r}")
        if not hidden or min(hidden) <= 0 or hidden[-1] != 2 * nf:
            raise ValueError(f"phydnet lstm_hidden must be positive with last entry 2*nf={2 * nf}, got {hidden}")
        if not isinstance(k, int) or k <= 0 or k % 2 == 0:
            raise ValueError(f"phydnet phycell_kernel must be a positive odd integer, got {k!r}")
        if ps not in (2, 4):
            raise ValueError(f"phydnet patch_size must be 2 or 4, got {ps!r}")
        if height % ps or width % ps:
            raise ValueError(f"phydnet with patch_size={ps} needs height and width divisible by {ps}, got {height}x{width}")
        self.config = {**cfg, "lstm_hidden": hidden}
        self.moment_weight = float(cfg["moment_weight"])
        self.patch_size = ps
        self.phycell = PhyCell(2 * nf, 1, k)
        self.convcell = ConvLSTM(2 * nf, hidden)
        self.encoder = EncoderRNN(self.phycell, self.convcell, channels, nf, ps)
        self.k2m = K2M((k, k))
        self.register_buffer("constraints", moment_constraints(k), persistent=False)

    def init_states(self, x: torch.Tensor) -> tuple[list, list]:
        """Zero PhyCell and ConvLSTM states for a batch like ``x`` (B, C, H, W)."""
        b, hh, ww = x.shape[0], self.height // self.patch_size, self.width // self.patch_size
        phy = [x.new_zeros(b, self.phycell.dim, hh, ww) for _ in self.phycell.cell_list]
        lstm = [(x.new_zeros(b, h, hh, ww), x.new_zeros(b, h, hh, ww)) for h in self.convcell.hidden]
        return phy, lstm

    def _rollout(self, x_in: torch.Tensor, y_true: torch.Tensor | None = None) -> torch.Tensor:
        phy, lstm = self.init_states(x_in[:, 0])
        for t in range(self.t_in - 1):
            _, phy, lstm = self.encoder(x_in[:, t], phy, lstm)
        frame, outs = x_in[:, -1], []
        for k in range(self.t_out):
            out, phy, lstm = self.encoder(frame, phy, lstm)
            outs.append(out)
            frame = y_true[:, k] if y_true is not None else out
        return torch.stack(outs, dim=1)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Forecast ``t_out`` frames (deterministic, no teacher forcing).

        Parameters
        ----------
        x_in : Tensor, shape (B, T_in, C, H, W)

        Returns
        -------
        Tensor, shape (B, T_out, C, H, W), values in (0, 1)
        """
        self.check_input(x_in)
        return self._rollout(x_in)

    def moment_loss(self) -> torch.Tensor:
        """PhyDNet's moment loss: sum over input channels of MSE(K2M(conv1 filters), constraints).

        Computed in float64 like the original, returned as float32.
        """
        weight = self.phycell.cell_list[0].F.conv1.weight  # (k*k, dim, k, k)
        moments = self.k2m(weight.double()).float()
        target = self.constraints[:, None].to(moments.dtype).expand_as(moments)
        return F.mse_loss(moments, target, reduction="none").mean(dim=(0, 2, 3)).sum()

    def forward_with_loss(self, x_in: torch.Tensor, y_true: torch.Tensor, teacher_forcing: float = 0.0
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forecast and loss terms ``{"loss", "mse", "moment"}``.

        Parameters
        ----------
        x_in : Tensor, shape (B, T_in, C, H, W)
        y_true : Tensor, shape (B, T_out, C, H, W)
        teacher_forcing : float in [0, 1], default 0
            Probability (one draw per call, from torch's global generator, as in
            PhyDNet's training) of feeding the true frames instead of the
            outputs back during the rollout. Ignored in eval mode.

        Returns
        -------
        mu : Tensor, shape (B, T_out, C, H, W)
        terms : dict of scalar Tensors
            ``loss = mse + moment_weight * moment``.
        """
        self.check_input(x_in)
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must lie in [0, 1], got {teacher_forcing!r}")
        if tuple(y_true.shape) != (x_in.shape[0], self.t_out) + tuple(x_in.shape[2:]):
            raise ValueError(f"y_true must have shape (B, {self.t_out}, C, H, W) matching x_in, got {tuple(y_true.shape)}")
        use_tf = self.training and teacher_forcing > 0 and bool(torch.rand(()) < teacher_forcing)
        mu = self._rollout(x_in, y_true if use_tf else None)
        mse = F.mse_loss(mu, y_true)
        moment = self.moment_loss()
        return mu, {"loss": mse + self.moment_weight * moment, "mse": mse, "moment": moment}
