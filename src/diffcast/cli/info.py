"""``diffcast info``: versions, threads and everything registered by name."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, threads and registered datasets/backbones/samplers")
    p.add_argument("--backbone", metavar="NAME", help="also print the parameter counts of this backbone's presets")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect(backbone: str | None = None) -> dict:
    import torch

    from .. import __version__
    from ..data import DATASETS
    from ..models.backbones import BACKBONES
    from ..sampling import SAMPLERS

    info: dict = {
        "diffcast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "h5py": _version("h5py"),
        "pysteps": _version("pysteps"),
        "accelerate": _version("accelerate"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "datasets": DATASETS.names(),
        "backbones": BACKBONES.names(),
        "samplers": SAMPLERS.names(),
    }
    if backbone is not None:
        info["backbone_parameters"] = backbone_parameters(backbone)
    return info


def backbone_parameters(name: str) -> dict[str, int]:
    """Parameter counts of a backbone's presets at the paper shape (5 -> 20, 128 x 128)."""
    from ..models.backbones import BACKBONES
    from ..models.factory import count_parameters

    cls = BACKBONES.get(name)
    presets = getattr(cls, "PRESETS", None) or {"default": {}}
    out = {}
    for preset in presets:
        kwargs = {} if preset == "default" else {"preset": preset}
        model = cls(t_in=5, t_out=20, channels=1, height=128, width=128, **kwargs)
        out[preset] = count_parameters(model)
    return out


def run(args: argparse.Namespace) -> int:
    info = collect(args.backbone)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, val in info.items():
        if isinstance(val, list):
            val = ", ".join(val) or "(none)"
        elif isinstance(val, dict):
            val = ", ".join(f"{k}: {v:,}" for k, v in val.items())
        print(f"{key:<{width}}  {val}")
    return 0
