"""`diffcast nowcast` with a fully convolutional model on a radar domain larger than its training grid."""

from __future__ import annotations

from datetime import datetime

import pytest

from diffcast.cli import main
from diffcast.models import build_model
from diffcast.training.model_io import save_model_file

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("h5py")
pytest.importorskip("pysteps")
xr = pytest.importorskip("xarray")


def test_native_grid_nowcast(tmp_path, helper_module):
    writer = helper_module("unit/training/test_radar_windows.py")
    folder = tmp_path / "odim"
    writer.write_odim_archive(folder, [datetime(2021, 6, 1, 12)], n_frames=4, size=72)  # 1 km pixels
    mcfg = {"type": "diffcast", "t_in": 3, "t_out": 2, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "extrapolation"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4,
                          "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 7, "sampling_steps": 2}}
    meta = {"name": "radar", "unit": "dBZ", "scale": 90.0, "thresholds": [20, 30, 35, 40], "timestep_min": 5.0,
            "pixel_km": 1.0, "physical_unit": "dBZ", "physical_name": "equivalent_reflectivity_factor", "transform": "x"}
    model = save_model_file(tmp_path / "m.safetensors", build_model(mcfg).state_dict(),
                            {"model": mcfg, "data": {"name": "radar_windows"}}, meta=meta)
    out = tmp_path / "nc"
    rc = main(["nowcast", "--checkpoint", str(model), "--input", str(folder), "--members", "2", "--seed", "0",
               "--out", str(out)])
    assert rc == 0
    ds = xr.open_dataset(out / "forecast.nc")
    assert ds.sizes["y"] == 72 and ds.sizes["x"] == 72  # the radar's own grid, not the 32 x 32 training grid
    assert "member" in ds.dims and ds.sizes["member"] == 2
    # the cells move east/south: what would come in across the western and northern edges is unknown (NaN in
    # every variable), never invented; the rest of the domain is forecast
    import numpy as np

    fc = ds["forecast"].values  # (member, time, y, x)
    unknown = np.isnan(fc[0])
    assert unknown[-1, :, 0].all() and not unknown[-1, 8:, 8:].any()
    assert (np.isnan(fc).all(axis=0) == unknown).all()
    assert (np.isnan(ds["ensemble_mean"].values) == unknown).all()
    assert (np.isnan(ds["exceedance_probability"].values) == unknown[None]).all()
    assert "outside the domain" in ds["forecast"].attrs["comment"]
    import json

    info = json.loads((out / "run.json").read_text())
    assert info["input"]["x_in_shape"][-2:] == [72, 72]
    ds.close()
