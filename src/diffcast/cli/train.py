"""``diffcast train``: train a backbone alone or DiffCast on a backbone.

Examples::

    diffcast train --config configs/tiny_convgru.yaml --out runs/tiny
    diffcast train --config tiny_diffcast_convgru --set train.max_steps=200 --set train.lr=3e-4 --out runs/dc
    diffcast train --resume runs/dc                       # continue a stopped or killed run
    diffcast train --config radar_diffcast_extrapolation --data /data/radklim.zarr \
        --train 2001-01-01/2019-12-31 --val 2020 --out runs/radklim   # an mlcast spec Zarr store
    accelerate launch --multi_gpu --num_processes 4 "$(which diffcast)" train --config sevir_diffcast_simvp --out runs/sevir

Several processes on a CPU-only machine (gloo): ``ACCELERATE_USE_CPU=1 accelerate launch
--multi_gpu --num_processes 2 ...`` (accelerate's own ``--cpu --num_processes N`` goes through
MPI and otherwise starts a single process). ``train.batch_size`` is per process.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .store_args import store_arguments, with_store

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    from ..config import list_presets

    presets = ", ".join(list_presets()) or "(none found)"
    p = sub.add_parser(
        "train",
        help="train a backbone or DiffCast from a YAML config",
        description=(
            "Train a model from a YAML config (defaults -> preset -> --set overrides). "
            "Run under `accelerate launch` for several processes or GPUs. Presets: " + presets
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", default=None, help="YAML config file or preset name from configs/")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=100 (repeatable; values read as YAML)",
    )
    p.add_argument("--out", "-o", type=Path, default=None, help="run folder to create (checkpoints, logs)")
    p.add_argument(
        "--resume", type=Path, default=None, metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint (its config.yaml is used unless --config is given)",
    )
    store_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import config_from_dict, dump_config, load_config, read_yaml
    if args.resume is not None and args.out is not None and args.resume.resolve() != args.out.resolve():
        raise ValueError("--resume RUN_DIR and --out name different folders; give only --resume RUN_DIR")
    out = args.resume if args.resume is not None else args.out
    if args.config is not None:
        cfg = load_config(args.config, args.overrides)
    elif args.resume is not None and (args.resume / "config.yaml").is_file():
        cfg = config_from_dict(read_yaml(args.resume / "config.yaml")).replace(args.overrides)
    elif args.resume is not None:
        raise FileNotFoundError(f"{args.resume} has no config.yaml; pass --config as well")
    else:  # built-in defaults plus --set overrides
        cfg = load_config(None, args.overrides)
    cfg = with_store(cfg, args)
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    if out is None:
        raise ValueError("give --out RUN_DIR (where checkpoints and logs go)")
    return train_and_report(cfg, out, args.resume is not None, not args.no_progress, "train")


def train_and_report(cfg, out: Path, resume: bool, progress: bool, command: str) -> int:
    """Run :func:`diffcast.training.train` and print its summary; the exit code of ``diffcast COMMAND``
    (1 for a non-finite loss or a write failure, 130 when stopped by a signal). Shared by ``train`` and ``distill``."""
    from ..training import NonFiniteLossError, train

    try:
        summary = train(cfg, out, resume=resume, progress=progress)
    except NonFiniteLossError as exc:
        print(f"diffcast {command}: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError):
        raise
    except OSError as exc:  # full disk and other write failures: one clear line
        print(f"diffcast {command}: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(summary.format())
    return 130 if summary.interrupted else 0
