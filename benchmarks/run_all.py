"""Run every benchmark in this folder and print one JSON object per line.

Each ``bench_*.py`` module exposes ``run(quick: bool = False) -> list[dict]``.
Usage: ``python benchmarks/run_all.py [--quick] [--only NAME ...] [--out FILE]``.
These are figures, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names, e.g. data metrics")
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    failed = 0
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            module = _load(path)
            kwargs = {"quick": args.quick} if "quick" in inspect.signature(module.run).parameters else {}
            rows = module.run(**kwargs)
        except Exception as exc:  # report and go on with the other benchmarks
            rows = [{"benchmark": name, "error": f"{type(exc).__name__}: {exc}"}]
            failed += 1
        for row in rows:
            row.setdefault("benchmark", name)
            line = json.dumps(row, sort_keys=True)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(line + "\n")
        print(json.dumps({"benchmark": name, "wall_s": round(time.perf_counter() - t0, 2)}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
