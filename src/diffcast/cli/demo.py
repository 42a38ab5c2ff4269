"""``diffcast demo``: train a small backbone and DiffCast on synthetic storms, evaluate, report.

What ``make demo`` runs. No downloads; about 15 minutes on 2 CPU cores
(``--quick``: about 3). Writes ``OUT/report.md`` and ``OUT/report.html``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small backbone + DiffCast on synthetic storms, evaluate against baselines, write a report",
        description=(
            "Generate synthetic storms, train a tiny SimVP backbone and then DiffCast on the frozen backbone, "
            "evaluate both against persistence and extrapolation on the test split and write OUT/report.md and "
            "OUT/report.html (tables, CSI-vs-lead plots, rank histogram, animations). With --real PATH (e.g. "
            "../shared/data/sevir_demo) real sequences are also nowcast with the baselines."
        ),
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    p.add_argument("--quick", action="store_true", help="smaller, faster profile (about 3 minutes)")
    p.add_argument("--real", default=None, metavar="PATH", help="folder of real sequences to nowcast with the baselines")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and sampling (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..demo import run_demo

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    info = run_demo(args.out, quick=args.quick, real=args.real, seed=args.seed, progress=not args.no_progress)
    claims = info["claims"]
    print(f"demo finished in {info['elapsed_s']['total'] / 60:.1f} min; claim held: {'yes' if claims['held'] else 'no'}")
    for c in claims["checks"]:
        nums = "not measured" if c["diffcast"] is None or c["other"] is None else f"{c['diffcast']:.4f} vs {c['other']:.4f}"
        print(f"  {c['claim']}: {nums} -> {'held' if c['held'] else 'did not hold'}")
    print(f"report: {args.out}/report.md, {args.out}/report.html")
    return 0
