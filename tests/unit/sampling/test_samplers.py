"""Samplers against problems with a known answer (Gaussian data, exact denoiser)."""

from __future__ import annotations

import math

import pytest
import torch

from diffcast.models.diffusion.schedules import make_betas, objective_target
from diffcast.sampling import SAMPLERS, respace
from diffcast.sampling.base import canonical_prediction_type

T = 1000
M, S = 0.3, 0.5  # data x0 ~ N(M, S^2)


def _abar(schedule: str = "sigmoid") -> torch.Tensor:
    return torch.cumprod(1 - make_betas(schedule, T), 0)


def exact_output(abar: torch.Tensor, x_t: torch.Tensor, t: int, objective: str) -> torch.Tensor:
    """Network output of the exact denoiser E[x0 | x_t] for x0 ~ N(M, S^2)."""
    a = math.sqrt(float(abar[t]))
    s2 = 1 - float(abar[t])
    x0 = M + a * S**2 / (a * a * S**2 + s2) * (x_t - a * M)
    eps = (x_t - a * x0) / math.sqrt(s2)
    if objective == "eps":
        return eps
    if objective == "x0":
        return x0
    return a * eps - math.sqrt(s2) * x0


def run(name, steps, objective="v", n=40000, seed=0, schedule="sigmoid", standardize=False, **kw):
    abar = _abar(schedule)
    sampler = SAMPLERS.build(name, alphas_cumprod=abar, prediction_type=objective, clip_sample=False, **kw)
    sampler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    if standardize:  # exact N(0, 1) moments: what is left is the solver's error
        x = (x - x.mean()) / x.std()
    for t in sampler.timesteps:
        x = sampler.step(exact_output(abar, x, int(t), objective), t, x, generator=gen)
    return x


@pytest.mark.parametrize(
    "name,steps,kw",
    [
        ("ddim", 100, {}),
        ("ddim", 100, {"timestep_spacing": "diffcast"}),
        ("dpmpp_2m", 50, {}),
        ("dpmpp_3m", 50, {}),
        ("heun", 30, {}),
        ("dpmpp_2m", 50, {"timestep_spacing": "linspace"}),
        ("dpmpp_2m", 50, {"timestep_spacing": "logsnr"}),
        ("unipc_3", 30, {"timestep_spacing": "logsnr"}),
        ("dpmpp_2m", 50, {"timestep_spacing": "karras"}),
    ],
)
@pytest.mark.parametrize("objective", ["v", "eps", "x0"])
def test_deterministic_samplers_recover_gaussian(name, steps, kw, objective):
    x = run(name, steps, objective, n=20000, standardize=True, **kw)
    assert abs(x.mean().item() - M) < 0.02
    assert abs(x.var().item() / S**2 - 1) < 0.05


def _flow(abar, x, ta, tb):
    """Exact probability-flow ODE map from step ta to tb for Gaussian data (VE form: y - M ~ sqrt(S^2 + sigma^2))."""
    aa, ab = float(abar[ta]), float(abar[tb])
    sa, sb = math.sqrt((1 - aa) / aa), math.sqrt((1 - ab) / ab)
    return math.sqrt(ab) * (M + (x / math.sqrt(aa) - M) * math.sqrt(S * S + sb * sb) / math.sqrt(S * S + sa * sa))


def _ode_error(name, steps, abar):
    s = SAMPLERS.build(name, alphas_cumprod=abar, clip_sample=False, timestep_spacing="linspace")
    s.set_timesteps(steps)
    x0 = torch.linspace(-3, 3, 101, dtype=torch.float64)
    x = x0.clone()
    ts = s.timesteps.tolist()
    for t in ts[:-1]:  # stop before the final jump onto the clean data
        x = s.step(exact_output(abar, x, t, "v"), t, x)
    return (x - _flow(abar, x0, ts[0], ts[-1])).abs().max().item()


@pytest.mark.parametrize("name,min_order", [("ddim", 0.9), ("dpmpp_2m", 1.8), ("dpmpp_3m", 2.2), ("heun", 1.5)])
def test_convergence_order_against_exact_flow(name, min_order):
    """Observed order of accuracy (40 -> 80 -> 160 steps) on the exact Gaussian ODE."""
    abar = _abar("linear")
    e = [_ode_error(name, n, abar) for n in (40, 80, 160)]
    orders = [math.log2(a / b) for a, b in zip(e, e[1:])]
    assert min(orders) > min_order, (e, orders)


@pytest.mark.parametrize("name,kw", [("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_stochastic_samplers_recover_gaussian(name, kw):
    x = run(name, 250, "v", **kw)
    assert abs(x.mean().item() - M) < 0.02
    assert abs(x.var().item() / S**2 - 1) < 0.05


def test_higher_order_more_accurate_with_few_steps():
    """With 10 steps the second-order solvers beat first-order DDIM on the variance."""
    err = {name: abs(run(name, 10, "v", n=20000, standardize=True).var().item() - S**2) for name in ("ddim", "dpmpp_2m", "heun")}
    assert err["dpmpp_2m"] < err["ddim"]
    assert err["heun"] < err["ddim"]


def test_dpmpp1_equals_ddim_eta0():
    a = run("ddim", 25, "v", n=1000)
    b = run("dpmpp_1", 25, "v", n=1000)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_ddim_eta0_deterministic_and_generator_free():
    a = run("ddim", 10, n=100, seed=1)
    abar = _abar()
    s = SAMPLERS.build("ddim", alphas_cumprod=abar, clip_sample=False)
    s.set_timesteps(10)
    x = torch.randn(100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in s.timesteps:  # other generator seeds must not matter at eta = 0
        x = s.step(exact_output(abar, x, int(t), "v"), t, x, generator=torch.Generator().manual_seed(int(t)))
    torch.testing.assert_close(a, x)


def test_ancestral_reproducible_with_seed_and_differs_across_seeds():
    a = run("ddpm", 20, n=200, seed=3)
    b = run("ddpm", 20, n=200, seed=3)
    c = run("ddpm", 20, n=200, seed=4)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_ddim_single_step_formula():
    """One DDIM step against DDIM eq. 12 written out by hand."""
    abar = _abar("linear")
    s = SAMPLERS.build("ddim", alphas_cumprod=abar, prediction_type="eps", clip_sample=False)
    s.set_timesteps(4)
    ts = s.timesteps.tolist()
    assert ts == [999, 749, 499, 249]
    x = torch.randn(7, dtype=torch.float64)
    eps = torch.randn(7, dtype=torch.float64)
    out = s.step(eps, ts[0], x)
    a, an = float(abar[999]), float(abar[749])
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    ref = math.sqrt(an) * x0 + math.sqrt(1 - an) * eps
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_last_step_returns_x0_and_clip():
    abar = _abar()
    s = SAMPLERS.build("ddim", alphas_cumprod=abar, prediction_type="x0", clip_sample=True)
    s.set_timesteps(1)
    x = torch.zeros(5)
    out = s.step(torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0]), s.timesteps[0], x)
    torch.testing.assert_close(out, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))


def test_add_noise_matches_closed_form_and_inverts():
    abar = _abar()
    s = SAMPLERS.build("ddpm", alphas_cumprod=abar, prediction_type="v", clip_sample=False)
    x0 = torch.rand(3, 2, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    xt = s.add_noise(x0, noise, t)
    ref = abar[t].sqrt()[:, None] * x0 + (1 - abar[t]).sqrt()[:, None] * noise
    torch.testing.assert_close(xt, ref)
    for i, ti in enumerate(t.tolist()):
        v = objective_target("v", abar, x0[i : i + 1], noise[i : i + 1], ti)
        x0_hat, eps_hat = s.convert_model_output(v, ti, xt[i : i + 1])
        torch.testing.assert_close(x0_hat, x0[i : i + 1], rtol=1e-5, atol=1e-5)


def test_respacing():
    ts, prev = respace("diffcast", 1000, 250)
    assert ts[:3] == [999, 995, 991] and ts[-1] == 3 and prev[-1] == -1
    assert respace("trailing", 1000, 250) == (ts, prev)
    ts, prev = respace("diffcast", 1000, 1000)
    assert ts[-1] == 0 and len(set(ts)) == 1000
    ts, prev = respace("trailing", 1000, 7)
    assert ts[0] == 999 and prev == ts[1:] + [-1] and all(a > b for a, b in zip(ts, ts[1:]))
    ts, _ = respace("leading", 1000, 10)
    assert ts == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    ts, _ = respace("linspace", 1000, 3)
    assert ts == [999, 500, 0]
    # diffcast truncation toward zero: int(linspace(-1, 999, 4)) = [-1, 332, 665, 999]
    assert respace("diffcast", 1000, 3) == ([999, 665, 332], [665, 332, -1])
    with pytest.raises(ValueError, match="steps"):
        respace("trailing", 1000, 0)
    with pytest.raises(ValueError, match="timestep_spacing"):
        respace("nope", 1000, 10)


@pytest.mark.parametrize("schedule", ["sigmoid", "linear", "cosine"])
@pytest.mark.parametrize("spacing", ["karras", "logsnr"])
def test_noise_level_spacings(schedule, spacing):
    abar = _abar(schedule).double()
    log_sigma = 0.5 * torch.log((1 - abar) / abar)
    for n in (1, 2, 5, 10, 37, 250, 1000):
        ts, prev = respace(spacing, T, n, abar)
        assert len(ts) == n and ts[0] == T - 1 and prev == ts[1:] + [-1]
        assert all(a > b for a, b in zip(ts, ts[1:])) and ts[-1] >= 0
        if n > 1:
            assert ts[-1] == 0  # ends at the smallest training noise level
    # interior points: nearest training step to the target noise levels (independent formula)
    ts, _ = respace(spacing, T, 10, abar)
    hi, lo = min(float(log_sigma[-1]), math.log(80.0)), float(log_sigma[0])
    for i in range(1, 9):
        f = i / 9
        if spacing == "logsnr":
            target = hi + f * (lo - hi)
        else:
            target = 7 * math.log(math.exp(hi / 7) + f * (math.exp(lo / 7) - math.exp(hi / 7)))
        best = int((log_sigma - target).abs().argmin())
        assert abs(ts[i] - best) <= 1, (i, ts[i], best)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        respace(spacing, T, 10)


def test_logsnr_grid_is_uniform_in_log_snr():
    abar = _abar("linear").double()  # sigma_{T-1} = 157 > 80: the top is capped
    ts, _ = respace("logsnr", T, 6, abar)
    lam = [float(0.5 * torch.log(abar[t] / (1 - abar[t]))) for t in ts[1:]]
    gaps = [b - a for a, b in zip(lam, lam[1:])]
    assert max(gaps) - min(gaps) < 0.05 * sum(gaps) / len(gaps)


def test_heun_schedule_and_order_enforced():
    s = SAMPLERS.build("heun", alphas_cumprod=_abar())
    s.set_timesteps(3)
    assert s.timesteps.tolist() == [999, 666, 666, 332, 332]
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="next timestep"):
        s.step(x, 666, x)


def test_registry_and_names():
    assert {"ddpm", "ddim", "dpmpp_2m", "dpmpp_3m", "heun"} <= set(SAMPLERS.names())
    with pytest.raises(ValueError, match="choose one of"):
        SAMPLERS.build("nope", alphas_cumprod=_abar())
    assert canonical_prediction_type("v_prediction") == "v"
    with pytest.raises(ValueError):
        canonical_prediction_type("score")
