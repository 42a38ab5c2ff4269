"""LPIPS (Zhang et al. 2018, v0.1, AlexNet variant) without torchvision and without downloads.

Architecture of ``lpips.LPIPS(net="alex", version="0.1")`` (github.com/richzhang/PerceptualSimilarity,
BSD-2-Clause), re-implemented here so that neither the ``lpips`` package nor torchvision is
needed: input scaling layer, AlexNet conv features taken after relu1 .. relu5, unit
normalisation along channels, squared difference, 1 x 1 linear weights, spatial average,
sum over the five layers.

Weights are read only from a local file given by the caller (the CLI takes it from
``--lpips-weights`` or ``DIFFCAST_LPIPS_WEIGHTS``): a ``.safetensors`` file or a torch file
loaded with ``weights_only=True``. Accepted parameter names: torchvision's AlexNet
``features.{0,3,6,8,10}.{weight,bias}`` or lpips' ``net.slice{1..5}.{N}.{weight,bias}``, plus
lpips' ``lin{0..4}.model.1.weight``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

#: (in, out, kernel, stride, padding) of AlexNet's five conv layers; torchvision indices 0, 3, 6, 8, 10.
_ALEX_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
_FEATURE_INDEX = (0, 3, 6, 8, 10)
_CHANNELS = tuple(c[1] for c in _ALEX_CONVS)
#: Smallest frame the AlexNet stack accepts (two 3x3/2 max-pools after the stride-4 conv).
MIN_SIZE = 32


class LPIPSAlex(nn.Module):
    """LPIPS distance with AlexNet features (version 0.1).

    ``forward(x, y)`` takes ``(N, C, H, W)`` images in ``[-1, 1]`` with ``C`` = 1 or 3
    (single-channel frames are repeated to RGB, as in the published DiffCast evaluator)
    and returns ``(N,)`` distances (0 for identical images).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in _ALEX_CONVS)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """relu1 .. relu5 activations of AlexNet (torchvision ``features`` slices of lpips)."""
        x = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # max-pool before conv2 and conv3
                x = self.pool(x)
            x = torch.relu(conv(x))
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4:
            raise ValueError(f"LPIPS needs two (N, C, H, W) batches of equal shape, got {tuple(x.shape)}, {tuple(y.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
            y = y.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"LPIPS needs 1 or 3 channels, got {x.shape[1]}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS (AlexNet) needs frames of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {x.shape[-2]}x{x.shape[-1]}")
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for fx, fy, lin in zip(self.features(x), self.features(y), self.lins):
            nx = fx / (fx.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny).square()).mean(dim=(1, 2, 3))
        return total


def _rename(key: str) -> str | None:
    """Map a parameter name of a supported layout onto :class:`LPIPSAlex`'s names."""
    m = re.fullmatch(r"(?:net\.)?(?:features|slice\d)\.(\d+)\.(weight|bias)", key)
    if m:
        idx = int(m.group(1))
        if idx in _FEATURE_INDEX:
            return f"convs.{_FEATURE_INDEX.index(idx)}.{m.group(2)}"
        return None
    m = re.fullmatch(r"lin(\d)\.model\.1\.weight", key)
    if m:
        return f"lins.{m.group(1)}.weight"
    return None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def load_lpips(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LPIPSAlex:
    """Build :class:`LPIPSAlex` with the weights in a local file.

    Parameters
    ----------
    path : path-like
        ``.safetensors`` or torch state-dict file (see the module docstring for names).
    device : str or torch.device
        Where to put the network.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file lacks some of the 15 tensors (5 conv weights + biases, 5 linear weights)
        or shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights file {path} not found")
    raw = _read_state(path)
    state = {}
    for key, value in raw.items():
        new = _rename(key)
        if new is not None:
            state[new] = value
    model = LPIPSAlex()
    wanted = {k for k in model.state_dict() if k not in ("shift", "scale")}
    missing = sorted(wanted - set(state))
    if missing:
        raise ValueError(
            f"{path} lacks LPIPS parameters {missing[:6]}; expected torchvision AlexNet "
            "'features.N.weight/bias' and lpips 'linK.model.1.weight' names"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{path}: LPIPS weights do not fit the AlexNet layout: {exc}") from exc
    log.info("loaded LPIPS (AlexNet, v0.1) weights from %s", path)
    return model.to(device)
