"""Training checkpoints: atomic folders that resume a run exactly.

Layout of a run folder::

    RUN/config.yaml                      resolved config
    RUN/checkpoints/step_00000100/
        model.safetensors                weights + config (diffcast.training.model_io format)
        ema.safetensors                  EMA weights, same format
        optimizer.pt, scheduler.pt       torch.save of plain dicts (load with weights_only=True)
        scaler.pt                        fp16 GradScaler state (only with mixed_precision=fp16)
        rng_state_0.pt ...               torch/numpy/python (and CUDA) RNG states per process
        trainer_state.json               step counters, data position, best score
    RUN/checkpoints/best/                model + ema + trainer_state of the best validation score

A checkpoint is written into ``checkpoints/.tmp-step_XXXXXXXX`` and renamed when
complete, so a killed run or a full disk never leaves a half-written
``step_*`` folder; incomplete temporary folders are ignored and cleaned up.
Nothing is unpickled: every ``.pt`` file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST = "best"
STATE_FILE = "trainer_state.json"
STATE_FORMAT = "diffcast-trainer/1"
_STEP_RE = re.compile(r"^step_(\d{8,})$")


def step_dir_name(step: int) -> str:
    """``step_00000100`` for step 100."""
    return f"step_{int(step):08d}"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete periodic checkpoints of a run as ``(step, folder)``, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP_RE.match(d.name)
        if m and d.is_dir() and (d / STATE_FILE).is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete ``checkpoints/step_*`` folder, or ``None``."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` atomically (plain containers of tensors and numbers only)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike[str]) -> Any:
    """``torch.load(..., weights_only=True)``: no arbitrary objects are unpickled."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state(ckpt_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder."""
    path = Path(ckpt_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt_dir} is not a complete training checkpoint (no {STATE_FILE})")
    state = json.loads(path.read_text())
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} has format {state.get('format')!r}, expected {STATE_FORMAT!r}")
    return state


def write_state(ckpt_dir: str | os.PathLike[str], state: dict[str, Any]) -> None:
    atomic_write_text(Path(ckpt_dir) / STATE_FILE, json.dumps({"format": STATE_FORMAT, **state}, indent=2, sort_keys=True))


# ------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and python RNG states as plain tensors/lists/numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": [int(v) for v in py_state],
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_file(ckpt_dir: str | os.PathLike[str], rank: int) -> Path:
    return Path(ckpt_dir) / f"rng_state_{int(rank)}.pt"


# ------------------------------------------------------------------ folders
def temp_dir(run_dir: str | os.PathLike[str], name: str) -> Path:
    """The temporary folder a checkpoint called ``name`` is assembled in."""
    return Path(run_dir) / CHECKPOINTS / f".tmp-{name}"


def begin(run_dir: str | os.PathLike[str], name: str) -> Path:
    """Create an empty temporary folder for checkpoint ``name`` (removing leftovers)."""
    tmp = temp_dir(run_dir, name)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, final: Path) -> Path:
    """Rename the finished ``tmp`` folder to ``final``, replacing an older folder of that name."""
    _fsync_dir(tmp)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def abort(tmp: Path) -> None:
    """Remove a temporary checkpoint folder after a failed write."""
    shutil.rmtree(tmp, ignore_errors=True)


def cleanup_temp(run_dir: str | os.PathLike[str]) -> None:
    """Remove temporary folders left by a killed run."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith((".tmp-", ".old-")) and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)


def prune(run_dir: str | os.PathLike[str], keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` periodic checkpoints; returns the deleted folders."""
    ckpts = list_checkpoints(run_dir)
    doomed = [d for _, d in ckpts[: max(0, len(ckpts) - int(keep_last))]]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
    return doomed


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_bytes(n_params: int, with_optimizer: bool = True) -> int:
    """Approximate size of one checkpoint: model + EMA (+ two AdamW moments) in float32."""
    copies = 4 if with_optimizer else 2
    return int(n_params) * 4 * copies + (1 << 20)
