"""A trained diffcast model behind the mlcast community's network contract.

The ``mlcast`` package (EUMETNET E-AI nowcasting community) wraps any
``torch.nn.Module`` whose ``forward(x, steps, ensemble_size)`` maps
``x`` ``[B, T_in, C, H, W]`` to ``[B, steps, C * ensemble_size, H, W]``, ensemble
members on the channel axis (its ``NowcastLightningModule(network=...)``). Its
networks see *normalized reflectivity*: rain rate R (mm/h) -> ``dBZ = 10 log10(200
R^1.6)`` clipped to ``[0, 60]`` -> ``dBZ / 30 - 1`` in ``[-1, 1]``
(``mlcast.data.normalization.rainrate_to_normalized``), and their forecasts are
mapped back the same way. :class:`MlcastNetwork` gives a diffcast model that face:

>>> from diffcast.integrations.mlcast import MlcastNetwork
>>> net = MlcastNetwork.from_shipped()        # the default shipped model, as diffcast.nowcast's
>>> y = net(x, steps=12, ensemble_size=8)     # x: [B, 4, 1, H, W] in mlcast's [-1, 1]
>>> y.shape                                    # [B, 12, 8, H, W]

Conventions (see :class:`MlcastNetwork`): values in mlcast's normalized reflectivity
(default) or in mm/h (``values="mm/h"``); frames ``timestep`` minutes apart (default:
the model's own step); ``steps`` at most the model's ``t_out`` (12 for the shipped
model: one hour), a ``ValueError`` beyond (no autoregressive roll-out: the model was
never trained on its own forecasts); ``C = 1``. The conversion to and from rain rate
and the model's own encoding is diffcast's (:func:`diffcast.api.run_model`, the code
behind :func:`diffcast.nowcast`), so this adapter and ``diffcast.nowcast`` give the
same members for the same rain, seed and options, away from the inflow edges (there
``diffcast.nowcast`` has NaN and the adapter the model's values, so with the default
incremental mask, grown from each lead's rain, members may differ within about 15 pixels
of those edges; ``mask_method=None`` on both removes that). Nothing here imports ``mlcast``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

#: Value conventions of :class:`MlcastNetwork` (``values=``).
VALUE_SPACES = ("mlcast", "mm/h")
#: mlcast's normalization: ``dBZ / DBZ_HALF - 1`` over ``[0, 2 * DBZ_HALF]`` dBZ.
DBZ_HALF = 30.0


def from_mlcast_values(x: np.ndarray) -> np.ndarray:
    """mlcast's normalized reflectivity (``[-1, 1]`` = 0..60 dBZ) -> rain rate in mm/h (Marshall-Palmer).

    0 dBZ and below (``x <= -1``) is no rain, as in diffcast's radar encoding.
    """
    from ..data.transforms import encoded_rainrate

    return encoded_rainrate((np.asarray(x, dtype=np.float64) + 1.0) * DBZ_HALF).astype(np.float64)


def to_mlcast_values(rain: np.ndarray) -> np.ndarray:
    """Rain rate in mm/h -> mlcast's normalized reflectivity (dBZ clipped to ``[0, 60]``, ``/ 30 - 1``)."""
    from ..data.transforms import rainrate_to_dbz

    dbz = np.clip(rainrate_to_dbz(np.nan_to_num(rain, nan=0.0)), 0.0, 2 * DBZ_HALF)
    return dbz / DBZ_HALF - 1.0


class MlcastNetwork(nn.Module):
    """A diffcast model as an mlcast network: ``forward(x, steps, ensemble_size)``.

    Parameters
    ----------
    model : str or path, optional
        A shipped model name (``diffcast models`` lists them, e.g.
        ``radar_diffcast_extrapolation``) or a model file / checkpoint folder / run
        folder of a model trained on radar (reflectivity or rain rate). Default: the
        default shipped model (:data:`diffcast.shipped.DEFAULT_SHIPPED`), the one
        :func:`diffcast.nowcast` uses.
    values : {"mlcast", "mm/h"}
        What ``x`` and the output hold: ``"mlcast"`` (default) mlcast's normalized
        reflectivity ``dBZ / 30 - 1`` in ``[-1, 1]`` (0 to 60 dBZ, Marshall-Palmer
        ``Z = 200 R^1.6``), what mlcast's ``predict`` feeds its network; ``"mm/h"`` rain
        rate. NaN in ``x`` is taken as no rain (mlcast replaces it by 0 too); the
        output has no NaN (forecasts where the motion brings rain in from outside the
        domain are the model's own values, not the NaN ``diffcast.nowcast`` puts there).
    timestep : float, optional
        Minutes between the input frames (default: the model's step; with a step ``k``
        times shorter every ``k``-th frame is used, as in :func:`diffcast.nowcast`).
    seed : int or None
        Seed of the ensemble: batch item ``b`` is sampled with ``seed + b`` (same input,
        same output); ``None`` draws fresh noise on every call.
    prob_matching : {"cdf", None}
        As in :func:`diffcast.nowcast` (default ``"cdf"``: each member gets the
        rain-rate distribution of the last input frame, lead by lead).
    mask_method : {"incremental", None}
        As in :func:`diffcast.nowcast` (default ``"incremental"``: STEPS' incremental
        precipitation mask before the matching).
    **sample_kwargs
        Diffusion sampling options (``sampler``, ``steps``, ``member_chunk``, ...).

    Notes
    -----
    Inference only: ``forward`` runs under ``torch.inference_mode`` and the output
    carries no gradient (diffcast trains with ``diffcast train``; the adapter is for
    forecasting and for scoring inside mlcast's validation and test loops). The
    output is on ``x``'s device and dtype; the model runs on the device the module
    is moved to (``net.to("cuda")``). Deterministic models give one member, repeated
    ``ensemble_size`` times.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        values: str = "mlcast",
        timestep: float | None = None,
        seed: int | None = 0,
        prob_matching: str | None = "cdf",
        mask_method: str | None = "incremental",
        **sample_kwargs: Any,
    ) -> None:
        super().__init__()
        from ..api import load_model
        from ..models.backbones.pysteps_methods import check_mask_method, check_prob_matching
        from ..shipped import DEFAULT_SHIPPED

        model = DEFAULT_SHIPPED if model is None else model

        if values not in VALUE_SPACES:
            raise ValueError(f"values must be one of {', '.join(VALUE_SPACES)}, got {values!r}")
        check_prob_matching(prob_matching)
        check_mask_method(mask_method)
        self.mask_method = mask_method
        self.spec = model
        self.values = values
        self.seed = seed
        self.prob_matching = prob_matching
        self.sample_kwargs = sample_kwargs
        self._base = load_model(model)  # the model as trained: a bad name or file fails here, not at the first batch
        self._grids: dict[tuple[int, int], Any] = {(self._base.height, self._base.width): self._base}
        self.nowcasters = nn.ModuleDict({"trained": self._base.model})  # one network per grid, moved with the module
        self.timestep = float(self._base.meta.timestep_min) if timestep is None else float(timestep)
        if not self.timestep > 0:
            raise ValueError(f"timestep must be a positive number of minutes, got {timestep!r}")

    @classmethod
    def from_shipped(cls, name: str | None = None, **kwargs: Any) -> MlcastNetwork:
        """The adapter around a model that ships with diffcast (no download; default: the default shipped model).

        Raises
        ------
        ValueError
            ``name`` is not a shipped model (the message lists them).
        """
        from ..shipped import DEFAULT_SHIPPED, shipped_models

        name = DEFAULT_SHIPPED if name is None else name
        if name not in shipped_models():
            raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(shipped_models()) or 'none'}")
        return cls(name, **kwargs)

    @property
    def t_in(self) -> int:
        """Input frames the model uses (at its own step)."""
        return self._base.t_in

    @property
    def t_out(self) -> int:
        """The most ``steps`` a call can ask for."""
        return self._base.t_out

    @property
    def is_probabilistic(self) -> bool:
        return self._base.is_probabilistic

    def _nowcaster(self, height: int, width: int) -> Any:
        """The model for ``height x width`` frames (fully convolutional models: rebuilt once per grid)."""
        from ..api import load_model

        key = (int(height), int(width))
        if key not in self._grids:
            nc = load_model(self.spec, *key)
            nc.model.to(next((p.device for p in self._base.model.parameters()), torch.device("cpu")))
            self._grids[key] = nc
            self.nowcasters[f"{key[0]}x{key[1]}"] = nc.model
        return self._grids[key]

    def forward(self, x: torch.Tensor, steps: int, ensemble_size: int = 1) -> torch.Tensor:
        """Forecast ``steps`` frames, ``ensemble_size`` members on the channel axis.

        Parameters
        ----------
        x : Tensor
            ``[B, T_in, 1, H, W]``, oldest frame first, ``timestep`` minutes apart, in
            :attr:`values` (mlcast's normalized reflectivity by default); at least the
            model's ``t_in`` frames at its step.
        steps : int
            Leads, each the model's step (5 min for the shipped model) apart; at most
            :attr:`t_out`.
        ensemble_size : int
            Members.

        Returns
        -------
        Tensor
            ``[B, steps, ensemble_size, H, W]`` in :attr:`values`, ``x``'s dtype and device.

        Raises
        ------
        ValueError
            Wrong shape, ``C != 1``, ``steps`` beyond :attr:`t_out` or below 1, too few frames,
            or a model that cannot take this input (time step, quantity).
        """
        from ..api import run_model
        from ..models.backbones.pysteps_methods import postprocess_members

        if x.ndim != 5:
            raise ValueError(f"x must be [B, T_in, C, H, W], got shape {tuple(x.shape)}")
        b, _, c, h, w = x.shape
        if c != 1:
            raise ValueError(f"x has {c} channels; diffcast models forecast one quantity (C = 1)")
        steps, ensemble_size = int(steps), int(ensemble_size)
        if steps < 1 or ensemble_size < 1:
            raise ValueError(f"steps and ensemble_size must be >= 1, got {steps} and {ensemble_size}")
        if steps > self.t_out:
            raise ValueError(
                f"model {self.spec} forecasts {self.t_out} steps; steps={steps} asks for more (no autoregressive "
                "roll-out: the model was not trained on its own forecasts)"
            )
        nc = self._nowcaster(h, w)
        arr = x.detach().to("cpu", torch.float64).numpy()[:, :, 0]
        arr = np.nan_to_num(arr, nan=-1.0 if self.values == "mlcast" else 0.0)
        rain = from_mlcast_values(arr) if self.values == "mlcast" else np.maximum(arr, 0.0)
        members = ensemble_size if nc.is_probabilistic else 1
        out = np.empty((b, ensemble_size, steps, h, w), np.float64)
        for i in range(b):
            seed = None if self.seed is None else int(self.seed) + i
            if seed is None:
                seed = int(np.random.SeedSequence().entropy % (2**31))
            fc, _ = run_model(nc, self.spec, rain[i], self.timestep, steps, members, seed, float(nc.meta.pixel_km),
                              dict(self.sample_kwargs), mark_inflow=False)
            fc = postprocess_members(fc, rain[i, -1], self.prob_matching, self.mask_method, nc.meta.timestep_min,
                                     nc.meta.pixel_km)
            out[i] = fc if fc.shape[0] == ensemble_size else np.repeat(fc, ensemble_size, axis=0)
        out = to_mlcast_values(out) if self.values == "mlcast" else np.nan_to_num(out, nan=0.0)
        return torch.from_numpy(out.transpose(0, 2, 1, 3, 4).copy()).to(device=x.device, dtype=x.dtype)
