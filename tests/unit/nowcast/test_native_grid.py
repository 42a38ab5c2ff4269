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


def test_padded_grid_motion_is_estimated_on_the_domain(tmp_path, monkeypatch):
    """Both front doors tell the optical-flow backbone where the zero padding starts: Lucas-Kanade on the padded
    frames underestimates the motion (see test_backbones_extrapolation), on the domain it does not."""
    import numpy as np

    import diffcast
    from diffcast.inference import Nowcaster
    from diffcast.models.backbones.extrapolation import Extrapolation

    mcfg = {"type": "diffcast", "t_in": 3, "t_out": 2, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "extrapolation"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4,
                          "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 7, "sampling_steps": 1}}
    meta = {"name": "radar", "unit": "dBZ", "scale": 90.0, "thresholds": [20, 30, 35, 40], "timestep_min": 5.0,
            "pixel_km": 1.0, "physical_unit": "dBZ", "physical_name": "equivalent_reflectivity_factor", "transform": "x"}
    path = save_model_file(tmp_path / "m.safetensors", build_model(mcfg).state_dict(),
                           {"model": mcfg, "data": {"name": "radar_windows"}}, meta=meta)
    nc = Nowcaster.from_checkpoint(path, grid=(80, 80))
    nc.set_domain(72, 70)
    assert nc.model.backbone_net.domain == (72, 70) and nc.input_grid == (72, 70)
    nc.set_domain(80, 80)
    assert nc.model.backbone_net.domain is None

    seen = []
    motion = Extrapolation.motion

    def spy(self, frames):
        seen.append((frames.shape[-2:], self.domain))
        return motion(self, frames)

    monkeypatch.setattr(Extrapolation, "motion", spy)
    rng = np.random.default_rng(0)
    precip = rng.gamma(0.5, 2.0, (3, 72, 70)).astype(np.float32)
    out = diffcast.nowcast(precip, timestep=5, n_leadtimes=2, n_ens_members=1, seed=0, model=path)
    assert out.shape == (1, 2, 72, 70)
    assert ((80, 80), (72, 70)) in seen and ((72, 70), (72, 70)) in seen
