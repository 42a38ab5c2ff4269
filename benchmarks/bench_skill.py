"""Forecast skill on real radar: persistence, extrapolation, S-PROG, STEPS and trained models.

Every model forecasts through :func:`diffcast.nowcast` (rain rate in, rain rate out)
and is scored with pysteps' own verification (``pysteps.verification``), in the
units of the data, on the same windows:

- ``radar``: the held-out (``test``) events of each radar archive under
  ``--radar-root`` (default ``../shared/data/radar``: MeteoSwiss, FMI, BoM;
  events split by date as :class:`diffcast.data.radar.RadarArchive` does, never
  by frame), native resolution, a fixed centre crop of ``--crop`` pixels, mm/h;
  windows of ``t_in + n_leadtimes`` frames every ``--stride`` frames;
- ``sevir``: the SEVIR demo sequences (``../shared/data/sevir_demo``), VIL in
  kg m-2 (3 km pixels), thresholds at the VIL codes 16, 74, 133, 181;
- ``synthetic``: synthetic storms (VIL), for the test suite and machines without data.

Scores, per lead time and over all leads: CSI at each threshold (mean over
members of the CSI of each member's contingency table pooled over windows), FSS
(pooled per member, averaged over members) at two thresholds on 4 / 16 / 64 km,
CRPS (pysteps ``CRPS``; the MAE for one member), rank-histogram flatness (RMS
deviation of the normalised rank histogram from flat, times the number of bins:
0 = flat), spread/skill (sqrt((M+1)/M mean ensemble variance) / RMSE of the
ensemble mean; 1 = calibrated), reliability at the second threshold (1 mm/h on
radar: the reliability term of the Brier score and the diagram), the Brier
score, and wall seconds per forecast (one window, all members).

Usage::

    python benchmarks/bench_skill.py --out bench_out/skill            # JSON + table.md
    python benchmarks/bench_skill.py --model runs/radar --members 8 --cases radar

Prints one JSON line per (case, model); writes ``skill.json`` and ``table.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from diffcast.skill import (  # noqa: F401 (re-exported for the tests and for users of this script)
    FSS_KM,
    MASKS,
    RADAR_ARCHIVES,
    RADAR_FSS_THRESHOLDS,
    RADAR_THRESHOLDS,
    VIL_CODES,
    Case,
    Skill,
    Window,
    markdown,
    radar_case,
    score_model,
    score_models,
    sevir_case,
    synthetic_case,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BASELINES = ("persistence", "extrapolation", "sprog", "steps")


def iter_cases(args: argparse.Namespace) -> Iterator[Case]:
    for name in args.cases:
        if name == "radar":
            if not args.radar_root.is_dir():
                print(json.dumps({"case": "radar", "skipped": f"{args.radar_root} not found"}))
                continue
            yield radar_case(
                args.radar_root, args.t_in, args.n_leadtimes, args.crop, args.stride, args.limit, args.split, args.events
            )
        elif name == "sevir":
            if not args.sevir_root.is_dir():
                print(json.dumps({"case": "sevir", "skipped": f"{args.sevir_root} not found"}))
                continue
            yield sevir_case(args.sevir_root, args.t_in, args.n_leadtimes, args.limit)
        elif name == "synthetic":
            yield synthetic_case(args.t_in, args.n_leadtimes, args.synthetic_size, args.limit or 4)
        else:
            raise SystemExit(f"unknown case {name!r}; choose radar, sevir, synthetic")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="SPEC", help="trained model (file, checkpoint, run folder or shipped name; MODEL@sampler:steps samples it with "
                   "that sampler, e.g. a teacher at ddim:250 beside its distilled student; MODEL@bf16 or "
                   "MODEL@sampler:steps:bf16 runs its denoiser under bfloat16 autocast); repeatable")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), help="baselines to score (default: all four)")
    p.add_argument("--cases", nargs="+", default=["radar", "sevir"], help="radar, sevir, synthetic")
    p.add_argument("--radar-root", type=Path, default=SHARED / "radar")
    p.add_argument("--sevir-root", type=Path, default=SHARED / "sevir_demo")
    p.add_argument("--split", default="test", help="radar split (default: the held-out test events)")
    p.add_argument("--events", nargs="+", default=None, metavar="DATE",
                   help="radar events (YYYY-MM-DD) that form --split, e.g. a model's validation events (default: "
                        "each archive's own split)")
    p.add_argument("--t-in", type=int, default=5)
    p.add_argument("--n-leadtimes", type=int, default=12)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--crop", type=int, default=256, help="centre crop of the radar archives in pixels (native resolution)")
    p.add_argument("--stride", type=int, default=8, help="frames between radar window starts")
    p.add_argument("--limit", type=int, default=None, help="at most this many windows per case")
    p.add_argument("--synthetic-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask", choices=MASKS, default="common",
                   help="pixels scored: where the observation and all models have values (common, default) or "
                        "each model's own (own)")
    p.add_argument("--out", type=Path, default=None, help="folder for skill.json and table.md")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    models = list(args.baselines) + list(args.model)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    cases: dict[str, Case] = {}
    for case in iter_cases(args):
        cases[case.name] = case
        results[case.name] = {}
        res = score_models(models, case, args.n_leadtimes, args.members, args.seed, mask=args.mask,
                           optional=[m for m in models if m not in BASELINES])
        for m in models:
            r = res[m]
            if "skipped" in r:  # e.g. a rain-rate model on VIL data: said in the table, not fatal
                case.note = (case.note + "; " if case.note else "") + f"{m} skipped: {r['skipped']}"
            spec, at, setting = m.rpartition("@")
            label = m if m in BASELINES else Path(spec).name + f"@{setting}" if at else Path(m).name
            results[case.name][label] = r
            print(json.dumps({"bench": "skill", "case": case.name, "model": m,
                              **{k: v for k, v in r.items() if not isinstance(v, (list, dict))}}), flush=True)
    table = markdown(results, cases, args.n_leadtimes)
    payload = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "windows": {c: [w.label for w in case.windows] for c, case in cases.items()},
        "notes": {c: case.note for c, case in cases.items() if case.note},
        "results": results,
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "skill.json").write_text(json.dumps(payload, indent=1) + "\n")
        (args.out / "table.md").write_text(table)
    print(table)
    return payload


def run(quick: bool = False) -> list[dict[str, Any]]:
    """``make bench`` entry: a short run (``quick``: 2 windows per case, 4 members, 6 leads)."""
    argv = ["--limit", "2", "--members", "4", "--n-leadtimes", "6"] if quick else []
    payload = main(argv)
    return [{"bench": "skill", "case": c, "model": m, **{k: v for k, v in r.items() if not isinstance(v, (list, dict))}}
            for c, models in payload["results"].items() for m, r in models.items()]


if __name__ == "__main__":
    main()
