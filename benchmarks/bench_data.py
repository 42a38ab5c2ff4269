"""Data-layer speed: synthetic storm generation and SEVIR-format reading.

* ``synthetic_generate``: :func:`diffcast.data.synthetic.generate_sequence` on one
  thread (OpenCV and torch limited to 1 thread), 25 x 128 x 128 sequences per second
  (design target: >= 100 seq/s on one core).
* ``sevir_read``: windows per second from a generated SEVIR-format fixture (full-size
  384 x 384 x 49 uint8 events in HDF5 + CATALOG.csv), resized to 128 by area averaging
  and by bilinear interpolation, read event by event as a DataLoader worker would.

* ``mlcast_store`` (``--mlcast``, not part of ``run_all``): windows per second (256 x 256 crops,
  25 frames) from a local zstd mlcast spec store of 1100 x 900 x 2000 float32 frames that it
  generates once (50 frames at a time, about 1 GB of memory) into ``--store`` (default
  ``$TMPDIR/diffcast_bench/``): through the ``mlcast`` dataset (each frame decompressed once
  per window, ``--crops-per-window`` crops cut from it) next to a plain ``xarray`` ``isel``
  read of the same crops (every crop decompresses its frames again).

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


def write_bench_store(path: Path, frames: int, shape: tuple[int, int], block: int = 50) -> Path:
    """A spec store of ``frames`` drifting-rain frames of ``shape`` at 5 min, written ``block`` frames at a time.

    Reused when ``path`` holds one with the same parameters (``.diffcast_bench.json``).
    """
    import xarray as xr

    from diffcast.data.mlcast import write_spec_store
    from diffcast.data.mlcast.synthetic import spec_times, synthetic_rain

    marker = path / ".diffcast_bench.json"
    params = {"frames": int(frames), "shape": list(shape), "version": 2}
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return path
    h, w = shape
    base = synthetic_rain(1, (h, w), seed=0)[0]
    times, _ = spec_times(frames, 5.0)

    def rain(a: int, b: int) -> np.ndarray:  # the base field drifting 1 px down and 2 px east per step
        return np.stack([np.roll(base, (t, 2 * t), axis=(0, 1)) * np.float32(0.7 + 0.3 * np.sin(t / 30.0))
                         for t in range(a, b)])

    first = min(block, frames)
    write_spec_store(path, n_frames=first, shape=shape, rain=rain(0, first))
    head = xr.open_zarr(str(path), chunks=None)
    attrs, var_attrs = dict(head.attrs), dict(head["rainfall_flux"].attrs)  # appending would drop them
    for a in range(first, frames, block):
        b = min(a + block, frames)
        vals = rain(a, b)
        vals[:, -h // 4 :, : w // 4] = np.nan  # the no-data corner write_spec_store puts in
        xr.Dataset({"rainfall_flux": (("time", "y", "x"), vals, var_attrs)}, coords={"time": times[a:b]},
                   attrs=attrs).to_zarr(str(path), append_dim="time", consolidated=True)
    marker.write_text(json.dumps(params))
    return path


def bench_store(path: Path, frames: int, shape: tuple[int, int], windows: int, crops: int,
                size: int = 256, seq_len: int = 25, seed: int = 0) -> list[dict]:
    """Windows per second through the ``mlcast`` dataset and through ``xarray.isel`` (same windows and crops)."""
    import xarray as xr

    from diffcast.data.mlcast.dataset import StoreWindows

    t0 = time.perf_counter()
    write_bench_store(path, frames, shape)
    gen_s = time.perf_counter() - t0
    ds = StoreWindows(path, split="all", seq_len=seq_len, size=size, crops_per_window=crops, stride=1,
                      candidates=4 * crops, augment=False, min_coverage=1.0, seed=seed)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ds.windows), size=min(windows, len(ds.windows)), replace=False)
    prev = _one_thread()
    try:
        t1 = time.perf_counter()
        corners = []
        for w in picks:
            for c in range(crops):
                ds[int(w) * crops + c]
            corners.append(ds._window[2])
        dt_ds = time.perf_counter() - t1
        var = xr.open_zarr(str(path), chunks=None)["rainfall_flux"]
        t2 = time.perf_counter()
        for w, cs in zip(picks, corners):
            s = int(ds.windows[w])
            for c in range(crops):
                y0, x0 = cs[c % len(cs)]
                # the store is north-up (y decreasing), so rows are the dataset's rows
                np.asarray(var.isel(time=slice(s, s + seq_len), y=slice(y0, y0 + size), x=slice(x0, x0 + size)))
        dt_xr = time.perf_counter() - t2
    finally:
        cv2.setNumThreads(prev[0])
        torch.set_num_threads(prev[1])
    n = len(picks)
    common = {"shape": [seq_len, size, size], "store": [frames, *shape], "windows": n, "crops_per_window": crops,
              "dtype": "float32", "compressor": "zstd", "store_build_s": round(gen_s, 1)}
    return [
        {"name": "mlcast_store_dataset", **common, "windows_per_s": round(n / dt_ds, 2),
         "crops_per_s": round(n * crops / dt_ds, 2), "note": "each frame decompressed once per window, crops encoded"},
        {"name": "mlcast_store_xarray_isel", **common, "windows_per_s": round(n / dt_xr, 2),
         "crops_per_s": round(n * crops / dt_xr, 2), "note": "one isel per crop, raw values, no encoding"},
    ]


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
    parser.add_argument("--mlcast", action="store_true", help="only the spec-store benchmark (generates the store once)")
    parser.add_argument("--store", type=Path, default=None,
                        help="where the generated store lives (default $TMPDIR/diffcast_bench/mlcast_FxHxW.zarr)")
    parser.add_argument("--frames", type=int, default=2000, help="frames of the generated store")
    parser.add_argument("--shape", type=int, nargs=2, default=(1100, 900), metavar=("H", "W"))
    parser.add_argument("--windows", type=int, default=20, help="random windows read")
    parser.add_argument("--crops-per-window", type=int, default=8)
    args = parser.parse_args()
    if args.mlcast:
        h, w = args.shape
        store = args.store or Path(tempfile.gettempdir()) / "diffcast_bench" / f"mlcast_{args.frames}x{h}x{w}.zarr"
        store.parent.mkdir(parents=True, exist_ok=True)
        rows = bench_store(store, args.frames, (h, w), args.windows, args.crops_per_window)
        for r in rows:
            r.update(benchmark="data", machine=platform.machine(), cpus=os.cpu_count())
    else:
        rows = run(quick=args.quick)
    for row in rows:
        print(json.dumps(row, sort_keys=True), flush=True)
