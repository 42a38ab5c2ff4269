"""The demo reports (``report.md`` / ``report.html`` content) of both modes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .scoring import _metric
from .settings import DIFFCAST_LABEL, DISPLAY_NAMES


def _results_table(results: Mapping[str, Mapping[str, Any]], caption: str) -> Any:
    from ..viz.report import Table, best_cells

    cols = [("CSI-M ↑", "csi_m", "max"), ("CSI-pool4 ↑", "csi_pool4_m", "max"), ("CSI-pool16 ↑", "csi_pool16_m", "max"),
            ("HSS-M ↑", "hss_m", "max"), ("SSIM ↑", "ssim", "max"), ("CRPS ↓", "crps", "min"), ("MSE ↓", "mse", "min")]
    rows = []
    for name, r in results.items():
        rows.append([name, int(r.get("members", 1))] + [_metric(r, k) for _, k, _ in cols])
    bold = best_cells(rows, {i + 2: mode for i, (_, _, mode) in enumerate(cols)})
    return Table(["model", "members"] + [c for c, _, _ in cols], rows, caption=caption, bold=bold)


def _ensemble_mean_table(results: Mapping[str, Mapping[str, Any]]) -> Any | None:
    from ..viz.report import Table

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
    from ..viz.report import Report, Section, Table

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


def _nowcast_report(info: dict[str, Any], table_md: str, plots: list[tuple[str, str]]) -> Any:
    from ..viz.report import Report, Section, Table

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
