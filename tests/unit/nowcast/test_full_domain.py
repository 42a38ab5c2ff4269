"""Whole radar domains at native resolution (issue 16): a 640 x 710 composite (MeteoSwiss' grid) and a
non-square grid that is no multiple of 32, each nowcast end to end by a small DiffCast model through
`diffcast nowcast`, with the radar's grid, its lat/lon and its coverage kept."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
import torch

from diffcast.cli import main
from diffcast.models import build_model
from diffcast.training.model_io import save_model_file

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("h5py")
pytest.importorskip("pysteps")
xr = pytest.importorskip("xarray")

MCFG = {"type": "diffcast", "t_in": 3, "t_out": 2, "channels": 1, "height": 32, "width": 32,
        "backbone": {"name": "extrapolation"},
        "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                      "attn_dim_head": 8, "ta_kernel": 7, "sampling_steps": 1, "patch": 2}}
META = {"name": "radar", "unit": "dBZ", "scale": 90.0, "thresholds": [20, 30, 35, 40], "timestep_min": 5.0,
        "pixel_km": 1.0, "physical_unit": "dBZ", "physical_name": "equivalent_reflectivity_factor", "transform": "x"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("full") / "m.safetensors"
    return save_model_file(path, build_model(MCFG).state_dict(), {"model": MCFG, "data": {"name": "radar_windows"}},
                           meta=META)


@pytest.mark.parametrize("shape", [(640, 710), (90, 130)])
def test_whole_domain_nowcast(tmp_path, model_file, helper_module, shape):
    h, w = shape
    writer = helper_module("unit/training/test_radar_windows.py")
    folder = tmp_path / "odim"
    radius = 0.45 * min(h, w)
    writer.write_odim_archive(folder, [datetime(2021, 6, 1, 12)], n_frames=3, size=h, width=w,
                              coverage_radius=radius)
    out = tmp_path / "nc"
    rc = main(["nowcast", "--checkpoint", str(model_file), "--input", str(folder), "--members", "2", "--seed", "0",
               "--out", str(out), "--no-html"])
    assert rc == 0
    with xr.open_dataset(out / "forecast.nc") as ds:
        assert (ds.sizes["y"], ds.sizes["x"], ds.sizes["member"], ds.sizes["time"]) == (h, w, 2, 2)
        # the radar's projection and lat/lon on every pixel
        assert "grid_mapping" in ds["forecast"].attrs and ds["lat"].shape == (h, w)
        lat, lon = ds["lat"].values, ds["lon"].values
        assert np.isfinite(lat).all() and 49.5 < lat.min() < lat.max() < 57.0 and -1 < lon.min() < lon.max() < 15
        # coverage: the circle of the radar, NaN outside it in every variable, forecast inside it
        yy, xx = np.mgrid[0:h, 0:w]
        rr = np.hypot(yy - h / 2, xx - w / 2)
        cov = ds["coverage"].values.astype(bool)
        # rows run north to south in the file as in the radar data (row 0 = top = north)
        assert cov[rr < radius - 1.5].all() and not cov[rr > radius + 1.5].any()
        fc = ds["forecast"].values
        assert np.isnan(fc[..., ~cov]).all() and np.isnan(ds["ensemble_mean"].values[..., ~cov]).all()
        inner = rr < radius - 12  # away from the coverage edge (and its inflow at 2 leads)
        assert np.isfinite(fc[..., inner]).all()
    info = json.loads((out / "run.json").read_text())
    assert info["input"]["x_in_shape"][-2:] == [h, w] and info["forecast_shape"] == [2, 2, h, w]
