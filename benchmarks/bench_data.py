"""Data-layer speed: synthetic storm generation and SEVIR-format reading.

* ``synthetic_generate``: :func:`diffcast.data.synthetic.generate_sequence` on one
  thread (OpenCV and torch limited to 1 thread), 25 x 128 x 128 sequences per second
  (design target: >= 100 seq/s on one core).
* ``sevir_read``: windows per second from a generated SEVIR-format fixture (full-size
  384 x 384 x 49 uint8 events in HDF5 + CATALOG.csv), resized to 128 by area averaging
  and by bilinear interpolation, read event by event as a DataLoader worker would.

Prints JSON lines; ``run(quick=False) -> list[dict]`` for ``benchmarks/run_all.py``.
Figures, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch


def _one_thread():
    prev = (cv2.getNumThreads(), torch.get_num_threads())
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    return prev


def bench_synthetic(n: int, t: int = 25, size: int = 128) -> dict:
    from diffcast.data.synthetic import SyntheticStorms, generate_sequence

    prev = _one_thread()
    try:
        generate_sequence(0, 0, t, size, size)  # warm caches (texture bank, workspace)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            generate_sequence(0, i + 1, t, size, size)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        ds = SyntheticStorms(split="train", seq_len=t, size=size, num_sequences=n)
        t1 = time.perf_counter()
        for i in range(n):
            ds[i]
        dt_ds = time.perf_counter() - t1
    finally:
        cv2.setNumThreads(prev[0])
        torch.set_num_threads(prev[1])
    return {
        "name": "synthetic_generate",
        "shape": [t, size, size],
        "sequences": n,
        "threads": 1,
        "seq_per_s": round(n / dt, 1),
        "ms_per_seq": round(1e3 * dt / n, 2),
        # CPU time of this process: less sensitive than wall time to other load on the machine
        "cpu_seq_per_s": round(n / cpu, 1) if cpu > 0 else None,
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "dataset_item_seq_per_s": round(n / dt_ds, 1),
        "target_seq_per_s": 100,
    }


def write_sevir_fixture(root: Path, events: int, size: int = 384, frames: int = 49) -> Path:
    """Write ``events`` random VIL events (two files) and a CATALOG.csv; returns the catalog."""
    rng = np.random.default_rng(0)
    rows = []
    per_file = max(1, events // 2)
    for k in range(events):
        fn = f"vil/2018/SEVIR_VIL_BENCH_{k // per_file}.h5"
        idx = k % per_file
        path = root / fn
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "a") as fh:
            if "vil" not in fh:
                fh.create_dataset(
                    "vil",
                    shape=(per_file, size, size, frames),
                    dtype=np.uint8,
                    chunks=(1, size, size, frames),
                )
                fh.create_dataset("id", shape=(per_file,), dtype="S8")
            # smooth-ish content so compression-free reads still resemble real fields
            fh["vil"][idx] = rng.integers(0, 256, (size, size, frames), dtype=np.uint8)
            fh["id"][idx] = f"B{k}".encode()
        rows.append(f"B{k},{fn},{idx},vil,2018-0{1 + k % 9}-01 00:00:00,0.0")
    cat = root / "CATALOG.csv"
    cat.write_text(
        "id,file_name,file_index,img_type,time_utc,pct_missing\n" + "\n".join(rows) + "\n"
    )
    return cat


def bench_sevir(events: int) -> list[dict]:
    from diffcast.data import DATASETS

    out = []
    prev = _one_thread()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cat = write_sevir_fixture(Path(tmp), events)
            for method in ("area", "bilinear"):
                ds = DATASETS.build(
                    "sevir", catalog=cat, split="train", stride=12, size=128, resize=method
                )
                t0 = time.perf_counter()
                for i in range(len(ds)):
                    ds[i]
                dt = time.perf_counter() - t0
                ds.close()
                mb = len(ds.events) * 384 * 384 * 49 / 2**20
                out.append(
                    {
                        "name": "sevir_read",
                        "resize": method,
                        "events": len(ds.events),
                        "windows": len(ds),
                        "threads": 1,
                        "windows_per_s": round(len(ds) / dt, 1),
                        "events_per_s": round(len(ds.events) / dt, 2),
                        "mb_per_s": round(mb / dt, 1),
                    }
                )
    finally:
        cv2.setNumThreads(prev[0])
        torch.set_num_threads(prev[1])
    return out


def run(quick: bool = False) -> list[dict]:
    """Run the data benchmarks; one dict per figure."""
    rows = [bench_synthetic(40 if quick else 200)]
    rows += bench_sevir(2 if quick else 8)
    for r in rows:
        r["benchmark"] = "data"
        r["machine"] = platform.machine()
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in run(quick=args.quick):
        print(json.dumps(row, sort_keys=True), flush=True)
