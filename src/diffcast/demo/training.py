"""The training demo (``diffcast demo --train``): train the toy backbone and DiffCast, evaluate, report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_write_text, ensure_writable_dir
from .figures import _render_cases
from .report import _build_report
from .scoring import check_claims
from .settings import (
    BACKBONE_LABEL,
    DIFFCAST_LABEL,
    MARKER,
    PROFILES,
    DemoSettings,
    _data_knobs,
    _prepare_out,
    _sample_kwargs,
)

log = logging.getLogger(__name__)

def _stage_configs(s: DemoSettings, seed: int, backbone_run: Path) -> tuple[Any, Any]:
    from ..config import load_config

    common = {
        "seed": seed,
        "model.t_in": s.t_in,
        "model.t_out": s.t_out,
        "model.height": s.size,
        "model.width": s.size,
        "data.kwargs": {"size": s.size, "num_sequences": s.n_train, **_data_knobs(s), "seed": seed},
        "train.batch_size": s.batch_size,
    }
    bb = load_config(s.backbone_config, {**common, "train.max_steps": s.backbone_steps})
    dc = load_config(
        s.diffusion_config,
        {**common, "train.max_steps": s.diffusion_steps, "train.init_backbone": str(backbone_run),
         "model.diffusion.freeze_backbone": True},
    )
    if dc.model.backbone != bb.model.backbone:
        raise ValueError(f"{s.diffusion_config} must use the backbone of {s.backbone_config}")
    return bb, dc


def _train_stage(cfg: Any, run_dir: Path, progress: bool) -> dict[str, Any]:
    from ..models.factory import build_model, count_parameters
    from ..training import train

    t0 = time.perf_counter()
    summary = train(cfg, run_dir, progress=progress)
    wall = time.perf_counter() - t0
    if summary.interrupted:
        # The trainer saved a checkpoint on the stop signal; the demo stops too.
        raise KeyboardInterrupt(f"training stopped at step {summary.steps} ({run_dir})")
    model = build_model(cfg.model_dict())
    if cfg.model.type == "diffcast" and cfg.model.diffusion.get("freeze_backbone"):
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    return {
        "run_dir": str(run_dir),
        "steps": summary.steps,
        "final_loss": summary.final_loss,
        "wall_s": round(wall, 1),
        "samples_per_s": round(summary.samples_per_s, 2),
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
    }


class _ListDataset(torch.utils.data.Dataset):
    """Sequences ``(T, 1, H, W)`` held in memory, with a ``meta`` attribute."""

    def __init__(self, items: list[torch.Tensor], meta: Any) -> None:
        self.items, self.meta = items, meta

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.items[i]


def _real_folders(root: Path) -> list[Path]:
    from ..data.images import is_sequence_folder

    if not root.exists():
        raise FileNotFoundError(f"--real {root} does not exist")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and is_sequence_folder(p)) if root.is_dir() else []
    if subs and not any(p.name in ("preds", "inputs", "input", "x_in") for p in subs):
        return subs
    return [root]


def _run_real(root: Path, out: Path, seed: int, progress: bool) -> dict[str, Any]:
    from ..evaluation import evaluate
    from ..pipeline import make_nowcaster, prepare_input, read_input, run_nowcast

    folder = ensure_writable_dir(out / "real")
    entries, items = [], []
    meta = None
    t_out_real = None
    for seq_dir in _real_folders(root):
        raw = read_input([seq_dir])
        t_out = raw.y_true.shape[0] if raw.y_true is not None else 20
        entry: dict[str, Any] = {"name": seq_dir.name, "source": str(seq_dir), "frames": list(raw.frames.shape),
                                 "targets": raw.y_true is not None, "outputs": {}}
        for name in ("persistence", "extrapolation"):
            nc = make_nowcaster(name, raw, t_in=min(5, raw.frames.shape[0]), t_out=t_out)
            prep = prepare_input(raw, t_in=nc.t_in, size=(nc.height, nc.width), meta=nc.meta, model_name=name)
            dest = folder / seq_dir.name / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            run_nowcast(nc, prep, dest, seed=seed, progress=False, spec=name)
            entry["outputs"][name] = {"panel": str((dest / "panel.png").relative_to(out)),
                                      "gif": str((dest / "forecast.gif").relative_to(out)),
                                      "netcdf": str((dest / "forecast.nc").relative_to(out))}
            meta = nc.meta
        if raw.y_true is not None and raw.frames.shape[0] >= 5 and (t_out_real in (None, t_out)):
            t_out_real = t_out
            seq = np.concatenate([raw.frames[-5:], raw.y_true])[:, None]
            items.append(torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32)))
        entries.append(entry)
    result: dict[str, Any] = {"root": str(root), "sequences": entries, "metrics": None}
    if items and meta is not None:
        h, w = items[0].shape[-2:]
        same = [it for it in items if tuple(it.shape[-2:]) == (h, w)]
        from ..inference import Nowcaster

        ncs = [Nowcaster.from_baseline(n, t_in=5, t_out=t_out_real, height=h, width=w, meta=meta)
               for n in ("persistence", "extrapolation")]
        res = evaluate(ncs, _ListDataset(same, meta), meta=meta, batch_size=2, progress=progress, seed=seed)
        result["metrics"] = res
        result["n_evaluated"] = len(same)
    return result


def run_training_demo(
    out_dir: str | os.PathLike[str] = "demo_out",
    *,
    quick: bool = False,
    real: str | os.PathLike[str] | None = None,
    seed: int = 0,
    settings: DemoSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the toy backbone and DiffCast, evaluate, and write ``report.md``/``report.html`` into ``out_dir``.

    What ``diffcast demo --train`` runs.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created; a previous demo output there is replaced).
    quick : bool
        Use the ``quick`` profile (about 3 minutes) instead of ``default`` (about 15).
    real : path-like, optional
        Folder of real sequences (e.g. ``sevir_demo``) to nowcast with the baselines.
    seed : int
        Seeds data, training and sampling.
    settings : DemoSettings, optional
        Overrides the profile entirely (tests use this to run smaller).
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        The content of ``demo.json`` (settings, timings, metrics, claims, files).
    """
    from .. import __version__
    from ..data import DATASETS
    from ..evaluation import evaluate, write_outputs
    from ..inference import Nowcaster
    from ..viz.report import write_report

    profile = "quick" if quick else "default"
    s = settings or PROFILES[profile]
    if s.t_out % 5:
        raise ValueError(f"t_out must be a multiple of the 5-frame diffusion segment, got {s.t_out}")
    real_root = Path(real) if real is not None else None
    if real_root is not None and not real_root.exists():
        raise FileNotFoundError(f"--real {real_root} does not exist")
    out = _prepare_out(out_dir)
    t_start = time.perf_counter()
    elapsed: dict[str, float] = {}
    runs = out / "runs"
    bb_cfg, dc_cfg = _stage_configs(s, seed, runs / "backbone")

    log.info("demo [1/6] training the backbone (%d steps)", s.backbone_steps)
    t = time.perf_counter()
    training = {"backbone": _train_stage(bb_cfg, runs / "backbone", progress)}
    elapsed["backbone"] = time.perf_counter() - t

    log.info("demo [2/6] training DiffCast on the frozen backbone (%d steps)", s.diffusion_steps)
    t = time.perf_counter()
    training["diffcast"] = _train_stage(dc_cfg, runs / "diffcast", progress)
    elapsed["diffcast"] = time.perf_counter() - t

    log.info("demo [3/6] evaluating 4 models on %d test sequences", s.n_test)
    t = time.perf_counter()
    test_ds = DATASETS.build("synthetic", split="test", seq_len=s.t_in + s.t_out, size=s.size,
                             num_sequences=s.n_test, seed=seed, **_data_knobs(s))
    meta = test_ds.meta
    shape = {"t_in": s.t_in, "t_out": s.t_out, "height": s.size, "width": s.size, "meta": meta}
    backbone = Nowcaster.from_checkpoint(runs / "backbone")
    backbone.name = BACKBONE_LABEL
    diffcast = Nowcaster.from_checkpoint(runs / "diffcast")
    diffcast.name = DIFFCAST_LABEL
    nowcasters = [Nowcaster.from_baseline("persistence", **shape), Nowcaster.from_baseline("extrapolation", **shape),
                  backbone, diffcast]
    results = evaluate(nowcasters, test_ds, meta=meta, members=s.members, batch_size=s.eval_batch, seed=seed,
                       progress=progress, sample_kwargs=_sample_kwargs(s))
    write_outputs(results, out / "eval", meta, run_info={"demo": True, "seed": seed, "settings": dataclasses.asdict(s)})
    try:
        from ..viz.plots import plot_scores_by_lead

        plot_scores_by_lead(results, out / "eval" / "csi_pool16_by_lead.png", score="csi_pool16",
                            timestep_min=meta.timestep_min)
    except (ValueError, KeyError) as exc:  # pooled scores per lead are optional in the metrics
        log.info("no CSI-pool16 by lead plot: %s", exc)
    claims = check_claims(results)
    elapsed["evaluate"] = time.perf_counter() - t

    log.info("demo [4/6] rendering %d test cases", s.n_cases)
    t = time.perf_counter()
    cases = _render_cases(nowcasters, test_ds, s, seed, out)
    elapsed["cases"] = time.perf_counter() - t

    real_info = None
    if real_root is not None:
        log.info("demo [5/6] nowcasting real sequences from %s with the baselines", real_root)
        t = time.perf_counter()
        real_info = _run_real(real_root, out, seed, progress)
        elapsed["real"] = time.perf_counter() - t

    log.info("demo [6/6] writing the report")
    elapsed["total"] = time.perf_counter() - t_start
    info: dict[str, Any] = {
        "mode": "train",
        "profile": profile,
        "seed": seed,
        "settings": dataclasses.asdict(s),
        "timestep_min": meta.timestep_min,
        "training": training,
        "results": results,
        "claims": claims,
        "architecture": {
            "backbone": ", ".join(f"{k}={v}" for k, v in bb_cfg.model.backbone.items()),
            "diffusion": dict(dc_cfg.model.diffusion),
            "diffusion_parameters": training["diffcast"]["trainable_parameters"],
        },
        "cases": cases,
        "real": real_info,
        "elapsed_s": {k: round(v, 1) for k, v in elapsed.items()},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
        "software": {"diffcast": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    report = _build_report(info, out)
    write_report(report, out)
    info["files"] = ["report.md", "report.html", "eval/metrics.json", "eval/table.md"] + [c["gif"] for c in cases]
    atomic_write_text(out / MARKER, json.dumps(info, indent=2, default=str, allow_nan=False) + "\n")
    log.info("demo finished in %.1f min: claim held: %s (%s)", elapsed["total"] / 60,
             "yes" if claims["held"] else "no", out / "report.md")
    return info
