"""``diffcast demo``: synthetic storms -> backbone -> DiffCast -> evaluation -> report, on a CPU.

Stages (each logged, timed and recorded in ``demo.json``):

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

Budgets are set by a profile: ``default`` (about 15 minutes on 2 CPU cores) or
``quick`` (about 3 minutes). Everything the demo writes lives in ``out_dir``.
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
        # A previous demo: its training runs are replaced (the trainer refuses to reuse run folders).
        for sub in ("runs", "eval", "cases", "real"):
            shutil.rmtree(out / sub, ignore_errors=True)
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
    from .nowcasting import make_nowcaster, prepare_input, read_input, run_nowcast

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
        f"`diffcast demo{' --quick' if info['profile'] == 'quick' else ''} --seed {info['seed']}` "
        f"(diffcast {info['software']['diffcast']}, torch {info['software']['torch']}). Stage times (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in el.items())]))
    return Report("DiffCast demo report", sections, summary=summary)


# ----------------------------------------------------------------------------- main entry
def run_demo(
    out_dir: str | os.PathLike[str] = "demo_out",
    *,
    quick: bool = False,
    real: str | os.PathLike[str] | None = None,
    seed: int = 0,
    settings: DemoSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole demo and write ``report.md``/``report.html`` into ``out_dir``.

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
