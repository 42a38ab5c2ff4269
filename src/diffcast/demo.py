"""``diffcast demo``: what the package does, on a CPU, in a few minutes.

Two modes, each writing ``report.md`` and a self-contained ``report.html`` into ``out_dir``:

**Nowcast demo** (:func:`run_demo`, the default of ``diffcast demo`` and ``make demo``;
no training). Held-out radar windows (the test events of the archives under
``../shared/data/radar``: MeteoSwiss 2017-01-31, FMI 2017-05-09; mm/h, native
1 km grid, centre crop), or synthetic storms when no radar data is found, are
nowcast by persistence, extrapolation, STEPS and the trained DiffCast model (the
shipped :data:`diffcast.shipped.DEFAULT_SHIPPED` unless another is named), each
through :func:`diffcast.nowcast`, and scored with pysteps' verification
(:class:`diffcast.skill.Skill`): the skill table, CSI and CRPS by lead time,
rank histograms, the reliability diagram at 1 mm/h, wall time per forecast and
side-by-side animations. Without a trained model the baselines are still shown
and the report says so.

**Training demo** (:func:`run_training_demo`, ``diffcast demo --train``): trains
a toy backbone and DiffCast from scratch on synthetic storms and tests the
paper's claims on them. Stages (each logged, timed and recorded in ``demo.json``):

1. **backbone**: train a tiny SimVP on procedural storms
   (``configs/demo_backbone.yaml``; data generated on the fly, nothing downloaded);
2. **diffcast**: train the residual diffusion on the *frozen* trained backbone
   (two-stage: ``configs/demo_diffcast.yaml`` with ``train.init_backbone`` set to
   stage 1 and ``freeze_backbone: true``), so the diffusion part only learns the
   residual ``y - mu``;
3. **evaluate** persistence, extrapolation, the backbone and the DiffCast ensemble
   on the synthetic *test* split (never seen in training or validation) with the
   paper's protocol (:func:`diffcast.evaluation.evaluate`);
4. **claims**: DiffCast's ensemble beats its own backbone on CSI-pool16 and CRPS
   and beats persistence (CSI-M and CRPS), stated with the measured numbers and a
   "claim held: yes/no" line whatever the outcome;
5. **cases**: animations and panels of a few test sequences;
6. **real** (optional, ``real=PATH``): nowcast real sequences (e.g.
   ``sevir_demo/demo_N``) with the baselines and evaluate them where targets exist;
7. **report**: ``report.md`` and ``report.html`` (images embedded).

Budgets of the training demo are set by a profile: ``default`` (about 15 minutes
on 2 CPU cores) or ``quick`` (about 3 minutes). Everything a demo writes lives in
``out_dir``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .utils.io import atomic_write_text, ensure_writable_dir

log = logging.getLogger(__name__)

#: Marker file that identifies a demo output folder (so a rerun may replace it).
MARKER = "demo.json"


@dataclass(frozen=True)
class DemoSettings:
    """Budgets and sizes of one demo run.

    Attributes
    ----------
    size : int
        Frame size in pixels (square; even, for the stride-2 layers of SimVP and the GTUNet).
    t_in, t_out : int
        Observed and forecast frames (``t_out`` a multiple of the 5-frame segment).
    difficulty : float
        Synthetic-storm difficulty (0-3): growth/decay and new cells that the
        inputs cannot predict.
    n_train : int
        Sequences in the training split (generated on the fly).
    n_test : int
        Test sequences evaluated.
    backbone_steps, diffusion_steps : int
        Optimiser updates of the two training stages.
    batch_size : int
        Training batch size.
    members : int
        Ensemble size of the DiffCast evaluation.
    sampler, sampler_steps, sampler_spacing : str, int, str
        Diffusion sampler, steps and timestep spacing used at evaluation.
    n_cases : int
        Test sequences animated in the report.
    eval_batch : int
        Sequences per forward pass at evaluation.
    wind_speed : float or None
        Synthetic mean wind in px/frame at 128 px (``None``: the generator's default).
    backbone_config, diffusion_config : str
        YAML presets (names in ``configs/`` or paths) of the two training stages.
    """

    size: int = 32
    t_in: int = 5
    t_out: int = 10
    difficulty: float = 1.0
    n_train: int = 4096
    n_test: int = 64
    backbone_steps: int = 800
    diffusion_steps: int = 800
    batch_size: int = 8
    members: int = 8
    sampler: str = "unipc_3"
    sampler_steps: int = 10
    sampler_spacing: str = "logsnr"
    n_cases: int = 3
    eval_batch: int = 8
    wind_speed: float | None = None
    backbone_config: str = "demo_backbone"
    diffusion_config: str = "demo_diffcast"


#: Profiles: ``default`` (~15 min on 2 cores) and ``quick`` (~3 min).
PROFILES: dict[str, DemoSettings] = {
    "default": DemoSettings(wind_speed=3.0),
    "quick": DemoSettings(
        n_train=2048, n_test=32, backbone_steps=250, diffusion_steps=300, members=4, sampler_steps=5, n_cases=2,
        wind_speed=3.0,
    ),
}

#: Model names in the demo's tables (the architectures are named in the report text).
BACKBONE_LABEL = "backbone"
DIFFCAST_LABEL = "DiffCast"


# ----------------------------------------------------------------------------- helpers
def _sample_kwargs(s: DemoSettings) -> dict[str, Any]:
    return {"sampler": s.sampler, "steps": s.sampler_steps, "timestep_spacing": s.sampler_spacing}


def _data_knobs(s: DemoSettings) -> dict[str, float]:
    knobs = {"difficulty": s.difficulty}
    if s.wind_speed is not None:
        knobs["wind_speed"] = s.wind_speed
    return knobs


def _stage_configs(s: DemoSettings, seed: int, backbone_run: Path) -> tuple[Any, Any]:
    from .config import load_config

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


def _prepare_out(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(
                f"--out {out} is not empty and holds no previous demo ({MARKER} missing); choose another folder"
            )
        # A previous demo (either mode): its outputs are replaced (the trainer refuses to reuse run folders).
        for sub in ("runs", "eval", "cases", "real", "plots", "animations"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("skill.json", "report.md", "report.html"):
            (out / name).unlink(missing_ok=True)
    return ensure_writable_dir(out)


def _metric(res: Mapping[str, Any], key: str) -> float | None:
    v = res.get(key)
    return None if v is None else float(v)


def check_claims(results: Mapping[str, Mapping[str, Any]], backbone: str = BACKBONE_LABEL,
                 diffcast: str = DIFFCAST_LABEL, persistence: str = "persistence") -> dict[str, Any]:
    """Test the demo's claims on measured metrics.

    Claims: DiffCast's ensemble has a higher CSI-pool16 and a lower CRPS than its
    backbone, and a higher CSI-M and a lower CRPS than persistence.

    Returns
    -------
    dict
        ``{"checks": [{"claim", "diffcast", "other", "held"}...], "held": bool}``.
    """
    d, b, p = results[diffcast], results[backbone], results[persistence]
    checks = []
    for label, key, other, res, higher in (
        ("CSI-pool16 above the backbone's", "csi_pool16_m", backbone, b, True),
        ("CRPS below the backbone's", "crps", backbone, b, False),
        ("CSI-M above persistence's", "csi_m", persistence, p, True),
        ("CRPS below persistence's", "crps", persistence, p, False),
    ):
        dv, ov = _metric(d, key), _metric(res, key)
        held = dv is not None and ov is not None and (dv > ov if higher else dv < ov)
        checks.append({"claim": f"DiffCast {label}", "metric": key, "diffcast": dv, "other_model": other,
                       "other": ov, "held": bool(held)})
    return {"checks": checks, "held": all(c["held"] for c in checks)}


def _train_stage(cfg: Any, run_dir: Path, progress: bool) -> dict[str, Any]:
    from .models.factory import build_model, count_parameters
    from .training import train

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


# ----------------------------------------------------------------------------- cases
def _render_cases(nowcasters: list[Any], test_ds: Any, s: DemoSettings, seed: int, out: Path) -> list[dict[str, Any]]:
    from .data.contract import split_sequence
    from .viz.animate import Panel, default_prob_threshold, save_forecast_panel, save_panels_gif

    meta = test_ds.meta
    thr = default_prob_threshold(meta)
    cases = []
    folder = ensure_writable_dir(out / "cases")
    for case in range(min(s.n_cases, len(test_ds))):
        seq = torch.as_tensor(test_ds[case])[None]
        x_in, y_true = split_sequence(seq, s.t_in, s.t_out)
        preds = {nc.name: nc.predict(x_in, members=s.members, seed=seed + case, **_sample_kwargs(s)
                                     ).forecast[:, 0, :, 0].numpy()
                 if nc.is_probabilistic else nc.predict(x_in).forecast[:, 0, :, 0].numpy() for nc in nowcasters}
        xi, yt = x_in[0, :, 0].numpy(), y_true[0, :, 0].numpy()
        dc = preds[DIFFCAST_LABEL]
        panels = [Panel("observed/truth", np.concatenate([xi, yt]))]
        for name in ("persistence", "extrapolation", BACKBONE_LABEL):
            panels.append(Panel(name, preds[name][0], offset=s.t_in))
        panels += [Panel("DiffCast #1", dc[0], offset=s.t_in), Panel("DiffCast #2", dc[min(1, len(dc) - 1)], offset=s.t_in),
                   Panel("DiffCast mean", dc.mean(0), offset=s.t_in),
                   Panel(f"P(>={thr:g})", (dc * meta.scale >= thr).mean(0), kind="prob", offset=s.t_in)]
        labels = [f"obs {(i - s.t_in + 1) * meta.timestep_min:+g} min" for i in range(s.t_in)] + [
            f"+{(k + 1) * meta.timestep_min:g} min" for k in range(s.t_out)]
        gif = save_panels_gif(folder / f"case_{case}.gif", panels, meta, labels, title=f"test case {case}")
        png = save_forecast_panel(folder / f"case_{case}_diffcast.png", xi, dc, meta, y_true=yt,
                                  prob_threshold=thr, title=f"test case {case}: DiffCast ensemble ({len(dc)} members)")
        png_bb = save_forecast_panel(folder / f"case_{case}_backbone.png", xi, preds[BACKBONE_LABEL], meta, y_true=yt,
                                     prob_threshold=thr, title=f"test case {case}: backbone alone")
        cases.append({"index": case, "gif": str(gif.relative_to(out)), "panel": str(png.relative_to(out)),
                      "panel_backbone": str(png_bb.relative_to(out))})
    return cases


# ----------------------------------------------------------------------------- real data
def _real_folders(root: Path) -> list[Path]:
    from .data.images import is_sequence_folder

    if not root.exists():
        raise FileNotFoundError(f"--real {root} does not exist")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and is_sequence_folder(p)) if root.is_dir() else []
    if subs and not any(p.name in ("preds", "inputs", "input", "x_in") for p in subs):
        return subs
    return [root]


def _run_real(root: Path, out: Path, seed: int, progress: bool) -> dict[str, Any]:
    from .evaluation import evaluate
    from .pipeline import make_nowcaster, prepare_input, read_input, run_nowcast

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
        from .inference import Nowcaster

        ncs = [Nowcaster.from_baseline(n, t_in=5, t_out=t_out_real, height=h, width=w, meta=meta)
               for n in ("persistence", "extrapolation")]
        res = evaluate(ncs, _ListDataset(same, meta), meta=meta, batch_size=2, progress=progress, seed=seed)
        result["metrics"] = res
        result["n_evaluated"] = len(same)
    return result


# ----------------------------------------------------------------------------- report
def _results_table(results: Mapping[str, Mapping[str, Any]], caption: str) -> Any:
    from .viz.report import Table, best_cells

    cols = [("CSI-M ↑", "csi_m", "max"), ("CSI-pool4 ↑", "csi_pool4_m", "max"), ("CSI-pool16 ↑", "csi_pool16_m", "max"),
            ("HSS-M ↑", "hss_m", "max"), ("SSIM ↑", "ssim", "max"), ("CRPS ↓", "crps", "min"), ("MSE ↓", "mse", "min")]
    rows = []
    for name, r in results.items():
        rows.append([name, int(r.get("members", 1))] + [_metric(r, k) for _, k, _ in cols])
    bold = best_cells(rows, {i + 2: mode for i, (_, _, mode) in enumerate(cols)})
    return Table(["model", "members"] + [c for c, _, _ in cols], rows, caption=caption, bold=bold)


def _ensemble_mean_table(results: Mapping[str, Mapping[str, Any]]) -> Any | None:
    from .viz.report import Table

    rows = []
    for name, r in results.items():
        em = r.get("ensemble_mean")
        if isinstance(em, Mapping):
            rows.append([name, _metric(em, "csi_m"), _metric(em, "csi_pool16_m"), _metric(em, "mse")])
    if not rows:
        return None
    return Table(["model", "CSI-M ↑", "CSI-pool16 ↑", "MSE ↓"], rows,
                 caption="Scores of the ensemble mean (a smooth field, like the backbone's forecast)")


def _build_report(info: dict[str, Any], out: Path) -> Any:
    from .viz.report import Report, Section, Table

    s = info["settings"]
    claims = info["claims"]
    held = "yes" if claims["held"] else "no"
    summary = (
        f"DiffCast demo on synthetic storms ({s['size']}x{s['size']} px, {s['t_in']} -> {s['t_out']} frames of "
        f"{info['timestep_min']:g} min), profile `{info['profile']}`, seed {info['seed']}, "
        f"finished in {info['elapsed_s']['total'] / 60:.1f} min on {info['machine']['cpu_count']} CPU core(s), "
        f"{info['machine']['torch_threads']} torch thread(s). Backbone: `{info['architecture']['backbone']}`; "
        f"DiffCast: residual diffusion (GTUNet, {info['architecture']['diffusion_parameters']} trainable parameters) "
        f"on the frozen trained backbone. **Claim held: {held}**."
    )
    sections = []
    bullets = []
    for c in claims["checks"]:
        dv, ov = c["diffcast"], c["other"]
        bullets.append(
            f"{c['claim']}: DiffCast {dv:.4f} vs {c['other_model']} {ov:.4f} -> **{'held' if c['held'] else 'did not hold'}**"
            if dv is not None and ov is not None else f"{c['claim']}: not measured -> **did not hold**"
        )
    res = info["results"]
    dres = res.get(DIFFCAST_LABEL, {})
    for base in ("persistence", "extrapolation"):
        better = []
        for label, key, higher in (("CSI-M", "csi_m", True), ("CSI-pool16", "csi_pool16_m", True), ("CRPS", "crps", False)):
            bv, dv = _metric(res.get(base, {}), key), _metric(dres, key)
            if bv is not None and dv is not None and (bv > dv if higher else bv < dv):
                better.append(f"{label} ({bv:.4f} vs {dv:.4f})")
        if better:
            bullets.append(f"Not claimed: {base} scores better than DiffCast on " + ", ".join(better) + ".")
    sections.append(Section(
        "Claim",
        [f"Measured on the synthetic test split ({s['n_test']} sequences never used for training or validation), "
         f"DiffCast with {s['members']} members, sampler {s['sampler']} with {s['sampler_steps']} steps "
         f"({s.get('sampler_spacing', 'trailing')} spacing). "
         "Deterministic scores (CSI, HSS, SSIM, MSE) treat every ensemble member as a sample (the paper's protocol); "
         "CRPS is in VIL code units (for a deterministic model it equals the MAE).",
         f"**claim held: {held}**"],
        bullets=bullets,
    ))
    tables = [_results_table(info["results"], "Test split: all models on the same sequences (best per column in bold)")]
    em = _ensemble_mean_table(info["results"])
    if em is not None:
        tables.append(em)
    images = [(caption, path) for caption, path in (
        ("CSI per threshold vs lead time", "eval/csi_by_lead.png"),
        ("CSI-pool16 per threshold vs lead time", "eval/csi_pool16_by_lead.png"),
        ("Rank histogram of the DiffCast ensemble (flat = well dispersed)", "eval/rank_histogram.png"),
        ("Reliability of exceedance probabilities", "eval/reliability.png"),
    ) if (out / path).is_file()]
    sections.append(Section("Results", [
        "Metrics, per-lead CSV and the evaluation table are in `eval/` "
        "(`metrics.json`, `per_lead.csv`, `table.md`)."], tables, images))
    case_imgs = []
    for c in info["cases"]:
        case_imgs += [(f"Test case {c['index']}: observed/truth, baselines, backbone, two DiffCast members, "
                       "ensemble mean and exceedance probability", c["gif"]),
                      (f"Test case {c['index']}: DiffCast ensemble", c["panel"]),
                      (f"Test case {c['index']}: backbone alone", c["panel_backbone"])]
    sections.append(Section("Cases", ["Animations of test sequences (SEVIR VIL colour map)."], images=case_imgs))
    tr = info["training"]
    rows = [[stage, v["steps"], v["trainable_parameters"], v["parameters"], v["final_loss"], v["wall_s"]]
            for stage, v in tr.items()]
    sections.append(Section(
        "Training",
        ["Two stages: the backbone alone (MSE loss), then the residual diffusion on the frozen trained backbone "
         "(configs `demo_backbone.yaml`, `demo_diffcast.yaml`; run folders in `runs/`). The models load with "
         "`diffcast nowcast --checkpoint runs/diffcast ...`."],
        [Table(["stage", "steps", "trainable params", "params", "final loss", "wall s"], rows, floatfmt=".4g")],
        bullets=[f"backbone: `{info['architecture']['backbone']}`",
                 "diffusion: `" + ", ".join(f"{k}={v}" for k, v in info["architecture"]["diffusion"].items()) + "`"],
    ))
    real = info.get("real")
    if real:
        paras = [f"Real sequences from `{real['root']}` nowcast with the baselines (the demo's models are trained "
                 "on synthetic storms at a different grid, so they are not applied here)."]
        tabs = []
        if real.get("metrics"):
            tabs.append(_results_table(real["metrics"], f"Baselines on {real.get('n_evaluated', 0)} real sequence(s) with targets"))
        imgs = []
        for e in real["sequences"]:
            for name, o in e["outputs"].items():
                imgs.append((f"{e['name']}: {name}", o["panel"]))
            if "extrapolation" in e["outputs"]:
                imgs.append((f"{e['name']}: extrapolation (animation)", e["outputs"]["extrapolation"]["gif"]))
        sections.append(Section("Real data", paras, tabs, imgs))
    el = info["elapsed_s"]
    sections.append(Section("Reproduce", [
        f"`diffcast demo --train{' --quick' if info['profile'] == 'quick' else ''} --seed {info['seed']}` "
        f"(diffcast {info['software']['diffcast']}, torch {info['software']['torch']}). Stage times (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in el.items())]))
    return Report("DiffCast demo report", sections, summary=summary)


# ----------------------------------------------------------------------------- training demo entry
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
    from . import __version__
    from .data import DATASETS
    from .evaluation import evaluate, write_outputs
    from .inference import Nowcaster
    from .viz.report import write_report

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
        from .viz.plots import plot_scores_by_lead

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


# ============================================================================= nowcast demo (the default)
#: Radar archives read when present: ``shared/data/radar`` beside the repository.
DEFAULT_RADAR_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "radar"
#: Baselines shown beside DiffCast, in table order (names accepted by :func:`diffcast.nowcast`).
DEMO_BASELINES = ("persistence", "extrapolation", "steps")
#: Names of the models in prose and animations (tables keep the names :func:`diffcast.nowcast` takes).
DISPLAY_NAMES = {"steps": "STEPS"}
#: Settings of :class:`NowcastDemoSettings` that ``diffcast demo`` sets with a flag of the same name.
CLI_SETTINGS = ("windows", "members", "crop", "sampler_steps")
#: Sub-folders of the nowcast demo's output.
PLOTS_DIR, ANIM_DIR = "plots", "animations"


@dataclass(frozen=True)
class NowcastDemoSettings:
    """Sizes of the nowcast demo (:func:`run_demo`).

    Attributes
    ----------
    t_in : int
        Observed frames given to every model (a DiffCast model uses its own last ``t_in``).
    n_lead : int
        Forecast steps (5 min each on radar).
    members : int
        Ensemble size of STEPS and DiffCast.
    crop : int
        Centre crop of the radar archives in pixels (native 1 km grid).
    stride : int
        Frames between the starts of the held-out radar windows.
    windows : int
        Radar windows forecast and scored, evenly spread over the held-out ones
        (the default 2: one per test event); ``0`` for all.
    synthetic_size : int
        Grid of the synthetic storms (square, pixels) used without radar data.
    synthetic_windows : int
        Synthetic sequences forecast and scored.
    animations : int
        Windows animated (the first ones scored).
    sampler_steps : int or None
        Diffusion sampler steps of the DiffCast model (``None``: the model's own setting).
    """

    t_in: int = 5
    n_lead: int = 12
    members: int = 8
    crop: int = 256
    stride: int = 8
    windows: int = 2
    synthetic_size: int = 128
    synthetic_windows: int = 4
    animations: int = 2
    sampler_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("t_in", "n_lead", "members", "crop", "stride", "synthetic_size", "synthetic_windows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.t_in < 3:
            raise ValueError(f"t_in must be >= 3 (STEPS needs 3 frames), got {self.t_in}")
        for name in ("windows", "animations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.sampler_steps is not None and (not isinstance(self.sampler_steps, int) or self.sampler_steps < 1):
            raise ValueError(f"sampler_steps must be a positive integer or None, got {self.sampler_steps!r}")


def _jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as ``None`` (strict JSON) and paths as strings."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def resolve_demo_model(spec: str | os.PathLike[str] | None) -> tuple[str | None, str]:
    """The DiffCast model the demo shows, and a sentence saying which (or why none).

    Parameters
    ----------
    spec : str or path-like, optional
        A model file, checkpoint or run folder, or a shipped model's name; ``None``:
        the shipped :data:`diffcast.shipped.DEFAULT_SHIPPED` when it is installed.

    Returns
    -------
    (str or None, str)
        The spec for :func:`diffcast.nowcast` (``None``: no trained model available) and its description.

    Raises
    ------
    ValueError
        ``spec`` names a baseline.
    FileNotFoundError
        ``spec`` is neither an existing path nor a shipped model.
    """
    from .api import NOWCAST_BASELINES
    from .shipped import DEFAULT_SHIPPED, WEIGHTS_DIR, shipped_models

    if spec is not None:
        name = os.fspath(spec)
        if name in NOWCAST_BASELINES:
            raise ValueError(f"--model names the DiffCast model; the baselines ({', '.join(DEMO_BASELINES)}) always run")
        if not os.path.exists(name) and name not in shipped_models():
            shipped = ", ".join(shipped_models()) or "none installed"
            raise FileNotFoundError(
                f"--model {name}: no such model file or folder, and not a shipped model (shipped: {shipped})"
            )
        kind = "shipped model" if name in shipped_models() and not os.path.exists(name) else "model"
        return name, f"{kind} `{name}` (named with `--model`)"
    if DEFAULT_SHIPPED in shipped_models():
        return DEFAULT_SHIPPED, f"shipped model `{DEFAULT_SHIPPED}` (the package's default)"
    return None, (
        f"**No trained DiffCast model is available**: the shipped model `{DEFAULT_SHIPPED}` is not installed "
        f"(`{WEIGHTS_DIR / DEFAULT_SHIPPED / 'model.safetensors'}` is missing) and none was named with `--model`, "
        "so only the baselines are shown. Name one with `diffcast demo --model PATH` (a model file, checkpoint "
        "or run folder of `diffcast train`), or train the toy model from scratch with `diffcast demo --train`."
    )


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)`` (all of them when ``k`` is 0 or >= ``n``)."""
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def synthetic_rain_case(t_in: int, n_lead: int, size: int, n: int) -> Any:
    """Synthetic storms (test split) read as rain rate in mm/h on a 1 km grid.

    The generator draws VIL-like fields (:func:`diffcast.skill.synthetic_case`,
    kg m-2, roughly 0-80); the demo reads those numbers as mm/h on a 1 km grid so
    that the radar models (which take rain rate at 1 km) run on them. Scored at
    the radar thresholds (0.5, 1, 5, 10 mm/h). Not physical rain: for showing the
    pipeline only.
    """
    from .skill import RADAR_FSS_THRESHOLDS, RADAR_THRESHOLDS, Case, synthetic_case

    base = synthetic_case(t_in, n_lead, size, n)
    windows = [dataclasses.replace(w, pixel_km=1.0) for w in base.windows]
    return Case("synthetic", "mm/h", RADAR_THRESHOLDS, RADAR_FSS_THRESHOLDS, windows)


def demo_case(s: NowcastDemoSettings, radar_root: str | os.PathLike[str] | None, synthetic: bool) -> tuple[Any, str]:
    """The windows the demo forecasts and a sentence on where they come from.

    ``radar_root=None`` means :data:`DEFAULT_RADAR_ROOT` when it exists; synthetic
    storms are used when ``synthetic`` is set, when that default is absent, or when
    the archives hold no held-out window.

    Raises
    ------
    FileNotFoundError
        An explicitly given ``radar_root`` does not exist.
    """
    from .skill import radar_case

    reason = "synthetic storms were asked for (`--synthetic`)"
    if not synthetic:
        root = Path(radar_root) if radar_root is not None else DEFAULT_RADAR_ROOT
        if radar_root is not None and not root.is_dir():
            raise FileNotFoundError(f"--radar-root {root} is not a folder")
        if root.is_dir():
            case = radar_case(root, s.t_in, s.n_lead, s.crop, s.stride, None)
            if case.windows:
                n_all = len(case.windows)
                case.windows = [case.windows[i] for i in _spread(n_all, s.windows)]
                src = (f"Held-out radar windows from `{root}` (the test events of each archive, never used in "
                       f"training; rain rate in mm/h on the native 1 km grid, {s.crop}x{s.crop} px centre crop): "
                       f"{len(case.windows)} of the {n_all} windows that start every {s.stride} frames"
                       + (", evenly spread" if len(case.windows) < n_all else "") + ".")
                return case, src
            reason = f"the archives under `{root}` hold no held-out window ({case.note or 'none found'})"
        else:
            reason = f"no radar archives at `{root}`"
    case = synthetic_rain_case(s.t_in, s.n_lead, s.synthetic_size, s.synthetic_windows)
    return case, (f"**Synthetic storms, not radar**: {reason}. The storm generator's fields are read as rain rate "
                  f"in mm/h on a 1 km grid ({s.synthetic_size}x{s.synthetic_size} px), so the numbers show the "
                  "pipeline, not skill on real rain; point `--radar-root` at the pysteps-data radar archives "
                  "(`mch`, `fmi`, `bom`) for real data.")


def _forecast_and_score(
    label: str,
    spec: str,
    case: Any,
    s: NowcastDemoSettings,
    seed: int,
    keep: set[int],
    sample_kwargs: dict[str, Any],
    progress: bool,
) -> tuple[dict[str, Any], dict[int, tuple[np.ndarray, np.ndarray]], float]:
    """Forecast every window of ``case`` with ``spec`` and score it (as :func:`diffcast.skill.score_model` does).

    Unlike ``score_model`` the forecasts of the windows in ``keep`` are returned
    (member 0 and the ensemble mean, float32 mm/h) for the animations, so no
    window is forecast twice, and sampler options reach DiffCast models.

    Returns
    -------
    (dict, dict, float)
        The scores (:meth:`diffcast.skill.Skill.result`), ``{window: (member 0, mean)}`` and the wall seconds.
    """
    from tqdm.auto import tqdm

    import diffcast

    from .skill import Skill

    skill: Skill | None = None
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    t_model = time.perf_counter()
    for i, w in enumerate(tqdm(case.windows, desc=label, unit="window", disable=not progress, leave=False)):
        t0 = time.perf_counter()
        fc = diffcast.nowcast(w.x, timestep=w.timestep, n_leadtimes=s.n_lead, n_ens_members=s.members, seed=seed + i,
                              model=spec, pixel_size=w.pixel_km, **sample_kwargs)
        seconds = time.perf_counter() - t0
        if skill is None:
            skill = Skill(case, s.n_lead, fc.shape[0], w.pixel_km)
        skill.add(fc, w.y, seconds)
        if i in keep:
            kept[i] = (fc[0].astype(np.float32), fc.mean(axis=0).astype(np.float32))
        log.info("%s: window %d/%d (%s) in %.1f s", label, i + 1, len(case.windows), w.label, seconds)
    res = skill.result() if skill is not None else {"windows": 0}
    return res, kept, time.perf_counter() - t_model


def _rate_meta() -> Any:
    """Rain-rate display metadata: values encoded as radar dBZ / 90, shown in mm/h."""
    from .data.transforms import get_meta
    from .pipeline.units import rain_rate_meta

    return rain_rate_meta(get_meta("radar"))


def _animate_window(path: Path, w: Any, forecasts: Mapping[str, tuple[np.ndarray, np.ndarray]], t_in: int,
                    members: Mapping[str, int]) -> Path:
    """GIF: observed (inputs, then what happened) | each model (member 0 and mean for ensembles), in mm/h."""
    from .models.backbones.pysteps_methods import from_intensity
    from .viz.animate import Panel, save_panels_gif

    meta = _rate_meta()

    def enc(r: np.ndarray) -> np.ndarray:
        return from_intensity(r, "rainrate", float(meta.scale)).astype(np.float32)

    def panel(label: str, r: np.ndarray, offset: int) -> Panel:
        # NaN: no coverage, or (pysteps methods) advected in from outside the domain; drawn grey per frame
        nan = ~np.isfinite(r)
        return Panel(label, enc(r), offset=offset, nodata=nan if nan.any() else None)

    panels = [panel("observed", np.concatenate([w.x, w.y]), 0)]
    for label, (m0, mean) in forecasts.items():
        name = DISPLAY_NAMES.get(label, label)
        if members.get(label, 1) > 1:
            panels += [panel(f"{name} member 0", m0, t_in), panel(f"{name} mean", mean, t_in)]
        else:
            panels.append(panel(name, m0, t_in))
    step = float(w.timestep)
    labels = [f"obs {(i - t_in + 1) * step:+g} min" for i in range(t_in)] + [
        f"+{(k + 1) * step:g} min" for k in range(int(w.y.shape[0]))]
    return save_panels_gif(path, panels, meta, labels, title=w.label, colorbar=True, outline=True)


def _skill_plots(results: Mapping[str, Mapping[str, Any]], case: Any, out: Path, timestep: float) -> list[tuple[str, str]]:
    """CSI and CRPS by lead, rank histograms and the reliability diagram; ``[(caption, relative path)]``."""
    from .viz.plots import plot_curves_by_lead, plot_rank_histogram, plot_reliability

    folder = ensure_writable_dir(out / PLOTS_DIR)
    scored = {m: r for m, r in results.items() if r.get("windows")}
    images: list[tuple[str, str]] = []
    if not scored:
        return images
    csi = {f"CSI >= {t:g} {case.unit}": {m: r[f"csi@{t:.3g}_by_lead"] for m, r in scored.items()}
           for t in case.thresholds}
    plot_curves_by_lead(csi, folder / "csi_by_lead.png", "CSI", timestep, title="CSI by lead time (mean over members)")
    images.append(("CSI by lead time, per threshold (higher is better)", f"{PLOTS_DIR}/csi_by_lead.png"))
    crps = {f"CRPS ({case.unit})": {m: r["crps_by_lead"] for m, r in scored.items()}}
    plot_curves_by_lead(crps, folder / "crps_by_lead.png", f"CRPS ({case.unit})", timestep, title="CRPS by lead time")
    images.append(("CRPS by lead time (lower is better; the MAE for one member)", f"{PLOTS_DIR}/crps_by_lead.png"))
    ens = {m: r for m, r in scored.items() if "rank_histogram" in r}
    if ens:
        plot_rank_histogram(ens, folder / "rank_histogram.png")
        images.append((f"Rank histograms over pixels >= {case.thresholds[0]:g} {case.unit} (flat = the observation is "
                       "as likely at any rank as a member; U = too little spread)", f"{PLOTS_DIR}/rank_histogram.png"))
        key = f"reliability@{case.thresholds[1]:.3g}"
        thr = f"{case.thresholds[1]:g} {case.unit}"
        rel = {m: {"reliability": {thr: {
            "forecast_probability": [None if v is None or not np.isfinite(v) else v for v in r[key]["forecast"]],
            "observed_frequency": [None if v is None or not np.isfinite(v) else v for v in r[key]["observed"]]}}}
            for m, r in ens.items() if key in r}
        if rel:
            plot_reliability(rel, folder / "reliability.png")
            images.append((f"Reliability of P(rain >= {thr}) (on the diagonal = reliable)", f"{PLOTS_DIR}/reliability.png"))
    return images


def _nowcast_report(info: dict[str, Any], table_md: str, plots: list[tuple[str, str]]) -> Any:
    from .viz.report import Report, Section, Table

    s = info["settings"]
    data = info["data"]
    model = info["model"]
    res = info["results"]
    el = info["elapsed_s"]
    mach = info["machine"]
    real = data["case"] == "radar"
    names = [DISPLAY_NAMES.get(m, m) for m in res]
    names_text = ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]
    summary = (
        f"{names_text[:1].upper() + names_text[1:]} nowcast {data['n_windows']} "
        f"{'held-out radar' if real else 'synthetic'} window(s) side by side: {s['t_in']} observed frames in, "
        f"{s['n_lead']} leads of {data['timestep_min']:g} min out, {s['members']} members for the ensembles, "
        f"scored with pysteps' verification. Finished in {el['total'] / 60:.1f} min on {mach['cpu_count']} CPU "
        f"core(s) with {mach['torch_threads']} torch thread(s); no training."
    )
    if DIFFCAST_LABEL not in res:
        summary += " **No DiffCast model is shown** (see Models)."
    sections = [Section("Data", [data["description"]], bullets=[f"`{lab}`" for lab in data["windows"]])]
    if model["spec"] is None:
        dc_line = model["description"]
    elif model.get("error"):
        dc_line = (f"DiffCast: {model['description']}. **It could not forecast these windows**: {model['error']} "
                   "Only the baselines are shown.")
    else:
        dc_line = (f"DiffCast: {model['description']}; residual diffusion on its backbone's forecast, "
                   f"{s['members']} members" + (f", {s['sampler_steps']} sampler steps" if s["sampler_steps"] else
                                                 ", the model's own sampler settings") + ".")
    sections.append(Section("Models", bullets=[
        "persistence: the last observed frame, unchanged.",
        "extrapolation: pysteps semi-Lagrangian advection of the last frame along the Lucas-Kanade motion field.",
        f"STEPS: pysteps' stochastic ensemble (cascade decomposition, AR(2) per scale, noise), {s['members']} members.",
        dc_line,
    ]))
    note = ("" if real else "Synthetic storms: these scores show the pipeline, not skill on real rain. ")
    note += (f"A demonstration on {data['n_windows']} window(s), not a verification: "
             "`python benchmarks/bench_skill.py --model SPEC` scores every held-out window.")
    sections.append(Section("Skill", [note], markdown=table_md, images=[p for p in plots if "by_lead" in p[1]]))
    calib = [p for p in plots if "by_lead" not in p[1]]
    if calib:
        sections.append(Section("Ensemble calibration", [
            "STEPS and DiffCast ensembles; rank histogram and reliability pooled over windows and leads."], images=calib))
    rows = [[m, r.get("members"), r.get("seconds_per_forecast"), r.get("windows"), el.get(m)] for m, r in res.items()]
    sections.append(Section("Speed", [
        f"Wall seconds to forecast one window ({s['n_lead']} leads, all members) on this machine, model loading "
        "included; total: all windows of the model."],
        [Table(["model", "members", "s / forecast", "windows", "total s"], rows, floatfmt=".2f")]))
    if info["animations"]:
        sections.append(Section("Animations", [
            "Observed (inputs, then what happened) | each model from the analysis time on: member 0 and the "
            "ensemble mean for STEPS and DiffCast. Rain rate in mm/h; grey: no radar coverage."],
            images=[(f"{a['window']}", a["gif"]) for a in info["animations"]]))
    sections.append(Section("Reproduce", [
        f"`{info['command']}` (diffcast {info['software']['diffcast']}, torch {info['software']['torch']}, "
        f"pysteps {info['software']['pysteps']}). Scores: `skill.json`; run record: `demo.json`. Stage times (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in el.items()),
        "Train the toy model from scratch instead: `diffcast demo --train` (about 15 minutes; `--quick` about 3)."]))
    title = "DiffCast demo: " + ("radar nowcasts" if real else "synthetic storms (no radar data found)")
    return Report(title, sections, summary=summary)


def run_demo(
    out_dir: str | os.PathLike[str] = "demo_out",
    *,
    model: str | os.PathLike[str] | None = None,
    radar_root: str | os.PathLike[str] | None = None,
    synthetic: bool = False,
    settings: NowcastDemoSettings | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Nowcast held-out windows with the baselines and DiffCast, score them and write a report (no training).

    What ``diffcast demo`` and ``make demo`` run. Writes into ``out_dir``:
    ``report.md``, ``report.html`` (self-contained), ``skill.json`` (every score,
    per lead), ``demo.json`` (settings, timings, files), ``plots/*.png`` and
    ``animations/*.gif``.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created; a previous demo output there is replaced).
    model : str or path-like, optional
        The DiffCast model (file, checkpoint or run folder, or a shipped name).
        Default: the shipped model when installed; without one the baselines are
        shown and the report says that no trained model is available.
    radar_root : path-like, optional
        Folder of the radar archives (default :data:`DEFAULT_RADAR_ROOT`; synthetic
        storms when that is absent).
    synthetic : bool
        Use synthetic storms even when radar data are present.
    settings : NowcastDemoSettings, optional
        Sizes (default :class:`NowcastDemoSettings`; tests run smaller).
    seed : int
        Seed of the ensembles (window ``i`` uses ``seed + i``).
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        The content of ``demo.json``.

    Raises
    ------
    FileNotFoundError
        ``model`` or ``radar_root`` given but not found.
    """
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__
    from .skill import markdown
    from .viz.report import write_report

    t_start = time.perf_counter()
    s = settings or NowcastDemoSettings()
    spec, model_desc = resolve_demo_model(model)
    if radar_root is not None and not synthetic and not Path(radar_root).is_dir():
        raise FileNotFoundError(f"--radar-root {radar_root} is not a folder")
    out = _prepare_out(out_dir)
    elapsed: dict[str, float] = {}

    log.info("demo [1/4] reading the windows")
    t = time.perf_counter()
    case, description = demo_case(s, radar_root, synthetic)
    if not case.windows:
        raise ValueError("no window to forecast (synthetic_windows must be >= 1)")
    import pysteps.verification  # noqa: F401 (imported here: seconds that are no model's forecast time)

    elapsed["data"] = time.perf_counter() - t
    keep = set(range(min(s.animations, len(case.windows))))

    models: list[tuple[str, str]] = [(m, m) for m in DEMO_BASELINES]
    if spec is not None:
        models.append((DIFFCAST_LABEL, spec))
    log.info("demo [2/4] forecasting %d window(s) with %s", len(case.windows), ", ".join(m for m, _ in models))
    results: dict[str, dict[str, Any]] = {}
    kept: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {i: {} for i in keep}
    error = None
    for label, m in models:
        kw = {"steps": s.sampler_steps} if (label == DIFFCAST_LABEL and s.sampler_steps) else {}
        try:
            res, fcs, wall = _forecast_and_score(label, m, case, s, seed, keep, kw, progress)
        except ValueError as exc:
            if label != DIFFCAST_LABEL:
                raise
            # A model that cannot take these windows (grid spacing, units, lead count): say so, keep the baselines.
            error = str(exc)
            log.warning("DiffCast model %s left out: %s", m, exc)
            continue
        results[label] = res
        elapsed[label] = wall
        for i, fc in fcs.items():
            kept[i][label] = fc

    log.info("demo [3/4] plots and animations")
    t = time.perf_counter()
    timestep = float(case.windows[0].timestep)
    plots = _skill_plots(results, case, out, timestep)
    animations = []
    if keep:
        folder = ensure_writable_dir(out / ANIM_DIR)
        members = {m: int(r.get("members", 1)) for m, r in results.items()}
        for i in sorted(keep):
            gif = _animate_window(folder / f"window_{i}.gif", case.windows[i], kept[i], s.t_in, members)
            animations.append({"window": case.windows[i].label, "gif": str(gif.relative_to(out))})
    elapsed["plots_animations"] = time.perf_counter() - t

    log.info("demo [4/4] writing the report")
    table_md = markdown({case.name: results}, {case.name: case}, s.n_lead)
    payload = {
        "settings": dataclasses.asdict(s),
        "case": case.name,
        "unit": case.unit,
        "windows": [w.label for w in case.windows],
        "source": description,
        "notes": {case.name: case.note} if case.note else {},
        "results": {case.name: results},
    }
    atomic_write_text(out / "skill.json", json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n")
    try:
        pysteps_version = version("pysteps")
    except PackageNotFoundError:
        pysteps_version = "unknown"
    default = NowcastDemoSettings()
    flags = [f"--model {model}" if model is not None else "",
             f"--radar-root {radar_root}" if radar_root is not None else "", "--synthetic" if synthetic else "",
             f"--seed {seed}" if seed else ""]
    flags += [f"--{k.replace('_', '-')} {v}" for k, v in dataclasses.asdict(s).items()
              if v != getattr(default, k) and k in CLI_SETTINGS]
    other = [k for k, v in dataclasses.asdict(s).items() if v != getattr(default, k) and k not in CLI_SETTINGS]
    command = " ".join(["diffcast demo"] + [f for f in flags if f])
    if other:  # settings without a flag (tests run smaller)
        command += " # with " + ", ".join(f"{k}={getattr(s, k)}" for k in other)
    info: dict[str, Any] = {
        "mode": "nowcast",
        "seed": seed,
        "settings": dataclasses.asdict(s),
        "command": command,
        "data": {"case": case.name, "unit": case.unit, "description": description, "n_windows": len(case.windows),
                 "windows": [w.label for w in case.windows], "grid": list(case.windows[0].x.shape[-2:]),
                 "timestep_min": timestep, "note": case.note},
        "model": {"spec": spec, "label": DIFFCAST_LABEL, "description": model_desc, "error": error},
        "results": {m: {k: v for k, v in r.items() if not isinstance(v, (list, dict))} for m, r in results.items()},
        "animations": animations,
        "elapsed_s": {},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
        "software": {"diffcast": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "pysteps": pysteps_version},
    }
    elapsed["total"] = time.perf_counter() - t_start
    info["elapsed_s"] = {k: round(v, 1) for k, v in elapsed.items()}
    write_report(_nowcast_report(info, table_md, plots), out)
    info["elapsed_s"]["total"] = round(time.perf_counter() - t_start, 1)
    info["files"] = (["report.md", "report.html", "skill.json", MARKER] + [p for _, p in plots]
                     + [a["gif"] for a in animations])
    info["finished"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    atomic_write_text(out / MARKER, json.dumps(_jsonable(info), indent=2, default=str, allow_nan=False) + "\n")
    log.info("demo finished in %.1f min (%s)", info["elapsed_s"]["total"] / 60, out / "report.md")
    return info
