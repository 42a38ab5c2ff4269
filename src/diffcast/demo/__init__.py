"""``diffcast demo``: what the package does, on a CPU, in a few minutes.

Two modes, each writing ``report.md`` and a self-contained ``report.html`` into ``out_dir``:

**Nowcast demo** (:func:`run_demo`, the default of ``diffcast demo`` and ``make demo``;
no training). Held-out radar windows (the test events of the archives under
``../shared/data/radar``: MeteoSwiss 2017-01-31, FMI 2017-05-09; mm/h, native
1 km grid, centre crop), or synthetic storms when no radar data is found, are
nowcast by persistence, extrapolation, STEPS and the trained DiffCast model (the
shipped :data:`diffcast.shipped.DEFAULT_SHIPPED` unless another is named), each
through :func:`diffcast.nowcast`, and scored with pysteps' verification
(:class:`diffcast.skill.Skill`): the skill table, CSI and CRPS by lead time,
rank histograms, the reliability diagram at 1 mm/h, wall time per forecast and
side-by-side animations. Without a trained model the baselines are still shown
and the report says so.

**Training demo** (:func:`run_training_demo`, ``diffcast demo --train``): trains
a toy backbone and DiffCast from scratch on synthetic storms and tests the
paper's claims on them. Stages (each logged, timed and recorded in ``demo.json``):

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

Budgets of the training demo are set by a profile: ``default`` (about 15 minutes
on 2 CPU cores) or ``quick`` (about 3 minutes). Everything a demo writes lives in
``out_dir``.

Modules, by concern (imports point one way: ``run``, ``training`` -> ``report``,
``figures`` -> ``scoring``, ``windows`` -> ``settings``)::

    settings.py   both modes' settings (DemoSettings, PROFILES, NowcastDemoSettings),
                  model labels, output names, the output folder (demo.json marker)
    windows.py    the nowcast demo's windows: held-out radar, or synthetic storms
    scoring.py    the model shown (resolve_demo_model), forecasting and scoring the
                  windows, the training demo's claims (check_claims)
    figures.py    case animations and panels, skill plots, window animations
    report.py     report.md / report.html content of both modes
    training.py   the training demo (run_training_demo): train, evaluate, cases, real data
    run.py        the nowcast demo (run_demo)
"""


from .report import _build_report
from .run import run_demo
from .scoring import check_claims, resolve_demo_model
from .settings import (
    ANIM_DIR,
    BACKBONE_LABEL,
    CLI_SETTINGS,
    DEFAULT_RADAR_ROOT,
    DEMO_BASELINES,
    DIFFCAST_LABEL,
    DISPLAY_NAMES,
    MARKER,
    PLOTS_DIR,
    PROFILES,
    DemoSettings,
    NowcastDemoSettings,
)
from .training import run_training_demo
from .windows import demo_case, synthetic_rain_case

__all__ = [
    "ANIM_DIR",
    "BACKBONE_LABEL",
    "CLI_SETTINGS",
    "DEFAULT_RADAR_ROOT",
    "DEMO_BASELINES",
    "DIFFCAST_LABEL",
    "DISPLAY_NAMES",
    "MARKER",
    "PLOTS_DIR",
    "PROFILES",
    "DemoSettings",
    "NowcastDemoSettings",
    "check_claims",
    "demo_case",
    "resolve_demo_model",
    "run_demo",
    "run_training_demo",
    "synthetic_rain_case",
    "_build_report",
]
