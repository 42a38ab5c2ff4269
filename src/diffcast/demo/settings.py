"""Settings and names of both demo modes, and the output folder they share."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.io import ensure_writable_dir

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


def _sample_kwargs(s: DemoSettings) -> dict[str, Any]:
    return {"sampler": s.sampler, "steps": s.sampler_steps, "timestep_spacing": s.sampler_spacing}


def _data_knobs(s: DemoSettings) -> dict[str, float]:
    knobs = {"difficulty": s.difficulty}
    if s.wind_speed is not None:
        knobs["wind_speed"] = s.wind_speed
    return knobs


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


#: Radar archives read when present: ``shared/data/radar`` beside the repository.
DEFAULT_RADAR_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "radar"
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
