"""Shipped models: found by name everywhere a model path is accepted, listed by ``diffcast models``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import diffcast
from diffcast import shipped
from diffcast.cli import main
from diffcast.models import build_model
from diffcast.training.model_io import resolve_model_file, save_model_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def weights_dir(tmp_path, monkeypatch):
    """A weights folder holding one tiny persistence 'model' under the default shipped name."""
    folder = tmp_path / "weights" / shipped.DEFAULT_SHIPPED
    folder.mkdir(parents=True)
    mcfg = {"type": "backbone", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "persistence"}}
    save_model_file(folder / "model.safetensors", build_model(mcfg).state_dict(), {"model": mcfg, "data": {"name": "radar"}})
    (folder / "MODEL_CARD.md").write_text("# test model\n\nA persistence stand-in for the tests.\n")
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    return folder


def test_names_resolve_and_list(weights_dir, capsys):
    name = shipped.DEFAULT_SHIPPED
    assert resolve_model_file(name) == weights_dir / "model.safetensors"
    assert shipped.default_model() == name
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"{name}  (default)" in out and "A persistence stand-in" in out
    assert main(["models", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["default"] == name and info["shipped"][0]["t_out"] == 4 and "steps" in info["baselines"]


def test_nowcast_uses_the_shipped_default(weights_dir):
    precip = np.random.default_rng(0).gamma(0.6, 2.0, size=(3, 40, 40))
    fc = diffcast.nowcast(precip, n_leadtimes=2)  # default model: the shipped one (any grid)
    assert fc.shape == (1, 2, 40, 40)
    np.testing.assert_allclose(fc[0, 1][precip[-1] > 0.05], precip[-1][precip[-1] > 0.05], rtol=1e-4)
    named = diffcast.nowcast(precip, n_leadtimes=2, model=shipped.DEFAULT_SHIPPED)
    np.testing.assert_array_equal(named, fc)


def test_without_shipped_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "none")
    assert shipped.shipped_models() == {} and shipped.default_model() == "steps"
    with pytest.raises(FileNotFoundError, match="not a shipped model"):
        resolve_model_file("no_such_model")
    assert main(["models"]) == 0
    assert "none installed" in capsys.readouterr().out
