"""DiffCast (residual diffusion on a backbone) through the same trainer as the backbones."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_plugins import tiny_config

from diffcast.config import config_from_dict
from diffcast.inference import Nowcaster
from diffcast.training import train

# The smallest denoiser that runs: 16x16 frames, 3 -> 5 frames (one residual segment).
SMALL_DIFFUSION = {"preset": "tiny", "dim": 8, "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 5, "groups": 4}


def _diffcast_cfg(backbone: str, **train_kw):
    return config_from_dict(tiny_config(
        model={"type": "diffcast", "t_in": 3, "t_out": 5, "height": 16, "width": 16,
               "backbone": {"name": backbone}, "diffusion": dict(SMALL_DIFFUSION)},
        data={"name": "test_blobs", "kwargs": {"size": 16, "num_sequences": 8}, "val_limit": 2},
        train={"batch_size": 1, "max_steps": 2, "ckpt_every": 2, "val_every": 0, "val_members": 2,
               "val_sampler_steps": 2, "val_batch_size": 2, **train_kw},
    ))


@pytest.mark.parametrize("backbone", [pytest.param("test_tiny", marks=pytest.mark.slow), "persistence"])
def test_diffcast_trains_on_a_learned_or_parameter_free_backbone(tmp_path, backbone):
    run = tmp_path / backbone
    s = train(_diffcast_cfg(backbone), run, progress=False)
    assert s.steps == 2 and s.final_loss is not None and s.final_loss == s.final_loss  # finite, not NaN
    w = load_file(str(run / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert any(k.startswith("model.") for k in w)  # the denoiser is in the model file
    assert any(k.startswith("backbone_net.") for k in w) == (backbone == "test_tiny")
    import csv

    with open(run / "log.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert {"loss", "diffusion"} <= set(row)  # DiffCast's named terms are logged
    nc = Nowcaster.from_checkpoint(run)
    assert nc.is_probabilistic


@pytest.mark.slow
def test_diffcast_validation_and_nowcast(tmp_path):
    run = tmp_path / "run"
    s = train(_diffcast_cfg("test_tiny", val_every=2, best_metric="crps", best_mode="min"), run, progress=False)
    assert s.last_val is not None and s.last_val["members"] == 2.0
    assert {"csi_m", "csi_pool16_m", "crps", "crps_fair"} <= set(s.last_val)
    assert s.best_score == s.last_val["crps"] and (run / "checkpoints" / "best" / "ema.safetensors").is_file()
    nc = Nowcaster.from_checkpoint(run)
    out = nc.predict(torch.rand(1, 3, 1, 16, 16), members=2, seed=0, steps=2)
    assert out.forecast.shape == (2, 1, 5, 1, 16, 16) and bool(torch.isfinite(out.forecast).all())
