"""Datasets and readers. Every dataset yields ``(T, C, H, W)`` float32 in [0, 1].

Datasets register themselves in :data:`DATASETS`; build one by name with
``DATASETS.build(name, split=..., **kwargs)``.
"""

from ..registry import Registry
from .contract import DatasetMeta, as_tensor, split_sequence, validate_sequence
from .transforms import METAS, get_meta

DATASETS = Registry("dataset")

# Import the modules that register datasets (they use DATASETS above).
from . import h5seq, images, radar, radar_train, sevir, synthetic  # noqa: E402,F401
from .mlcast import dataset as _mlcast_dataset  # noqa: E402,F401

__all__ = [
    "DATASETS",
    "DatasetMeta",
    "METAS",
    "as_tensor",
    "get_meta",
    "split_sequence",
    "validate_sequence",
]
