"""Which models the demos run, forecasting and scoring them, and the training demo's claims."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .settings import BACKBONE_LABEL, DEMO_BASELINES, DIFFCAST_LABEL, NowcastDemoSettings

log = logging.getLogger(__name__)

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
    from ..api import NOWCAST_BASELINES
    from ..shipped import DEFAULT_SHIPPED, WEIGHTS_DIR, shipped_models

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


def forecast_and_score(
    models: list[tuple[str, str]],
    case: Any,
    s: NowcastDemoSettings,
    seed: int,
    keep: set[int],
    sample_kwargs: Mapping[str, dict[str, Any]],
    progress: bool,
    optional: tuple[str, ...] = (DIFFCAST_LABEL,),
) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, tuple[np.ndarray, np.ndarray]]], dict[str, float], dict[str, str]]:
    """Forecast every window of ``case`` with every ``(label, spec)`` and score them on the same pixels
    (:func:`diffcast.skill.score_models`: where the observation and every model have values).

    The forecasts of the windows in ``keep`` are returned (member 0 and the ensemble
    mean, float32 mm/h) for the animations, so no window is forecast twice;
    ``sample_kwargs[label]`` (sampler options) reach that model. A model in
    ``optional`` whose forecast raises ``ValueError`` (e.g. a model for other units) is
    left out and its message returned; other errors propagate.

    Returns
    -------
    (dict, dict, dict, dict)
        ``{label: scores}`` (:meth:`diffcast.skill.Skill.result`), ``{window: {label: (member 0, mean)}}``,
        ``{label: wall seconds}`` and ``{label: why it was left out}``.
    """
    from tqdm.auto import tqdm

    import diffcast

    from ..skill import score_models

    specs = dict(models)
    kept: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {i: {} for i in keep}
    wall = dict.fromkeys(specs, 0.0)

    def forecast(label: str, w: Any, i: int) -> np.ndarray:
        t0 = time.perf_counter()
        fc = diffcast.nowcast(w.x, timestep=w.timestep, n_leadtimes=s.n_lead, n_ens_members=s.members, seed=seed + i,
                              model=specs[label], pixel_size=w.pixel_km, **sample_kwargs.get(label, {}))
        seconds = time.perf_counter() - t0
        wall[label] += seconds
        if i in keep:
            kept[i][label] = (fc[0].astype(np.float32), fc.mean(axis=0).astype(np.float32))
        log.info("%s: window %d/%d (%s) in %.1f s", label, i + 1, len(case.windows), w.label, seconds)
        return fc

    def windows(it: Any) -> Any:
        return tqdm(it, total=len(case.windows), desc="windows", unit="window", disable=not progress, leave=False)

    res = score_models(list(specs), case, s.n_lead, s.members, seed, optional=optional, forecast=forecast,
                       progress=windows)
    skipped = {label: r["skipped"] for label, r in res.items() if "skipped" in r}
    for label in skipped:
        for k in kept.values():
            k.pop(label, None)
    results = {label: r for label, r in res.items() if label not in skipped}
    return results, kept, {k: v for k, v in wall.items() if k not in skipped}, skipped
