"""UniPC-bh2 against problems with a known answer (Gaussian data, exact denoiser)."""

from __future__ import annotations

import math

import pytest
import torch
from test_samplers import M, S, _abar, _flow, exact_output, run

from diffcast.sampling import SAMPLERS


@pytest.mark.parametrize("name", ["unipc", "unipc_3"])
@pytest.mark.parametrize("objective", ["v", "eps", "x0"])
def test_unipc_recovers_gaussian(name, objective):
    """Sigmoid schedule (DiffCast's), 50 steps, every objective: same bounds as the other samplers."""
    x = run(name, 50, objective, n=20000, standardize=True)
    assert abs(x.mean().item() - M) < 0.02
    assert abs(x.var().item() / S**2 - 1) < 0.05


@pytest.mark.parametrize("name", ["unipc", "unipc_3"])
def test_unipc_few_steps_cosine(name):
    """20 steps on the cosine schedule: variance within 3 %."""
    x = run(name, 20, "v", n=20000, standardize=True, schedule="cosine")
    assert abs(x.mean().item() - M) < 0.01
    assert abs(x.var().item() / S**2 - 1) < 0.03


@pytest.mark.parametrize("schedule", ["cosine", "sigmoid"])
def test_unipc_beats_ddim_and_dpmpp2m_with_10_steps(schedule):
    err = {
        name: abs(run(name, 10, "v", n=20000, standardize=True, schedule=schedule).var().item() / S**2 - 1)
        for name in ("ddim", "dpmpp_2m", "unipc")
    }
    assert err["unipc"] < err["dpmpp_2m"] < err["ddim"], err


def _truncated_error(name: str, steps: int, stop: int = 200, **kw) -> float:
    """Max error against the exact probability-flow map, on a uniform grid from ~T down to ``stop``.

    The ``"leading"`` grid with steps in (25, 50, 100, 200) is uniform in ``t``
    and reaches ``stop`` exactly; stopping there keeps the step in ``lambda``
    proportional to ``1 / steps`` (near ``t = 0`` it is not, whatever the
    number of steps), so the observed order is the asymptotic one.
    """
    abar = _abar("linear")
    s = SAMPLERS.build(name, alphas_cumprod=abar, clip_sample=False, timestep_spacing="leading", **kw)
    s.set_timesteps(steps)
    ts = s.timesteps.tolist()
    assert stop in ts
    x0 = torch.linspace(-3, 3, 101, dtype=torch.float64)
    x = x0.clone()
    for t in ts[: ts.index(stop)]:
        x = s.step(exact_output(abar, x, t, "v"), t, x)
    return (x - _flow(abar, x0, ts[0], stop)).abs().max().item()


def _orders(name: str, **kw) -> list[float]:
    e = [_truncated_error(name, n, **kw) for n in (25, 50, 100, 200)]
    return [math.log2(a / b) for a, b in zip(e, e[1:])]


@pytest.mark.parametrize(
    "name,kw,lo,hi",
    [
        ("unipc", {}, 2.8, 3.5),  # UniP-2 + UniC: order 3
        ("unipc", {"use_corrector": False}, 1.8, 2.3),  # the predictor alone: order 2
        ("unipc_3", {}, 3.0, 4.5),  # UniP-3 + UniC: order 4 (3 from the first steps' lower orders)
    ],
)
def test_unipc_convergence_order(name, kw, lo, hi):
    """Observed order (25 -> 200 steps) on the exact Gaussian ODE; the corrector adds one order."""
    orders = _orders(name, **kw)
    assert lo < min(orders) and max(orders) < hi, orders


def test_unip2_without_corrector_equals_dpmpp_2m():
    """UniP-2 (rho = 1/2, B(h) = e^-h - 1) is DPM-Solver++(2M) written differently."""
    a = run("unipc", 15, "v", n=500, use_corrector=False)
    b = run("dpmpp_2m", 15, "v", n=500)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_uni_c1_step_by_hand():
    """Two steps of UniPC order 1: DDIM predictor, then UniC-1 (trapezoid in lambda) on the first step."""
    abar = _abar("linear")
    s = SAMPLERS.build("unipc", alphas_cumprod=abar, prediction_type="x0", clip_sample=False, order=1)
    s.set_timesteps(4)
    t0, t1, t2 = s.timesteps.tolist()[:3]
    x = torch.randn(6, dtype=torch.float64)
    d0, d1 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)

    def coef(ta, tb):
        aa, ab = float(abar[ta]), float(abar[tb])
        h = 0.5 * (math.log(ab / (1 - ab)) - math.log(aa / (1 - aa)))
        return math.sqrt((1 - ab) / (1 - aa)), math.sqrt(ab), math.expm1(-h)

    x1 = s.step(d0, t0, x)
    ratio, alpha, phi = coef(t0, t1)
    torch.testing.assert_close(x1, ratio * x - alpha * phi * d0)  # DPM-Solver++ 1 / DDIM
    x2 = s.step(d1, t1, x1)
    x1c = ratio * x - alpha * phi * d0 - alpha * phi * 0.5 * (d1 - d0)  # UniC-1
    ratio, alpha, phi = coef(t1, t2)
    torch.testing.assert_close(x2, ratio * x1c - alpha * phi * d1)


def test_unipc_last_step_returns_x0_and_state_resets():
    abar = _abar()
    s = SAMPLERS.build("unipc_3", alphas_cumprod=abar, prediction_type="x0", clip_sample=True)
    s.set_timesteps(1)
    out = s.step(torch.tensor([-3.0, 0.5, 3.0]), s.timesteps[0], torch.zeros(3))
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.5, 1.0]))
    # a fresh loop after set_timesteps gives identical results (no stale history)
    a = run("unipc_3", 12, n=300, seed=2)
    sampler = SAMPLERS.build("unipc_3", alphas_cumprod=abar, clip_sample=False)
    for _ in range(2):
        sampler.set_timesteps(12)
        x = torch.randn(300, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        for t in sampler.timesteps:
            x = sampler.step(exact_output(abar, x, int(t), "v"), t, x)
        torch.testing.assert_close(x, a, rtol=0, atol=0)


def test_unipc_registry_and_validation():
    assert {"unipc", "unipc_3"} <= set(SAMPLERS.names())
    abar = _abar()
    assert SAMPLERS.build("unipc", alphas_cumprod=abar).order == 2
    assert SAMPLERS.build("unipc_3", alphas_cumprod=abar).order == 3
    assert not SAMPLERS.get("unipc").stochastic
    with pytest.raises(ValueError, match="order"):
        SAMPLERS.build("unipc", alphas_cumprod=abar, order=4)
    s = SAMPLERS.build("unipc", alphas_cumprod=abar)
    s.set_timesteps(5)
    with pytest.raises(ValueError, match="next timestep"):
        s.step(torch.zeros(2), int(s.timesteps[1]), torch.zeros(2))


def test_unipc_float32_tensors_stay_float32():
    abar = _abar()
    s = SAMPLERS.build("unipc_3", alphas_cumprod=abar)
    s.set_timesteps(6)
    x = torch.randn(2, 5, 1, 4, 4)
    for t in s.timesteps:
        x = s.step(torch.randn_like(x) * 0.1, t, x)
        assert x.dtype == torch.float32
    assert torch.isfinite(x).all()
