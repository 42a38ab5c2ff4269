"""Library-level evaluation: models x dataset split -> metrics dicts, Markdown table, CSV, plots.

Used by ``diffcast evaluate`` and the demo. Every model sees the same sequences; each one
gets its own :class:`~diffcast.metrics.Evaluator`. Under ``accelerate launch`` every process
evaluates its shard of the indices (``indices[rank::world]``) and the evaluator states (sums)
are gathered and merged exactly; only the main process writes files.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .data.contract import DatasetMeta, split_sequence
from .data.transforms import transcode
from .metrics import Evaluator, nodata_mask, threshold_key
from .utils.io import atomic_write_text, ensure_writable_dir

log = logging.getLogger(__name__)

#: Threshold-space units between which forecasts are re-encoded (Marshall-Palmer).
RECODABLE_UNITS = {"dBZ", "mm/h"}

#: Columns of the Markdown summary, in the paper's order: (label, key, higher is better, digits).
SUMMARY_COLUMNS = (
    ("CSI-M ↑", "csi_m", True, 4),
    ("CSI-pool4 ↑", "csi_pool4_m", True, 4),
    ("CSI-pool16 ↑", "csi_pool16_m", True, 4),
    ("HSS ↑", "hss_m", True, 4),
    ("SSIM ↑", "ssim", True, 4),
    ("LPIPS ↓", "lpips", False, 4),
    ("CRPS ↓", "crps_norm", False, 4),
    ("MSE ↓", "mse", False, 2),
)


# ---------------------------------------------------------------------------- inputs
def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def build_dataset(
    name: str,
    split: str = "test",
    seq_len: int = 25,
    data_root: str | os.PathLike[str] | None = None,
    size: int | tuple[int, int] | None = None,
    **kwargs: Any,
) -> Any:
    """Build a registered dataset, passing only the options its constructor accepts.

    ``data_root`` goes to the constructor's first parameter (``root``, ``path``, ``catalog``);
    ``size`` only where the dataset can resize.

    Raises
    ------
    ValueError
        Unknown dataset, a dataset that needs ``data_root`` when none is given, or
        an empty split (the dataset's ``empty_reason`` when it has one).
    """
    from .data import DATASETS

    cls = DATASETS.get(name)
    params = [p for p in inspect.signature(cls).parameters.values() if p.name != "self"]
    names = {p.name for p in params}
    kw: dict[str, Any] = {"split": split, "seq_len": seq_len, **kwargs}
    if size is not None and "size" in names:
        kw["size"] = _hw(size)
    first = params[0] if params else None
    if data_root is not None:
        if first is None or first.name in ("split", "seq_len"):
            log.warning("dataset %r takes no data root; ignoring %s", name, data_root)
        else:
            kw[first.name] = str(data_root)
    elif first is not None and first.default is inspect.Parameter.empty and first.name not in kw:
        raise ValueError(f"dataset {name!r} needs a data location: pass --data-root PATH")
    ds = DATASETS.build(name, **kw)
    if len(ds) == 0:  # a clear error here, not an IndexError at the first item
        raise ValueError(
            getattr(ds, "empty_reason", None)
            or f"dataset {name!r} split {split!r}{f' of {data_root}' if data_root else ''} has no sequence of {seq_len} frames"
        )
    return ds


def lpips_from_path(path: str | os.PathLike[str] | None, device: str | torch.device = "cpu") -> tuple[Any, str | None]:
    """Load LPIPS weights if possible: ``(network, None)`` or ``(None, reason it is skipped)``."""
    if path is None or str(path) == "":
        return None, "no LPIPS weights given (--lpips-weights PATH or DIFFCAST_LPIPS_WEIGHTS)"
    from .metrics.lpips import load_lpips

    try:
        return load_lpips(path, device=device), None
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("LPIPS skipped: %s", exc)
        return None, f"could not load LPIPS weights from {path}: {exc}"


# ---------------------------------------------------------------------------- the loop
def _gather_evaluator(ev: Evaluator, accelerator: Any) -> Evaluator:
    """Merge the evaluator states of all processes (exact: the states are sums)."""
    if accelerator is None or accelerator.num_processes <= 1:
        return ev
    state = ev.state_dict()
    gathered = {k: accelerator.gather(v.to(accelerator.device).unsqueeze(0)).cpu() for k, v in sorted(state.items())}
    n_proc = next(iter(gathered.values())).shape[0]
    merged = Evaluator.from_state({k: v[0] for k, v in gathered.items()}, lpips=ev.lpips, skipped=ev.skipped)
    for p in range(1, n_proc):
        merged.merge(Evaluator.from_state({k: v[p] for k, v in gathered.items()}))
    return merged


def evaluate(
    nowcasters: Sequence[Any],
    dataset: Any,
    *,
    meta: DatasetMeta | None = None,
    members: int = 1,
    batch_size: int = 4,
    limit: int | None = None,
    seed: int = 0,
    lpips: Any = None,
    lpips_skipped: str | None = None,
    fss_scales: Sequence[int] = (4, 16),
    pool_sizes: Sequence[int] = (4, 16),
    thresholds: Sequence[float] | None = None,
    accelerator: Any = None,
    progress: bool = True,
    sample_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate models on a dataset and return ``{model name: metrics dict}``.

    Parameters
    ----------
    nowcasters : sequence of Nowcaster
        Objects with ``name``, ``t_in``, ``t_out``, ``is_probabilistic`` and
        ``predict(x_in, members=, seed=, **kw) -> result.forecast (M, B, T_out, C, H, W)``
        (:class:`diffcast.inference.Nowcaster`). All must share ``t_in`` and ``t_out``.
    dataset : torch Dataset
        Items ``(T, C, H, W)`` in ``[0, 1]`` with ``T >= t_in + t_out``. Where the dataset
        says ``nan_is_nodata`` (the mlcast dataset), NaN marks pixels without data: the
        models see them as 0 (as in training) and every score leaves them out
        (:mod:`diffcast.metrics.nodata`); windows without any observed data are skipped and
        counted (``no_data`` in the results). Elsewhere NaN in the observed frames is an error.
    meta : DatasetMeta, optional
        Scale and thresholds; defaults to ``dataset.meta``.
    members : int
        Ensemble size for probabilistic models (deterministic ones give one member).
    batch_size, limit, seed : int
        Sequences per forward pass; evaluate only the first ``limit`` items; base seed
        (batch seeds are ``seed + first item index``, so results do not depend on sharding
        as long as the batch boundaries are the same).
    lpips, lpips_skipped
        LPIPS network (see :func:`lpips_from_path`) or the reason it is missing.
    fss_scales, pool_sizes, thresholds
        Passed to :class:`~diffcast.metrics.Evaluator`; thresholds default to ``meta.thresholds``.
    accelerator : accelerate.Accelerator, optional
        Shards the indices over processes and gathers the states.
    progress : bool
        tqdm progress bar (main process only).
    sample_kwargs : mapping, optional
        Extra arguments for probabilistic models' ``predict`` (``sampler``, ``steps``, ...).

    Returns
    -------
    dict
        Metrics dict per model name (identical on every process).
    """
    from tqdm.auto import tqdm

    if not nowcasters:
        raise ValueError("no models to evaluate")
    names = [nc.name for nc in nowcasters]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    t_in, t_out = nowcasters[0].t_in, nowcasters[0].t_out
    for nc in nowcasters[1:]:
        if (nc.t_in, nc.t_out) != (t_in, t_out):
            raise ValueError(
                f"models disagree on input/output frames: {nowcasters[0].name} uses {t_in}->{t_out}, "
                f"{nc.name} uses {nc.t_in}->{nc.t_out}"
            )
    if members < 1 or batch_size < 1:
        raise ValueError(f"members and batch size must be >= 1, got {members}, {batch_size}")
    meta = meta or getattr(dataset, "meta", None)
    if meta is None:
        raise ValueError("no dataset metadata: pass meta= (scale and thresholds)")
    n_total = len(dataset)
    if n_total == 0:
        raise ValueError("the dataset is empty")
    n = n_total if limit is None else min(int(limit), n_total)
    if n < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    indices = list(range(n))
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    is_main = rank == 0
    # contiguous batches of the global index list, dealt round-robin to processes
    batches = [indices[i : i + batch_size] for i in range(0, n, batch_size)][rank::world]
    device = accelerator.device if accelerator is not None else None
    thr = tuple(meta.thresholds if thresholds is None else thresholds)
    evaluators = {}
    for nc in nowcasters:
        m_eff = members if nc.is_probabilistic else 1
        evaluators[nc.name] = Evaluator(
            thr,
            scale=meta.scale,
            pool_sizes=pool_sizes,
            fss_scales=fss_scales,
            lead_times=t_out,
            members=m_eff,
            lpips=lpips,
            lpips_skipped=lpips_skipped,
            rank_min=thr[0],
        )
        if device is not None:
            nc.model.to(device)
    kwargs = dict(sample_kwargs or {})
    nan_is_nodata = bool(getattr(dataset, "nan_is_nodata", False))
    bar = tqdm(total=sum(len(b) for b in batches), desc="evaluate", unit="seq", disable=not (progress and is_main))
    for batch in batches:
        seq = torch.stack([torch.as_tensor(dataset[i]) for i in batch]).to(torch.float32)
        if seq.ndim != 5:
            raise ValueError(f"dataset items must be (T, C, H, W), got a batch of shape {tuple(seq.shape)}")
        x_in, y_true = split_sequence(seq, t_in, t_out)
        mask = nodata_mask(y_true)
        if mask is not None and not nan_is_nodata:
            raise ValueError(
                f"items {batch[0]}..{batch[-1]}: observed frames have pixels without data (NaN), but the dataset "
                "does not say that NaN means no data (nan_is_nodata); evaluate on fully covered crops or mark "
                "the dataset's NaN as no data"
            )
        if nan_is_nodata and bool(torch.isnan(x_in).any()):
            x_in = torch.nan_to_num(x_in, nan=0.0, posinf=float("inf"), neginf=float("-inf"))  # as the trainer
        if device is not None:
            x_in, y_true = x_in.to(device), y_true.to(device)
            mask = None if mask is None else mask.to(device)
        for nc in nowcasters:
            extra = kwargs if nc.is_probabilistic else {}
            # A model sees the frames in its own encoding (e.g. dBZ / 90) and is scored in the data's (mm/h / 200).
            own = getattr(nc, "meta", None) or meta
            recode = own.unit != meta.unit and {own.unit, meta.unit} <= RECODABLE_UNITS
            x_model = transcode(x_in, meta, own) if recode else x_in
            out = nc.predict(x_model, members=members, seed=seed + batch[0], **extra)
            fc = transcode(out.forecast, own, meta) if recode else out.forecast
            evaluators[nc.name].update(y_true, fc, mask=mask)
        bar.update(len(batch))
    bar.close()
    results = {}
    for name, ev in evaluators.items():
        ev = _gather_evaluator(ev, accelerator)
        if ev.lead_times is None or float(ev.state_dict()["n_samples"][0]) == 0:
            n_skip = int(ev.state_dict()["nodata.windows"][0]) if ev.lead_times is not None else 0
            raise ValueError(f"no sequences were evaluated{f': all {n_skip} had no observed data' if n_skip else ''}")
        res = ev.compute()
        res["lead_time_min"] = [float(meta.timestep_min) * (i + 1) for i in range(t_out)]
        results[name] = res
    return results


# ---------------------------------------------------------------------------- outputs
def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "—"
    return f"{float(v):.{digits}f}"


def markdown_table(results: Mapping[str, Mapping[str, Any]], meta: DatasetMeta | None = None) -> str:
    """Side-by-side comparison in the paper's layout (best value per column in bold).

    Columns: CSI-M, CSI-pool4, CSI-pool16, HSS, SSIM, LPIPS, CRPS (in ``[0, 1]`` units, as in
    the paper), MSE (threshold-space units), then CSI per threshold. Skipped scores show "—"
    and are explained below the table.
    """
    if not results:
        raise ValueError("no results to tabulate")
    first = next(iter(results.values()))
    thr_keys = [threshold_key(t) for t in first["thresholds"]]
    cols = list(SUMMARY_COLUMNS)
    physical = meta is not None and meta.unit == "mm/h"  # rain rate: CRPS and MSE in mm/h, not [0, 1] units
    if physical:
        cols = [("CRPS (mm/h) ↓", "crps", False, 4) if c[1] == "crps_norm" else
                ("MSE ((mm/h)²) ↓", "mse", False, 3) if c[1] == "mse" else c for c in cols]
    header = ["Model", *[c[0] for c in cols], *[f"CSI-{k}" for k in thr_keys]]
    rows: list[list[str]] = []
    best: dict[str, float] = {}
    for _label, key, higher, _ in cols:
        vals = [r[key] for r in results.values() if r.get(key) is not None]
        if len(vals) > 1:
            best[key] = max(vals) if higher else min(vals)
    for k in thr_keys:
        vals = [r["csi"][k] for r in results.values()]
        if len(vals) > 1:
            best[f"csi@{k}"] = max(vals)
    for name, r in results.items():
        row = [f"{name} (x{r.get('members', 1)})" if r.get("members", 1) > 1 else name]
        for _label, key, _higher, digits in cols:
            cell = _fmt(r.get(key), digits)
            if key in best and r.get(key) is not None and r[key] == best[key]:
                cell = f"**{cell}**"
            row.append(cell)
        for k in thr_keys:
            cell = _fmt(r["csi"][k], 4)
            if f"csi@{k}" in best and r["csi"][k] == best[f"csi@{k}"]:
                cell = f"**{cell}**"
            row.append(cell)
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    n = first.get("n_samples")
    unit = f" ({meta.unit})" if meta is not None else ""
    notes.append(
        f"{n} sequences, {first['lead_times']} lead times; thresholds{unit}: "
        f"{', '.join(thr_keys)}; events are value >= threshold."
    )
    notes.append(
        ("CRPS and MSE in mm/h (CRPS equals the MAE for a deterministic model)" if physical else
         "CRPS in [0, 1] units (equals MAE / scale for a deterministic model); MSE in threshold-space units")
        + "; ensembles: CSI/HSS/SSIM averaged over members (ensemble-mean scores in metrics.json)."
    )
    nodata = [r["no_data"] for r in results.values() if "no_data" in r]
    if nodata:
        nd = nodata[0]
        notes.append(
            f"Pixels without data left out of every score ({100.0 * nd['covered_fraction']:.1f} % of the observed "
            f"pixels have data); {nd['windows_skipped']} window(s) without any data skipped."
        )
    skipped: dict[tuple[str, str], list[str]] = {}
    for name, r in results.items():
        for what, why in r.get("skipped", {}).items():
            skipped.setdefault((what, why), []).append(name)
    for (what, why), who in skipped.items():
        scope = "all models" if len(who) == len(results) else ", ".join(who)
        notes.append(f"{what.upper()} skipped ({scope}): {why}.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {x}" for x in dict.fromkeys(notes)) + "\n"


def per_lead_csv(results: Mapping[str, Mapping[str, Any]]) -> str:
    """CSV with one row per model and lead time (CSI/HSS per threshold, continuous scores, CRPS, and the
    share of the lead's pixels that had data, ``covered_fraction``)."""
    first = next(iter(results.values()))
    thr_keys = [threshold_key(t) for t in first["thresholds"]]
    pools = [f"csi_pool{p}" for p in first.get("pool_sizes", ())]
    scalar = ["mse", "mae", "rmse", "psnr", "ssim", "lpips", "crps", "crps_fair", "spread_skill_ratio"]
    header = ["model", "lead", "lead_min", "csi_m", "hss_m"]
    header += [f"csi_{k}" for k in thr_keys] + [f"hss_{k}" for k in thr_keys]
    header += [f"pod_{k}" for k in thr_keys] + [f"far_{k}" for k in thr_keys]
    header += [f"{p}_{k}" for p in pools for k in thr_keys] + scalar + ["covered_fraction"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for name, r in results.items():
        for i in range(r["lead_times"]):
            row: list[Any] = [name, i + 1, r.get("lead_time_min", [None] * r["lead_times"])[i]]
            row += [r["csi_m_by_lead"][i], r["hss_m_by_lead"][i]]
            for score in ("csi", "hss", "pod", "far", *pools):
                row += [r[f"{score}_by_lead"][k][i] for k in thr_keys]
            for key in scalar:
                vals = r.get(f"{key}_by_lead")
                row.append("" if vals is None else vals[i])
            # share of the lead's pixels with data (1 without a no-data mask)
            cov = (r.get("no_data") or {}).get("covered_fraction_by_lead")
            row.append(1.0 if cov is None else cov[i])
            w.writerow(row)
    return buf.getvalue()


def write_outputs(
    results: Mapping[str, Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    meta: DatasetMeta | None = None,
    run_info: Mapping[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_lead.csv``, ``table.md`` and plots (atomically).

    Returns
    -------
    dict of str to Path
        The files written, by kind.
    """
    out = ensure_writable_dir(out_dir)
    files: dict[str, Path] = {}
    payload = {
        "run": dict(run_info or {}),
        "dataset": meta.as_dict() if meta is not None else None,
        "models": results,
    }
    files["metrics"] = out / "metrics.json"
    atomic_write_text(files["metrics"], json.dumps(payload, indent=2, allow_nan=False) + "\n")
    files["csv"] = out / "per_lead.csv"
    atomic_write_text(files["csv"], per_lead_csv(results))
    files["table"] = out / "table.md"
    title = f"# Evaluation on {meta.name}\n\n" if meta is not None else "# Evaluation\n\n"
    atomic_write_text(files["table"], title + markdown_table(results, meta))
    if plots:
        from .viz import plots as vp

        step = meta.timestep_min if meta is not None else None
        files["csi_plot"] = vp.plot_scores_by_lead(results, out / "csi_by_lead.png", score="csi", timestep_min=step)
        files["hss_plot"] = vp.plot_scores_by_lead(results, out / "hss_by_lead.png", score="hss", timestep_min=step)
        if any("rank_histogram" in r for r in results.values()):
            files["rank_plot"] = vp.plot_rank_histogram(results, out / "rank_histogram.png")
            files["reliability_plot"] = vp.plot_reliability(results, out / "reliability.png")
    return files
