"""Run configuration: dataclass defaults -> YAML preset -> ``--set a.b=c`` overrides -> frozen config.

The configuration flows one way (DESIGN.md section 5)::

    cfg = load_config("configs/tiny_convgru.yaml", ["train.max_steps=50", "model.backbone.hidden=16"])
    cfg.train.lr            # 1e-4
    cfg.model_dict()        # the dict given to diffcast.models.build_model
    cfg.to_dict()           # plain JSON/YAML values, stored beside runs and inside checkpoints

Unknown keys and values of the wrong type raise ``ValueError`` naming the key
(``"train.lr: expected a number, got 'fast'"``). The free-form sections
``model.backbone``, ``model.diffusion`` and ``data.kwargs`` are passed on as
keyword arguments; the model or dataset that receives them validates them.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "DataConfig",
    "LoggingConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "dump_config",
    "find_preset",
    "list_presets",
    "load_config",
    "merge_sections",
    "parse_override",
]


@dataclass(frozen=True)
class ModelConfig:
    """What :func:`diffcast.models.build_model` receives (see models/factory.py).

    Attributes
    ----------
    type : {"backbone", "diffcast"}
        A deterministic backbone alone, or DiffCast (residual diffusion) on it.
    t_in, t_out : int
        Observed and forecast frames (paper SEVIR: 5 -> 20).
    channels, height, width : int
        Frame layout in pixels.
    backbone : dict
        ``{"name": ..., **kwargs}`` for the backbone registry (e.g. ``preset: tiny``).
    diffusion : dict
        Keyword arguments of ``ResidualDiffusion`` (only used for ``type: diffcast``).
    """

    type: Literal["backbone", "diffcast"] = "diffcast"
    t_in: int = 5
    t_out: int = 20
    channels: int = 1
    height: int = 128
    width: int = 128
    backbone: dict = field(default_factory=lambda: {"name": "simvp"})
    diffusion: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to train and validate on.

    Attributes
    ----------
    name : str
        Dataset registry name (``synthetic``, ``sevir``, ``h5seq``, ...).
    train_split, val_split : str
        Split names passed as ``split=``. Validation never uses the test split.
    seq_len : int or None
        Frames per sequence; ``None`` means ``model.t_in + model.t_out``. A longer
        value is allowed (the first ``t_in + t_out`` frames are used).
    kwargs : dict
        Dataset keyword arguments, including where the data lives, under the
        dataset's own parameter name (``catalog`` for SEVIR, ``root`` for image
        folders, ...), and e.g. ``size: 64``.
    num_workers : int
        DataLoader worker processes (0 loads in the main process).
    val_limit : int
        Number of validation sequences (the first ``val_limit`` of the val split).
    """

    name: str = "synthetic"
    train_split: str = "train"
    val_split: str = "val"
    seq_len: int | None = None
    kwargs: dict = field(default_factory=dict)
    num_workers: int = 0
    val_limit: int = 64


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe (DiffCast paper defaults where published).

    Attributes
    ----------
    batch_size : int
        Sequences per process and micro-step; the effective batch is
        ``batch_size * grad_accum * num_processes``.
    max_steps : int
        Optimiser updates in total.
    lr, betas, weight_decay : float, (float, float), float
        AdamW; paper: lr 1e-4, betas (0.9, 0.95). Weight decay applies to
        matrices/kernels only (not to biases and norm scales).
    warmup_steps, min_lr : int, float
        Linear warm-up from 0 to ``lr``, then cosine decay to ``min_lr`` at ``max_steps``.
    grad_clip : float
        Maximum global gradient norm (0 disables clipping).
    grad_accum : int
        Micro-batches accumulated per optimiser update.
    mixed_precision : {"no", "bf16", "fp16"}
        Passed to ``accelerate.Accelerator``.
    ema_decay, ema_start, ema_every : float, int, int
        EMA of the weights: copied until ``ema_start`` updates, then
        ``ema = decay * ema + (1 - decay) * w`` every ``ema_every`` updates.
    log_every, val_every, ckpt_every : int
        Periods in optimiser updates (0 disables validation / periodic checkpoints).
    keep_last : int
        Number of periodic checkpoints kept (plus ``checkpoints/best``).
    best_metric, best_mode : str, {"max", "min"}
        Validation score selecting ``checkpoints/best`` (e.g. ``csi_pool16_m`` / max,
        ``crps`` / min, ``mse01`` / min: MSE of the ensemble mean in [0, 1] units).
    val_batch_size, val_members, val_sampler, val_sampler_steps :
        Validation batch size, ensemble members for DiffCast, sampler name and
        number of sampler steps (``None``: the model's defaults).
    find_unused_parameters : bool
        DDP option for models whose loss does not touch every parameter.
    init_backbone : str or None
        Model file, checkpoint or run folder of a trained model whose backbone
        weights initialise this model's backbone at step 0 (e.g. DiffCast on a
        pretrained backbone; add ``model.diffusion.freeze_backbone: true`` to keep it fixed).
    init_from : str or None
        Model file, checkpoint, run folder or shipped model name whose weights (all of
        them; same architecture) initialise this model at step 0: fine-tuning a trained
        model on other data or crops. The optimiser, schedule and EMA start afresh.
    distill : dict or None
        Train a few-step student by distillation instead (``diffcast distill`` writes it):
        ``teacher`` (model file), ``steps`` (student DDIM steps), ``substeps`` (teacher
        steps per student step); see :mod:`diffcast.training.distill`.
    """

    batch_size: int = 16
    max_steps: int = 200_000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    ema_decay: float = 0.995
    ema_start: int = 2000
    ema_every: int = 1
    log_every: int = 50
    val_every: int = 5000
    ckpt_every: int = 5000
    keep_last: int = 3
    best_metric: str = "csi_pool16_m"
    best_mode: Literal["max", "min"] = "max"
    val_batch_size: int = 8
    val_members: int = 2
    val_sampler: str | None = None
    val_sampler_steps: int | None = 20
    find_unused_parameters: bool = False
    init_backbone: str | None = None
    init_from: str | None = None
    distill: dict | None = None


@dataclass(frozen=True)
class LoggingConfig:
    """Where training metrics go: ``RUN/log.csv``, ``RUN/tb/`` and optionally wandb."""

    csv: bool = True
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "diffcast"


@dataclass(frozen=True)
class RunConfig:
    """A complete, resolved run configuration.

    Attributes
    ----------
    name : str
        Run label (shown in reports).
    seed : int
        Seeds model initialisation, data order (with the epoch) and training noise.
    imports : list of str
        Extra Python modules imported before building anything (they may
        register custom backbones or datasets).
    """

    name: str = "diffcast"
    seed: int = 0
    imports: list = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    # ------------------------------------------------------------- derived
    @property
    def seq_len(self) -> int:
        """Frames per dataset item: ``data.seq_len`` or ``t_in + t_out``."""
        return self.data.seq_len or self.model.t_in + self.model.t_out

    def model_dict(self) -> dict[str, Any]:
        """The model config dict for :func:`diffcast.models.build_model`."""
        return copy.deepcopy(dataclasses.asdict(self.model))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML serialisable); round-trips through :func:`config_from_dict`."""
        return _plain(dataclasses.asdict(self))

    def replace(self, overrides: Iterable[str] | Mapping[str, Any]) -> RunConfig:
        """A new config with ``key=value`` overrides applied (see :func:`apply_overrides`)."""
        return config_from_dict(apply_overrides(self.to_dict(), overrides))


# ---------------------------------------------------------------- validation
def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + str(len(typing.get_args(tp))) + " numbers"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


_MISMATCH = object()


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` or ``_MISMATCH``; no lossy conversion."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value if value in typing.get_args(tp) else _MISMATCH
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            out = _coerce(value, arg)
            if out is not _MISMATCH:
                return out
        return _MISMATCH
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            return _MISMATCH
        items = tuple(_coerce(v, a) for v, a in zip(value, args))
        return _MISMATCH if any(i is _MISMATCH for i in items) else items
    if tp is type(None):
        return None if value is None else _MISMATCH
    if tp is bool:
        return value if isinstance(value, bool) else _MISMATCH
    if tp is int:
        if isinstance(value, bool):
            return _MISMATCH
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():  # 2e5 written in YAML
            return int(value)
        return _MISMATCH
    if tp is float:
        if isinstance(value, bool):
            return _MISMATCH
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _MISMATCH
        return _MISMATCH
    if tp is str:
        return value if isinstance(value, str) else _MISMATCH
    if tp is dict:
        return copy.deepcopy(dict(value)) if isinstance(value, Mapping) else _MISMATCH
    if tp is list:
        return list(value) if isinstance(value, (list, tuple)) else _MISMATCH
    raise TypeError(f"unsupported config field type {tp!r}")  # programming error


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ValueError(f"unknown config key {key!r}; valid keys here: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
            continue
        out = _coerce(value, tp)
        if out is _MISMATCH:
            raise ValueError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        kwargs[name] = out
    return cls(**kwargs)


def _check_values(cfg: RunConfig) -> None:
    m, d, t = cfg.model, cfg.data, cfg.train
    positive = {
        "model.t_in": m.t_in, "model.t_out": m.t_out, "model.channels": m.channels,
        "model.height": m.height, "model.width": m.width, "train.batch_size": t.batch_size,
        "train.max_steps": t.max_steps, "train.grad_accum": t.grad_accum, "train.log_every": t.log_every,
        "train.keep_last": t.keep_last, "train.val_batch_size": t.val_batch_size,
        "train.val_members": t.val_members, "train.ema_every": t.ema_every,
    }
    for key, val in positive.items():
        if val <= 0:
            raise ValueError(f"{key} must be a positive integer, got {val}")
    non_negative = {
        "train.warmup_steps": t.warmup_steps, "train.val_every": t.val_every,
        "train.ckpt_every": t.ckpt_every, "train.ema_start": t.ema_start,
        "data.num_workers": d.num_workers, "data.val_limit": d.val_limit,
        "train.weight_decay": t.weight_decay, "train.grad_clip": t.grad_clip, "train.min_lr": t.min_lr,
    }
    for key, val in non_negative.items():
        if val < 0:
            raise ValueError(f"{key} must be >= 0, got {val}")
    if not t.lr > 0:
        raise ValueError(f"train.lr must be > 0, got {t.lr}")
    if t.min_lr > t.lr:
        raise ValueError(f"train.min_lr ({t.min_lr}) must not exceed train.lr ({t.lr})")
    for i, b in enumerate(t.betas):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"train.betas[{i}] must lie in [0, 1), got {b}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ValueError(f"train.ema_decay must lie in [0, 1), got {t.ema_decay}")
    if t.val_sampler_steps is not None and t.val_sampler_steps <= 0:
        raise ValueError(f"train.val_sampler_steps must be positive or null, got {t.val_sampler_steps}")
    if not isinstance(m.backbone.get("name"), str):
        raise ValueError("model.backbone.name is required (a backbone registry name, e.g. convgru)")
    if d.seq_len is not None and d.seq_len < m.t_in + m.t_out:
        raise ValueError(
            f"data.seq_len={d.seq_len} is shorter than model.t_in + model.t_out = {m.t_in + m.t_out}; "
            "remove data.seq_len (it defaults to t_in + t_out) or make it longer"
        )
    if d.val_split == "test":
        raise ValueError("data.val_split must not be the test split (validation selects checkpoints)")
    if d.train_split == "test":
        raise ValueError("data.train_split must not be the test split")
    for mod in cfg.imports:
        if not isinstance(mod, str) or not mod:
            raise ValueError(f"imports: expected module names (strings), got {mod!r}")


def config_from_dict(data: Mapping[str, Any] | None) -> RunConfig:
    """Validate a nested dict against the dataclass defaults and return a frozen :class:`RunConfig`.

    Missing keys take the dataclass defaults; unknown keys and wrong types raise
    ``ValueError`` naming the dotted key.
    """
    cfg = _build(RunConfig, data or {}, "")
    _check_values(cfg)
    return cfg


# ---------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], value)``; the value is read as YAML.

    Examples
    --------
    >>> parse_override("train.lr=3e-4")
    (['train', 'lr'], 0.0003)
    >>> parse_override("train.betas=[0.9, 0.99]")
    (['train', 'betas'], [0.9, 0.99])
    """
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. train.max_steps=100)")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ValueError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"override {text!r}: value is not valid YAML ({exc})") from None
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 as a string; numbers written that way are meant as floats
            value = float(value) if _looks_like_float(value) else value
        except ValueError:
            pass
    return parts, value


def _looks_like_float(s: str) -> bool:
    s = s.strip().lower()
    if not s or s in ("nan", "inf", "-inf", "+inf", "infinity"):
        return False
    try:
        float(s)
    except ValueError:
        return False
    return any(c.isdigit() for c in s)


def merge_sections(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update`` section by section.

    Keys of the config sections (``model``, ``data``, ``train``, ``logging``) are
    replaced one by one; a free-form mapping such as ``model.backbone`` is replaced
    as a whole (a preset naming another backbone must not inherit the default's
    keyword arguments).
    """
    out = copy.deepcopy(dict(base))
    sections = ("model", "data", "train", "logging")
    for key, val in update.items():
        if key in sections and isinstance(val, Mapping) and isinstance(out.get(key), dict):
            out[key].update(copy.deepcopy(dict(val)))
        else:
            out[key] = copy.deepcopy(val)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (strings or a ``{dotted.key: value}`` mapping) to a nested dict.

    Intermediate mappings are created as needed (so ``model.backbone.hidden=32``
    works even when the preset did not mention ``hidden``); validation of the
    result happens in :func:`config_from_dict`.
    """
    out = copy.deepcopy(dict(data))
    items = (
        [(str(k).split("."), v) for k, v in overrides.items()]
        if isinstance(overrides, Mapping)
        else [parse_override(o) for o in overrides]
    )
    for parts, value in items:
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ValueError(
                    f"override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is {nxt!r}, not a section"
                )
            node = nxt
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------- files
def _repo_configs_dir() -> Path:
    # configs/ sits beside src/ in a source checkout (editable install).
    return Path(__file__).resolve().parents[2] / "configs"


def list_presets(folder: str | Path | None = None) -> list[str]:
    """Names of the YAML presets in ``folder`` (default: the repository's ``configs/``)."""
    folder = Path(folder) if folder is not None else _repo_configs_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def find_preset(spec: str | Path) -> Path:
    """Resolve a preset given as a path or as a name in the repository's ``configs/``.

    Raises
    ------
    FileNotFoundError
        Listing the available preset names.
    """
    p = Path(spec)
    if p.is_file():
        return p
    folder = _repo_configs_dir()
    for cand in (folder / p.name, folder / f"{p.name}.yaml"):
        if p.parent == Path(".") and cand.is_file():
            return cand
    names = ", ".join(list_presets()) or "(none found)"
    raise FileNotFoundError(f"config {spec} not found; give a YAML path or a preset name: {names}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (empty file -> ``{}``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config sections, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> RunConfig:
    """Dataclass defaults, then the YAML preset ``path`` (optional), then ``overrides``.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file, or a preset name from the repository's ``configs/``.
    overrides : iterable of str or mapping
        ``"a.b=c"`` strings (values parsed as YAML scalars) or ``{"a.b": value}``.

    Raises
    ------
    ValueError
        Unknown keys, wrong types, invalid values (the message names the key).
    FileNotFoundError
        If the preset does not exist.
    """
    data: dict[str, Any] = {} if path is None else read_yaml(find_preset(path))
    try:
        return config_from_dict(apply_overrides(merge_sections(RunConfig().to_dict(), data), overrides))
    except ValueError as exc:
        if path is None:
            raise
        try:  # name the file when the preset itself is at fault
            config_from_dict(data)
        except ValueError as exc2:
            raise ValueError(f"{path}: {exc2}") from None
        raise exc from None


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML text (what ``RUN/config.yaml`` holds)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
