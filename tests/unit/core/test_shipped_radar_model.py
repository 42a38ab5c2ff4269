"""The radar model that ships in the package: loads, forecasts through the front doors, keeps NaN outside coverage."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

import diffcast
from diffcast.cli import main
from diffcast.shipped import DEFAULT_SHIPPED, shipped_models

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("pysteps")
if DEFAULT_SHIPPED not in shipped_models():  # pragma: no cover - the weights are part of the repository
    pytest.fail(f"the shipped model {DEFAULT_SHIPPED} is missing from src/diffcast/weights", pytrace=False)


def _rain(t=5, h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    out = np.zeros((t, h, w))
    for k in range(t):
        out[k] = 12 * np.exp(-((yy - 30) ** 2 + (xx - 20 - 2 * k) ** 2) / 120) * rng.uniform(0.8, 1.2, (h, w))
    out[out < 0.1] = 0
    return out


def test_default_model_is_the_shipped_one_and_forecasts_any_grid():
    precip = _rain()
    precip[-1, :6] = np.nan
    fc = diffcast.nowcast(precip, n_leadtimes=12, n_ens_members=2, seed=0)  # its own sampler (UniPC-3, 10 steps)
    assert fc.shape == (2, 12, 64, 80)
    assert np.isnan(fc[:, :, :6]).all()
    # outside the uncovered rows, NaN only where the motion (2 px/step east) brings in rain from beyond the
    # domain or the gap: the western columns and the rows next to the gap, growing with lead time
    assert np.isfinite(fc[:, :, 10:, 30:]).all()
    assert 0 < np.isnan(fc[:, 0, 6:]).mean() <= np.isnan(fc[:, -1, 6:]).mean() < 0.5
    assert np.nanmin(fc) >= 0 and 1.0 < np.nanmax(fc) < 200.0  # rain stays rain of a sensible size (mm/h)
    again = diffcast.nowcast(precip, n_leadtimes=12, n_ens_members=2, seed=0, model=DEFAULT_SHIPPED)
    np.testing.assert_array_equal(fc, again)
    assert diffcast.nowcast(_rain(h=128, w=144), n_leadtimes=3, n_ens_members=1, seed=0, steps=2).shape == (1, 3, 128, 144)


def test_cli_nowcast_with_the_shipped_name(tmp_path, helper_module):
    writer = helper_module("unit/training/test_radar_windows.py")
    folder = tmp_path / "odim"
    writer.write_odim_archive(folder, [datetime(2021, 6, 1, 12)], n_frames=5, size=64)  # 1 km DBZH composites
    out = tmp_path / "nc"
    rc = main(["nowcast", "--checkpoint", DEFAULT_SHIPPED, "--input", str(folder), "--members", "2", "--seed", "0",
               "--steps", "2", "--out", str(out)])
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    assert info["model"]["t_out"] == 12 and info["input"]["x_in_shape"][-2:] == [64, 64]
    assert (out / "forecast.nc").is_file() and (out / "forecast.gif").is_file()
    assert (info["prob_matching"], info["mask_method"]) == ("cdf", "incremental")  # STEPS' post-processing
    off = tmp_path / "nc_nomask"
    assert main(["nowcast", "--checkpoint", DEFAULT_SHIPPED, "--input", str(folder), "--members", "2", "--seed", "0",
                 "--steps", "2", "--out", str(off), "--mask-method", "none"]) == 0
    assert json.loads((off / "run.json").read_text())["mask_method"] is None


#: the teacher of the shipped students (the default model until 2026-12-08)
TEACHER = "radar_diffcast_extrapolation"
STUDENTS = sorted(n for n in shipped_models() if n.startswith(TEACHER + "_") and n.endswith("step"))


def test_the_shipped_students_are_listed():
    assert {"radar_diffcast_extrapolation_1step", "radar_diffcast_extrapolation_2step"} <= set(STUDENTS)


@pytest.mark.parametrize("name", STUDENTS)
def test_shipped_student_samples_with_its_stored_step_count(name, monkeypatch):
    """A distilled model ships its sampler and step count; ``diffcast.nowcast`` uses them without being told."""
    from diffcast.api import load_model

    k = int(name.rsplit("_", 1)[1].removesuffix("step"))
    nc = load_model(name)
    model = nc.model
    assert (model.sampler_name, model.sampling_steps, model.eta) == ("ddim", k, 0.0)
    assert nc.config["train"]["distill"] == {"teacher": TEACHER, "steps": k, "substeps": 10 // k}
    calls = []
    denoiser = type(model.model)  # diffcast.nowcast builds its own instance for the input's grid: count on the class
    forward = denoiser.forward
    monkeypatch.setattr(denoiser, "forward", lambda self, *a, **kw: calls.append(1) or forward(self, *a, **kw))
    fc = diffcast.nowcast(_rain(), n_leadtimes=4, n_ens_members=2, seed=0, model=name)
    assert fc.shape == (2, 4, 64, 80) and np.nanmax(fc) > 1.0
    assert len(calls) == k * model.n_segments  # k denoiser calls per segment of 4 leads, members in one batch


def test_the_scaled_model_ships_with_its_residual_scale():
    """radar_diffcast_extrapolation_scaled: residual scaled per lead (0.09 at lead 1 to 0.35 at lead 12, rising),
    restored from its file, and it forecasts through the front door."""
    from diffcast.api import load_model

    name = "radar_diffcast_extrapolation_scaled"
    assert name in shipped_models()
    scale = load_model(name).model.residual_scale
    assert scale.shape == (12,) and bool((scale[1:] > scale[:-1]).all())
    assert 0.08 < float(scale[0]) < 0.1 and 0.3 < float(scale[-1]) < 0.4
    fc = diffcast.nowcast(_rain(), n_leadtimes=4, n_ens_members=2, seed=0, model=name, steps=2)
    assert fc.shape == (2, 4, 64, 80) and np.nanmax(fc) > 1.0
    default = diffcast.nowcast(_rain(), n_leadtimes=4, n_ens_members=2, seed=0, steps=2)
    assert not np.array_equal(np.nan_to_num(fc), np.nan_to_num(default))


def test_the_sprog_model_ships_and_forecasts_through_both_front_doors(tmp_path, helper_module):
    """radar_diffcast_sprog: DiffCast over S-PROG (its mu from pysteps' S-PROG on the domain), with its residual
    scale; forecasts through diffcast.nowcast (NaN outside coverage and at the inflow) and `diffcast nowcast`."""
    from diffcast.api import load_model
    from diffcast.models.backbones.pysteps_methods import SProg

    name = "radar_diffcast_sprog"
    assert name in shipped_models()
    model = load_model(name).model
    assert isinstance(model.backbone_net, SProg)
    scale = model.residual_scale
    assert scale.shape == (12,) and bool((scale[1:] > scale[:-1]).all())
    precip = _rain()
    precip[-1, :6] = np.nan
    fc = diffcast.nowcast(precip, n_leadtimes=12, n_ens_members=2, seed=0, model=name, steps=2)
    assert fc.shape == (2, 12, 64, 80) and np.isnan(fc[:, :, :6]).all()
    assert np.isfinite(fc[:, :, 10:, 30:]).all()
    assert 0 < np.isnan(fc[:, 0, 6:]).mean() <= np.isnan(fc[:, -1, 6:]).mean() < 0.5
    assert np.nanmin(fc) >= 0 and 1.0 < np.nanmax(fc) < 200.0
    writer = helper_module("unit/training/test_radar_windows.py")
    folder = tmp_path / "odim"
    writer.write_odim_archive(folder, [datetime(2021, 6, 1, 12)], n_frames=5, size=64)
    out = tmp_path / "nc"
    rc = main(["nowcast", "--checkpoint", name, "--input", str(folder), "--members", "2", "--seed", "0",
               "--steps", "2", "--out", str(out)])
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    assert info["model"]["config"]["backbone"]["name"] == "sprog" and info["prob_matching"] == "cdf"
