"""Pictures of the demos: case animations and panels (training), skill plots and window animations (nowcast)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import ensure_writable_dir
from .settings import (
    BACKBONE_LABEL,
    DIFFCAST_LABEL,
    DISPLAY_NAMES,
    PLOTS_DIR,
    DemoSettings,
    _sample_kwargs,
)


def _render_cases(nowcasters: list[Any], test_ds: Any, s: DemoSettings, seed: int, out: Path) -> list[dict[str, Any]]:
    from ..data.contract import split_sequence
    from ..viz.animate import Panel, default_prob_threshold, save_forecast_panel, save_panels_gif

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


def _rate_meta() -> Any:
    """Rain-rate display metadata: values encoded as radar dBZ / 90, shown in mm/h."""
    from ..data.transforms import get_meta
    from ..pipeline.units import rain_rate_meta

    return rain_rate_meta(get_meta("radar"))


def _animate_window(path: Path, w: Any, forecasts: Mapping[str, tuple[np.ndarray, np.ndarray]], t_in: int,
                    members: Mapping[str, int]) -> Path:
    """GIF: observed (inputs, then what happened) | each model (member 0 and mean for ensembles), in mm/h."""
    from ..models.backbones.pysteps_methods import from_intensity
    from ..viz.animate import Panel, save_panels_gif

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
    from ..viz.plots import plot_curves_by_lead, plot_rank_histogram, plot_reliability

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
