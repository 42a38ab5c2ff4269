"""Windowed spatial attention for models run on grids larger than their training grid."""

from __future__ import annotations

import pytest
import torch

from diffcast.models import build_model
from diffcast.models.diffusion.layers import Attention

pytestmark = pytest.mark.usefixtures("one_thread")


def test_window_equals_full_attention_on_each_window():
    torch.manual_seed(0)
    a = Attention(8, heads=2, dim_head=4)
    x = torch.randn(2, 8, 12, 13)
    full = a(x)
    a.window = (12, 13)
    assert torch.equal(a(x), full)  # a map no larger than the window: plain full attention
    a.window = (5, 4)
    y = a(x)
    assert y.shape == x.shape
    for (y0, x0) in [(0, 0), (0, 4), (7, 9)]:  # windows no later window overlaps; the last one is shifted inwards
        torch.testing.assert_close(y[:, :, y0 : y0 + 5, x0 : x0 + 4], a._full(x[:, :, y0 : y0 + 5, x0 : x0 + 4]))


def test_checkpoint_on_larger_grid_attends_over_training_extent(tmp_path):
    from diffcast.inference import Nowcaster
    from diffcast.training.model_io import save_model_file

    mcfg = {"type": "diffcast", "t_in": 2, "t_out": 2, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "persistence"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2, 4], "segment": 2, "groups": 4,
                          "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 7}}
    path = save_model_file(tmp_path / "m.safetensors", build_model(mcfg).state_dict(), {"model": mcfg, "data": {"name": "radar"}})
    same = Nowcaster.from_checkpoint(path)
    assert all(m.window is None for m in same.model.modules() if isinstance(m, Attention))
    big = Nowcaster.from_checkpoint(path, grid=(96, 64))
    wins = [m.window for m in big.model.modules() if isinstance(m, Attention)]
    assert wins and all(w == (8, 8) for w in wins)  # 32 / 4 at the middle block
    out = big.predict(torch.rand(1, 2, 1, 96, 64), members=2, seed=0, steps=2)
    assert out.forecast.shape == (2, 1, 2, 1, 96, 64) and torch.isfinite(out.forecast).all()


def test_window_validation_of_model_sizes():
    with pytest.raises(ValueError):
        build_model({"type": "diffcast", "t_in": 2, "t_out": 2, "channels": 1, "height": 30, "width": 32,
                     "backbone": {"name": "persistence"},
                     "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2, 4], "segment": 2, "groups": 4}})
