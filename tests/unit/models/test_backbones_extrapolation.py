"""Persistence and pysteps extrapolation baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bb_data import moving_blobs, single_thread  # noqa: F401 (autouse fixture)

from diffcast.models.backbones import BACKBONES

pytest.importorskip("pysteps")


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


@pytest.mark.parametrize("velocity", [(1.5, 0.5), (-1.0, 1.0)])
def test_extrapolation_beats_persistence_on_steady_advection(velocity):
    seq = moving_blobs(batch=2, t=12, size=64, velocity=velocity, sigma=4.0, seed=1)
    x, y = seq[:, :4], seq[:, 4:]
    persistence = BACKBONES.build("persistence", t_in=4, t_out=8, height=64, width=64)
    extrap = BACKBONES.build("extrapolation", t_in=4, t_out=8, height=64, width=64)
    mse_p, mse_e = _mse(persistence(x), y), _mse(extrap(x), y)
    assert mse_e < 0.25 * mse_p, (mse_e, mse_p)


def test_extrapolation_recovers_the_motion_vector():
    seq = moving_blobs(batch=1, t=4, size=64, velocity=(2.0, -1.0), sigma=4.0, seed=2)
    model = BACKBONES.build("extrapolation", t_in=4, t_out=1, height=64, width=64)
    uv = model.motion(seq[0, :, 0].numpy())
    signal = seq[0, -1, 0].numpy() > 0.2
    np.testing.assert_allclose(uv[0][signal].mean(), 2.0, atol=0.3)
    np.testing.assert_allclose(uv[1][signal].mean(), -1.0, atol=0.3)


def test_extrapolation_handles_empty_nan_and_range():
    model = BACKBONES.build("extrapolation", t_in=3, t_out=2, height=32, width=32)
    zeros = torch.zeros(1, 3, 1, 32, 32)
    torch.testing.assert_close(model(zeros), torch.zeros(1, 2, 1, 32, 32))
    x = moving_blobs(batch=1, t=3, size=32)
    x[0, :, 0, 5, 5] = float("nan")
    x[0, -1, 0, 10, 10] = 1.0
    out = model(x)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert out.dtype == torch.float32


def test_extrapolation_of_a_static_field_is_persistence():
    frame = moving_blobs(batch=1, t=1, size=32)[:, :1]
    x = frame.expand(-1, 4, -1, -1, -1).contiguous()
    out = BACKBONES.build("extrapolation", t_in=4, t_out=3, height=32, width=32)(x)
    for k in range(3):
        torch.testing.assert_close(out[:, k], x[:, -1], atol=2e-3, rtol=0)


def test_baselines_have_no_parameters_and_loss_needs_no_grad():
    for name in ("persistence", "extrapolation"):
        model = BACKBONES.build(name, t_in=3, t_out=2, height=16, width=16)
        assert model.trainable is False and list(model.parameters()) == []
        terms = model.loss(torch.rand(2, 3, 1, 16, 16), torch.rand(2, 2, 1, 16, 16))
        assert not terms["loss"].requires_grad and terms["mse"] > 0
