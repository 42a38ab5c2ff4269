"""Score plots for ``diffcast evaluate`` and the demo report.

Every function takes the metrics of one model (a dict from
:meth:`diffcast.metrics.Evaluator.compute`) or a mapping ``{model name: metrics}`` and an
output path, renders with the Agg canvas (no display, no pyplot global state) and writes
the PNG atomically. Returns the path written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..utils.io import atomic_path

Metrics = Mapping[str, Any]


def _as_models(results: Metrics | Mapping[str, Metrics]) -> dict[str, Metrics]:
    if not isinstance(results, Mapping) or not results:
        raise ValueError("expected a metrics dict or a non-empty {model: metrics} mapping")
    if "csi" in results and "thresholds" in results:  # a single model's metrics
        return {"model": results}
    return dict(results)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def plot_scores_by_lead(
    results: Metrics | Mapping[str, Metrics],
    path: str | os.PathLike[str],
    score: str = "csi",
    timestep_min: float | None = None,
) -> Path:
    """One panel per threshold: ``score`` (csi, hss, pod, far, csi_pool4, ...) vs lead time, one line per model.

    Parameters
    ----------
    results : dict
        Metrics of one model or ``{model: metrics}``.
    path : path-like
        Output PNG.
    score : str
        A key with a ``{score}_by_lead`` entry mapping thresholds to per-lead lists.
    timestep_min : float, optional
        Minutes per lead step; the x axis is in minutes when given, else in steps.
    """
    models = _as_models(results)
    key = f"{score}_by_lead"
    for name, r in models.items():
        if key not in r:
            raise ValueError(f"metrics of {name!r} have no {key!r}")
    first = next(iter(models.values()))
    thr_keys = list(first[key])
    ncol = min(3, len(thr_keys))
    nrow = (len(thr_keys) + ncol - 1) // ncol
    fig = _figure(4.0 * ncol, 3.0 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    for i, k in enumerate(thr_keys):
        ax = axes[i // ncol][i % ncol]
        for name, r in models.items():
            vals = r[key][k]
            x = [(j + 1) * (timestep_min or 1) for j in range(len(vals))]
            ax.plot(x, vals, marker="o", markersize=3, label=name)
        ax.set_title(f"threshold {k}")
        ax.grid(alpha=0.3)
        if i % ncol == 0:
            ax.set_ylabel(score.upper())
        if i // ncol == nrow - 1:
            ax.set_xlabel("lead time (min)" if timestep_min else "lead step")
    for j in range(len(thr_keys), nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{score.upper()} by lead time")
    return _save(fig, path)


def plot_rank_histogram(results: Metrics | Mapping[str, Metrics], path: str | os.PathLike[str]) -> Path:
    """Normalised rank histograms of the ensemble models (flat = well dispersed)."""
    models = {n: r for n, r in _as_models(results).items() if "rank_histogram" in r}
    if not models:
        raise ValueError("no ensemble metrics with a rank histogram (evaluate with --members >= 2)")
    fig = _figure(4.0 * len(models), 3.0)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, (name, r) in zip(axes, models.items()):
        h = r["rank_histogram"]
        ax.bar(range(len(h)), h, color="tab:blue")
        ax.axhline(1.0 / len(h), color="k", linestyle="--", linewidth=1)
        ax.set_title(f"{name} ({len(h) - 1} members)")
        ax.set_xlabel("rank of observation")
        ax.set_ylabel("frequency")
    return _save(fig, path)


def plot_reliability(
    results: Metrics | Mapping[str, Metrics], path: str | os.PathLike[str], thresholds: list[str] | None = None
) -> Path:
    """Reliability diagrams of exceedance probabilities, one panel per threshold, one line per model."""
    models = {n: r for n, r in _as_models(results).items() if "reliability" in r}
    if not models:
        raise ValueError("no ensemble metrics with reliability data (evaluate with --members >= 2)")
    first = next(iter(models.values()))
    keys = thresholds or [k for k in first["reliability"] if k != "bin_edges"]
    ncol = min(3, len(keys))
    nrow = (len(keys) + ncol - 1) // ncol
    fig = _figure(3.6 * ncol, 3.4 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for i, k in enumerate(keys):
        ax = axes[i // ncol][i % ncol]
        ax.plot([0, 1], [0, 1], color="k", linestyle="--", linewidth=1)
        for name, r in models.items():
            rel = r["reliability"][k]
            pts = [(p, f) for p, f in zip(rel["forecast_probability"], rel["observed_frequency"]) if p is not None]
            if pts:
                ax.plot([p for p, _ in pts], [f for _, f in pts], marker="o", markersize=3, label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"P(value >= {k})")
        ax.set_xlabel("forecast probability")
        ax.set_ylabel("observed frequency")
        ax.grid(alpha=0.3)
    for j in range(len(keys), nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def plot_curves_by_lead(
    panels: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    ylabel: str,
    timestep_min: float | None = None,
    title: str | None = None,
) -> Path:
    """One panel per entry of ``panels`` (title -> ``{model: per-lead values}``), one line per model.

    For scores already reduced to per-lead lists (e.g. :func:`diffcast.skill.score_model`'s
    ``csi@1_by_lead`` or ``crps_by_lead``); NaN values leave gaps.

    Parameters
    ----------
    panels : mapping
        Panel title -> ``{model name: sequence of floats, one per lead}``.
    path : path-like
        Output PNG.
    ylabel : str
        Label of the y axis (the score and its unit).
    timestep_min : float, optional
        Minutes per lead step; the x axis is in minutes when given, else in steps.
    title : str, optional
        Figure title.
    """
    if not panels or not all(panels.values()):
        raise ValueError("expected a non-empty {panel title: {model: values}} mapping")
    ncol = min(3, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig = _figure(4.0 * ncol, 3.0 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    for i, (name, curves) in enumerate(panels.items()):
        ax = axes[i // ncol][i % ncol]
        for model, vals in curves.items():
            v = [float("nan") if x is None else float(x) for x in vals]
            ax.plot([(j + 1) * (timestep_min or 1) for j in range(len(v))], v, marker="o", markersize=3, label=model)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if i % ncol == 0:
            ax.set_ylabel(ylabel)
        if i // ncol == nrow - 1:
            ax.set_xlabel("lead time (min)" if timestep_min else "lead step")
    for j in range(len(panels), nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
