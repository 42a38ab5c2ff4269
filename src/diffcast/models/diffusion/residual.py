"""DiffCast: a deterministic backbone plus residual diffusion (Yu et al., CVPR 2024).

``y = mu + r``: the backbone predicts ``mu``; a conditional diffusion model (the
Global Temporal UNet, :class:`~.gtunet.GTUNet`, with the ConvGRU context encoder
:class:`~.context.ContextNet`) samples the residual ``r`` segment by segment,
each segment conditioned on the previous one. All diffusion tensors live in
``[-1, 1]`` space (``2x - 1``); the forecast is ``clamp((mu_n + r + 1) / 2, 0, 1)``.

Submodule names match the published checkpoint: ``model`` (GTUNet),
``ctx_net`` (context encoder), ``backbone_net`` (the backbone). The 13 schedule
tensors of the original are not in the state dict: they are recomputed from the
config (``schedule``, ``timesteps``, ``objective``, ``min_snr_gamma``).

Parameter counts of the paper preset (5 -> 20 frames, 128 x 128, 1 channel):
GTUNet 39,593,349; context encoder 6,676,544 (+ the backbone, PhyDNet 3,091,928).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ...sampling import SAMPLERS
from ...sampling.base import Sampler
from .context import ContextNet
from .gtunet import GTUNet
from .schedules import (
    SCHEDULES,
    alphas_cumprod_from_betas,
    canonical_objective,
    loss_weight,
    make_betas,
    objective_target,
    q_sample,
)

log = logging.getLogger(__name__)

#: Presets selected with ``preset=``; any key can be overridden by keyword.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "dim": 64,
        "dim_mults": (1, 2, 4, 8),
        "segment": 5,
        "groups": 8,
        "attn_heads": 4,
        "attn_dim_head": 32,
        "ta_kernel": 21,
        "patch": 1,
        "timesteps": 1000,
        "schedule": "sigmoid",
        "objective": "v",
        "min_snr_gamma": None,
        "alpha": 0.5,
        "detach_mu": False,
        "freeze_backbone": False,
        "train_segments": "all",
        "local_index": None,
        "residual_scale": None,
        # Default sampler: the fastest setting whose CRPS, CSI-M and CSI-pool16 stayed
        # within 2 % of DDIM-250 in benchmarks/bench_quality.py for two seeds (README,
        # "Samplers"). The converted official checkpoint keeps DDIM 250 with the
        # original spacing.
        "sampler": "unipc_3",
        "sampling_steps": 10,
        "eta": 0.0,
        "timestep_spacing": "logsnr",
    },
    "tiny": {
        "dim": 16,
        "dim_mults": (1, 2),
        "segment": 5,
        "groups": 8,
        "attn_heads": 2,
        "attn_dim_head": 16,
        "ta_kernel": 21,
        "patch": 1,
        "timesteps": 1000,
        "schedule": "sigmoid",
        "objective": "v",
        "min_snr_gamma": None,
        "alpha": 0.5,
        "detach_mu": False,
        "freeze_backbone": False,
        "train_segments": "all",
        "local_index": None,
        "residual_scale": None,
        "sampler": "unipc_3",
        "sampling_steps": 10,
        "eta": 0.0,
        "timestep_spacing": "logsnr",
    },
}

TRAIN_SEGMENTS = ("all", "random")

#: accepted spellings of ``autocast_dtype`` in :meth:`ResidualDiffusion.sample`
AUTOCAST_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def _autocast_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """``None``, ``torch.bfloat16`` or ``torch.float16`` from a dtype or its name."""
    if value is None:
        return None
    if isinstance(value, torch.dtype):
        if value in (torch.bfloat16, torch.float16):
            return value
        if value == torch.float32:
            return None
    elif str(value).lower() in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[str(value).lower()]
    elif str(value).lower() in ("fp32", "float32", "none"):
        return None
    raise ValueError(
        f"autocast_dtype must be None, torch.bfloat16, torch.float16 or one of {sorted(AUTOCAST_DTYPES)}; got {value!r}"
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX), as torch reports them."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(f()) for f in checks if callable(f))
    except Exception:  # private torch helpers: no answer means no
        return False


def _residual_scale(value: Any, t_out: int) -> list[float] | None:
    """``residual_scale`` as ``t_out`` positive floats (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(
            f"residual_scale={value!r}: 'auto' is resolved from the training data by diffcast train (a backbone "
            "cache is needed); to build a model directly give a number or one number per forecast frame"
        )
    vals = [value] * t_out if isinstance(value, (int, float)) and not isinstance(value, bool) else list(value)
    try:
        out = [float(v) for v in vals]
    except (TypeError, ValueError):
        raise ValueError(f"residual_scale must be a number or a list of numbers, got {value!r}") from None
    if len(out) != t_out:
        raise ValueError(f"residual_scale needs one value per forecast frame (t_out = {t_out}), got {len(out)}")
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"residual_scale values must be finite and > 0, got {out}")
    return out


def same_residual_scale(a: Any, b: Any) -> bool:
    """Whether two ``residual_scale`` values (None, a number, a list or a tensor) scale alike: both
    absent, or equal per frame to float precision (a number stands for every frame)."""
    if a is None or b is None:
        return a is None and b is None
    ta = torch.as_tensor(a, dtype=torch.float64).cpu().flatten()
    tb = torch.as_tensor(b, dtype=torch.float64).cpu().flatten()
    try:
        return bool(torch.allclose(ta, tb, rtol=1e-6, atol=0.0))
    except RuntimeError:  # different frame counts
        return False


@dataclass
class DiffCastSample:
    """Output of :meth:`ResidualDiffusion.sample`.

    Attributes
    ----------
    forecast : Tensor
        ``(M, B, T_out, C, H, W)`` in ``[0, 1]``.
    mu : Tensor
        Backbone forecast ``(B, T_out, C, H, W)``, clamped to ``[0, 1]``.
    residual : Tensor
        Sampled residuals ``(M, B, T_out, C, H, W)`` in ``[-1, 1]`` space
        (relative to the unclamped ``2 mu - 1``).
    """

    forecast: torch.Tensor
    mu: torch.Tensor
    residual: torch.Tensor

    @property
    def ensemble_mean(self) -> torch.Tensor:
        return self.forecast.mean(dim=0)


@dataclass
class SegmentBatch:
    """Residual segments of a training batch (:meth:`ResidualDiffusion.training_segments`).

    ``x0``/``cond`` ``(N, segment, C', H', W')`` (block space), ``ctx`` the context per row,
    ``idx`` ``(N,)`` segment index, ``rows`` ``(N,)`` window of each row, ``mu`` the backbone
    output ``(B, T_out, C, H, W)``, ``backbone_terms`` its loss terms when it is trained.
    """

    x0: torch.Tensor
    cond: torch.Tensor
    ctx: list[torch.Tensor]
    idx: torch.Tensor
    rows: torch.Tensor
    mu: torch.Tensor
    backbone_terms: dict[str, torch.Tensor]


def _expand_members(x: torch.Tensor, members: int) -> torch.Tensor:
    """``(B, ...) -> (M * B, ...)``, member-major (index ``m * B + b``)."""
    if members == 1:
        return x
    return x.unsqueeze(0).expand(members, *x.shape).reshape(members * x.shape[0], *x.shape[1:])


class ResidualDiffusion(nn.Module):
    """DiffCast on a deterministic backbone.

    Parameters
    ----------
    backbone : nn.Module
        A :class:`~diffcast.models.backbones.Backbone`: ``backbone(x_in) -> mu``.
    t_in, t_out : int
        Observed and forecast frames; ``t_out`` must be a multiple of ``segment``.
    channels, height, width : int
        Frame shape; ``height`` and ``width`` must be divisible by
        ``2 ** (len(dim_mults) - 1)``.
    preset : {"paper", "tiny"}
        Defaults for the keys below (see :data:`PRESETS`).
    **overrides
        ``dim``, ``dim_mults``, ``segment``, ``groups``, ``attn_heads``,
        ``attn_dim_head``, ``ta_kernel``, ``patch`` (architecture: with ``patch = p``
        the denoiser and the context encoder work on ``p x p`` pixel blocks folded
        into channels (space-to-depth), ``p**2`` times fewer positions, so about
        ``p**2`` times cheaper at a given width; the residual is unfolded back to
        full resolution, pixel by pixel; 1 = the paper's pixel-space model); ``timesteps``,
        ``schedule`` (linear | cosine | sigmoid | sigmoid_official: the
        original's arithmetic, for converted checkpoints), ``objective`` (v | eps | x0),
        ``min_snr_gamma`` (None = off) (diffusion); ``alpha`` (weight of the
        diffusion loss, the backbone gets ``1 - alpha``), ``detach_mu`` (no
        gradient from the diffusion loss into the backbone), ``freeze_backbone``
        (pretrained backbone: no gradients, eval mode, no backbone loss),
        ``train_segments`` ("all": every segment of every sample per step,
        folded into the batch; "random": one random segment per sample),
        ``local_index`` (frame after which the local context is taken; default
        ``t_in``, the first ``mu`` frame, = 5 in the original), ``residual_scale``
        (None: the diffusion works on the residual itself, as in the paper; a number or
        one number per forecast frame: the residual of frame ``k`` is divided by
        ``residual_scale[k]`` before the diffusion and multiplied back after sampling, so
        that each lead reaches the noise schedule at unit scale; ``diffcast train``
        resolves ``"auto"`` to the RMS residual per lead of the training data)
        (training);
        ``sampler``, ``sampling_steps``, ``eta``, ``timestep_spacing``
        (sampling defaults).

    Notes
    -----
    Training (:meth:`loss`) uses teacher forcing: each segment is conditioned
    on the previous segment's *true* residual (zeros for the first segment).
    """

    def __init__(
        self,
        backbone: nn.Module,
        t_in: int,
        t_out: int,
        channels: int = 1,
        height: int = 128,
        width: int = 128,
        preset: str = "paper",
        **overrides: Any,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown diffusion preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        unknown = sorted(set(overrides) - set(PRESETS[preset]))
        if unknown:
            raise ValueError(
                f"unknown diffusion option(s) {', '.join(unknown)}; valid: {', '.join(sorted(PRESETS[preset]))}"
            )
        cfg = {**PRESETS[preset], **overrides}
        cfg["dim_mults"] = tuple(int(m) for m in cfg["dim_mults"])
        for key, val in (("t_in", t_in), ("t_out", t_out), ("channels", channels), ("height", height), ("width", width)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"{key} must be a positive integer, got {val!r}")
        seg = int(cfg["segment"])
        if seg <= 0 or t_out % seg:
            raise ValueError(
                f"t_out ({t_out}) must be a positive multiple of the segment length ({seg}); "
                "set model.t_out or diffusion.segment"
            )
        patch = cfg["patch"]
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch must be a positive integer (1 = pixel space), got {patch!r}")
        factor = 2 ** (len(cfg["dim_mults"]) - 1) * patch
        if height % factor or width % factor:
            raise ValueError(
                f"frame size {height}x{width} must be divisible by {factor} for dim_mults {cfg['dim_mults']}"
                + (f" and patch {patch}" if patch > 1 else "")
            )
        if cfg["schedule"] not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {cfg['schedule']!r}; choose one of: {', '.join(SCHEDULES)}")
        if not 0.0 <= float(cfg["alpha"]) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {cfg['alpha']}")
        if cfg["train_segments"] not in TRAIN_SEGMENTS:
            raise ValueError(f"train_segments must be one of {TRAIN_SEGMENTS}, got {cfg['train_segments']!r}")
        local_index = t_in if cfg["local_index"] is None else int(cfg["local_index"])
        if not 0 <= local_index < t_in + t_out:
            raise ValueError(f"local_index must be in [0, {t_in + t_out}), got {local_index}")
        scale = _residual_scale(cfg["residual_scale"], t_out)
        if scale is not None:
            cfg["residual_scale"] = scale
        SAMPLERS.get(cfg["sampler"])  # fail early on unknown names
        for key in ("t_in", "t_out", "channels", "height", "width"):
            bval = getattr(backbone, key, None)
            if bval is not None and bval != locals()[key]:
                raise ValueError(f"backbone has {key}={bval} but the diffusion model was given {key}={locals()[key]}")

        self.t_in, self.t_out, self.channels, self.height, self.width = t_in, t_out, channels, height, width
        self.segment = seg
        self.patch = patch
        self.n_segments = t_out // seg
        self.local_index = local_index
        self.objective = canonical_objective(cfg["objective"])
        self.num_timesteps = int(cfg["timesteps"])
        self.alpha = float(cfg["alpha"])
        self.detach_mu = bool(cfg["detach_mu"])
        self.freeze_backbone = bool(cfg["freeze_backbone"])
        self.train_segments = cfg["train_segments"]
        self.sampler_name = cfg["sampler"]
        self.sampling_steps = int(cfg["sampling_steps"])
        self.eta = float(cfg["eta"])
        self.timestep_spacing = cfg["timestep_spacing"]
        self.preset = preset
        self.config = {"preset": preset, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}

        self.model = GTUNet(
            dim=cfg["dim"],
            dim_mults=cfg["dim_mults"],
            segment=seg,
            channels=channels * patch**2,
            groups=cfg["groups"],
            attn_heads=cfg["attn_heads"],
            attn_dim_head=cfg["attn_dim_head"],
            ta_kernel=cfg["ta_kernel"],
        )
        self.ctx_net = ContextNet(
            dim=cfg["dim"], dim_mults=cfg["dim_mults"], channels=channels * patch**2, groups=cfg["groups"]
        )
        self.backbone_net = backbone
        if self.freeze_backbone:
            for p in backbone.parameters():
                p.requires_grad_(False)
            backbone.eval()

        # Derived schedule tensors: recomputed from config, never saved (persistent=False).
        abar = alphas_cumprod_from_betas(make_betas(cfg["schedule"], self.num_timesteps))
        self.register_buffer("alphas_cumprod", abar, persistent=False)  # float64
        self.register_buffer(
            "loss_weight", loss_weight(abar, self.objective, cfg["min_snr_gamma"]).float(), persistent=False
        )
        # Residual scale per forecast frame (None = 1): from the config, never saved.
        self.register_buffer(
            "residual_scale",
            None if scale is None else torch.tensor(scale, dtype=torch.float32),
            persistent=False,
        )
        # torch.compile'd denoiser, built on first use of sample(compile=True); a plain
        # dict so the compiled wrapper is not registered as a submodule (state_dict keys).
        self._compiled: dict[str, Any] = {}

    # ------------------------------------------------------------------ basics
    @property
    def backbone(self) -> nn.Module:
        """The deterministic backbone (registered once, as ``backbone_net``)."""
        return self.backbone_net

    @property
    def backbone_trainable(self) -> bool:
        return bool(getattr(self.backbone_net, "trainable", True)) and not self.freeze_backbone

    def train(self, mode: bool = True) -> ResidualDiffusion:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone_net.eval()
        return self

    def _check(self, x: torch.Tensor, name: str, length: int) -> None:
        expected = (length, self.channels, self.height, self.width)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{name} must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )

    def _backbone_mu(self, x_in: torch.Tensor) -> torch.Tensor:
        if self.backbone_trainable:
            return self.backbone_net(x_in)
        with torch.no_grad():
            return self.backbone_net(x_in)

    def to_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W) -> (B, T, C p^2, H / p, W / p)``: space-to-depth for ``patch = p`` (identity for 1)."""
        if self.patch == 1:
            return x
        b, t = x.shape[:2]
        return F.pixel_unshuffle(x.reshape(b * t, *x.shape[2:]), self.patch).reshape(b, t, -1, *(
            n // self.patch for n in x.shape[-2:]))

    def from_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_blocks`."""
        if self.patch == 1:
            return x
        b, t = x.shape[:2]
        return F.pixel_shuffle(x.reshape(b * t, *x.shape[2:]), self.patch).reshape(b, t, -1, *(
            n * self.patch for n in x.shape[-2:]))

    def scale_residual(self, r: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """``r / residual_scale`` per forecast frame (``* residual_scale`` with ``inverse``); frames
        on dim -4 (``(..., T_out, C, H, W)``); identity without a scale."""
        if self.residual_scale is None:
            return r
        s = self.residual_scale.to(device=r.device, dtype=r.dtype).view(-1, 1, 1, 1)
        return r * s if inverse else r / s

    def context(self, x_in: torch.Tensor, mu: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(global_ctx, local_ctx)`` from ``x_in`` and ``mu`` (both in ``[0, 1]``)."""
        frames = self.to_blocks(torch.cat((x_in, mu), dim=1) * 2 - 1)
        return self.ctx_net(frames, self.local_index)

    def training_segments(
        self,
        x_in: torch.Tensor,
        y_true: torch.Tensor,
        generator: torch.Generator | None = None,
        mu: torch.Tensor | None = None,
    ) -> SegmentBatch:
        """The residual segments a training step denoises (see :meth:`loss`): backbone ``mu``,
        context, residual ``x0`` per segment with its teacher-forced condition (the previous
        true segment) and segment index, all segments (``train_segments="all"``, folded into
        the batch segment-major) or one random segment per window. Used by :meth:`loss` and by
        distillation (:mod:`diffcast.training.distill`)."""
        self._check(x_in, "x_in", self.t_in)
        self._check(y_true, "y_true", self.t_out)
        if mu is not None:
            if self.backbone_trainable:
                raise ValueError("a precomputed mu applies only to backbones that are not trained (frozen or parameter-free)")
            self._check(mu, "mu", self.t_out)
            bb_terms = {}
        elif self.backbone_trainable:
            mu, bb_terms = self.backbone_net.forward_with_loss(x_in, y_true)
        else:
            mu, bb_terms = self._backbone_mu(x_in), {}
        mu_d = mu.detach() if self.detach_mu else mu
        global_ctx, local_ctx = self.context(x_in, mu_d)
        r = self.scale_residual((y_true * 2 - 1) - (mu_d * 2 - 1))  # residual in [-1, 1] space, / scale
        r = self.to_blocks(r)
        b, k, s = r.shape[0], self.n_segments, self.segment
        r = r.reshape(b, k, s, *r.shape[2:])
        prev = torch.cat((torch.zeros_like(r[:, :1]), r[:, :-1]), dim=1)  # teacher forcing
        dev = x_in.device
        gdev = generator.device if generator is not None else dev  # draw where the generator lives
        if self.train_segments == "all":
            # fold segments into the batch, segment-major: index = seg * B + b
            x0 = r.transpose(0, 1).reshape(k * b, s, *r.shape[3:])
            cond = prev.transpose(0, 1).reshape(k * b, s, *r.shape[3:])
            idx = torch.arange(k, device=dev).repeat_interleave(b)
            rows = torch.arange(b, device=dev).repeat(k)
        else:
            idx = torch.randint(0, k, (b,), generator=generator, device=gdev).to(dev)
            rows = torch.arange(b, device=dev)
            x0, cond = r[rows, idx], prev[rows, idx]
        return SegmentBatch(x0, cond, self.segment_context(global_ctx, local_ctx, idx, rows), idx, rows, mu, bb_terms)

    def segment_context(
        self, global_ctx: list[torch.Tensor], local_ctx: list[torch.Tensor], idx: torch.Tensor, rows: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per training row, the context of its window ``rows`` for segment ``idx``: local for the
        first segment, global for the others (as in sampling)."""
        first = idx == 0
        return [torch.where(first.view(-1, *([1] * (lc.ndim - 1))), lc[rows], gc[rows])
                for lc, gc in zip(local_ctx, global_ctx)]

    # ------------------------------------------------------------------ training
    def loss(
        self,
        x_in: torch.Tensor,
        y_true: torch.Tensor,
        generator: torch.Generator | None = None,
        mu: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training loss terms.

        Parameters
        ----------
        x_in : Tensor
            ``(B, T_in, C, H, W)`` in ``[0, 1]``.
        y_true : Tensor
            ``(B, T_out, C, H, W)`` in ``[0, 1]``.
        generator : torch.Generator, optional
            Source of the diffusion steps and noise (for reproducible tests).
        mu : Tensor, optional
            ``(B, T_out, C, H, W)`` backbone output computed beforehand (a backbone
            cache, e.g. :class:`~diffcast.data.radar_train.RadarWindows` with a
            parameter-free backbone); only for backbones that are not trained.
        mask : Tensor, optional
            Boolean, broadcastable to ``y_true``: True where the observation has data
            (radar coverage). Pixels without data are left out of every term (the
            squared errors are averaged over the pixels with data); the backbone must
            not be trained with a mask.

        Returns
        -------
        dict of str to Tensor
            ``loss`` = ``alpha * diffusion + (1 - alpha) * backbone`` when the
            backbone is trained, else ``diffusion``; ``diffusion`` (weighted
            objective MSE, epsilon-equivalent weighting, see
            :func:`~.schedules.loss_weight`); ``mse`` (backbone ``mu`` vs
            ``y_true``, for monitoring); when the backbone is trained also
            ``backbone`` and its own terms prefixed ``backbone_``.
        """
        if mask is not None and self.backbone_trainable:
            raise ValueError("a no-data mask needs a backbone that is not trained (frozen or parameter-free)")
        if mask is not None:
            # residual 0 where there are no data, so those pixels reach neither the target nor the
            # teacher-forced condition of the next segment
            mu = self._backbone_mu(x_in) if mu is None else mu
            y_true = torch.where(mask.expand_as(y_true), y_true, mu.to(y_true.dtype))
        batch = self.training_segments(x_in, y_true, generator, mu)
        x0, cond, ctx, idx, mu, bb_terms = batch.x0, batch.cond, batch.ctx, batch.idx, batch.mu, batch.backbone_terms
        seg_mask = None
        if mask is not None:  # the same blocks and segments as the residual x0
            m = self.to_blocks(mask.expand_as(y_true).to(x0.dtype))
            m = m.reshape(m.shape[0], self.n_segments, self.segment, *m.shape[2:])
            seg_mask = m[batch.rows, batch.idx]
        terms: dict[str, torch.Tensor] = {}
        dev = x_in.device
        gdev = generator.device if generator is not None else dev  # draw where the generator lives
        n = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (n,), generator=generator, device=gdev).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(dev)
        x_t = q_sample(self.alphas_cumprod, x0, noise, t)
        out = self.model(x_t, t, cond, ctx, idx)
        target = objective_target(self.objective, self.alphas_cumprod, x0, noise, t)
        sq = F.mse_loss(out, target, reduction="none")
        if seg_mask is None:
            per_sample = sq.flatten(1).mean(dim=1)
            terms["mse"] = F.mse_loss(mu.detach(), y_true)
        else:  # masked MSE: the mean over the pixels with data
            per_sample = (sq * seg_mask).flatten(1).sum(1) / seg_mask.flatten(1).sum(1).clamp_min(1.0)
            full = mask.expand_as(y_true).to(y_true.dtype)
            terms["mse"] = ((mu.detach() - y_true) ** 2 * full).sum() / full.sum().clamp_min(1.0)
        l_diff = (per_sample * self.loss_weight[t]).mean()
        terms["diffusion"] = l_diff
        if bb_terms:
            l_bb = bb_terms["loss"]
            terms["backbone"] = l_bb
            for key, val in bb_terms.items():
                if key != "loss":
                    terms[f"backbone_{key}"] = val
            terms["loss"] = self.alpha * l_diff + (1 - self.alpha) * l_bb
        else:
            terms["loss"] = l_diff
        return terms

    def forward(self, x_in: torch.Tensor, y_true: torch.Tensor | None = None) -> Any:
        """``loss(x_in, y_true)`` when ``y_true`` is given, else one sampled forecast ``(B, T_out, C, H, W)``."""
        if y_true is not None:
            return self.loss(x_in, y_true)
        return self.sample(x_in).forecast[0]

    # ------------------------------------------------------------------ sampling
    def make_sampler(
        self,
        sampler: str | Sampler | None = None,
        eta: float | None = None,
        clip_x0: bool = True,
        timestep_spacing: str | None = None,
    ) -> Sampler:
        """A sampler for this model's schedule and objective (defaults from the config)."""
        if isinstance(sampler, Sampler):
            return sampler
        name = sampler or self.sampler_name
        cls = SAMPLERS.get(name)
        kwargs: dict[str, Any] = {
            "alphas_cumprod": self.alphas_cumprod.detach().cpu(),
            "prediction_type": self.objective,
            "timestep_spacing": timestep_spacing or self.timestep_spacing,
            "clip_sample": clip_x0,
            # the x0 clamp at +-1 of the unscaled residual, at its smallest scale (looser at the others)
            "clip_range": 1.0 if self.residual_scale is None else float(1.0 / self.residual_scale.min()),
        }
        if getattr(cls, "accepts_eta", False):
            kwargs["eta"] = self.eta if eta is None else float(eta)
        elif eta not in (None, 0, 0.0):
            raise ValueError(f"sampler {name!r} has no eta parameter (got eta={eta}); use ddim for eta > 0")
        return cls(**kwargs)

    def _segment_noise(
        self, noise: torch.Tensor | Sequence[torch.Tensor] | None, members: int, batch: int, device: torch.device
    ) -> list[torch.Tensor] | None:
        if noise is None:
            return None
        shape = (members, batch, self.segment, self.channels, self.height, self.width)
        items = list(noise.unbind(0)) if torch.is_tensor(noise) else list(noise)
        if len(items) != self.n_segments or any(tuple(z.shape) != shape for z in items):
            got = tuple(noise.shape) if torch.is_tensor(noise) else [tuple(z.shape) for z in items]
            raise ValueError(
                f"noise must be a tensor of shape {(self.n_segments, *shape)} (segments, members, batch, "
                f"frames, C, H, W) or a list of {self.n_segments} tensors of shape {shape}; got {got}"
            )
        return [self.to_blocks(z.to(device=device, dtype=torch.float32).reshape(members * batch, *shape[2:]))
                for z in items]

    def _denoiser(self, compile: bool) -> Any:
        """The GTUNet, or its ``torch.compile`` d version (built once and cached)."""
        if not compile:
            return self.model
        if "model" not in self._compiled:
            if not hasattr(torch, "compile"):
                raise RuntimeError("sample(compile=True) needs torch.compile (PyTorch >= 2.0); run without compile")
            self._compiled["model"] = torch.compile(self.model, dynamic=False)
        return self._compiled["model"]

    def sample(
        self,
        x_in: torch.Tensor,
        members: int = 1,
        sampler: str | Sampler | None = None,
        steps: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | Sequence[torch.Tensor] | None = None,
        clip_x0: bool = True,
        progress: bool = False,
        timestep_spacing: str | None = None,
        compile: bool = False,
        autocast_dtype: torch.dtype | str | None = None,
        member_chunk: int | None = None,
    ) -> DiffCastSample:
        """Sample ``members`` forecasts per input, segment by segment.

        Parameters
        ----------
        x_in : Tensor
            ``(B, T_in, C, H, W)`` in ``[0, 1]``.
        members : int
            Ensemble size ``M``. The backbone and context encoder run once per
            input; their outputs are shared by all members.
        sampler : str or Sampler, optional
            Name in :data:`diffcast.sampling.SAMPLERS` (default from the config).
        steps : int, optional
            Sampling steps (default ``sampling_steps`` of the config).
        eta : float, optional
            DDIM stochasticity (default from the config; DDIM only).
        generator : torch.Generator, optional
            Source of the initial noise and of any ancestral noise.
        noise : Tensor or list of Tensor, optional
            Initial noise per segment: ``(n_segments, M, B, segment, C, H, W)``
            or a list of ``n_segments`` tensors ``(M, B, segment, C, H, W)``;
            makes a deterministic sampler's output exactly reproducible.
        clip_x0 : bool
            Clamp the predicted residual ``x0`` to ``[-1, 1]`` at every step.
        progress : bool
            Show a tqdm progress bar.
        timestep_spacing : str, optional
            Override the config's respacing (see :mod:`diffcast.sampling.base`).
        compile : bool
            Run the denoiser through ``torch.compile`` (off by default; the
            first call compiles, which takes minutes on a CPU and needs a C++
            compiler; a failure raises ``RuntimeError``). Results agree with
            the eager model to float round-off, not bit for bit.
        autocast_dtype : torch.dtype or str, optional
            Run the denoiser under ``torch.autocast`` in ``bfloat16`` (``"bf16"``)
            or ``float16`` (``"fp16"``); off (``None``) by default. The sampler
            update stays in float32. Only worth it on hardware with fast
            low-precision matmuls (GPUs, CPUs with AVX512-BF16 / AMX); see
            ``tests/unit/diffusion/test_efficiency.py`` for its accuracy cost.
        member_chunk : int, optional
            Run the denoiser on at most this many members at a time (the backbone and
            the context encoder still run once); bounds the denoiser's memory by the
            chunk instead of the ensemble. Each member's noise comes from its own
            generator, seeded from ``generator``, so with a deterministic sampler
            (UniPC, DDIM with ``eta = 0``, the defaults) the result does not depend on
            the chunk size; ancestral samplers draw their step noise per chunk.

        Returns
        -------
        DiffCastSample
            Ordinary tensors (not inference tensors), so callers may modify
            them in place or use them in autograd code.

        Notes
        -----
        Runs under ``torch.inference_mode``; with both flags off the result is
        bit-identical to the plain ``torch.no_grad`` computation (the in-place
        element-wise updates of the layers keep the order of operations).
        """
        amp_dtype = _autocast_dtype(autocast_dtype)
        if amp_dtype == torch.bfloat16 and x_in.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                "bfloat16 autocast on a CPU without AVX512-BF16 or AMX: the denoiser runs far slower than in "
                "float32 here (25x slower measured on an AVX512 CPU without them); drop autocast_dtype / --precision",
                RuntimeWarning, stacklevel=2,
            )
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be True or False, got {compile!r}")
        with torch.inference_mode():
            out = self._sample(
                x_in, members, sampler, steps, eta, generator, noise, clip_x0, progress, timestep_spacing,
                compile, amp_dtype, member_chunk,
            )
        # inference tensors -> ordinary tensors (a cheap copy next to the sampling)
        return DiffCastSample(forecast=out.forecast.clone(), mu=out.mu.clone(), residual=out.residual.clone())

    def _sample(
        self,
        x_in: torch.Tensor,
        members: int,
        sampler: str | Sampler | None,
        steps: int | None,
        eta: float | None,
        generator: torch.Generator | None,
        noise: torch.Tensor | Sequence[torch.Tensor] | None,
        clip_x0: bool,
        progress: bool,
        timestep_spacing: str | None,
        compile: bool,
        amp_dtype: torch.dtype | None,
        member_chunk: int | None = None,
    ) -> DiffCastSample:
        self._check(x_in, "x_in", self.t_in)
        if not isinstance(members, int) or members < 1:
            raise ValueError(f"members must be a positive integer, got {members!r}")
        if member_chunk is not None and (isinstance(member_chunk, bool) or not isinstance(member_chunk, int)
                                         or member_chunk < 1):
            raise ValueError(f"member_chunk must be a positive integer or None, got {member_chunk!r}")
        steps = self.sampling_steps if steps is None else steps
        b, m, dev = x_in.shape[0], members, x_in.device
        seg_noise = self._segment_noise(noise, m, b, dev)
        smp = self.make_sampler(sampler, eta, clip_x0, timestep_spacing)

        mu = self._backbone_mu(x_in)
        mu_n = mu * 2 - 1
        global_ctx, local_ctx = self.context(x_in, mu)
        denoiser = self._denoiser(compile)
        smp.set_timesteps(steps, device=dev)
        n_evals = len(smp.timesteps)
        bar = tqdm(total=m * self.n_segments * n_evals, desc="sampling", unit="member-step", disable=not progress,
                   leave=False)
        # One generator per member (seeded from `generator`): a member's noise does not
        # depend on which chunk it runs in.
        gdev = generator.device if generator is not None else dev
        member_seeds = torch.randint(0, 2**62, (m,), generator=generator, device=gdev).tolist()
        chunk = m if member_chunk is None else min(int(member_chunk), m)
        residuals = []
        for j0 in range(0, m, chunk):
            mc = min(chunk, m - j0)
            gens = [torch.Generator(device=gdev).manual_seed(int(sd)) for sd in member_seeds[j0 : j0 + mc]]
            lctx = [_expand_members(c, mc) for c in local_ctx]
            gctx = [_expand_members(c, mc) for c in global_ctx]
            segs = []
            cond = None
            for k in range(self.n_segments):
                if seg_noise is not None:
                    r = seg_noise[k][j0 * b : (j0 + mc) * b]
                else:
                    # drawn at full resolution and folded: a seed gives the same pixel noise for any patch
                    full = (b, self.segment, self.channels, self.height, self.width)
                    r = torch.cat([torch.randn(full, generator=g, device=gdev) for g in gens]).to(dev)
                    r = self.to_blocks(r)
                smp.set_timesteps(steps, device=dev)
                idx = torch.full((mc * b,), k, device=dev, dtype=torch.long)
                ctx = lctx if k == 0 else gctx
                for t in smp.timesteps:
                    tt = torch.full((mc * b,), int(t), device=dev, dtype=torch.long)
                    if amp_dtype is None and not compile:
                        out = self.model(r, tt, cond, ctx, idx)
                    else:
                        out = self._fast_eval(denoiser, amp_dtype, r, tt, cond, ctx, idx)
                    r = smp.step(out, t, r, generator=generator)
                    bar.update(mc)
                segs.append(r)
                cond = r
            residuals.append(self.from_blocks(torch.cat(segs, dim=1)))
            del lctx, gctx, segs, cond, r
        bar.close()
        res = torch.cat(residuals).reshape(m, b, self.t_out, self.channels, self.height, self.width)
        res = self.scale_residual(res, inverse=True)
        forecast = ((mu_n.unsqueeze(0) + res + 1) / 2).clamp(0.0, 1.0)
        return DiffCastSample(forecast=forecast, mu=mu.clamp(0.0, 1.0), residual=res)

    @staticmethod
    def _fast_eval(
        denoiser: Any,
        amp_dtype: torch.dtype | None,
        r: torch.Tensor,
        tt: torch.Tensor,
        cond: torch.Tensor | None,
        ctx: list[torch.Tensor],
        idx: torch.Tensor,
    ) -> torch.Tensor:
        """One denoiser call with the opt-in compile / autocast; returns float32."""
        try:
            if amp_dtype is None:
                return denoiser(r, tt, cond, ctx, idx)
            with torch.autocast(device_type=r.device.type, dtype=amp_dtype):
                out = denoiser(r, tt, cond, ctx, idx)
            return out.float()
        except Exception as err:  # torch.compile's backend errors are not ValueErrors
            if denoiser.__class__.__name__ == "OptimizedModule":
                raise RuntimeError(
                    f"sample(compile=True) failed: torch.compile could not build the denoiser "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                    "run without compile (the default)"
                ) from err
            raise

    def extra_repr(self) -> str:
        return (
            f"t_in={self.t_in}, t_out={self.t_out}, segment={self.segment}, objective={self.objective!r}, "
            f"timesteps={self.num_timesteps}, sampler={self.sampler_name!r}, steps={self.sampling_steps}"
        )
