"""Peak memory of `diffcast nowcast` on large radar domains (issue 18, item 4).

For each grid size a spec Zarr store of synthetic rain is generated (6 frames at
5 min, outside the repository), and `diffcast nowcast` runs on it in a fresh
process; the process's peak resident set size (``ru_maxrss`` of the child) is
compared with

- the import baseline: a process that only imports what a nowcast imports
  (torch, pysteps, xarray, netCDF4, diffcast), measured the same way;
- the input's float32 size (``t_in`` frames) and the forecast's float32 size
  (members x leads), the arrays the nowcast cannot do without.

One JSON line per case, e.g.::

    python benchmarks/bench_memory.py --sizes 765x700 2200x1900
    python benchmarks/bench_memory.py --sizes 765x700 --model radar_diffcast_extrapolation_2step --members 2

Real radar folders can be measured too (``--input ../shared/data/radar/mch/20160711``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTS = "import torch, pysteps, xarray, netCDF4, zarr; import diffcast.cli, diffcast.pipeline.run"


def run_measured(cmd: list[str]) -> tuple[int, float, int, str]:
    """Run ``cmd`` and return (peak RSS bytes, wall s, exit status, stderr tail) via ``os.wait4``."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read()[-400:]
    return int(usage.ru_maxrss) * 1024, time.perf_counter() - t0, proc.returncode, err


def make_store(folder: Path, h: int, w: int, frames: int) -> Path:
    from diffcast.data.mlcast import write_spec_store

    path = folder / f"synthetic_{h}x{w}.zarr"
    if not (path / ".zmetadata").exists():
        write_spec_store(path, n_frames=frames, shape=(h, w), kind="rate", seed=1)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=["765x700", "2200x1900"], help="grids HxW of synthetic stores")
    ap.add_argument("--input", nargs="*", default=[], help="real radar folders or stores to measure as well")
    ap.add_argument("--model", default="extrapolation", help="baseline name or model (default extrapolation)")
    ap.add_argument("--members", type=int, default=None, help="ensemble members (DiffCast models)")
    ap.add_argument("--frames", type=int, default=6, help="frames per synthetic store")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "diffcast-bench-memory"))
    ap.add_argument("--out", default=None, help="append the JSON lines to this file too")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    base_rss, base_wall, rc, err = run_measured([sys.executable, "-c", IMPORTS])
    if rc != 0:
        print(f"import baseline failed: {err}", file=sys.stderr)
        return 1
    cases = [(f"synthetic {s}", make_store(work, *map(int, s.lower().split("x")), args.frames)) for s in args.sizes]
    cases += [(f"input {p}", Path(p)) for p in args.input]
    lines = []
    for label, path in cases:
        out = work / f"out_{abs(hash((label, args.model))) % 10**8}"
        cmd = [sys.executable, "-c", "import sys; from diffcast.cli import main; sys.exit(main())", "-q", "nowcast", "--checkpoint", args.model, "--input", str(path),
               "--out", str(out), "--no-html", "--no-progress"]
        if args.members:
            cmd += ["--members", str(args.members)]
        if out.exists():
            import shutil

            shutil.rmtree(out)
        peak, wall, rc, err = run_measured(cmd)
        rec = {"bench": "nowcast_memory", "case": label, "model": args.model, "exit": rc,
               "peak_rss_mb": round(peak / 2**20, 1), "import_baseline_mb": round(base_rss / 2**20, 1),
               "above_imports_mb": round((peak - base_rss) / 2**20, 1), "wall_s": round(wall, 1),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
        if rc == 0:
            import xarray as xr

            with xr.open_dataset(out / "forecast.nc") as ds:
                m, t, h, w = ds["forecast"].shape
                t_in = int(ds.sizes.get("input_time", 4))
            fin, fout = t_in * h * w * 4, m * t * h * w * 4
            rec.update(grid=f"{h}x{w}", members=m, leads=t, input_f32_mb=round(fin / 2**20, 1),
                       forecast_f32_mb=round(fout / 2**20, 1),
                       above_imports_per_input_and_forecast=round((peak - base_rss) / (fin + fout), 2))
        else:
            rec["error"] = err.strip().splitlines()[-1] if err.strip() else "failed"
        line = json.dumps(rec)
        print(line, flush=True)
        lines.append(line)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
