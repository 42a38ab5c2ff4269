"""STEPS and S-PROG wherever persistence works: `diffcast nowcast --checkpoint steps` and `diffcast evaluate -m steps`."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from diffcast.cli import main

pytest.importorskip("h5py")
pytest.importorskip("pysteps")
xr = pytest.importorskip("xarray")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, helper_module):
    writer = helper_module("unit/training/test_radar_windows.py")
    root = tmp_path_factory.mktemp("odim_steps")
    writer.write_odim_archive(root, [datetime(2021, 6, d, 12) for d in (1, 2)], n_frames=8, size=48)
    return root


def test_nowcast_steps_ensemble(folder, tmp_path):
    out = tmp_path / "nc"
    assert main(["nowcast", "--checkpoint", "steps", "--members", "3", "--seed", "1", "--t-in", "3", "--t-out", "4",
                 "--input", str(folder), "--out", str(out)]) == 0
    ds = xr.open_dataset(out / "forecast.nc")
    assert ds.sizes["member"] == 3 and ds.sizes["y"] == 48
    info = json.loads((out / "run.json").read_text())
    assert info["model"]["probabilistic"] and info["members"] == 3
    ds.close()
    assert main(["nowcast", "--baseline", "sprog", "--t-in", "3", "--t-out", "2", "--input", str(folder),
                 "--out", str(tmp_path / "sp")]) == 0


def test_evaluate_steps_members(folder, tmp_path):
    out = tmp_path / "ev"
    assert main(["evaluate", "-m", "steps", "-m", "extrapolation", "--members", "3", "--data", "radar", "--data-root",
                 str(folder), "--split", "all", "--t-in", "3", "--t-out", "3", "--size", "32", "--no-plots",
                 "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())["models"]
    assert res["steps"]["members"] == 3 and "spread_skill_ratio" in res["steps"]
    assert res["extrapolation"]["members"] == 1
