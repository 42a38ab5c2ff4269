"""The windows the nowcast demo forecasts: held-out radar when present, synthetic storms otherwise."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from .settings import DEFAULT_RADAR_ROOT, NowcastDemoSettings


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
    from ..skill import RADAR_FSS_THRESHOLDS, RADAR_THRESHOLDS, Case, synthetic_case

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
    from ..skill import radar_case

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
