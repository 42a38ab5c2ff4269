"""Noise schedules, objectives and loss weights against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffcast.models.diffusion.schedules import (
    BUFFER_NAMES,
    SCHEDULES,
    loss_weight,
    make_betas,
    objective_target,
    predict_x0_eps,
    q_sample,
    schedule_buffers,
)


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_sigmoid_schedule_closed_form():
    T = 1000
    s = np.linspace(0, 1, T + 1)
    abar = np.array([(_sig(3) - _sig(6 * v - 3)) / (_sig(3) - _sig(-3)) for v in s])
    abar = abar / abar[0]
    ref = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
    betas = make_betas("sigmoid", T)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    np.testing.assert_allclose(betas.numpy(), ref, rtol=1e-10, atol=1e-13)
    assert betas[-1].item() == pytest.approx(0.999)  # abar(1) = 0: the last beta is clipped


def _original_sigmoid_betas(timesteps, start=-3, end=3, tau=1):
    """The original DiffCast / denoising-diffusion-pytorch code, verbatim (float32 end points)."""
    assert torch.get_default_dtype() == torch.float32
    steps = timesteps + 1
    t = torch.linspace(0, timesteps, steps, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau).sigmoid()
    v_end = torch.tensor(end / tau).sigmoid()
    alphas_cumprod = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.999)


@pytest.mark.parametrize("T", [1000, 250, 10, 2])
def test_sigmoid_official_is_the_original_arithmetic_bit_for_bit(T):
    betas, orig = make_betas("sigmoid_official", T), _original_sigmoid_betas(T)
    assert "sigmoid_official" in SCHEDULES and betas.dtype == torch.float64 and betas.shape == (T,)
    assert torch.equal(betas, orig)
    abar = torch.cumprod(1 - orig, 0)
    buf = schedule_buffers("sigmoid_official", T, "v")
    assert torch.equal(buf["betas"], orig.float()) and torch.equal(buf["alphas_cumprod"], abar.float())


def test_sigmoid_variants_differ_beyond_the_converter_tolerance():
    """The float32 end points move beta_998 by ~1.3e-5 relative: more than the converter's rtol."""
    ours, official = make_betas("sigmoid", 1000), make_betas("sigmoid_official", 1000)
    rel = ((official[998] - ours[998]) / ours[998]).abs().item()
    assert 1e-5 < rel < 1e-4
    assert not torch.allclose(official.float(), ours.float(), rtol=1e-5, atol=1e-7)


def test_linear_and_cosine_closed_forms():
    np.testing.assert_allclose(make_betas("linear", 1000).numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
    np.testing.assert_allclose(make_betas("linear", 500).numpy(), np.linspace(2e-4, 0.04, 500), rtol=1e-12)
    T, s0 = 100, 0.008
    f = [math.cos((i / T + s0) / (1 + s0) * math.pi / 2) ** 2 for i in range(T + 1)]
    ref = np.clip([1 - f[i + 1] / f[i] for i in range(T)], 0, 0.999)
    np.testing.assert_allclose(make_betas("cosine", T).numpy(), ref, rtol=1e-10)


def test_schedule_buffers_are_the_13_float32_tensors():
    buf = schedule_buffers("sigmoid", 1000, "v")
    assert len(BUFFER_NAMES) == 13 and tuple(buf) == BUFFER_NAMES
    assert all(v.dtype == torch.float32 and v.shape == (1000,) for v in buf.values())
    b = make_betas("sigmoid", 1000)
    abar = torch.cumprod(1 - b, 0)
    torch.testing.assert_close(buf["alphas_cumprod"], abar.float())
    # posterior variance (DDPM eq. 7) and the v loss weight snr / (snr + 1) = abar
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    torch.testing.assert_close(buf["posterior_variance"], (b * (1 - prev) / (1 - abar)).float())
    torch.testing.assert_close(buf["loss_weight"], abar.float())
    assert buf["alphas_cumprod_prev"][0].item() == 1.0


def test_loss_weights_and_min_snr():
    abar = torch.cumprod(1 - make_betas("linear", 1000), 0)
    snr = abar / (1 - abar)
    torch.testing.assert_close(loss_weight(abar, "eps"), torch.ones_like(abar))
    torch.testing.assert_close(loss_weight(abar, "x0"), snr)
    torch.testing.assert_close(loss_weight(abar, "eps", min_snr_gamma=5.0), snr.clamp(max=5) / snr)
    torch.testing.assert_close(loss_weight(abar, "v", min_snr_gamma=5.0), snr.clamp(max=5) / (snr + 1))


@pytest.mark.parametrize("objective", ["eps", "x0", "v", "epsilon", "v_prediction"])
def test_add_noise_then_inverse_objective_recovers_x0(objective):
    abar = torch.cumprod(1 - make_betas("sigmoid", 1000), 0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 5, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 500, 900, 998])
    xt = q_sample(abar, x0, noise, t)
    a = abar[t].view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(xt, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    out = objective_target(objective, abar, x0, noise, t)
    x0_hat, eps_hat = predict_x0_eps(objective, abar, out, xt, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(eps_hat, noise, rtol=1e-6, atol=1e-6)
    x0_c, _ = predict_x0_eps(objective, abar, out, xt, t, clip=0.5)
    assert x0_c.abs().max() <= 0.5


def test_bad_names_raise():
    with pytest.raises(ValueError, match="schedule"):
        make_betas("quadratic", 1000)
    with pytest.raises(ValueError, match="objective"):
        loss_weight(torch.full((3,), 0.5), "score")
