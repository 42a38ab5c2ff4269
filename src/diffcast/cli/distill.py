"""``diffcast distill``: a few-step student of a trained DiffCast model (:mod:`diffcast.training.distill`).

Examples::

    diffcast distill --from radar_diffcast_extrapolation --steps 2 --out runs/radar_student2
    diffcast distill --from runs/dc --steps 1 --substeps 16 --set train.max_steps=2000 --out runs/dc_1step
    diffcast distill --resume runs/radar_student2          # continue a stopped or killed run

The run folder is a training run like any other (checkpoints, EMA, logs, validation
with the student's own sampler, exact ``--resume``); its model files sample with
DDIM in ``--steps`` steps by default wherever a model is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Training recipe of a student unless --set says otherwise: a fine-tune of the teacher's weights.
STUDENT_TRAIN = {"max_steps": 600, "lr": 1.0e-4, "warmup_steps": 20, "min_lr": 1.0e-6, "ema_start": 50,
                 "val_sampler": None, "val_sampler_steps": None}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``distill`` subcommand."""
    p = sub.add_parser(
        "distill",
        help="distil a trained DiffCast model into a 1-4 step student",
        description=(
            "Train a student of the same architecture that samples in --steps DDIM steps what the teacher samples "
            "with its many-step solver: progressive distillation (Salimans & Ho 2022) in one phase, each student "
            "step matching --substeps teacher steps (TRACT, Berthelot et al. 2023), on the teacher's training data. "
            f"Recipe unless --set: {', '.join(f'train.{k}={v}' for k, v in STUDENT_TRAIN.items())}."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="teacher", default=None, metavar="MODEL",
                   help="teacher: run folder, checkpoint folder, model file or shipped model name")
    p.add_argument("--steps", type=int, default=None, metavar="K", help="student sampling steps (1, 2, 4, ...)")
    p.add_argument("--substeps", type=int, default=None, metavar="R",
                   help="steps of the teacher's own sampler (e.g. UniPC-3) per student step (default 8; cost: R teacher calls per example)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of the student's run, e.g. --set train.max_steps=1000 or "
                   "--set data.kwargs.root=../shared/data/radar")
    p.add_argument("--out", "-o", type=Path, default=None, help="run folder to create")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the distillation in RUN_DIR from its newest checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the student's resolved config as YAML and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def student_run_config(teacher: str, steps: int, substeps: int | None, overrides: list[str]):
    """The student's :class:`~diffcast.config.RunConfig` from the teacher's stored config."""
    from ..config import config_from_dict
    from ..training.distill import SUBSTEPS, check_steps, student_config
    from ..training.model_io import load_model_file, resolve_model_file

    file = resolve_model_file(teacher).resolve()
    _, tcfg, _ = load_model_file(file)
    if "data" not in tcfg:
        raise ValueError(f"{file} stores no data section: the student trains on the teacher's data; "
                         "distil from a training run or a model file written by diffcast train")
    # a shipped model is recorded by name (the config then works on any installation), others by absolute path
    source = teacher if not Path(teacher).exists() else file
    cfg = student_config(tcfg, check_steps(steps), SUBSTEPS if substeps is None else substeps, source)
    cfg["name"] = f"{cfg.get('name', 'diffcast')}_student{steps}"
    cfg.setdefault("train", {}).update(STUDENT_TRAIN)
    return config_from_dict(cfg).replace(overrides)


def run(args: argparse.Namespace) -> int:
    from ..config import config_from_dict, dump_config, read_yaml

    if args.resume is not None:
        given = [f for f, v in (("--from", args.teacher), ("--steps", args.steps), ("--substeps", args.substeps),
                                ("--out", args.out)) if v is not None]
        if given:
            raise ValueError(f"--resume RUN_DIR continues with the run's own config; drop {', '.join(given)}")
        if not (args.resume / "config.yaml").is_file():
            raise FileNotFoundError(f"{args.resume} has no config.yaml: not a distillation run")
        cfg = config_from_dict(read_yaml(args.resume / "config.yaml")).replace(args.overrides)
        if not cfg.train.distill:
            raise ValueError(f"{args.resume} is a training run, not a distillation: use diffcast train --resume")
        out = args.resume
    else:
        if args.teacher is None or args.steps is None:
            raise ValueError("give --from MODEL and --steps K (or --resume RUN_DIR)")
        cfg = student_run_config(args.teacher, args.steps, args.substeps, args.overrides)
        out = args.out
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    if out is None:
        raise ValueError("give --out RUN_DIR (where the student's checkpoints and logs go)")
    from .train import train_and_report

    return train_and_report(cfg, out, args.resume is not None, not args.no_progress, "distill")
