"""The nowcast demo (:func:`run_demo`, what ``diffcast demo`` and ``make demo`` run): forecast, score, report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_write_text, ensure_writable_dir
from .figures import _animate_window, _skill_plots
from .report import _nowcast_report
from .scoring import forecast_and_score, resolve_demo_model
from .settings import (
    ANIM_DIR,
    CLI_SETTINGS,
    DEMO_BASELINES,
    DIFFCAST_LABEL,
    MARKER,
    NowcastDemoSettings,
    _prepare_out,
)
from .windows import demo_case

log = logging.getLogger(__name__)

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

    from .. import __version__
    from ..skill import markdown
    from ..viz.report import write_report

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
    sample_kwargs = {DIFFCAST_LABEL: {"steps": s.sampler_steps}} if s.sampler_steps else {}
    results, kept, walls, skipped = forecast_and_score(models, case, s, seed, keep, sample_kwargs, progress)
    elapsed.update(walls)
    # A model that cannot take these windows (grid spacing, units, lead count): say so, keep the baselines.
    error = skipped.get(DIFFCAST_LABEL)
    if error is not None:
        log.warning("DiffCast model %s left out: %s", spec, error)

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
