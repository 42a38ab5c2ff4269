"""The 5-minute radar cycle: time and peak memory of one full-domain nowcast.

One 12-lead (1 h), 8-member nowcast through :func:`diffcast.nowcast` (rain rate in
mm/h, native resolution, the model's own grid handling) on:

- ``mch``: the full MeteoSwiss domain (640 x 710 at 1 km) of ``../shared/data/radar/mch``,
  the last frames of its last event;
- ``NxM`` (e.g. ``2000x2000``): the MeteoSwiss frames resized to that grid with bilinear
  interpolation (realistic rain structures on a large composite; 1 km assumed).

Each grid runs in its own process, so the peak resident memory (``ru_maxrss``) is that
nowcast's alone (it includes the Python, torch and pysteps imports: the ``baseline
RSS`` column is that floor, measured after the imports and before the input is made).
The wall time is split into ``motion`` (Lucas-Kanade optical flow), ``backbone``
(the rest of the extrapolation or S-PROG backbone: advection, cascade), ``context`` (the ConvGRU context
encoder), ``sampling`` (the denoiser loop of every segment) and ``other`` (encoding,
padding, decoding), by timing the functions that do each part.

Usage::

    python benchmarks/bench_cycle.py                              # shipped model, mch + 2000x2000
    python benchmarks/bench_cycle.py --grids mch --model runs/x --members 8 --out bench_out/cycle
    python benchmarks/bench_cycle.py --grids mch --precision bf16    # denoiser under bfloat16 autocast

Prints one JSON line per grid; ``--out DIR`` also writes ``cycle.json`` and ``cycle.md``.
Figures, not asserts: the target (issue 16) is the MeteoSwiss nowcast within 5 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _input(grid: str, root: Path, t_in: int) -> tuple[Any, float]:
    """``(frames in mm/h (t, y, x), pixel km)`` for a grid name."""
    import numpy as np

    from diffcast.data.radar import RadarArchive
    from diffcast.models.backbones.pysteps_methods import to_intensity

    arch = RadarArchive(root / "mch", split="all", seq_len=t_in, size=None, stride=1)
    seq = to_intensity(arch.sequence(len(arch) - 1), "rainrate", arch.meta.scale)  # (t, y, x), NaN kept
    pixel = float(arch.meta.pixel_km)
    if grid == "mch":
        return seq, pixel
    try:
        h, w = (int(v) for v in grid.lower().split("x"))
    except ValueError:
        raise SystemExit(f"grid {grid!r}: use 'mch' or HEIGHTxWIDTH, e.g. 2000x2000") from None
    import cv2

    frames = np.nan_to_num(seq, nan=0.0).astype(np.float32)
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames]), pixel


_PROBING = {"on": False}
#: Buckets whose inner calls (motion, sampling) are not counted again in the others.
EXCLUSIVE = ("memory", "inflow")


def _timed(owner: Any, name: str, bucket: str, totals: dict[str, float]) -> None:
    """Wrap ``owner.name`` so its wall time adds to ``totals[bucket]`` (outermost call only)."""
    fn = getattr(owner, name)
    depth = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if bucket not in EXCLUSIVE and _PROBING["on"]:  # inside the memory probe or the inflow mask: theirs only
            return fn(*args, **kwargs)
        if bucket in EXCLUSIVE:
            _PROBING["on"] = True
        depth["n"] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth["n"] -= 1
            if depth["n"] == 0:
                totals[bucket] += time.perf_counter() - t0
                if bucket in EXCLUSIVE:
                    _PROBING["on"] = False

    setattr(owner, name, wrapper)


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    import diffcast
    from diffcast.models.backbones import extrapolation as ex_mod
    from diffcast.models.backbones import pysteps_methods as pm
    from diffcast.models.backbones.extrapolation import Extrapolation
    from diffcast.models.diffusion.residual import ResidualDiffusion

    base_rss = _rss_mb()
    frames, pixel = _input(args.grid, args.radar_root, 5)
    totals: dict[str, float] = defaultdict(float)
    # the memory plan the nowcast makes (diffcast.memory), recorded beside the measured peak
    from diffcast import memory
    from diffcast.inference import Nowcaster, padded_grid
    from diffcast.shipped import DEFAULT_SHIPPED

    h, w = frames.shape[1:]
    nc = Nowcaster.from_checkpoint(args.model or DEFAULT_SHIPPED, grid=padded_grid(h, w))
    cap = memory.parse_size(args.max_memory) if args.max_memory else memory.default_cap()
    t_plan = time.perf_counter()
    plan = memory.plan_members(nc.model, nc.height, nc.width, args.members, cap=cap, n_thresholds=0)
    del nc
    t_plan = time.perf_counter() - t_plan
    _timed(memory, "probe_sample_bytes", "memory", totals)
    from diffcast import inference

    _timed(inference, "inflow_of", "inflow", totals)
    _timed(ex_mod, "motion_field", "motion", totals)
    _timed(pm, "motion_field", "motion", totals)  # S-PROG's (pysteps_methods' own name)
    _timed(Extrapolation, "forward", "backbone+motion", totals)
    _timed(pm.SProg, "forward", "backbone+motion", totals)
    _timed(ResidualDiffusion, "context", "context", totals)
    _timed(ResidualDiffusion, "_sample", "sample", totals)
    t0 = time.perf_counter()
    fc = diffcast.nowcast(
        frames, timestep=5, n_leadtimes=args.leads, n_ens_members=args.members, seed=0, model=args.model,
        pixel_size=pixel, max_memory=cap, **({"autocast_dtype": "bf16"} if args.precision == "bf16" else {}),
    )
    total = time.perf_counter() - t0
    motion = totals["motion"]
    backbone = totals["backbone+motion"] - motion
    context = totals["context"]
    sampling = totals["sample"] - totals["backbone+motion"] - context
    import numpy as np

    return {
        "bench": "cycle", "grid": args.grid, "shape": list(frames.shape[1:]), "model": args.model or "default",
        "members": args.members, "leads": args.leads, "threads": args.threads, "precision": args.precision,
        "wall_s": round(total, 2), "motion_s": round(motion, 2), "backbone_s": round(backbone, 2),
        "context_s": round(context, 2), "sampling_s": round(sampling, 2),
        "memory_probe_s": round(t_plan, 2), "memory_probe_in_nowcast_s": round(totals["memory"], 2),
        "inflow_s": round(totals["inflow"], 2),
        "other_s": round(total - totals["sample"] - totals["memory"] - totals["inflow"], 2),
        "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(base_rss, 1),
        "memory_cap_mb": round(plan.cap / 2**20, 1), "memory_estimate_mb": round(plan.estimate / 2**20, 1),
        "member_chunk": plan.member_chunk,
        "input_float32_mb": round(frames[-4:].size * 4 / 2**20, 1),
        "output_mb": round(fc.nbytes / 2**20, 1),
        "finite_fraction": round(float(np.isfinite(fc).mean()), 4),
        "within_5_min": bool(total <= 300.0),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| grid | members | precision | wall s | motion | backbone | context | sampling | other | peak RSS MB | "
        "estimate MB (chunk) | baseline RSS MB | within 5 min |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['grid']} ({r['shape'][0]} x {r['shape'][1]}) | {r['members']} | {r.get('precision', 'fp32')} | "
        f"{r['wall_s']:.1f} | "
        f"{r['motion_s']:.1f} | {r['backbone_s']:.1f} | {r['context_s']:.1f} | {r['sampling_s']:.1f} | "
        f"{r['other_s']:.1f} | {r['peak_rss_mb']:.0f} | "
        f"{r.get('memory_estimate_mb', float('nan')):.0f} ({r.get('member_chunk', '-')}) | {r['baseline_rss_mb']:.0f} | "
        f"{'yes' if r['within_5_min'] else 'no'} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model (default: the shipped radar model)")
    p.add_argument("--grids", nargs="+", default=["mch", "2000x2000"], help="'mch' and/or HEIGHTxWIDTH")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--leads", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="the denoiser's arithmetic (bf16: bfloat16 autocast, as diffcast nowcast --precision bf16)")
    p.add_argument("--max-memory", default=None, help="memory cap of the nowcast, e.g. 4G (default: 90%% of available)")
    p.add_argument("--radar-root", type=Path, default=SHARED / "radar")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--grid", default=None, help=argparse.SUPPRESS)  # child process
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.grid is not None:
        print(json.dumps(child(args)), flush=True)
        return 0
    if not (args.radar_root / "mch").is_dir():
        print(json.dumps({"bench": "cycle", "skipped": f"{args.radar_root / 'mch'} not found"}))
        return 0
    rows = []
    for grid in args.grids:
        cmd = [sys.executable, __file__, "--grid", grid, "--members", str(args.members), "--leads", str(args.leads),
               "--threads", str(args.threads), "--radar-root", str(args.radar_root), "--precision", args.precision]
        if args.model:
            cmd += ["--model", args.model]
        if args.max_memory:
            cmd += ["--max-memory", args.max_memory]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if out.returncode:
            print(json.dumps({"bench": "cycle", "grid": grid, "error": out.stderr.strip().splitlines()[-1:]}))
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out is not None and rows:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "rows": rows}
        (args.out / "cycle.json").write_text(json.dumps(payload, indent=1) + "\n")
        (args.out / "cycle.md").write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
