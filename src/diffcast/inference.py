"""Forecasting API shared by ``diffcast nowcast``, ``diffcast evaluate`` and the demo.

>>> nc = Nowcaster.from_spec("persistence", t_in=5, t_out=20)
>>> out = nc.predict(x_in, members=4, seed=0)   # x_in: (B, 5, 1, H, W) in [0, 1]
>>> out.forecast.shape                           # (M, B, 20, 1, H, W)

A spec is a baseline name (``persistence``, ``extrapolation``) or a path to a
model file / checkpoint folder / run folder (see
:func:`diffcast.training.model_io.resolve_model_file`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.contract import DatasetMeta, as_tensor
from .data.transforms import get_meta
from .models.factory import build_model

log = logging.getLogger(__name__)

BASELINES = ("persistence", "extrapolation", "sprog", "steps")
#: Baselines built from pysteps' cascade methods: they need the data's units, time step and pixel size.
PYSTEPS_BASELINES = ("sprog", "steps")


@dataclass
class NowcastResult:
    """Output of :meth:`Nowcaster.predict`.

    Attributes
    ----------
    forecast : Tensor
        ``(M, B, T_out, C, H, W)`` in ``[0, 1]``.
    mu : Tensor
        Backbone mean ``(B, T_out, C, H, W)`` (for a backbone alone, the forecast itself:
        both clamped to ``[0, 1]``).
    residual : Tensor or None
        Sampled residuals ``(M, B, T_out, C, H, W)`` in ``[-1, 1]`` space, or
        ``None`` for deterministic models.
    """

    forecast: torch.Tensor
    mu: torch.Tensor
    residual: torch.Tensor | None = None

    @property
    def ensemble_mean(self) -> torch.Tensor:
        return self.forecast.mean(dim=0)


def is_diffusion_model(model: nn.Module) -> bool:
    return hasattr(model, "sample") and hasattr(model, "backbone")


def _meta_from_file(config: dict[str, Any], metadata: dict[str, str], file: Path) -> DatasetMeta:
    """Dataset metadata of a model file: the registered record if the name is known,
    else the record stored in the file (thresholds, units, time step; linear transform)."""
    import json
    from dataclasses import fields

    data_name = (config.get("data") or {}).get("name", "sevir")
    try:
        return get_meta(data_name)
    except ValueError:
        pass
    stored = json.loads(metadata.get("diffcast_meta", "null") or "null")
    if stored:
        known = {f.name for f in fields(DatasetMeta)} - {"to_physical_fn"}
        kwargs = {k: v for k, v in stored.items() if k in known}
        kwargs["thresholds"] = tuple(kwargs.get("thresholds", ()))
        return DatasetMeta(**kwargs)
    log.warning("no metadata for dataset %r in %s; using SEVIR metadata", data_name, file)
    return get_meta("sevir")


class GridMismatchError(ValueError):
    """A model whose weights depend on the frame size was asked to run on another grid."""


#: Trained models run on another grid than their own are zero-padded to a multiple of this (UNet down-sampling).
GRID_MULTIPLE = 16
#: Relative tolerance between a model's pixel size and the input's.
PIXEL_TOL = 0.05


def padded_grid(height: int, width: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of :data:`GRID_MULTIPLE`: the grid a model runs on for an input grid."""
    return -(-int(height) // GRID_MULTIPLE) * GRID_MULTIPLE, -(-int(width) // GRID_MULTIPLE) * GRID_MULTIPLE


def _limit_attention(model: nn.Module, mcfg: dict[str, Any], trained: tuple[int, int]) -> None:
    """Full spatial attention of a model run on a larger grid attends over windows of its training extent."""
    from .models.diffusion.layers import Attention
    from .models.diffusion.residual import PRESETS

    dcfg = mcfg.get("diffusion") or {}
    preset = PRESETS[dcfg.get("preset", "paper")]
    mults = dcfg.get("dim_mults", preset["dim_mults"])
    patch = int(dcfg.get("patch", preset["patch"]))
    f = 2 ** (len(mults) - 1) * patch  # the UNet's middle block works at 1 / f of the frame size
    for m in model.modules():
        if isinstance(m, Attention):
            m.window = (max(1, trained[0] // f), max(1, trained[1] // f))


def inflow_of(model: nn.Module, x_in: np.ndarray, coverage: np.ndarray, n_lead: int) -> np.ndarray | None:
    """``(n_lead, y, x)`` True where a model advecting with an optical-flow backbone
    (``extrapolation`` or ``sprog``) would move in rain from outside the domain or the radar coverage
    (``coverage``, the ``(y, x)`` of the input, top-left of the possibly zero-padded
    ``x_in`` ``(t_in, Y, X)``): NaN there, as pysteps' nowcasts leave it, instead of the
    zero rain that the padding invents. ``None`` for other models.

    The motion is the backbone's own Lucas-Kanade field on the same frames (kept by the
    backbone from the forecast, so not computed twice), cut to the domain.
    """
    from .models.backbones import pysteps_methods as pm
    from .models.backbones.extrapolation import Extrapolation

    bb = getattr(model, "backbone_net", None)
    h, w = coverage.shape
    if isinstance(bb, Extrapolation):
        uv = bb.motion(np.asarray(x_in, dtype=np.float64)[-bb.motion_frames :])[:, :h, :w]
    elif isinstance(bb, pm.SProg):  # S-PROG advects its cascade with the LK motion of all input frames
        uv = bb.motion(np.asarray(x_in, dtype=np.float64))[:, :h, :w]
    else:
        return None
    return pm.inflow_mask(coverage, uv, n_lead)


class Nowcaster:
    """A model (backbone alone or DiffCast) plus what is needed to use it.

    Parameters
    ----------
    model : nn.Module
        A :class:`~diffcast.models.backbones.Backbone` or a ``ResidualDiffusion``.
    config : dict
        The resolved config (``config["model"]`` rebuilds ``model``).
    meta : DatasetMeta
        Metadata of the data the model was trained on (units, thresholds, time step).
    name : str
        Label used in reports.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any], meta: DatasetMeta, name: str = "model") -> None:
        self.model = model.eval()
        self.config = config
        self.meta = meta
        self.name = name
        mcfg = config["model"]
        self.t_in = int(mcfg["t_in"])
        self.t_out = int(mcfg["t_out"])
        self.channels = int(mcfg.get("channels", 1))
        self.height = int(mcfg.get("height", 128))
        self.width = int(mcfg.get("width", 128))

    def set_domain(self, height: int, width: int) -> None:
        """Say that inputs hold data only in their top-left ``height x width`` (the rest zero
        padding up to the model's grid): kept as ``input_grid`` for cropping the forecast back,
        and passed to an optical-flow backbone so that it estimates motion on the domain only."""
        self.input_grid = (int(height), int(width))
        bb = getattr(self.model, "backbone_net", self.model)
        if hasattr(bb, "domain"):
            bb.domain = None if self.input_grid == (self.height, self.width) else self.input_grid

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_baseline(
        cls,
        name: str,
        t_in: int = 5,
        t_out: int = 20,
        channels: int = 1,
        height: int = 128,
        width: int = 128,
        meta: DatasetMeta | str = "sevir",
        **kwargs: Any,
    ) -> Nowcaster:
        """A parameter-free baseline by name (one of :data:`BASELINES`).

        ``sprog`` and ``steps`` (pysteps, see
        :mod:`diffcast.models.backbones.pysteps_methods`) take the intensity mapping,
        time step and pixel size from ``meta`` unless given in ``kwargs``.
        """
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")
        meta = get_meta(meta) if isinstance(meta, str) else meta
        if name in PYSTEPS_BASELINES:
            from .models.backbones.pysteps_methods import intensity_of

            kwargs = {
                "intensity": intensity_of(meta.unit, meta.physical_unit),
                "scale": float(meta.scale),
                "timestep": float(meta.timestep_min),
                "pixel_size": float(meta.pixel_km),
                **kwargs,
            }
        mcfg = {
            "type": "backbone",
            "t_in": t_in,
            "t_out": t_out,
            "channels": channels,
            "height": height,
            "width": width,
            "backbone": {"name": name, **kwargs},
        }
        return cls(build_model(mcfg), {"model": mcfg, "data": {"name": meta.name}}, meta, name=name)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, map_location: str | torch.device = "cpu", grid: tuple[int, int] | None = None
    ) -> Nowcaster:
        """Load a model file, checkpoint folder or run folder.

        ``grid=(H, W)`` builds the network for another frame size than it was trained
        on; this works for fully convolutional models (DiffCast on a parameter-free
        backbone), whose weights do not depend on the frame size, and is a
        ``ValueError`` for the others.
        """
        from .training.model_io import load_model_file, resolve_model_file

        file = resolve_model_file(path)
        state, config, metadata = load_model_file(file)
        if grid is not None and (int(grid[0]), int(grid[1])) != (
            int(config["model"].get("height", 128)), int(config["model"].get("width", 128))
        ):
            import copy

            config = copy.deepcopy(config)
            trained = (config["model"].get("height", 128), config["model"].get("width", 128))
            config["model"]["height"], config["model"]["width"] = int(grid[0]), int(grid[1])
            try:
                model = build_model(config["model"])
                model.load_state_dict(state, strict=False)
            except (ValueError, RuntimeError) as exc:
                raise GridMismatchError(
                    f"{file} was trained on {trained[0]}x{trained[1]} frames and cannot run on {grid[0]}x{grid[1]} "
                    f"(its weights depend on the frame size): {str(exc).splitlines()[0]}"
                ) from None
            _limit_attention(model, config["model"], (int(trained[0]), int(trained[1])))
        else:
            model = build_model(config["model"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Non-persistent buffers (schedules) are recomputed, never loaded.
        if unexpected or missing:
            raise ValueError(
                f"{file} does not match the model its config describes: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        model.to(map_location)
        meta = _meta_from_file(config, metadata, file)
        label = config.get("name") or Path(path).name
        return cls(model, config, meta, name=str(label))

    @classmethod
    def from_spec(cls, spec: str | Path, **baseline_kwargs: Any) -> Nowcaster:
        """A baseline name or a checkpoint path."""
        if str(spec) in BASELINES:
            return cls.from_baseline(str(spec), **baseline_kwargs)
        return cls.from_checkpoint(spec)

    # ------------------------------------------------------------------ predict
    @property
    def is_probabilistic(self) -> bool:
        """True for DiffCast models and ensemble baselines (``steps``)."""
        return is_diffusion_model(self.model) or bool(getattr(self.model, "ensemble", False))

    @torch.inference_mode()
    def predict(
        self,
        x_in: Any,
        members: int = 1,
        seed: int | None = None,
        progress: bool = False,
        **sample_kwargs: Any,
    ) -> NowcastResult:
        """Forecast ``T_out`` frames from ``x_in`` ``(B, T_in, C, H, W)`` in [0, 1].

        Deterministic models always return one member (``M = 1``), whatever
        ``members`` asks for; check :attr:`is_probabilistic`. ``sample_kwargs`` (``sampler``, ``steps``, ``eta``, ``noise``) go to
        ``ResidualDiffusion.sample``.
        """
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        x = as_tensor(
            x_in, "x_in", length=self.t_in, channels=self.channels, size=(self.height, self.width)
        )
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        x = x.to(device)
        if getattr(self.model, "ensemble", False):
            if sample_kwargs:
                log.debug("%s ignores the diffusion sampling options %s", self.name, sorted(sample_kwargs))
            fc = self.model.sample_ensemble(x, members, seed)
            return NowcastResult(forecast=fc, mu=fc.mean(dim=0))
        if self.is_probabilistic:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(seed) if seed is not None else int(torch.seed() % (2**63)))
            out = self.model.sample(x, members=members, generator=gen, progress=progress, **sample_kwargs)
            return NowcastResult(forecast=out.forecast, mu=out.mu, residual=out.residual)
        mu = self.model(x)
        # the backbone's own output is clamped in place, forecast and mu sharing it (no second forecast-sized copy)
        owned = mu.is_contiguous() and mu.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        return NowcastResult(forecast=(mu.clamp_ if owned else mu.clamp)(0.0, 1.0).unsqueeze(0), mu=mu)
