"""``diffcast demo``: nowcast held-out radar with the baselines and DiffCast, score, report.

What ``make demo`` runs: no training, no downloads, a few minutes on 2 CPU cores.
Writes ``OUT/report.md``, ``OUT/report.html``, ``OUT/skill.json`` and animations.
``--train`` trains the toy SimVP + DiffCast on synthetic storms from scratch
instead (about 15 minutes; ``--quick`` about 3).
"""

from __future__ import annotations

import argparse

#: Flags of the nowcast demo that ``--train`` does not take (dest -> flag).
_NOWCAST_ONLY = {"model": "--model", "radar_root": "--radar-root", "synthetic": "--synthetic", "windows": "--windows",
                 "members": "--members", "crop": "--crop", "sampler_steps": "--sampler-steps"}
#: Flags of the training demo (dest -> flag).
_TRAIN_ONLY = {"quick": "--quick", "real": "--real"}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="nowcast held-out radar with persistence, extrapolation, STEPS and DiffCast; skill table, plots, "
        "animations (--train: train a toy model from scratch instead)",
        description=(
            "Nowcast held-out radar windows (the test events under ../shared/data/radar, or synthetic storms when "
            "there are none) with persistence, extrapolation, STEPS and the trained DiffCast model (the shipped "
            "model unless --model names another; without one only the baselines are shown), score them with "
            "pysteps' verification and write OUT/report.md and OUT/report.html (skill table, CSI and CRPS by lead, "
            "rank histograms, reliability, wall time, animations), OUT/skill.json and OUT/demo.json. No training. "
            "With --train: generate synthetic storms, train a tiny SimVP backbone and then DiffCast on it, evaluate "
            "both against persistence and extrapolation and test the paper's claims (about 15 minutes; --quick "
            "about 3)."
        ),
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    p.add_argument("--model", default=None, metavar="SPEC",
                   help="DiffCast model: a model file, checkpoint or run folder, or a shipped model's name "
                   "(default: the shipped radar model when installed)")
    p.add_argument("--radar-root", default=None, metavar="DIR",
                   help="radar archives (default ../shared/data/radar beside the repository; synthetic storms when "
                   "absent)")
    p.add_argument("--synthetic", action="store_true", help="synthetic storms even when radar data are present")
    p.add_argument("--windows", type=int, default=2, metavar="N",
                   help="radar windows forecast, evenly spread over the held-out ones (default 2: one per test "
                   "event; 0: all)")
    p.add_argument("--members", type=_positive_int, default=8, metavar="N",
                   help="ensemble members of STEPS and DiffCast (default 8)")
    p.add_argument("--crop", type=_positive_int, default=256, metavar="PX",
                   help="centre crop of the radar frames in 1 km pixels (default 256)")
    p.add_argument("--sampler-steps", type=_positive_int, default=None, metavar="N",
                   help="diffusion sampler steps of the DiffCast model (default: the model's own)")
    p.add_argument("--train", action="store_true",
                   help="train the toy SimVP + DiffCast on synthetic storms from scratch instead (about 15 minutes)")
    p.add_argument("--quick", action="store_true", help="with --train: smaller, faster profile (about 3 minutes)")
    p.add_argument("--real", default=None, metavar="PATH",
                   help="with --train: folder of real sequences to nowcast with the baselines")
    p.add_argument("--seed", type=int, default=0, help="seed of the ensembles (and of data and training with --train)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _check_flags(args: argparse.Namespace) -> None:
    defaults = {"model": None, "radar_root": None, "synthetic": False, "windows": 2, "members": 8, "crop": 256,
                "sampler_steps": None, "quick": False, "real": None}
    wrong = _NOWCAST_ONLY if args.train else _TRAIN_ONLY
    used = [flag for dest, flag in wrong.items() if getattr(args, dest) != defaults[dest]]
    if used:
        if args.train:
            raise ValueError(f"{', '.join(used)} apply to the nowcast demo, not to --train")
        raise ValueError(f"{', '.join(used)} apply to the training demo: add --train")
    if args.windows < 0:
        raise ValueError(f"--windows must be >= 0 (0: all), got {args.windows}")


def run(args: argparse.Namespace) -> int:
    import torch

    _check_flags(args)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.train:
        return _run_training(args)

    from ..demo import NowcastDemoSettings, run_demo

    settings = NowcastDemoSettings(windows=args.windows, members=args.members, crop=args.crop,
                                   sampler_steps=args.sampler_steps)
    info = run_demo(args.out, model=args.model, radar_root=args.radar_root, synthetic=args.synthetic,
                    settings=settings, seed=args.seed, progress=not args.no_progress)
    data = info["data"]
    print(f"demo finished in {info['elapsed_s']['total'] / 60:.1f} min: {data['n_windows']} {data['case']} window(s), "
          f"{settings.n_lead} leads")
    if info["model"]["spec"] is None or info["model"]["error"]:
        print(f"  no DiffCast model shown: {info['model']['error'] or 'none installed or named (--model SPEC)'}")
    for name, r in info["results"].items():
        crps, csi, sec = r.get("crps"), r.get("csi@1"), r.get("seconds_per_forecast")
        print(f"  {name:>13}: CSI@1 {'-' if csi is None else f'{csi:.3f}'}  CRPS {'-' if crps is None else f'{crps:.4f}'}"
              f"  {'-' if sec is None else f'{sec:.1f}'} s/forecast")
    print(f"report: {args.out}/report.md, {args.out}/report.html")
    return 0


def _run_training(args: argparse.Namespace) -> int:
    from ..demo import run_training_demo

    info = run_training_demo(args.out, quick=args.quick, real=args.real, seed=args.seed, progress=not args.no_progress)
    claims = info["claims"]
    print(f"demo finished in {info['elapsed_s']['total'] / 60:.1f} min; claim held: {'yes' if claims['held'] else 'no'}")
    for c in claims["checks"]:
        nums = "not measured" if c["diffcast"] is None or c["other"] is None else f"{c['diffcast']:.4f} vs {c['other']:.4f}"
        print(f"  {c['claim']}: {nums} -> {'held' if c['held'] else 'did not hold'}")
    print(f"report: {args.out}/report.md, {args.out}/report.html")
    return 0
