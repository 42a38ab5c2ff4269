"""Persistence: the last observed frame repeated for every lead time."""

from __future__ import annotations

import torch

from . import BACKBONES
from .base import Backbone


@BACKBONES.register("persistence")
class Persistence(Backbone):
    """Eulerian persistence, ``mu[:, k] = x_in[:, -1]`` for every lead ``k``.

    Parameters
    ----------
    t_in, t_out : int
        Observed and forecast frames.
    channels, height, width : int
        Frame layout; any size is accepted.

    Notes
    -----
    No trainable parameters (:attr:`trainable` is ``False``); ``loss`` returns
    the MSE without a gradient, so the model can stand wherever a backbone does,
    including under the residual diffusion.
    """

    trainable = False
    PRESETS: dict[str, dict] = {}

    def __init__(self, t_in: int, t_out: int, channels: int = 1, height: int = 128, width: int = 128, **kwargs) -> None:
        if kwargs:
            raise ValueError(f"unknown persistence argument(s) {', '.join(sorted(kwargs))}; it takes none")
        super().__init__(t_in, t_out, channels, height, width)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Repeat the last frame.

        Parameters
        ----------
        x_in : Tensor, shape (B, T_in, C, H, W)

        Returns
        -------
        Tensor, shape (B, T_out, C, H, W)
        """
        self.check_input(x_in)
        return x_in[:, -1:].expand(-1, self.t_out, -1, -1, -1).contiguous()
