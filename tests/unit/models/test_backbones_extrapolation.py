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



def _texture_moving(n: int, t: int, speed: float, seed: int = 0) -> np.ndarray:
    """(t, n, n) smooth, widespread rain texture filling the whole frame, moving ``speed`` px/step in x."""
    from scipy.ndimage import gaussian_filter, shift

    big = gaussian_filter(np.random.default_rng(seed).random((n + 40, n + 80)), 4.0)
    big = np.clip((big - big.mean()) / big.std() * 0.1 + 0.5, 0.0, 1.0)
    return np.stack([shift(big, (0, speed * k), order=1)[20 : 20 + n, 30 : 30 + n] for k in range(t)])


def test_motion_on_a_zero_padded_grid_is_estimated_on_the_domain():
    """A model run on a grid zero-padded up to a multiple of 16 must not take the padding's static
    edge as motion evidence (Lucas-Kanade on the padded frames finds 1.3-1.6 px/step here instead
    of 2): with ``domain`` set, the field is the domain's own, edge-extended into the padding."""
    seq = _texture_moving(100, 5, 2.0, seed=1)
    frames, truth = seq[:4], seq[4]
    model = BACKBONES.build("extrapolation", t_in=4, t_out=1, height=112, width=112)
    own = model.motion(frames)
    assert abs(own[0].mean() - 2.0) < 0.2 and abs(own[1].mean()) < 0.2
    padded = np.zeros((4, 112, 112))
    padded[:, :100, :100] = frames
    model.domain = (100, 100)
    uv = model.motion(padded)
    assert uv.shape == (2, 112, 112)
    np.testing.assert_allclose(uv[:, :100, :100], own)
    np.testing.assert_allclose(uv[:, 100:, :100], np.repeat(own[:, 99:100, :], 12, axis=1))
    assert model(torch.from_numpy(padded[None, :, None]).float()).shape == (1, 1, 1, 112, 112)

    # the forecast inside the domain: as good as on the unpadded frames, better than without `domain`
    inner = (slice(10, 90), slice(10, 90))

    def error(fc):
        return np.abs(fc[0][:100, :100][inner] - truth[inner]).mean()

    with_domain = error(model.extrapolate(padded))
    model.domain = None
    without = error(model.extrapolate(padded))
    alone = error(BACKBONES.build("extrapolation", t_in=4, t_out=1, height=100, width=100).extrapolate(frames))
    assert with_domain == pytest.approx(alone, rel=1e-6)
    assert with_domain < 0.7 * without, (with_domain, without)


def test_blockwise_extrapolation_equals_one_pysteps_call(monkeypatch):
    # the forecast is advected a block of rows at a time to bound memory; it must be
    # exactly what one call of pysteps' semi-Lagrangian scheme gives
    from pysteps import extrapolation

    from diffcast.models.backbones import pysteps_methods

    monkeypatch.setattr(pysteps_methods, "ADVECT_BLOCK_PIXELS", 5 * 32 + 7)  # blocks of 5 rows, the last 2
    t_out = 13
    m = BACKBONES.build("extrapolation", t_in=4, t_out=t_out, height=32, width=32)
    frames = moving_blobs(batch=1, t=4, size=32, velocity=(1.3, -0.7))[0, :, 0].numpy()
    got = m.extrapolate(frames)
    uv = m.motion(frames)
    ref = extrapolation.get_method("semilagrangian")(frames[-1].astype(np.float64), uv, t_out, outval=0.0)
    assert got.dtype == np.float32 and got.shape == (t_out, 32, 32)
    assert np.abs(ref[-1] - ref[0]).max() > 0.1  # the field moved
    np.testing.assert_array_equal(got, np.clip(np.nan_to_num(ref, nan=0.0), 0, 1).astype(np.float32))
