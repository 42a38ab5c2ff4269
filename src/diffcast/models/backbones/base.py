"""The interface every deterministic backbone implements."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Backbone(nn.Module):
    """Base class: ``forward(x_in) -> mu`` and ``loss(x_in, y_true) -> dict``.

    Parameters
    ----------
    t_in, t_out : int
        Number of observed and forecast frames.
    channels : int
        Channels per frame (1 for radar).
    height, width : int
        Frame size in pixels.

    Subclasses set :attr:`trainable` to ``False`` when they have no parameters
    (persistence, extrapolation); such backbones contribute no backbone loss.
    Inputs and outputs follow the tensor contract ``(B, T, C, H, W)`` float32;
    ``mu`` is nominally in ``[0, 1]`` but not clipped unless the model does so.
    """

    trainable: bool = True

    def __init__(self, t_in: int, t_out: int, channels: int = 1, height: int = 128, width: int = 128) -> None:
        super().__init__()
        for key, val in (("t_in", t_in), ("t_out", t_out), ("channels", channels), ("height", height), ("width", width)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"{key} must be a positive integer, got {val!r}")
        self.t_in = t_in
        self.t_out = t_out
        self.channels = channels
        self.height = height
        self.width = width

    def check_input(self, x_in: torch.Tensor) -> None:
        """Raise ``ValueError`` if ``x_in`` does not match the configured shape."""
        expected = (self.t_in, self.channels, self.height, self.width)
        if x_in.ndim != 5 or tuple(x_in.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects x_in of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(x_in.shape)}"
            )

    def forward_with_loss(self, x_in: torch.Tensor, y_true: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(mu, terms)``; ``terms["loss"]`` is the total to minimise.

        The default is plain MSE; models with extra terms (PhyDNet's moment
        loss) override this.
        """
        mu = self(x_in)
        mse = F.mse_loss(mu, y_true)
        return mu, {"loss": mse, "mse": mse}

    def loss(self, x_in: torch.Tensor, y_true: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms; ``"loss"`` is the total, ``"mse"`` always present."""
        return self.forward_with_loss(x_in, y_true)[1]


def apply_preset(owner: str, presets: dict[str, dict], preset: str | None, overrides: dict) -> dict:
    """Merge a named preset with explicit keyword overrides.

    Parameters
    ----------
    owner : str
        Name used in error messages (the backbone's registry name).
    presets : dict of str to dict
        The class's ``PRESETS``; every preset must hold every hyper-parameter.
    preset : str or None
        Preset to start from (``None``: the first preset).
    overrides : dict
        Explicit keyword arguments; they win over the preset's values.

    Returns
    -------
    dict
        The resolved hyper-parameters.

    Raises
    ------
    ValueError
        For an unknown preset or a keyword no preset knows.
    """
    if preset is None:
        preset = next(iter(presets))
    if preset not in presets:
        raise ValueError(f"unknown {owner} preset {preset!r}; choose one of: {', '.join(sorted(presets))}")
    cfg = dict(presets[preset])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(
            f"unknown {owner} argument(s) {', '.join(unknown)}; valid ones are: {', '.join(sorted(cfg))}"
        )
    cfg.update(overrides)
    return cfg
