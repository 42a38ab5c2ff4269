"""Forecast skill in physical units, scored with pysteps' own verification.

Shared by ``benchmarks/bench_skill.py`` and ``diffcast demo``. Every model forecasts
through :func:`diffcast.nowcast` (intensities in, intensities out) on the same
windows, scored by :func:`score_models` on the same pixels (where the observation and
every model have values), and :class:`Skill` accumulates, per lead time, pysteps' verification
scores (``pysteps.verification``): CSI per threshold (mean over members of each
member's contingency table pooled over windows), FSS at two thresholds on
4 / 16 / 64 km, CRPS (the MAE for one member), rank-histogram flatness (RMS
deviation of the normalised histogram from flat, times the number of bins: 0 =
flat), spread/skill (sqrt((M+1)/M mean ensemble variance) / RMSE of the ensemble
mean, Fortin et al. 2014: 1 = calibrated), the reliability diagram and the
reliability term of the Brier score at the second threshold, the Brier score, and
wall seconds per forecast.

Cases (:class:`Case`): held-out radar events in mm/h (:func:`radar_case`), the
SEVIR demo sequences and synthetic storms in VIL kg m-2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RADAR_THRESHOLDS = (0.5, 1.0, 5.0, 10.0)  # mm/h
RADAR_FSS_THRESHOLDS = (1.0, 5.0)
VIL_CODES = (16.0, 74.0, 133.0, 181.0)
FSS_KM = (4.0, 16.0, 64.0)
#: Radar archives under the radar root, one series each.
RADAR_ARCHIVES = ("mch", "fmi", "bom/prcp-c10", "bom/prcp-cscn")


@dataclass
class Window:
    """One forecast case: inputs, observed future, grid spacing, label."""

    x: np.ndarray  # (t_in, h, w) intensity
    y: np.ndarray  # (n_lead, h, w) intensity
    pixel_km: float
    timestep: float
    label: str


@dataclass
class Case:
    """A data set of windows with its thresholds and units."""

    name: str
    unit: str
    thresholds: tuple[float, ...]
    fss_thresholds: tuple[float, ...]
    windows: list[Window] = field(default_factory=list)
    note: str = ""


# ----------------------------------------------------------------------------- data
def _vil_kgm2(codes: Sequence[float]) -> tuple[float, ...]:
    from diffcast.data.transforms import vil_code_to_kgm2

    return tuple(round(float(v), 4) for v in vil_code_to_kgm2(np.asarray(codes, dtype=np.float32)))


def radar_case(
    root: Path,
    t_in: int,
    n_lead: int,
    crop: int,
    stride: int,
    limit: int | None,
    split: str = "test",
    events: Sequence[str] | None = None,
) -> Case:
    """Held-out windows of every radar archive under ``root`` (mm/h, native resolution, centre crop).

    ``events`` (dates ``YYYY-MM-DD``) puts exactly those events in ``split`` (the
    others are unused), e.g. a model's validation events; by default each archive's
    own event split is used.
    """
    from diffcast.data.radar import RadarArchive
    from diffcast.models.backbones.pysteps_methods import to_intensity

    case = Case("radar", "mm/h", RADAR_THRESHOLDS, RADAR_FSS_THRESHOLDS)
    notes = []
    for rel in RADAR_ARCHIVES:
        folder = root / rel
        if not folder.is_dir():
            continue
        try:
            extra = {} if events is None else {"split_events": {split: list(events)}}
            ds = RadarArchive(
                folder, split=split, seq_len=t_in + n_lead, size=crop, resample="crop", stride=stride, **extra
            )
        except ValueError as exc:
            notes.append(f"{rel}: {exc}")
            continue
        if len(ds) == 0:
            notes.append(f"{rel}: no {split} window")
            continue
        for i in range(len(ds)):
            seq = to_intensity(ds.sequence(i), "rainrate", ds.meta.scale)
            t0 = ds.window_times(i)[t_in - 1]
            case.windows.append(
                Window(seq[:t_in], seq[t_in:], float(ds.meta.pixel_km), float(ds.timestep_min), f"{rel} {t0:%Y-%m-%d %H:%M}")
            )
    case.note = "; ".join(notes)
    if limit is not None:
        case.windows = case.windows[:limit]
    return case


def sevir_case(root: Path, t_in: int, n_lead: int, limit: int | None) -> Case:
    """The SEVIR demo sequences, VIL in kg m-2 (128 px of 3 km)."""
    from diffcast.data.images import read_image_sequence
    from diffcast.data.transforms import vil_code_to_kgm2

    case = Case("sevir", "kg m-2", _vil_kgm2(VIL_CODES), _vil_kgm2(VIL_CODES[1:3]))
    for demo in sorted(p for p in root.iterdir() if p.is_dir()):
        x_in, y_true = read_image_sequence(demo)
        seq = np.concatenate([np.asarray(x_in), np.asarray(y_true)])[:, ...]
        seq = seq.reshape(seq.shape[0], *seq.shape[-2:]) * 255.0
        kg = np.asarray(vil_code_to_kgm2(seq.astype(np.float32)), dtype=np.float64)
        n_obs = np.asarray(x_in).shape[0]
        if n_obs < t_in or kg.shape[0] - n_obs < n_lead:
            continue
        case.windows.append(Window(kg[n_obs - t_in : n_obs], kg[n_obs : n_obs + n_lead], 3.0, 5.0, demo.name))
    case.windows = case.windows[:limit] if limit is not None else case.windows
    return case


def synthetic_case(t_in: int, n_lead: int, size: int, n: int) -> Case:
    """Synthetic storms (test split), VIL in kg m-2."""
    from diffcast.data.synthetic import SyntheticStorms
    from diffcast.data.transforms import vil_code_to_kgm2

    ds = SyntheticStorms(split="test", seq_len=t_in + n_lead, size=size)
    case = Case("synthetic", "kg m-2", _vil_kgm2(VIL_CODES), _vil_kgm2(VIL_CODES[1:3]))
    for i in range(n):
        seq = ds[i][:, 0].numpy() * 255.0
        kg = np.asarray(vil_code_to_kgm2(seq.astype(np.float32)), dtype=np.float64)
        case.windows.append(Window(kg[:t_in], kg[t_in:], 384.0 / size, 5.0, f"synthetic {i}"))
    return case


# ----------------------------------------------------------------------------- scores
class Skill:
    """pysteps verification accumulated over windows, per lead time."""

    def __init__(self, case: Case, n_lead: int, members: int, pixel_km: float) -> None:
        from pysteps.verification import ensscores, probscores, spatialscores

        self.case, self.n_lead, self.members = case, n_lead, members
        self.scales = {km: max(1, int(round(km / pixel_km))) for km in FSS_KM}
        k = len(case.thresholds)
        self.cont = np.zeros((members, n_lead, k, 4))  # hits, misses, false alarms, correct negatives
        self.fss = [[{(t, km): spatialscores.fss_init(t, s) for t in case.fss_thresholds for km, s in self.scales.items()}
                     for _ in range(n_lead)] for _ in range(members)]
        self.crps = [probscores.CRPS_init() for _ in range(n_lead)]
        self.rank = ensscores.rankhist_init(members, X_min=case.thresholds[0]) if members > 1 else None
        self.rel = probscores.reldiag_init(case.thresholds[1], n_bins=10, min_count=1) if members > 1 else None
        self.var_sum = np.zeros(n_lead)
        self.err_sum = np.zeros(n_lead)
        self.n_pix = np.zeros(n_lead)
        self.brier = np.zeros(2)
        self.seconds: list[float] = []

    def add(self, fc: np.ndarray, obs: np.ndarray, seconds: float) -> None:
        """``fc`` ``(M, n_lead, h, w)``, ``obs`` ``(n_lead, h, w)``; NaN pixels are left out."""
        from pysteps.verification import ensscores, probscores, spatialscores

        self.seconds.append(seconds)
        thr = np.asarray(self.case.thresholds)
        for lead in range(self.n_lead):
            o = obs[lead]
            f = fc[:, lead]
            ok = np.isfinite(o) & np.isfinite(f).all(axis=0)
            ev_o = (o[ok][None] >= thr[:, None])
            for m in range(self.members):
                ev_f = f[m][ok][None] >= thr[:, None]
                self.cont[m, lead] += np.stack(
                    [(ev_f & ev_o).sum(1), (~ev_f & ev_o).sum(1), (ev_f & ~ev_o).sum(1), (~ev_f & ~ev_o).sum(1)], axis=1
                )
                fz, oz = np.where(ok, f[m], 0.0), np.where(ok, o, 0.0)
                for acc in self.fss[m][lead].values():
                    spatialscores.fss_accum(acc, fz, oz)
            probscores.CRPS_accum(self.crps[lead], np.where(ok, f, np.nan), np.where(ok, o, np.nan))
            if self.members > 1:
                ensscores.rankhist_accum(self.rank, np.where(ok, f, np.nan), np.where(ok, o, np.nan))
                prob = (f >= thr[1]).mean(axis=0)
                probscores.reldiag_accum(self.rel, np.where(ok, prob, np.nan), np.where(ok, o, np.nan))
                self.brier += [float(((prob[ok] - (o[ok] >= thr[1])) ** 2).sum()), float(ok.sum())]
                mean = f[:, ok].mean(axis=0)
                self.var_sum[lead] += float(f[:, ok].var(axis=0, ddof=1).sum())
                self.err_sum[lead] += float(((mean - o[ok]) ** 2).sum())
                self.n_pix[lead] += float(ok.sum())

    @staticmethod
    def _csi(c: np.ndarray) -> np.ndarray:
        den = c[..., 0] + c[..., 1] + c[..., 2]
        return np.where(den > 0, c[..., 0] / np.maximum(den, 1), np.nan)

    def result(self) -> dict[str, Any]:
        from pysteps.verification import ensscores, probscores, spatialscores

        case = self.case
        out: dict[str, Any] = {"windows": len(self.seconds), "members": self.members, "unit": case.unit}
        csi_lead = np.nanmean(self._csi(self.cont), axis=0)  # (n_lead, k)
        csi_all = np.nanmean(self._csi(self.cont.sum(axis=1)), axis=0)  # (k,)
        for j, t in enumerate(case.thresholds):
            out[f"csi@{t:.3g}"] = float(csi_all[j])
            out[f"csi@{t:.3g}_by_lead"] = [float(v) for v in csi_lead[:, j]]
        for t in case.fss_thresholds:
            for km in FSS_KM:
                per_lead = [float(np.nanmean([spatialscores.fss_compute(self.fss[m][lead][(t, km)]) for m in range(self.members)]))
                            for lead in range(self.n_lead)]
                out[f"fss@{t:.3g}/{km:g}km"] = float(np.nanmean(per_lead))
                out[f"fss@{t:.3g}/{km:g}km_by_lead"] = per_lead
        crps = [float(probscores.CRPS_compute(c)) for c in self.crps]
        out["crps_by_lead"] = crps
        out["crps"] = float(np.mean(crps))
        if self.members > 1:
            hist = ensscores.rankhist_compute(self.rank)
            out["rank_histogram"] = [float(v) for v in hist]
            out["rank_flatness"] = float(np.sqrt(np.mean((hist * hist.size - 1.0) ** 2)))
            m = self.members
            spread = np.sqrt((m + 1) / m * self.var_sum / np.maximum(self.n_pix, 1))
            rmse = np.sqrt(self.err_sum / np.maximum(self.n_pix, 1))
            out["spread_skill_by_lead"] = [float(v) for v in spread / np.maximum(rmse, 1e-12)]
            out["spread_skill"] = float(
                math.sqrt((m + 1) / m * self.var_sum.sum() / self.n_pix.sum()) / max(math.sqrt(self.err_sum.sum() / self.n_pix.sum()), 1e-12)
            )
            with np.errstate(invalid="ignore", divide="ignore"):  # empty bins
                r, f = probscores.reldiag_compute(self.rel)
            n = self.rel["num_idx"].astype(float)
            good = n > 0
            out[f"reliability@{case.thresholds[1]:.3g}"] = {"forecast": [float(v) for v in np.where(good, r, np.nan)],
                                                         "observed": [float(v) for v in np.where(good, f, np.nan)],
                                                         "count": [int(v) for v in n]}
            out[f"rel@{case.thresholds[1]:.3g}"] = float(np.sum(n[good] * (r[good] - f[good]) ** 2) / max(n.sum(), 1))
            out[f"brier@{case.thresholds[1]:.3g}"] = float(self.brier[0] / max(self.brier[1], 1))
        out["seconds_per_forecast"] = float(np.mean(self.seconds)) if self.seconds else float("nan")
        return out


# ----------------------------------------------------------------------------- running
def split_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"MODEL@sampler:steps"`` -> ``("MODEL", {"sampler": ..., "steps": ...})``; a plain spec has no sampler settings.

    A precision may follow (``MODEL@sampler:steps:bf16``) or stand alone (``MODEL@bf16``:
    the model's own sampler, its denoiser under bfloat16 autocast).
    """
    model, at, setting = str(spec).rpartition("@")
    if not at:
        return str(spec), {}
    parts = setting.split(":")
    out: dict[str, Any] = {}
    if parts[-1].lower() in PRECISIONS:
        out["autocast_dtype"] = PRECISIONS[parts.pop().lower()]
        if not parts:
            return model, out
    if len(parts) != 2 or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"model spec {spec!r}: after @ give sampler:steps, sampler:steps:precision or precision "
                         f"({'/'.join(PRECISIONS)}), e.g. {model}@ddim:250 or {model}@bf16")
    return model, {"sampler": parts[0], "steps": int(parts[1]), **out}


#: Precisions of a model spec's ``@...`` part -> ``autocast_dtype`` of the sampler (``None``: float32).
PRECISIONS: dict[str, str | None] = {"fp32": None, "bf16": "bf16"}


#: Verification masks of :func:`score_models`.
MASKS = ("common", "own")


def _nowcast_window(model: str, w: Window, n_lead: int, members: int, seed: int) -> np.ndarray:
    """``(M, n_lead, h, w)`` forecast of one window through :func:`diffcast.nowcast`."""
    import diffcast

    model, sample_kwargs = split_model_spec(model)
    return diffcast.nowcast(w.x, timestep=w.timestep, n_leadtimes=n_lead, n_ens_members=members, seed=seed,
                            model=model, pixel_size=w.pixel_km, **sample_kwargs)


def score_models(
    models: Sequence[str],
    case: Case,
    n_lead: int,
    members: int,
    seed: int,
    *,
    mask: str = "common",
    optional: Sequence[str] = (),
    forecast: Any = None,
    progress: Any = None,
) -> dict[str, dict[str, Any]]:
    """Forecast every window of ``case`` with every model and score them on the same pixels.

    A forecast is NaN where a model has no value (no radar coverage, rain advected in
    from outside the domain: each model's own NaN area, and an ensemble's is the union
    of its members'). With ``mask="common"`` (default) every model is scored, window by
    window and lead by lead, only where the observation and *all* models have values,
    so that no model is scored on easier pixels than another (pysteps' STEPS, with its
    perturbed motion, leaves about a third of a 256 km window NaN at a 1-hour lead,
    twice the area of a single advection; scored on its own pixels it is spared the
    upstream edge, where rain comes in that no extrapolation has seen). ``"own"``
    scores each model on its own pixels. Either way ``forecast_coverage`` says which
    fraction of the observed pixels (all leads) each model gave a value for.

    Parameters
    ----------
    models : model specs for :func:`diffcast.nowcast` (``MODEL@sampler:steps`` allowed).
    optional : models that may be left out of the case: a ``ValueError`` from their
        forecast (e.g. a rain-rate model on VIL data) gives ``{"skipped": message}``
        (then the windows scored before it are not rescored); other models' errors
        propagate.
    forecast : ``forecast(model, window, index) -> (M, n_lead, h, w)`` (default:
        :func:`diffcast.nowcast` with ``seed + index``).
    progress : wraps the iterable of windows (e.g. ``tqdm``), optional.

    Returns
    -------
    dict
        ``{model: Skill.result() + forecast_coverage, verification_mask}``.
    """
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    if forecast is None:
        def forecast(m: str, w: Window, i: int) -> np.ndarray:
            return _nowcast_window(m, w, n_lead, members, seed + i)
    skills: dict[str, Skill] = {}
    skipped: dict[str, str] = {}
    counts = {m: np.zeros(2) for m in models}  # pixels with a forecast, observed pixels
    active = list(models)
    windows = enumerate(case.windows)
    for i, w in progress(windows) if progress is not None else windows:
        fcs: dict[str, tuple[np.ndarray, float, np.ndarray]] = {}  # forecast, seconds, pixels with a value
        for m in list(active):
            t0 = time.perf_counter()
            try:
                fc = forecast(m, w, i)
            except ValueError as exc:
                if m not in optional:
                    raise
                skipped[m] = str(exc)
                active.remove(m)
                continue
            fcs[m] = (fc, time.perf_counter() - t0, np.isfinite(fc).all(axis=0))
        observed = np.isfinite(w.y)
        common = observed.copy()
        for _, _, valid in fcs.values():
            common &= valid
        for m, (fc, seconds, valid) in fcs.items():
            counts[m] += [float((observed & valid).sum()), float(observed.sum())]
            if mask == "common":
                fc = np.where(common, fc, np.nan)
            if m not in skills:
                skills[m] = Skill(case, n_lead, fc.shape[0], w.pixel_km)
            skills[m].add(fc, w.y, seconds)
    out: dict[str, dict[str, Any]] = {}
    for m in models:
        if m in skipped:
            out[m] = {"skipped": skipped[m]}
        elif m in skills:
            out[m] = {**skills[m].result(), "forecast_coverage": float(counts[m][0] / max(counts[m][1], 1.0)),
                      "verification_mask": mask}
        else:
            out[m] = {"windows": 0}
    return out


def score_model(model: str, case: Case, n_lead: int, members: int, seed: int, quiet: bool = True) -> dict[str, Any]:
    """Forecast every window of ``case`` with ``model`` through :func:`diffcast.nowcast` and score it
    on its own pixels (``MODEL@sampler:steps`` samples a trained model with that sampler, see
    :func:`split_model_spec`; several models on common pixels: :func:`score_models`)."""
    return score_models([model], case, n_lead, members, seed, mask="own")[model]


def markdown(results: dict[str, dict[str, dict[str, Any]]], cases: dict[str, Case], n_lead: int) -> str:
    """One table per case: the overall scores of every model."""
    lines = []
    for cname, models in results.items():
        case = cases[cname]
        first = next((r for r in models.values() if "skipped" not in r), {})
        thr2 = case.thresholds[1]
        fss_keys = [f"fss@{t:.3g}/{km:g}km" for t in case.fss_thresholds for km in FSS_KM]
        head = ["model", "members"] + [f"CSI {t:.3g}" for t in case.thresholds] + [k.replace("fss@", "FSS ") for k in fss_keys]
        head += ["CRPS", "rank flatness", "spread/skill", f"REL {thr2:.3g}", f"Brier {thr2:.3g}", "s / forecast",
                 "coverage"]
        where = {"common": ", scored where the observation and every model have values",
                 "own": ", each model scored on its own pixels"}.get(first.get("verification_mask", ""), "")
        lines.append(f"### {cname}: {first.get('windows', 0)} windows, {n_lead} leads, thresholds in {case.unit}{where}")
        if case.note:
            lines.append(f"\n{case.note}\n")
        lines.append("")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for mname, r in models.items():
            if "skipped" in r:
                continue

            def f(key: str, digits: int = 3, r: dict[str, Any] = r) -> str:
                v = r.get(key)
                return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"
            row = [mname, str(r.get("members", ""))] + [f(f"csi@{t:.3g}") for t in case.thresholds] + [f(k) for k in fss_keys]
            row += [f("crps", 4), f("rank_flatness", 2), f("spread_skill", 2), f(f"rel@{thr2:.3g}", 4), f(f"brier@{thr2:.3g}", 4),
                    f("seconds_per_forecast", 2), f("forecast_coverage", 3)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines.append(
        "CSI: mean over members of each member's CSI (contingency pooled over windows); FSS likewise; CRPS in the "
        "case's unit (pysteps); rank flatness: RMS deviation of the normalised rank histogram from flat x bins "
        "(0 = flat); spread/skill: sqrt((M+1)/M var) / RMSE of the ensemble mean; REL: reliability term of the Brier "
        "score at the second threshold; s / forecast: wall time of one window, all members; coverage: fraction of the "
        "observed pixels (all leads) for which the model gave a value (NaN: rain advected in from outside the "
        "domain, for an ensemble in any member)."
    )
    return "\n".join(lines) + "\n"
