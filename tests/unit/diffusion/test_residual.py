"""ResidualDiffusion: loss, training options, segment-wise sampling and ensembles."""

from __future__ import annotations

import pytest
import torch
from diffusion_stubs import FixedBackbone, StubBackbone, fit_fixed_batch, tiny_model

from diffcast.models.diffusion.residual import DiffCastSample, ResidualDiffusion
from diffcast.models.diffusion.schedules import schedule_buffers
from diffcast.sampling import SAMPLERS


def _data(b=2, t_in=5, t_out=10, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t_in, 1, size, size, generator=g), torch.rand(b, t_out, 1, size, size, generator=g)


def test_no_schedule_buffers_in_state_dict(model):
    keys = set(model.state_dict())
    assert not any(k in keys for k in schedule_buffers("linear", 2))
    assert {k.split(".")[0] for k in keys} == {"model", "ctx_net", "backbone_net"}
    assert model.backbone is model.backbone_net
    assert sum(1 for _ in model.modules() if isinstance(_, StubBackbone)) == 1
    assert model.alphas_cumprod.dtype == torch.float64


def test_loss_terms_and_alpha(model):
    x, y = _data()
    terms = model.loss(x, y, generator=torch.Generator().manual_seed(0))
    assert {"loss", "diffusion", "backbone", "backbone_mse", "mse"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    torch.testing.assert_close(terms["loss"], 0.5 * terms["diffusion"] + 0.5 * terms["backbone"])
    m2 = tiny_model(alpha=0.8)
    t2 = m2.loss(x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t2["loss"], 0.8 * t2["diffusion"] + 0.2 * t2["backbone"])
    # forward(x, y) is the loss (for DDP wrappers)
    t3 = model(x, y)
    assert set(t3) == set(terms)


def test_loss_finite_for_zero_residual():
    m = tiny_model(backbone=FixedBackbone(5, 10, 1, 8, 8))
    x, _ = _data()
    y = x[:, -1:].expand(-1, 10, -1, -1, -1)  # y_true == mu: residual exactly 0
    for objective in ("v", "eps", "x0"):
        m = tiny_model(backbone=FixedBackbone(5, 10, 1, 8, 8), objective=objective)
        terms = m.loss(x, y)
        assert torch.isfinite(terms["loss"]) and "backbone" not in terms
        terms["loss"].backward()


def test_teacher_forcing_conditions_on_true_previous_residual(model):
    x, y = _data()
    seen = {}

    def hook(mod, args):
        seen["x_t"], seen["t"], seen["cond"], seen["ctx"], seen["idx"] = args

    h = model.model.register_forward_pre_hook(hook)
    model.loss(x, y)
    h.remove()
    mu = model.backbone(x)
    r = (2 * y - 1) - (2 * mu - 1)
    b = x.shape[0]
    assert seen["idx"].tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(seen["cond"][:b], torch.zeros_like(seen["cond"][:b]))
    torch.testing.assert_close(seen["cond"][b:], r[:, :5])
    # first segment uses the local context, later ones the global context
    g, loc = model.context(x, mu)
    torch.testing.assert_close(seen["ctx"][0][:b], loc[0])
    torch.testing.assert_close(seen["ctx"][0][b:], g[0])


def test_random_segment_training():
    m = tiny_model(train_segments="random")
    x, y = _data(b=3)
    terms = m.loss(x, y, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(terms["loss"])


def test_detach_mu_blocks_diffusion_gradient_into_backbone():
    x, y = _data()
    for detach, expect_grad in ((True, False), (False, True)):
        m = tiny_model(detach_mu=detach)
        m.loss(x, y, generator=torch.Generator().manual_seed(0))["diffusion"].backward()
        g = m.backbone.conv.weight.grad
        assert (g is not None and g.abs().sum() > 0) == expect_grad


def test_freeze_backbone():
    m = tiny_model(freeze_backbone=True)
    assert not any(p.requires_grad for p in m.backbone.parameters())
    m.train()
    assert not m.backbone.training and m.model.training
    x, y = _data()
    terms = m.loss(x, y)
    assert "backbone" not in terms
    torch.testing.assert_close(terms["loss"], terms["diffusion"])


def test_loss_falls_on_fixed_batch():
    m = tiny_model()
    x, y = _data(b=2)
    losses = fit_fixed_batch(m, x, y, steps=15)  # same t and noise each step
    assert losses[-1] < 0.5 * losses[0], losses


def test_sample_shapes_and_ranges(model):
    x, _ = _data(b=2)
    out = model.sample(x, members=3, steps=3, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, DiffCastSample)
    assert out.forecast.shape == (3, 2, 10, 1, 8, 8) and out.residual.shape == (3, 2, 10, 1, 8, 8)
    assert out.mu.shape == (2, 10, 1, 8, 8)
    assert out.forecast.min() >= 0 and out.forecast.max() <= 1
    mu_n = model.backbone(x) * 2 - 1
    torch.testing.assert_close(out.forecast, ((mu_n + out.residual + 1) / 2).clamp(0, 1))
    assert out.residual.abs().max() <= 1.0  # clamped x0 at the final step
    assert not torch.allclose(out.forecast[0], out.forecast[1])  # members differ


def test_seed_reproducibility_and_explicit_noise(model):
    x, _ = _data(b=1)
    a = model.sample(x, members=2, steps=2, generator=torch.Generator().manual_seed(5))
    b = model.sample(x, members=2, steps=2, generator=torch.Generator().manual_seed(5))
    c = model.sample(x, members=2, steps=2, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a.forecast, b.forecast)
    assert not torch.allclose(a.forecast, c.forecast)
    noise = torch.randn(2, 2, 1, 5, 1, 8, 8)
    d = model.sample(x, members=2, steps=2, noise=noise, generator=torch.Generator().manual_seed(1))
    e = model.sample(x, members=2, steps=2, noise=list(noise), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(d.forecast, e.forecast)
    with pytest.raises(ValueError, match="noise must be"):
        model.sample(x, members=2, steps=2, noise=torch.randn(2, 1, 1, 5, 1, 8, 8))


def test_ensemble_runs_backbone_and_context_once(model):
    x, _ = _data(b=2)
    calls = {"ctx": 0}
    model.ctx_net.register_forward_hook(lambda *a: calls.__setitem__("ctx", calls["ctx"] + 1))
    model.backbone.calls = 0
    model.sample(x, members=4, steps=2)
    assert model.backbone.calls == 1 and calls["ctx"] == 1


def test_shared_context_ensemble_equals_per_member(model):
    x, _ = _data(b=2)
    noise = torch.randn(2, 3, 2, 5, 1, 8, 8)
    ens = model.sample(x, members=3, steps=3, noise=noise)
    for m in range(3):
        one = model.sample(x, members=1, steps=3, noise=noise[:, m : m + 1])
        torch.testing.assert_close(ens.forecast[m], one.forecast[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLERS.names()))
def test_every_sampler_runs(model, name):
    x, _ = _data(b=1)
    out = model.sample(x, members=2, sampler=name, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.forecast).all()


def test_eta_only_for_ddim(model):
    x, _ = _data(b=1)
    with pytest.raises(ValueError, match="eta"):
        model.sample(x, sampler="dpmpp_2m", eta=0.5, steps=2)
    out = model.sample(x, sampler="ddim", eta=1.0, steps=2)
    assert torch.isfinite(out.forecast).all()


def _original_ddim(model, x_in, noise, steps, eta=0.0):
    """DiffCast's DDIM loop written out from the reference description (float32 buffers)."""
    buf = schedule_buffers("sigmoid", 1000, "v")
    T = 1000
    times = list(reversed(torch.linspace(-1, T - 1, steps + 1).int().tolist()))
    pairs = list(zip(times[:-1], times[1:]))
    mu = model.backbone(x_in)
    mu_n = mu * 2 - 1
    g, loc = model.ctx_net(torch.cat((x_in * 2 - 1, mu_n), 1), model.local_index)
    b = x_in.shape[0]
    preds, cond = [], None
    for k in range(noise.shape[0]):
        img = noise[k, 0]
        for t, tn in pairs:
            tt = torch.full((b,), t, dtype=torch.long)
            v = model.model(img, tt, cond, loc if k == 0 else g, torch.full((b,), k, dtype=torch.long))
            x0 = (buf["sqrt_alphas_cumprod"][t] * img - buf["sqrt_one_minus_alphas_cumprod"][t] * v).clamp(-1, 1)
            eps = (buf["sqrt_recip_alphas_cumprod"][t] * img - x0) / buf["sqrt_recipm1_alphas_cumprod"][t]
            if tn < 0:
                img = x0
                continue
            a, an = buf["alphas_cumprod"][t], buf["alphas_cumprod"][tn]
            sigma = eta * ((1 - a / an) * (1 - an) / (1 - a)).sqrt()
            c = (1 - an - sigma**2).sqrt()
            img = x0 * an.sqrt() + c * eps
        preds.append(mu_n[:, k * 5 : (k + 1) * 5] + img)
        cond = img
    return ((torch.cat(preds, 1) + 1) / 2).clamp(0, 1)


def test_diffcast_ddim_reproduces_original_loop():
    m = tiny_model()
    x, _ = _data(b=2)
    noise = torch.randn(2, 1, 2, 5, 1, 8, 8)
    ours = m.sample(x, sampler="ddim", steps=7, timestep_spacing="diffcast", noise=noise)
    with torch.no_grad():
        ref = _original_ddim(m, x, noise, 7)
    torch.testing.assert_close(ours.forecast[0], ref, rtol=1e-5, atol=2e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of the segment"):
        tiny_model(t_out=12)
    with pytest.raises(ValueError, match="unknown diffusion option"):
        tiny_model(nonsense=1)
    with pytest.raises(ValueError, match="preset"):
        ResidualDiffusion(StubBackbone(), 5, 10, 1, 8, 8, preset="huge")
    with pytest.raises(ValueError, match="divisible"):
        ResidualDiffusion(StubBackbone(5, 10, 1, 6, 6), 5, 10, 1, 6, 6, preset="tiny", dim_mults=(1, 2, 4))
    with pytest.raises(ValueError, match="sampler"):
        tiny_model(sampler="nope")
    with pytest.raises(ValueError, match="backbone has"):
        ResidualDiffusion(StubBackbone(5, 20, 1, 8, 8), 5, 10, 1, 8, 8, preset="tiny")
    m = tiny_model()
    with pytest.raises(ValueError, match="x_in must have shape"):
        m.sample(torch.rand(1, 4, 1, 8, 8))


def test_build_model_factory_roundtrip():
    from diffcast.models.factory import build_model

    cfg = {
        "type": "diffcast",
        "t_in": 5,
        "t_out": 10,
        "channels": 1,
        "height": 8,
        "width": 8,
        "backbone": {"name": "_diffusion_test_stub"},
        "diffusion": {"preset": "tiny", "dim_mults": [1, 2], "sampling_steps": 4, "dim": 8, "groups": 4},
    }
    m = build_model(cfg)
    assert isinstance(m, ResidualDiffusion) and m.sampling_steps == 4
    assert m.config["dim_mults"] == [1, 2] and m.config["preset"] == "tiny"


@pytest.mark.slow
def test_trained_ensemble_mean_near_backbone_and_spread():
    """Fit residuals that are pure iid noise N(0, 0.1^2) (in [0, 1] units) around a fixed backbone:
    members must differ (spread ~ 0.1) and their mean must be close to mu."""
    torch.manual_seed(0)
    size = 8
    m = ResidualDiffusion(
        FixedBackbone(5, 5, 1, size, size), 5, 5, 1, size, size, preset="tiny", dim_mults=(1,), sampling_steps=20
    )
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        x = 0.3 + 0.4 * torch.rand(16, 5, 1, size, size, generator=g)
        y = (x[:, -1:] + 0.1 * torch.randn(16, 5, 1, size, size, generator=g)).clamp(0, 1)
        loss = m.loss(x, y, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    x = 0.3 + 0.4 * torch.rand(2, 5, 1, size, size, generator=g)
    out = m.sample(x, members=32, generator=torch.Generator().manual_seed(0))
    spread = out.forecast.std(dim=0).mean().item()
    bias = (out.ensemble_mean - out.mu).abs().mean().item()
    assert 0.05 < spread < 0.2, spread
    assert bias < 0.04, bias
