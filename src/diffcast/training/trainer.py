"""Train a backbone alone or DiffCast on a backbone, with HuggingFace Accelerate.

>>> from diffcast.config import load_config
>>> from diffcast.training import train
>>> summary = train(load_config("tiny_convgru"), "runs/tiny")      # doctest: +SKIP
>>> summary = train(None, "runs/tiny", resume=True)                 # continue it  # doctest: +SKIP

The same code runs on one CPU, one GPU or many processes under
``accelerate launch``: Accelerate chooses devices and wraps the model for
distributed data parallel training; this module never picks a device.

Recipe (DiffCast paper defaults, see :class:`diffcast.config.TrainConfig`):
AdamW (lr 1e-4, betas 0.9/0.95), linear warm-up then cosine decay, global
gradient-norm clipping at 1.0, EMA of the weights, gradient accumulation and
optional bf16/fp16 mixed precision.

Validation runs on the main process every ``train.val_every`` updates on the
first ``data.val_limit`` sequences of the validation split, **with the EMA
weights** (the weights that are shipped in ``ema.safetensors`` and that
:meth:`diffcast.inference.Nowcaster.from_checkpoint` loads), with
``train.val_members`` ensemble members for DiffCast. The score named by
``train.best_metric`` selects ``checkpoints/best``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import inspect
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import RunConfig, config_from_dict, dump_config, load_config, read_yaml
from ..data.contract import split_sequence
from ..models.factory import build_model, count_parameters
from ..utils.io import atomic_write_text, ensure_writable_dir, exclusive_lock
from . import checkpoint as ck
from .data import ShardedBatches, build_dataset, item_seed, residual_rms, train_batches, val_batches
from .ema import EMA
from .loggers import RunLoggers
from .model_card import write_model_card
from .model_io import load_model_file, save_model_file
from .optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "TrainSummary", "Trainer", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN/inf; the run stopped without saving."""


@dataclass
class TrainSummary:
    """What a finished (or interrupted) run reports; also written to ``RUN/summary.json``."""

    run_dir: str
    name: str
    start_step: int
    steps: int
    max_steps: int
    samples_seen: int
    samples_per_s: float
    steps_per_s: float
    wall_s: float
    num_processes: int
    final_loss: float | None
    best_metric: str
    best_score: float | None
    best_step: int | None
    last_val: dict[str, float] | None
    last_checkpoint: str | None
    best_checkpoint: str | None
    interrupted: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"run {self.name}: {'interrupted at' if self.interrupted else 'finished'} step "
            f"{self.steps}/{self.max_steps} ({self.steps - self.start_step} this session, "
            f"{self.wall_s:.1f} s, {self.samples_per_s:.1f} samples/s on {self.num_processes} process(es))",
        ]
        if self.final_loss is not None:
            lines.append(f"final training loss {self.final_loss:.5g}")
        if self.best_score is not None:
            lines.append(f"best {self.best_metric} = {self.best_score:.5g} at step {self.best_step}")
        lines.append(f"run folder {self.run_dir}")
        if self.last_checkpoint:
            lines.append(f"last checkpoint {self.last_checkpoint}")
        if self.best_checkpoint:
            lines.append(f"best checkpoint {self.best_checkpoint}")
        if self.interrupted:
            lines.append(f"continue with: diffcast train --resume {self.run_dir}")
        return "\n".join(lines)


class _LossModule(nn.Module):
    """Routes ``model.loss`` (or a distiller's loss of ``model``) through ``forward`` so DDP and autocast wrap it."""

    def __init__(self, model: nn.Module, distiller: Any = None) -> None:
        super().__init__()
        self.model = model
        self._distiller = [distiller]  # a list: the teacher is not a submodule (no DDP, no state_dict)

    def forward(self, x_in: torch.Tensor, y_true: torch.Tensor, mu: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        kw: dict[str, Any] = {} if mu is None else {"mu": mu}
        if mask is not None:
            if self._distiller[0] is not None or "mask" not in inspect.signature(self.model.loss).parameters:
                what = "distillation" if self._distiller[0] is not None else f"{type(self.model).__name__}.loss"
                raise ValueError(
                    f"the training items have pixels without data (NaN) but {what} cannot leave them out of the "
                    "loss; use fully covered crops (data.kwargs.min_coverage=1) or train DiffCast on a "
                    "parameter-free backbone"
                )
            kw["mask"] = mask
        if self._distiller[0] is not None:
            return self._distiller[0].loss(x_in, y_true, **kw)
        return self.model.loss(x_in, y_true, **kw)


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current update (a second Ctrl-C aborts)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s received: stopping after this step and saving a checkpoint "
                    "(Ctrl-C again aborts without saving)", signal.Signals(signum).name)

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _load_or_refuse(target: nn.Module, state: dict[str, Any], refusal: str) -> None:
    """``target.load_state_dict(state)``; a mismatch is a ``ValueError`` of ``refusal`` and torch's first line."""
    try:
        target.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{refusal}: {str(exc).splitlines()[0]}") from None


def _init_backbone(model: nn.Module, cfg: RunConfig, source: str) -> None:
    """Load the backbone weights of a trained model (backbone alone or DiffCast) into ``model``."""
    from .model_io import resolve_model_file

    file = resolve_model_file(source)
    state, src_cfg, _ = load_model_file(file)
    src_model = src_cfg["model"]
    if src_model.get("type", "diffcast") == "diffcast":
        state = {k.removeprefix("backbone_net."): v for k, v in state.items() if k.startswith("backbone_net.")}
    src_name = (src_model.get("backbone") or {}).get("name")
    if src_name != cfg.model.backbone.get("name"):
        raise ValueError(f"train.init_backbone: {file} holds a {src_name!r} backbone, this model uses "
                         f"{cfg.model.backbone.get('name')!r}")
    target = model if cfg.model.type == "backbone" else model.backbone
    _load_or_refuse(target, state, f"train.init_backbone: the backbone in {file} does not fit this model "
                                   "(different preset or frame size?)")
    log.info("backbone initialised from %s", file)


def _load_source(source: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(file, weights, run config)`` of the trained model ``train.init_from`` names, read once."""
    from .model_io import resolve_model_file

    file = resolve_model_file(source)
    state, src_cfg, _ = load_model_file(file)
    return file, state, src_cfg


def _source_residual_scale(src_cfg: dict[str, Any]) -> list[float] | None:
    """``model.diffusion.residual_scale`` of a trained model's run config, ``None`` without one."""
    return (src_cfg.get("model", {}).get("diffusion") or {}).get("residual_scale")


def _init_from(model: nn.Module, cfg: RunConfig, source: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    """Load every weight of a trained model of the same architecture (:func:`_load_source`) into ``model``
    (fine-tuning)."""
    from ..models.diffusion.residual import same_residual_scale

    file, state, src_cfg = source
    src_type = src_cfg["model"].get("type", "diffcast")
    if src_type != cfg.model.type:
        raise ValueError(f"train.init_from: {file} holds a {src_type!r} model, this config trains a {cfg.model.type!r} one")
    _load_or_refuse(model, state, f"train.init_from: the weights in {file} do not fit this model (another preset, "
                                  "patch or frame count?)")
    src_scale = _source_residual_scale(src_cfg)
    own = getattr(model, "residual_scale", None)
    if not same_residual_scale(src_scale, own):
        raise ValueError(
            f"train.init_from: {file} was trained with model.diffusion.residual_scale {src_scale}, this config has "
            f"{None if own is None else own.tolist()}; its weights only mean something with their own scale: set "
            "residual_scale to auto (which takes the source's when fine-tuning) or to the same numbers"
        )
    log.info("all weights initialised from %s", file)


def _distiller(model: nn.Module, spec: dict[str, Any], init: bool) -> Any:
    """``train.distill``: the teacher loaded and frozen, ``model`` (the student) initialised
    with its weights at step 0 (:mod:`diffcast.training.distill`)."""
    from ..models.diffusion.residual import ResidualDiffusion
    from .distill import SUBSTEPS, Distiller
    from .model_io import resolve_model_file

    unknown = sorted(set(spec) - {"teacher", "steps", "substeps", "solver"})
    if unknown or "teacher" not in spec or "steps" not in spec:
        raise ValueError(f"train.distill needs teacher and steps (and optionally substeps); got {sorted(spec)}")
    if not isinstance(model, ResidualDiffusion):
        raise ValueError(f"train.distill: only DiffCast models can be distilled, not {type(model).__name__}")
    file = resolve_model_file(spec["teacher"])
    state, tcfg, _ = load_model_file(file)
    teacher = build_model(tcfg["model"])
    teacher.load_state_dict(state)
    if init:
        _load_or_refuse(model, state, f"train.distill: the student's architecture differs from the teacher {file}")
        log.info("student initialised from the teacher %s", file)
    return Distiller(model, teacher, int(spec["steps"]), int(spec.get("substeps", SUBSTEPS)), spec.get("solver"))


def _allow_new_precision(mixed_precision: str) -> None:
    """Let one single-process Python session train several runs with different precisions.

    Accelerate keeps a process-wide state that refuses a second ``Accelerator`` with
    another ``mixed_precision``; outside distributed runs that state can be dropped.
    """
    from accelerate.state import AcceleratorState, DistributedType

    if not AcceleratorState._shared_state:
        return
    state = AcceleratorState()
    if str(state.mixed_precision) != mixed_precision and state.distributed_type == DistributedType.NO:
        AcceleratorState._reset_state(reset_partial_state=True)


def _seed_all(seed: int) -> None:
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def _isolated_rng(device: torch.device) -> Iterator[None]:
    """Run validation without touching the training RNG streams."""
    import random

    np_state, py_state = np.random.get_state(), random.getstate()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _nodata_mask(x_in: torch.Tensor, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """NaN pixels of a batch are "no data" (datasets with ``nan_is_nodata``, e.g. :mod:`diffcast.data.mlcast.dataset`):
    ``(x_in, y_true, mask)`` with NaN set to 0 and ``mask`` True where ``y_true`` has data
    (``None`` when every pixel has). Infinities stay: they are bad data, not missing data."""
    if not bool(torch.isnan(y_true).any()) and not bool(torch.isnan(x_in).any()):
        return x_in, y_true, None
    mask = ~torch.isnan(y_true)
    return torch.nan_to_num(x_in, nan=0.0, posinf=float("inf"), neginf=float("-inf")), \
        torch.nan_to_num(y_true, nan=0.0, posinf=float("inf"), neginf=float("-inf")), mask


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        elif isinstance(v, np.ndarray) and v.size == 1:
            v = v.item()
        if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class Trainer:
    """One training run in ``out_dir`` (see :func:`train`)."""

    def __init__(
        self,
        config: RunConfig,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.cfg = config
        self.run_dir = Path(out_dir)
        self.resume = resume
        self.progress = progress
        self.data_provenance: dict[str, Any] | None = None

    # ------------------------------------------------------------ setup
    def _check_run_dir(self) -> Path | None:
        ensure_writable_dir(self.run_dir)
        latest = ck.latest_checkpoint(self.run_dir)
        saved_cfg = self.run_dir / "config.yaml"
        if not self.resume:
            if latest is not None or (self.run_dir / ck.CHECKPOINTS).exists():
                raise ValueError(
                    f"{self.run_dir} already holds a training run; continue it with --resume "
                    "or choose another output folder"
                )
            return None
        if saved_cfg.is_file():
            saved = config_from_dict(read_yaml(saved_cfg))
            # data loading speed and the validation subset may change; what is learned may not
            loose = {"num_workers": 0, "val_limit": 0}
            for section in ("model", "data", "seed"):
                old, new = getattr(saved, section), getattr(self.cfg, section)
                if section == "data":
                    old, new = dataclasses.replace(old, **loose), dataclasses.replace(new, **loose)
                if old != new:
                    raise ValueError(
                        f"cannot resume {self.run_dir}: its config has a different '{section}' section "
                        "than the one given; resume without --config (the saved config.yaml is used) "
                        "and override only train.* or logging.* keys"
                    )
        if latest is None:
            log.warning("no checkpoint in %s yet; starting from step 0", self.run_dir)
        return latest

    def _check_disk(self, n_params: int) -> None:
        need = ck.checkpoint_bytes(n_params) * 2
        free = shutil.disk_usage(self.run_dir).free
        if free < need:
            raise OSError(
                errno.ENOSPC,
                f"not enough free disk space in {self.run_dir}: {free / 2**20:.1f} MiB free, a checkpoint "
                f"needs about {need / 2**21:.1f} MiB (twice that while it is written); free some space "
                "or choose another --out",
            )

    # ------------------------------------------------------------ run
    def fit(self) -> TrainSummary:
        """Train until ``train.max_steps`` (or a stop signal); returns the summary.

        One trainer per run folder: a second one (another ``train``/``--resume`` on the
        same folder while this one runs) raises :class:`~diffcast.utils.io.BusyError`
        before any work (lock ``RUN/.lock``, held by the main process, released by the
        kernel however the process ends).
        """
        ensure_writable_dir(self.run_dir)
        if int(os.environ.get("RANK", "0")) != 0:  # other processes of an accelerate launch: rank 0 holds it
            return self._fit()
        with exclusive_lock(self.run_dir / ".lock", f"run folder {self.run_dir}"):
            return self._fit()

    def _fit(self) -> TrainSummary:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        cfg, tc = self.cfg, self.cfg.train
        latest = self._check_run_dir()  # fails before any work on an unwritable folder
        for module in cfg.imports:
            importlib.import_module(module)

        _allow_new_precision(tc.mixed_precision)
        acc = Accelerator(
            mixed_precision=tc.mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=tc.find_unused_parameters)],
        )
        self.acc = acc
        rank, world = acc.process_index, acc.num_processes
        is_main = acc.is_main_process

        # -------- model, data, optimiser (identical initialisation on every rank)
        train_ds = build_dataset(cfg, cfg.data.train_split)
        auto_scale = cfg.model.type == "diffcast" and cfg.model.diffusion.get("residual_scale") == "auto"
        # the model train.init_from names, read once (its scale, then its weights); a resumed run needs it
        # only for an `auto` scale
        source = _load_source(tc.init_from) if tc.init_from and (latest is None or auto_scale) else None
        if auto_scale:
            if source is not None:  # fine-tuning keeps the scale the weights were trained with
                scale = _source_residual_scale(source[2])
                how = f"the scale of {tc.init_from}"
            else:
                scale = residual_rms(train_ds, cfg.model.t_in, cfg.model.t_out)
                how = "RMS residual per lead of the training data"
            cfg.model.diffusion["residual_scale"] = scale
            if is_main:
                log.info("residual_scale: auto -> %s %s", how, scale)
        _seed_all(cfg.seed)
        try:
            model = build_model(cfg.model_dict())
        except TypeError as exc:  # a missing or unexpected keyword in model.backbone / model.diffusion
            raise ValueError(f"cannot build the model from the config's model section: {exc}") from None
        if latest is None and tc.init_backbone and tc.init_from:
            raise ValueError("train.init_from loads every weight, the backbone's too: leave train.init_backbone unset")
        if latest is None and source is not None:
            _init_from(model, cfg, source)
        del source
        if latest is None and tc.init_backbone:
            _init_backbone(model, cfg, tc.init_backbone)
        distiller = _distiller(model, tc.distill, init=latest is None) if tc.distill else None
        n_trainable = count_parameters(model, trainable_only=True)
        if n_trainable == 0:
            raise ValueError(
                f"the model (model.type={cfg.model.type}, backbone {cfg.model.backbone.get('name')!r}) has no "
                "trainable parameters: parameter-free backbones (persistence, extrapolation) cannot be trained alone; "
                "set model.type=diffcast to train the residual diffusion on top of them"
            )
        if not callable(getattr(model, "loss", None)):
            raise ValueError(f"{type(model).__name__} has no loss(x_in, y_true) method; it cannot be trained")
        self._check_disk(count_parameters(model))

        meta = getattr(train_ds, "meta", None)
        if meta is None:
            from ..data.transforms import get_meta

            meta = get_meta(cfg.data.name)
        self.meta = meta
        prov = getattr(train_ds, "provenance", None)
        self.data_provenance = prov() if callable(prov) else None
        if is_main and self.data_provenance is not None:
            atomic_write_text(self.run_dir / "data.json", json.dumps(self.data_provenance, indent=2, default=str))
        val_ds = None
        if tc.val_every > 0 and cfg.data.val_limit > 0:
            val_ds = build_dataset(cfg, cfg.data.val_split)

        ema = EMA(model, decay=tc.ema_decay, start=tc.ema_start, every=tc.ema_every)
        optimizer = build_optimizer(model, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
        scheduler = build_scheduler(optimizer, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr)

        state: dict[str, Any] = {"step": 0, "micro_step": 0, "best_score": None, "best_step": None}
        if latest is not None:
            state = ck.read_state(latest)
            weights, _, _ = load_model_file(latest / "model.safetensors")
            model.load_state_dict(weights)
            ema_weights, _, _ = load_model_file(latest / "ema.safetensors")
            ema.load_state_dict(ema_weights, state["ema_updates"])
            if is_main:
                log.info("resuming %s from step %d", latest, state["step"])
        if is_main:
            ck.cleanup_temp(self.run_dir)
            atomic_write_text(self.run_dir / "config.yaml", dump_config(cfg))

        wrapper, optimizer = acc.prepare(_LossModule(model, distiller), optimizer)
        if distiller is not None:
            distiller.teacher.to(acc.device)
        ema.module.to(acc.device)
        if latest is not None:
            optimizer.load_state_dict(ck.load_torch(latest / "optimizer.pt"))
            scheduler.load_state_dict(ck.load_torch(latest / "scheduler.pt"))
            # The schedule follows the current config (a resumed run may extend max_steps);
            # load_state_dict restored the old lambda's attributes.
            scheduler.lr_lambdas[0].__init__(tc.warmup_steps, tc.max_steps, tc.min_lr / tc.lr)
            scheduler.base_lrs = [tc.lr for _ in optimizer.param_groups]
            for group in optimizer.param_groups:
                group["initial_lr"] = tc.lr
            for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * fn(scheduler.last_epoch)
            scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
            if acc.scaler is not None and (latest / "scaler.pt").is_file():
                acc.scaler.load_state_dict(ck.load_torch(latest / "scaler.pt"))
            rng_path = ck.rng_file(latest, rank)
            if state.get("num_processes") == world and rng_path.is_file():
                ck.set_rng_state(ck.load_torch(rng_path))
            else:
                log.warning("checkpoint was written by %s process(es), now %d: RNG streams are reseeded, "
                            "so this continuation is not bit-identical", state.get("num_processes"), world)
                _seed_all(item_seed(cfg.seed, 3, rank, state["step"]))
        else:
            _seed_all(item_seed(cfg.seed, 3, rank))  # per-rank training noise

        order = ShardedBatches(len(train_ds), tc.batch_size, cfg.seed, rank, world,
                               group=int(getattr(train_ds, "items_per_window", 1)))
        micro = int(state["micro_step"])
        if latest is not None and state.get("num_processes") != world:
            micro = state["step"] * tc.grad_accum  # same number of updates, new layout
        batches = train_batches(train_ds, order, micro, cfg.data.num_workers, pin_memory=acc.device.type == "cuda")

        self.model, self.wrapper, self.ema = model, wrapper, ema
        self.optimizer, self.scheduler = optimizer, scheduler
        self.val_ds = val_ds
        loggers = RunLoggers(self.run_dir, cfg.logging.csv, cfg.logging.tensorboard, cfg.logging.wandb,
                             cfg.logging.wandb_project, cfg.to_dict(),
                             resume_step=state["step"] if latest is not None else None) if is_main else None

        step = start_step = int(state["step"])
        best_score, best_step = state.get("best_score"), state.get("best_step")
        last_ckpt: Path | None = latest
        last_val: dict[str, float] | None = None
        final_loss: float | None = None
        per_update = tc.batch_size * tc.grad_accum * world
        if is_main:
            log.info("training %s: %d trainable parameters, %d process(es), %d sequences per update, "
                     "steps %d -> %d", cfg.name, n_trainable, world, per_update, step, tc.max_steps)

        t_in, t_out = cfg.model.t_in, cfg.model.t_out
        nan_is_nodata = bool(getattr(train_ds, "nan_is_nodata", False))
        pbar = None
        if is_main and self.progress:
            from tqdm.auto import tqdm

            pbar = tqdm(total=tc.max_steps, initial=step, desc=f"train {cfg.name}", unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        t_log, step_log = t0, step
        interrupted = False
        window: dict[str, float] = {}
        window_n = 0
        try:
            with _StopFlag() as stop:
                while step < tc.max_steps:
                    terms_sum: dict[str, torch.Tensor] = {}
                    for k in range(tc.grad_accum):
                        seq = next(batches).to(acc.device, non_blocking=True)
                        micro += 1
                        x_in, y_true = split_sequence(seq[:, : t_in + t_out], t_in, t_out)
                        mask = None
                        if nan_is_nodata:  # e.g. spec stores; elsewhere NaN is bad data (the guard below)
                            x_in, y_true, mask = _nodata_mask(x_in, y_true)
                        # Items of t_in + 2 t_out frames carry the backbone's mu (a backbone cache).
                        mu = seq[:, t_in + t_out :] if seq.shape[1] == t_in + 2 * t_out else None
                        sync = contextlib.nullcontext() if k == tc.grad_accum - 1 else acc.no_sync(wrapper)
                        with sync:
                            if mask is not None:
                                terms = wrapper(x_in, y_true, mu, mask)
                            else:
                                terms = wrapper(x_in, y_true) if mu is None else wrapper(x_in, y_true, mu)
                            if not isinstance(terms, dict) or "loss" not in terms:
                                raise ValueError(f"{type(model).__name__}.loss must return a dict with a 'loss' entry")
                            acc.backward(terms["loss"] / tc.grad_accum)
                        for name, val in terms.items():
                            v = val.detach().float()
                            terms_sum[name] = terms_sum[name] + v if name in terms_sum else v
                    terms_mean = {n: v / tc.grad_accum for n, v in terms_sum.items()}
                    grad_norm = None
                    if tc.grad_clip > 0:
                        grad_norm = acc.clip_grad_norm_(wrapper.parameters(), tc.grad_clip)
                    bad = not bool(torch.isfinite(terms_mean["loss"]))
                    if grad_norm is not None and acc.scaler is None:
                        bad = bad or not bool(torch.isfinite(torch.as_tensor(grad_norm)))
                    flags = torch.tensor([float(bad), float(stop.requested)], device=acc.device)
                    if world > 1:
                        flags = acc.reduce(flags, reduction="sum")
                    if flags[0] > 0:
                        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                        shown = {n: float(v) for n, v in terms_mean.items()}
                        raise NonFiniteLossError(
                            f"non-finite loss or gradients at step {step + 1} (terms {shown}, grad norm "
                            f"{None if grad_norm is None else float(grad_norm)}); training stopped without "
                            f"saving, {where}. Check the data for NaN/inf, lower train.lr, or use "
                            "mixed_precision=no; then continue with --resume"
                        )
                    lr_used = scheduler.get_last_lr()[0]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    ema.update(acc.unwrap_model(wrapper).model)

                    for n, v in terms_mean.items():
                        window[n] = window.get(n, 0.0) + float(v)
                    window_n += 1
                    if step % tc.log_every == 0 or step == tc.max_steps:
                        names = sorted(window)
                        avg = torch.tensor([window[n] / window_n for n in names], device=acc.device)
                        if world > 1:
                            avg = acc.reduce(avg, reduction="mean")
                        now = time.perf_counter()
                        rate = (step - step_log) * per_update / max(now - t_log, 1e-9)
                        row = {n: float(a) for n, a in zip(names, avg.tolist())}
                        final_loss = row["loss"]
                        row.update(lr=lr_used, samples_per_s=rate,
                                   epoch=micro // order.batches_per_epoch, samples=step * per_update)
                        if grad_norm is not None:
                            row["grad_norm"] = float(grad_norm)
                        if loggers:
                            loggers.train(step, row)
                        if pbar is not None:
                            pbar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}",
                                             sps=f"{rate:.1f}", refresh=False)
                        window, window_n, t_log, step_log = {}, 0, now, step
                    if pbar is not None:
                        pbar.update(1)

                    if val_ds is not None and tc.val_every > 0 and (step % tc.val_every == 0 or step == tc.max_steps):
                        if is_main:
                            last_val = self.validate()
                            loggers.val(step, last_val)
                            score = last_val.get(tc.best_metric)
                            if score is None:
                                raise ValueError(f"train.best_metric {tc.best_metric!r} is not a validation score; "
                                                 f"choose one of: {', '.join(sorted(last_val))}")
                            better = best_score is None or (score > best_score if tc.best_mode == "max" else score < best_score)
                            if better and math.isfinite(score):
                                best_score, best_step = score, step
                                self._save_best(step, micro, best_score, best_step)
                            log.info("step %d validation: %s", step,
                                     ", ".join(f"{k}={v:.4g}" for k, v in sorted(last_val.items())))
                        acc.wait_for_everyone()

                    stopping = bool(flags[1] > 0)
                    periodic = tc.ckpt_every > 0 and step % tc.ckpt_every == 0
                    if periodic or step == tc.max_steps or stopping:
                        last_ckpt = self._save_checkpoint(step, micro, best_score, best_step)
                    if stopping:
                        interrupted = True
                        break
        finally:
            batches.close()  # shuts DataLoader workers down
            if pbar is not None:
                pbar.close()
            if loggers:
                loggers.close()

        wall = time.perf_counter() - t0
        done = step - start_step
        summary = TrainSummary(
            run_dir=str(self.run_dir), name=cfg.name, start_step=start_step, steps=step,
            max_steps=tc.max_steps, samples_seen=step * per_update,
            samples_per_s=done * per_update / max(wall, 1e-9), steps_per_s=done / max(wall, 1e-9),
            wall_s=wall, num_processes=world, final_loss=final_loss, best_metric=tc.best_metric,
            best_score=best_score, best_step=best_step, last_val=last_val,
            last_checkpoint=str(last_ckpt) if last_ckpt else None,
            best_checkpoint=str(self.run_dir / ck.CHECKPOINTS / ck.BEST) if best_step is not None else None,
            interrupted=interrupted,
        )
        if is_main:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
            write_model_card(self.run_dir, cfg.to_dict(), summary.to_dict(), self.data_provenance)
            log.debug("%s", summary.format())
        acc.wait_for_everyone()
        return summary

    # ------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Scores of the EMA weights on the fixed validation subset (main process).

        Returns the scalar scores of :class:`diffcast.metrics.Evaluator` (``csi_m``,
        ``csi_pool16_m``, ``crps``, ... in threshold space) plus ``mse01``, the mean
        squared error of the ensemble mean in ``[0, 1]`` units. For datasets with
        ``nan_is_nodata`` every score is over the pixels with data (NaN inputs are 0 for the model).
        """
        cfg, tc = self.cfg, self.cfg.train
        model = self.ema.module.eval()
        device = self.acc.device
        evaluator = None
        try:
            from ..metrics.evaluator import Evaluator
        except ImportError as exc:  # the metrics module is optional for training itself
            log.warning("validation computes only mse: %s", exc)
        else:
            evaluator = Evaluator(thresholds=self.meta.thresholds, scale=self.meta.scale, pool_sizes=(4, 16),
                                  ssim=False)
        loader = val_batches(self.val_ds, cfg.data.val_limit, tc.val_batch_size, cfg.seed, cfg.data.num_workers)
        sample_kwargs: dict[str, Any] = {}
        if tc.val_sampler is not None:
            sample_kwargs["sampler"] = tc.val_sampler
        if tc.val_sampler_steps is not None:
            sample_kwargs["steps"] = tc.val_sampler_steps
        probabilistic = hasattr(model, "sample") and hasattr(model, "backbone")
        nan_is_nodata = bool(getattr(self.val_ds, "nan_is_nodata", False))
        sq_err, count = 0.0, 0
        with _isolated_rng(device):
            gen = torch.Generator(device=device).manual_seed(cfg.seed)
            for seq in loader:
                seq = seq.to(device)
                x_in, y_true = split_sequence(seq[:, : cfg.model.t_in + cfg.model.t_out], cfg.model.t_in, cfg.model.t_out)
                mask = None
                if nan_is_nodata:  # scored over the pixels with data; the model sees no data as 0, as in training
                    x_in, _, mask = _nodata_mask(x_in, y_true)
                with self.acc.autocast():
                    if probabilistic:
                        pred = model.sample(x_in, members=tc.val_members, generator=gen, **sample_kwargs).forecast
                    else:
                        pred = model(x_in).clamp(0.0, 1.0).unsqueeze(0)
                pred = pred.float()
                if evaluator is not None:
                    evaluator.update(y_true, pred, mask=mask)
                if mask is None:
                    sq_err += float(((pred.mean(0) - y_true) ** 2).sum())
                    count += y_true.numel()
                else:
                    sq_err += float(((pred.mean(0) - y_true) ** 2)[mask].sum())
                    count += int(mask.sum())
        scores = _scalars(evaluator.compute()) if evaluator is not None else {}
        scores["mse01"] = sq_err / max(count, 1)
        return scores

    # ------------------------------------------------------------ checkpoints
    def _state(self, step: int, micro: int, best_score: float | None, best_step: int | None) -> dict[str, Any]:
        tc = self.cfg.train
        return {
            "step": step, "micro_step": micro, "ema_updates": self.ema.num_updates,
            "best_metric": tc.best_metric, "best_mode": tc.best_mode, "best_score": best_score,
            "best_step": best_step, "num_processes": self.acc.num_processes, "batch_size": tc.batch_size,
            "grad_accum": tc.grad_accum, "seed": self.cfg.seed,
            "samples_seen": step * tc.batch_size * tc.grad_accum * self.acc.num_processes,
        }

    def _write_weights(self, folder: Path, step: int) -> None:
        cfgd = self.cfg.to_dict()
        meta = self.meta.as_dict() if hasattr(self.meta, "as_dict") else None
        model = self.acc.unwrap_model(self.wrapper).model
        extra = {}
        if self.data_provenance is not None:  # e.g. a spec store: identifier, version, URL, variable, units, splits
            extra["diffcast_data"] = json.dumps(self.data_provenance, sort_keys=True, default=str)
        save_model_file(folder / "model.safetensors", model.state_dict(), cfgd, meta,
                        extra={"weights": "model", "step": str(step), **extra})
        save_model_file(folder / "ema.safetensors", self.ema.state_dict(), cfgd, meta,
                        extra={"weights": "ema", "step": str(step), **extra})

    def _save_checkpoint(self, step: int, micro: int, best_score: float | None, best_step: int | None) -> Path:
        """Write ``checkpoints/step_XXXXXXXX`` atomically (all ranks call this)."""
        acc = self.acc
        name = ck.step_dir_name(step)
        tmp = ck.temp_dir(self.run_dir, name)
        final = self.run_dir / ck.CHECKPOINTS / name
        error: BaseException | None = None
        if acc.is_main_process:
            try:
                ck.begin(self.run_dir, name)
            except OSError as exc:
                error = exc
        acc.wait_for_everyone()
        try:
            if error is None:
                ck.save_torch(ck.rng_state(), ck.rng_file(tmp, acc.process_index))
        except OSError as exc:
            error = exc
        acc.wait_for_everyone()
        if acc.is_main_process and error is None:
            try:
                self._write_weights(tmp, step)
                ck.save_torch(self.optimizer.state_dict(), tmp / "optimizer.pt")
                ck.save_torch(self.scheduler.state_dict(), tmp / "scheduler.pt")
                if acc.scaler is not None:
                    ck.save_torch(acc.scaler.state_dict(), tmp / "scaler.pt")
                ck.write_state(tmp, self._state(step, micro, best_score, best_step))
                ck.commit(tmp, final)
                ck.prune(self.run_dir, self.cfg.train.keep_last)
            except OSError as exc:
                error = exc
        if error is not None:
            ck.abort(tmp)
            prev = ck.latest_checkpoint(self.run_dir)
            raise OSError(
                getattr(error, "errno", None) or errno.EIO,
                f"could not write checkpoint {final}: {error}; the previous checkpoint "
                f"({prev or 'none'}) is intact",
            ) from error
        acc.wait_for_everyone()
        if acc.is_main_process:
            log.debug("saved checkpoint %s", final)
        return final

    def _save_best(self, step: int, micro: int, best_score: float, best_step: int) -> None:
        """Write ``checkpoints/best`` (weights, EMA and trainer state; main process only)."""
        name = ck.BEST
        tmp = ck.begin(self.run_dir, name)
        try:
            self._write_weights(tmp, step)
            ck.write_state(tmp, self._state(step, micro, best_score, best_step))
            ck.commit(tmp, self.run_dir / ck.CHECKPOINTS / name)
        except OSError as exc:
            ck.abort(tmp)
            raise OSError(getattr(exc, "errno", None) or errno.EIO,
                          f"could not write the best checkpoint: {exc}; the previous one is intact") from exc
        log.info("new best %s = %.5g at step %d", self.cfg.train.best_metric, best_score, step)


def train(
    config: RunConfig | dict[str, Any] | str | Path | None,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    overrides: Any = (),
) -> TrainSummary:
    """Train the model described by ``config`` and write the run to ``out_dir``.

    Parameters
    ----------
    config : RunConfig, dict, str, Path or None
        A resolved config, a nested dict, a YAML preset path/name, or ``None``
        to use ``out_dir/config.yaml`` when resuming.
    out_dir : str or Path
        Run folder (created; must be writable; must not hold a run unless ``resume``).
    resume : bool
        Continue from the newest checkpoint in ``out_dir`` (exactly, on the same
        number of processes).
    progress : bool
        Show a tqdm progress bar on the main process.
    overrides : iterable of str or mapping
        ``key=value`` overrides applied on top of ``config``.

    Returns
    -------
    TrainSummary

    Raises
    ------
    ValueError
        Bad config, parameter-free model, a run folder that already holds a run.
    PermissionError
        If ``out_dir`` cannot be written (raised before any training).
    NonFiniteLossError
        If the loss becomes NaN/inf (the last good checkpoint is kept).
    """
    if config is None:
        saved = Path(out_dir) / "config.yaml"
        if not resume or not saved.is_file():
            raise ValueError("no config given: pass a config file, or resume a run folder that has config.yaml")
        cfg = config_from_dict(read_yaml(saved)).replace(overrides)
    elif isinstance(config, RunConfig):
        cfg = config.replace(overrides) if overrides else config
    elif isinstance(config, dict):
        cfg = config_from_dict(config).replace(overrides)
    else:
        cfg = load_config(config, overrides)
    return Trainer(cfg, out_dir, resume=resume, progress=progress).fit()
