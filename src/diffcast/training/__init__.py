"""Training on HuggingFace Accelerate, checkpoint io, EMA, optimiser/scheduler factories.

``train(config, out_dir, resume=False, progress=True) -> TrainSummary`` is the entry
point used by ``diffcast train`` and the demo.
"""

from .checkpoint import latest_checkpoint, list_checkpoints
from .ema import EMA
from .model_io import load_model_file, resolve_model_file, save_model_file
from .optim import WarmupCosine, build_optimizer, build_scheduler
from .trainer import NonFiniteLossError, Trainer, TrainSummary, train

__all__ = [
    "EMA",
    "NonFiniteLossError",
    "TrainSummary",
    "Trainer",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "latest_checkpoint",
    "list_checkpoints",
    "load_model_file",
    "resolve_model_file",
    "save_model_file",
    "train",
]
