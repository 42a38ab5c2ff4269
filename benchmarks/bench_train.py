"""Training speed: optimiser step time and samples/s for a config (tiny presets by default).

``run(quick=False, configs=None, paper=False, steps=None, batch_size=None) -> list[dict]``; as a
script it prints one JSON object per line::

    python benchmarks/bench_train.py                      # tiny presets
    python benchmarks/bench_train.py --paper              # paper-size SEVIR presets (slow on a CPU)
    python benchmarks/bench_train.py --config configs/tiny_convgru.yaml --set train.batch_size=4

Two figures per config: ``step_ms`` is one optimiser update (loss, backward, clipping, AdamW) on
random data in memory; ``train_samples_per_s`` is the end-to-end ``diffcast.training.train`` rate
(data loading, logging and EMA included; validation and checkpoints only at the end).
These are figures, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

TINY = ("tiny_convgru", "tiny_diffcast_persistence", "tiny_diffcast_convgru")
PAPER = ("sevir_simvp", "sevir_diffcast_simvp")


def _step_times(cfg, batch_size: int, steps: int) -> tuple[list[float], int]:
    from diffcast.models import build_model
    from diffcast.training.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(cfg.model_dict())
    opt = build_optimizer(model, lr=cfg.train.lr, betas=cfg.train.betas)
    m = cfg.model
    x_in = torch.rand(batch_size, m.t_in, m.channels, m.height, m.width)
    y_true = torch.rand(batch_size, m.t_out, m.channels, m.height, m.width)
    times = []
    for i in range(steps + 1):  # the first update warms up kernels and is not counted
        t0 = time.perf_counter()
        loss = model.loss(x_in, y_true)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return times, sum(p.numel() for p in model.parameters() if p.requires_grad)


def bench_config(spec: str, overrides=(), steps: int = 5, batch_size: int | None = None,
                 end_to_end: bool = True) -> dict:
    """Figures for one config (a preset name or YAML path)."""
    from diffcast.config import load_config
    from diffcast.training import train

    cfg = load_config(spec, list(overrides))
    bs = batch_size or cfg.train.batch_size
    times, n_params = _step_times(cfg, bs, steps)
    row = {
        "benchmark": "train",
        "config": cfg.name,
        "model": f"{cfg.model.type}:{cfg.model.backbone.get('name')}",
        "trainable_params": n_params,
        "batch_size": bs,
        "frames": f"{cfg.model.t_in}->{cfg.model.t_out}",
        "size": f"{cfg.model.height}x{cfg.model.width}",
        "step_ms_median": round(1000 * statistics.median(times), 2),
        "step_ms_min": round(1000 * min(times), 2),
        "samples_per_s": round(bs / statistics.median(times), 2),
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "machine": platform.processor() or platform.machine(),
    }
    if end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            e2e = load_config(spec, [*overrides, f"train.max_steps={steps}", f"train.batch_size={bs}",
                                     "train.val_every=0", "train.ckpt_every=0", "logging.tensorboard=false",
                                     f"train.warmup_steps={min(steps, cfg.train.warmup_steps)}"])
            summary = train(e2e, Path(tmp) / "run", progress=False)
        row["train_samples_per_s"] = round(summary.samples_per_s, 2)
        row["train_wall_s"] = round(summary.wall_s, 2)
    return row


def run(quick: bool = False, configs=None, paper: bool = False, steps: int | None = None,
        batch_size: int | None = None, overrides=()) -> list[dict]:
    """One row per config; ``quick`` uses fewer steps and the backbone-only tiny preset."""
    if configs is None:
        configs = PAPER if paper else (TINY[:1] if quick else TINY)
    n = steps or (2 if quick else 5)
    bs = batch_size or (1 if paper else None)
    rows = []
    for spec in configs:
        try:
            rows.append(bench_config(spec, overrides, steps=n, batch_size=bs, end_to_end=not paper))
        except Exception as exc:  # report and go on
            rows.append({"benchmark": "train", "config": str(spec), "error": f"{type(exc).__name__}: {exc}"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None, help="preset name or YAML (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--paper", action="store_true", help="paper-size SEVIR presets (batch 1)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = run(args.quick, args.config, args.paper, args.steps, args.batch_size, args.overrides)
    for row in rows:
        print(json.dumps(row, sort_keys=True), flush=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
