"""Every YAML preset in configs/ parses, validates and names registered models and datasets."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from diffcast.config import list_presets, load_config
from diffcast.data import DATASETS
from diffcast.models import build_model
from diffcast.models.backbones import BACKBONES

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
PRESETS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
PAPER_BACKBONES = ("simvp", "phydnet", "convgru", "earthformer")
PAPER_DATA = ("sevir_", "cikm_", "shanghai_", "meteonet_")


def test_the_paper_and_tiny_presets_exist():
    assert list_presets(CONFIGS) == PRESETS
    for bb in PAPER_BACKBONES:
        assert f"sevir_{bb}" in PRESETS and f"sevir_diffcast_{bb}" in PRESETS
    for ds in ("cikm", "shanghai", "meteonet"):
        assert f"{ds}_diffcast_phydnet" in PRESETS
    assert {"tiny_convgru", "tiny_diffcast_convgru", "tiny_diffcast_persistence"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parses_and_names_registered_pieces(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.backbone["name"] in BACKBONES
    assert cfg.data.name in DATASETS
    assert cfg.data.val_split != "test"
    if name.startswith(PAPER_DATA + ("tiny_",)):  # naming convention of the training presets
        assert cfg.name == name
        assert cfg.model.type == ("diffcast" if "diffcast" in name else "backbone")
        assert cfg.model.backbone["name"] == name.split("_")[-1]
    bb_cls = BACKBONES.get(cfg.model.backbone["name"])
    preset = cfg.model.backbone.get("preset")
    assert preset is None or preset in getattr(bb_cls, "PRESETS", {})
    # dataset keywords exist in the dataset's signature (the data path is left to the user)
    params = inspect.signature(DATASETS.get(cfg.data.name)).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert accepts_any or set(cfg.data.kwargs) <= set(params), set(cfg.data.kwargs) - set(params)
    if name.startswith(("sevir", "shanghai", "meteonet")):
        assert (cfg.model.t_in, cfg.model.t_out, cfg.model.height) == (5, 20, 128)
    if name.startswith("cikm"):
        assert (cfg.model.t_in, cfg.model.t_out) == (5, 10)
    if name.startswith(PAPER_DATA):  # the published recipe
        assert cfg.train.lr == 1e-4 and cfg.train.betas == (0.9, 0.95) and cfg.train.grad_clip == 1.0


@pytest.mark.parametrize("name", [p for p in PRESETS if p.startswith("tiny")])
def test_tiny_presets_build_their_models(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    model = build_model(cfg.model_dict())
    assert callable(model.loss)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < 2_000_000


@pytest.mark.slow
@pytest.mark.parametrize("name", [p for p in PRESETS if p.startswith(PAPER_DATA)])
def test_paper_presets_build_their_models(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    model = build_model(cfg.model_dict())
    assert sum(p.numel() for p in model.parameters()) > 100_000
