"""Forecast quality against sampler and step count, with DDIM-250 as the reference.

Evaluates a trained DiffCast run (by default the toy training demo's, ``demo_out/runs/diffcast`` from ``make demo-train``)
on its dataset's test split for every (sampler, steps) pair and prints one JSON
line per setting: CRPS, CSI-M, CSI-pool16, the number of denoiser calls per
segment, wall seconds, and the relative differences to DDIM-250. The last line
names the fastest setting (fewest denoiser calls) whose three scores are all
within ``--tolerance`` (default 2 %, two-sided) of DDIM-250, and ``--markdown`` writes the
table for the README.

Usage::

    python benchmarks/bench_quality.py --run demo_out/runs/diffcast --members 8 --limit 64

Distilled students (issue 17, ``diffcast distill``): ``--student RUN`` (repeatable)
scores each student with its own stored sampler and step count on the same test
sequences, reports its differences to the teacher's default setting
(``vs_teacher``: CRPS and CSI-M relative, spread/skill absolute) and whether it meets
the issue's target (``student_target``: within 3 % on CRPS and CSI-M, spread/skill
within 0.1). Every row also has the spread/skill ratio, the rank-histogram flatness
(RMS deviation from flat times the number of bins; 0 = flat) and the wall seconds
per forecast (all members), all from the same run. For the held-out radar events
use ``benchmarks/bench_skill.py --model TEACHER --model TEACHER@ddim:250 --model
STUDENT`` (``@sampler:steps`` picks a sampler).

Without a trained run ``run()`` reports that it skipped (``make bench`` does not
train a model).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUN = REPO / "demo_out" / "runs" / "diffcast"
DEFAULT_GRID = {
    "ddim": (5, 10, 20, 50),
    "dpmpp_2m": (5, 10, 20),
    "dpmpp_3m": (5, 10, 20),
    "unipc": (5, 10, 20),
    "heun": (5, 10),
}
REFERENCE = ("ddim", 250)
SCORES = (("crps", "lower is better"), ("csi_m", "higher is better"), ("csi_pool16_m", "higher is better"))
#: Issue 17's target for a student against its teacher (default sampler): relative CRPS and CSI-M, absolute spread/skill.
STUDENT_TARGET = {"crps": 0.03, "csi_m": 0.03, "spread_skill_ratio": 0.1}


def ensemble_scores(res: dict[str, Any]) -> dict[str, float | None]:
    """Spread/skill ratio and rank-histogram flatness of an :func:`diffcast.evaluation.evaluate` result."""
    hist = res.get("rank_histogram")
    flat = None
    if hist:
        h = [float(v) for v in hist]
        flat = round(math.sqrt(sum((v * len(h) - 1.0) ** 2 for v in h) / len(h)), 4)
    ssr = res.get("spread_skill_ratio")
    return {"spread_skill_ratio": None if ssr is None else round(float(ssr), 4), "rank_flatness": flat}


def split_setting(name: str) -> tuple[str, str | None]:
    """``"unipc:karras"`` -> ``("unipc", "karras")``; ``"unipc"`` -> ``("unipc", None)``
    (the model's own timestep spacing)."""
    sampler, _, spacing = name.partition(":")
    return sampler, spacing or None


def denoiser_calls(model: Any, sampler_name: str, steps: int) -> int:
    """Denoiser evaluations per segment: one per entry of ``sampler.timesteps``
    (Heun lists its correction evaluations there too)."""
    name, spacing = split_setting(sampler_name)
    sampler = model.make_sampler(sampler=name, timestep_spacing=spacing)
    sampler.set_timesteps(steps)
    return len(sampler.timesteps)


def _dataset_for(nowcaster: Any, split: str):
    from diffcast.evaluation import build_dataset

    data = nowcaster.config.get("data") or {}
    kwargs = dict(data.get("kwargs") or {})
    root = kwargs.pop("root", None)
    return build_dataset(
        data.get("name", "synthetic"),
        split=split,
        seq_len=nowcaster.t_in + nowcaster.t_out,
        data_root=root,
        **kwargs,
    )


def evaluate_grid(
    run: Path,
    grid: dict[str, tuple[int, ...]] | None = None,
    members: int = 8,
    limit: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    split: str = "test",
    tolerance: float = 0.02,
    progress: bool = False,
    ref_seeds: int = 1,
    reference_rows: list[dict[str, Any]] | None = None,
    students: tuple[Path, ...] | list[Path] = (),
) -> list[dict[str, Any]]:
    """Score every (sampler, steps) setting of ``grid`` plus the DDIM-250 reference.

    With ``ref_seeds > 1`` the reference is also run with ``ref_seeds - 1`` other seeds
    (other initial noise): how far DDIM-250 moves from itself is the sampling noise of
    the evaluation, against which the tolerance should be read. ``reference_rows`` (the
    DDIM-250 rows of an earlier call with the same arguments) are used instead of
    recomputing them. ``students`` (distilled models) are scored with their own sampler
    settings on the same sequences (see the module docstring).
    """
    import torch

    from diffcast.evaluation import evaluate
    from diffcast.inference import Nowcaster

    nc = Nowcaster.from_checkpoint(run)
    if not nc.is_probabilistic:
        raise ValueError(f"{run} holds a deterministic model; the quality table needs a DiffCast run")
    dataset = _dataset_for(nc, split)
    grid = dict(DEFAULT_GRID if grid is None else grid)
    rows: list[dict[str, Any]] = []
    if reference_rows:
        for r in reference_rows:
            if (r["members"], r["sequences"]) != (members, min(limit, len(dataset))):
                raise ValueError(f"reference rows were computed with {r['members']} members x {r['sequences']} "
                                 f"sequences, not {members} x {min(limit, len(dataset))}")
        rows = sorted((dict(r) for r in reference_rows), key=lambda r: r["seed"] != seed)
        if rows[0]["seed"] != seed:
            raise ValueError(f"no reference row with seed {seed}")
        settings = []
    else:
        settings = [(*REFERENCE, seed)] + [(*REFERENCE, seed + k) for k in range(1, ref_seeds)]
    settings += [(s, n, seed) for s, steps in grid.items() for n in steps if (s, n) != REFERENCE]
    for sampler_name, steps, run_seed in settings:
        t0 = time.perf_counter()
        name, spacing = split_setting(sampler_name)
        kwargs = {"sampler": name, "steps": steps}
        if spacing:
            kwargs["timestep_spacing"] = spacing
        res = evaluate(
            [nc], dataset, members=members, batch_size=batch_size, limit=limit, seed=run_seed,
            fss_scales=(), progress=progress, sample_kwargs=kwargs,
        )[nc.name]
        row = {
            "benchmark": "quality",
            "sampler": sampler_name,
            "steps": steps,
            "seed": run_seed,
            "denoiser_calls_per_segment": denoiser_calls(nc.model, sampler_name, steps),
            "members": members,
            "sequences": min(limit, len(dataset)),
            "seconds": round(time.perf_counter() - t0, 2),
            "torch_threads": torch.get_num_threads(),
        }
        for key, _ in SCORES:
            row[key] = float(res[key])
        row.update(ensemble_scores(res))
        row["seconds_per_forecast"] = round(row["seconds"] / max(row["sequences"], 1), 3)
        rows.append(row)
    teacher_row = next((r for r in rows if (r["sampler"], r["steps"]) == (nc.model.sampler_name, nc.model.sampling_steps)
                        and r["seed"] == seed), None)
    for path in students:
        st = Nowcaster.from_checkpoint(path)
        if not st.is_probabilistic:
            raise ValueError(f"student {path} holds a deterministic model")
        t0 = time.perf_counter()
        res = evaluate([st], dataset, members=members, batch_size=batch_size, limit=limit, seed=seed,
                       fss_scales=(), progress=progress)[st.name]
        row = {
            "benchmark": "quality", "student": str(path), "sampler": f"student:{st.model.sampler_name}",
            "steps": st.model.sampling_steps, "seed": seed,
            "denoiser_calls_per_segment": denoiser_calls(st.model, st.model.sampler_name, st.model.sampling_steps),
            "members": members, "sequences": min(limit, len(dataset)), "seconds": round(time.perf_counter() - t0, 2),
            "torch_threads": torch.get_num_threads(),
            **{key: float(res[key]) for key, _ in SCORES}, **ensemble_scores(res),
        }
        row["seconds_per_forecast"] = round(row["seconds"] / max(row["sequences"], 1), 3)
        if teacher_row is not None:
            vs = {k: round((row[k] - teacher_row[k]) / abs(teacher_row[k]), 4) if teacher_row[k] else 0.0
                  for k in ("crps", "csi_m")}
            if row["spread_skill_ratio"] is not None and teacher_row["spread_skill_ratio"] is not None:
                vs["spread_skill_ratio"] = round(row["spread_skill_ratio"] - teacher_row["spread_skill_ratio"], 4)
            row["vs_teacher"] = {"teacher": f"{teacher_row['sampler']}:{teacher_row['steps']}", **vs}
            # CRPS may be lower and CSI higher than the teacher's: only being worse by more than the tolerance fails
            row["student_target"] = (vs["crps"] <= STUDENT_TARGET["crps"] and vs["csi_m"] >= -STUDENT_TARGET["csi_m"]
                                     and abs(vs.get("spread_skill_ratio", 0.0)) <= STUDENT_TARGET["spread_skill_ratio"])
        rows.append(row)
    ref = rows[0]
    for row in rows:
        ok = True
        for key, _ in SCORES:
            rel = (row[key] - ref[key]) / abs(ref[key]) if ref[key] else 0.0
            row[f"{key}_rel"] = round(rel, 4)
            # Two-sided: "equal quality" means close to the reference, not merely no worse.
            ok = ok and abs(rel) <= tolerance
        row["within_tolerance"] = ok
        row["reference_repeat"] = (row["sampler"], row["steps"]) == REFERENCE and row["seed"] != seed
    candidates = [r for r in rows if r["within_tolerance"] and not r["reference_repeat"] and "student" not in r]
    best = min(candidates or [ref], key=lambda r: (r["denoiser_calls_per_segment"], r["seconds"]))
    rows.append({
        "benchmark": "quality",
        "choice": {"sampler": best["sampler"], "steps": best["steps"]},
        "tolerance": tolerance,
        "reference": {"sampler": REFERENCE[0], "steps": REFERENCE[1]},
        "speedup_vs_reference_calls": round(ref["denoiser_calls_per_segment"] / best["denoiser_calls_per_segment"], 2),
    })
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The quality table in Markdown (settings ordered by cost)."""
    table = [r for r in rows if "sampler" in r]
    table.sort(key=lambda r: (r["denoiser_calls_per_segment"], r["sampler"]))
    lines = [
        "| sampler | steps | denoiser calls / segment | CRPS | CSI-M | CSI-pool16 | spread/skill | rank flatness "
        "| s / forecast | within 2 % of DDIM-250 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]

    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for r in table:
        name = f"{r['sampler']} (seed {r['seed']})" if r.get("reference_repeat") else r["sampler"]
        if "student_target" in r:
            name += f" (target vs teacher: {'met' if r['student_target'] else 'missed'})"
        lines.append(
            f"| {name} | {r['steps']} | {r['denoiser_calls_per_segment']} | {r['crps']:.5f} "
            f"({r['crps_rel']:+.1%}) | {r['csi_m']:.4f} ({r['csi_m_rel']:+.1%}) | "
            f"{r['csi_pool16_m']:.4f} ({r['csi_pool16_m_rel']:+.1%}) | {num(r.get('spread_skill_ratio'), '.2f')} | "
            f"{num(r.get('rank_flatness'), '.2f')} | {num(r.get('seconds_per_forecast'), '.2f')} | "
            f"{'yes' if r['within_tolerance'] else 'no'} |"
        )
    choice = next((r for r in rows if "choice" in r), None)
    if choice:
        lines.append("")
        lines.append(
            f"Fastest setting within {choice['tolerance']:.0%} of DDIM-250 on all three scores: "
            f"**{choice['choice']['sampler']}, {choice['choice']['steps']} steps** "
            f"({choice['speedup_vs_reference_calls']}x fewer denoiser calls)."
        )
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Entry point for ``benchmarks/run_all.py``; skips without a trained demo run."""
    if not DEFAULT_RUN.exists():
        return [{"benchmark": "quality", "skipped": f"no trained DiffCast run at {DEFAULT_RUN} (run `make demo-train` first)"}]
    grid = {"ddim": (10,), "dpmpp_2m": (10,), "unipc": (10,)} if quick else None
    return evaluate_grid(DEFAULT_RUN, grid=grid, members=4 if quick else 8, limit=16 if quick else 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="DiffCast run folder or model file")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--limit", type=int, default=64, help="test sequences")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--grid", type=str, default=None,
                        help='JSON mapping sampler[:spacing] -> list of steps, e.g. \'{"ddim": [10], "unipc:karras": [8]}\'')
    parser.add_argument("--reuse-reference", type=Path, default=None,
                        help="JSON lines of an earlier run with the same run/members/limit/seed: "
                             "take the DDIM-250 rows from there instead of recomputing them")
    parser.add_argument("--ref-seeds", type=int, default=1,
                        help="run DDIM-250 with this many seeds (the spread is the evaluation's noise)")
    parser.add_argument("--student", type=Path, action="append", default=[], metavar="RUN",
                        help="a distilled student of --run (diffcast distill), scored with its own sampler; repeatable")
    parser.add_argument("--markdown", type=Path, default=None, help="write the Markdown table here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    grid = {k: tuple(v) for k, v in json.loads(args.grid).items()} if args.grid else None
    reference_rows = None
    if args.reuse_reference:
        reference_rows = [r for r in map(json.loads, args.reuse_reference.read_text().splitlines())
                          if (r.get("sampler"), r.get("steps")) == REFERENCE]
    rows = evaluate_grid(args.run, grid=grid, members=args.members, limit=args.limit,
                         batch_size=args.batch_size, seed=args.seed, tolerance=args.tolerance,
                         progress=args.progress, ref_seeds=args.ref_seeds, reference_rows=reference_rows,
                         students=args.student)
    for row in rows:
        print(json.dumps(row, sort_keys=True), flush=True)
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
