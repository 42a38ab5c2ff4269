"""The model file format: one safetensors file that alone rebuilds its model.

A model file holds the weights (``state_dict`` tensors) and, in the safetensors
metadata, the resolved run config as JSON (``diffcast_config``), the dataset
metadata (``diffcast_meta``) and a format tag. ``build_model(config["model"])``
followed by ``load_state_dict`` restores the model; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils.io import atomic_path

FORMAT_TAG = "diffcast-model/1"


def _contiguous_unique(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; clone aliases so each name owns its data.
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state_dict.items():
        t = v.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen and ptr != -1:
            t = t.clone()
        seen.add(ptr)
        out[k] = t.contiguous()
    return out


def save_model_file(
    path: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    meta: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write weights + config atomically to ``path`` (a ``.safetensors`` file).

    Parameters
    ----------
    state_dict : dict of str to Tensor
        Model weights.
    config : dict
        Resolved run config; must contain ``"model"`` (see
        :func:`diffcast.models.build_model`) and should contain ``"data"``.
    meta : dict, optional
        ``DatasetMeta.as_dict()`` of the training data.
    extra : dict of str to str, optional
        Further metadata strings (e.g. ``{"weights": "ema", "step": "1000"}``).
    """
    if "model" not in config:
        raise ValueError("config must contain a 'model' section to rebuild the model")
    metadata = {"format": FORMAT_TAG, "diffcast_config": json.dumps(config, sort_keys=True)}
    if meta is not None:
        metadata["diffcast_meta"] = json.dumps(meta, sort_keys=True)
    metadata.update(extra or {})
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(_contiguous_unique(state_dict), str(tmp), metadata=metadata)
    return path


def load_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a model file; returns ``(state_dict, config, metadata_strings)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a diffcast model file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a safetensors file: {exc}") from exc
    if metadata.get("format") != FORMAT_TAG or "diffcast_config" not in metadata:
        raise ValueError(f"{path} is a safetensors file but not a diffcast model file (no {FORMAT_TAG} metadata)")
    config = json.loads(metadata["diffcast_config"])
    return tensors, config, metadata


def resolve_model_file(path: str | os.PathLike[str]) -> Path:
    """Find the model file for a path given by a user.

    Accepts a ``.safetensors`` file; the name of a shipped model
    (:mod:`diffcast.shipped`); a checkpoint folder (``ema.safetensors``
    preferred over ``model.safetensors``); or a run folder (its
    ``checkpoints/best``, else the newest ``checkpoints/step_*``).
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        from ..shipped import shipped_file, shipped_models

        shipped = shipped_file(str(path))
        if shipped is not None:
            return shipped
        names = ", ".join(shipped_models()) or "none"
        raise FileNotFoundError(f"checkpoint {p} does not exist (and is not a shipped model; shipped: {names})")
    for name in ("ema.safetensors", "model.safetensors"):
        if (p / name).is_file():
            return p / name
    ckpts = p / "checkpoints"
    if ckpts.is_dir():
        best = ckpts / "best"
        if best.is_dir():
            return resolve_model_file(best)
        steps = sorted(d for d in ckpts.glob("step_*") if d.is_dir())
        if steps:
            return resolve_model_file(steps[-1])
    raise FileNotFoundError(
        f"no model weights found in {p}: expected a .safetensors file, a checkpoint folder with "
        "model.safetensors, or a run folder with checkpoints/"
    )
