"""Inference efficiency changes keep the math: bit-identical default path, opt-in compile / autocast.

The reference below is the un-optimised, out-of-place computation of the GTUNet,
the context encoder and the segment-wise sampling loop, written against the
modules' own convolutions / norms / linears; the library's fast path (in-place
element-wise updates under ``torch.inference_mode``) must match it bit for bit.
The reference computes the dilated depthwise convolution phase by phase, as the
library does; that this equals the native dilated convolution to round-off is
tested separately (and for a whole UNet below).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusion_stubs import tiny_model
from torch.nn import functional as F

from diffcast.models.diffusion.layers import TemporalAttentionModule, dilated_depthwise_conv
from diffcast.models.diffusion.residual import ResidualDiffusion

# --------------------------------------------------------------------------- reference


def ref_block(blk, x, scale_shift=None):
    x = blk.norm(blk.proj(x))
    if scale_shift is not None:
        scale, shift = scale_shift
        x = x * (scale + 1) + shift
    return F.silu(x)


def ref_resnet(rb, x, emb=None):
    scale_shift = None
    if rb.mlp is not None and emb is not None:
        scale, shift = rb.mlp(emb)[:, :, None, None].chunk(2, dim=1)
        scale_shift = (scale, shift)
    h = ref_block(rb.block2, ref_block(rb.block1, x, scale_shift))
    return h + rb.res_conv(x)


def ref_rmsnorm(norm, x):
    # the library's order of operations (a sum of squares instead of F.normalize's vector norm; see
    # test_rmsnorm_is_f_normalize for the two against each other)
    return x * torch.rsqrt(x.square().sum(1, keepdim=True).clamp_min(1e-24)).mul(x.shape[1] ** 0.5) * norm.g


def ref_temporal_attention(ta, x):
    u = ta.activation(ta.proj_1(x))
    m = ta.spatial_gating_unit
    f_u = m.conv1(dilated_depthwise_conv(m.conv0(u), m.conv_spatial))
    se = m.fc(u.mean(dim=(2, 3)))[:, :, None, None]
    return ta.proj_2(se * f_u * u) + x


def ref_attention(at, x):
    b, _, h, w = x.shape
    q, k, v = (t.reshape(b, at.heads, at.dim_head, h * w) for t in at.to_qkv(x).chunk(3, dim=1))
    q = q * at.dim_head**-0.5
    attn = torch.einsum("bhdi,bhdj->bhij", q, k).softmax(dim=-1)
    out = torch.einsum("bhij,bhdj->bhdi", attn, v)
    return at.to_out(out.reshape(b, at.heads * at.dim_head, h, w))


def ref_prenorm_residual(res, x, inner):
    return inner(res.fn.fn, ref_rmsnorm(res.fn.norm, x)) + x


def ref_gtunet(net, x_t, t, cond, ctx, idx):
    b, s, c, h, w = x_t.shape
    x = x_t.reshape(b, s * c, h, w)
    cond = torch.zeros_like(x) if cond is None else cond.reshape(b, s * c, h, w)
    x = net.init_conv(torch.cat((cond, x), dim=1))
    r0 = x.clone()
    emb = torch.cat((net.time_mlp(t), net.frag_idx_mlp(idx)), dim=1)
    skips = []
    for level, (block1, block2, attn, down) in enumerate(net.downs):
        x = ref_resnet(block1, torch.cat((x, ctx[level]), dim=1), emb)
        skips.append(x)
        x = ref_prenorm_residual(attn, ref_resnet(block2, x, emb), ref_temporal_attention)
        skips.append(x)
        x = down(x)
    x = ref_resnet(net.mid_block1, x, emb)
    x = ref_prenorm_residual(net.mid_attn, x, ref_attention)
    x = ref_resnet(net.mid_block2, x, emb)
    for block1, block2, attn, up in net.ups:
        x = ref_resnet(block1, torch.cat((x, skips.pop()), dim=1), emb)
        x = ref_resnet(block2, torch.cat((x, skips.pop()), dim=1), emb)
        x = up(ref_prenorm_residual(attn, x, ref_temporal_attention))
    x = ref_resnet(net.final_res_block, torch.cat((x, r0), dim=1), emb)
    return net.final_conv(x).reshape(b, s, c, h, w)


def ref_context(cn, frames, local_index):
    b, n, _, h, w = frames.shape
    states = [frames.new_zeros(b, d, h // 2**i, w // 2**i) for i, d in enumerate(cn.dims)]
    local = states
    for i in range(n):
        x = cn.init_conv(frames[:, i])
        new = []
        for level, mods in enumerate(cn.downs):
            x = ref_resnet(mods[0], x)
            x = mods[1](x, states[level])  # ConvGRU cell: no in-place path
            new.append(x)
            if len(mods) > 2:
                x = mods[2](x)
        states = new
        if i == local_index:
            local = states
    return states, local


def ref_sample(model: ResidualDiffusion, x_in, noise, steps, sampler="ddim"):
    """The segment loop of ``ResidualDiffusion.sample`` as first written (members = 1)."""
    with torch.no_grad():
        mu = model.backbone_net(x_in)
        frames = torch.cat((x_in, mu), dim=1) * 2 - 1
        global_ctx, local_ctx = ref_context(model.ctx_net, frames, model.local_index)
        smp = model.make_sampler(sampler)
        b = x_in.shape[0]
        cond, residuals = None, []
        for k in range(model.n_segments):
            r = noise[k].reshape(b, model.segment, model.channels, model.height, model.width)
            smp.set_timesteps(steps)
            idx = torch.full((b,), k, dtype=torch.long)
            ctx = local_ctx if k == 0 else global_ctx
            for t in smp.timesteps:
                out = ref_gtunet(model.model, r, torch.full((b,), int(t)), cond, ctx, idx)
                r = smp.step(out, t, r)
            residuals.append(r)
            cond = r
        res = torch.cat(residuals, dim=1)
        return ((mu * 2 - 1 + res + 1) / 2).clamp(0, 1), res


# --------------------------------------------------------------------------- helpers


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, model.t_in, 1, model.height, model.width, generator=g)
    noise = torch.randn(model.n_segments, 1, b, model.segment, 1, model.height, model.width, generator=g)
    return x, noise


def _denoiser_args(model, b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    h, w = model.height, model.width
    x_t = torch.randn(b, model.segment, 1, h, w, generator=g)
    cond = torch.randn(b, model.segment, 1, h, w, generator=g)
    ctx = [torch.randn(b, d, h // 2**i, w // 2**i, generator=g) for i, d in enumerate(model.model.context_dims)]
    return x_t, torch.tensor([999, 500, 3][:b]), cond, ctx, torch.tensor([0, 1, 1][:b])


@pytest.fixture
def model16():
    """Tiny model on 16 x 16 frames with two UNet levels (every block kind runs).

    Every parameter is perturbed, so that gains of one, zero biases and zero
    output convolutions cannot hide a change in the order of operations.
    """
    model = tiny_model(size=16).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


# --------------------------------------------------------------------------- tests


def test_rmsnorm_is_f_normalize():
    """RMSNorm = F.normalize(x, dim=1) * g * sqrt(C) (lucidrains' / the original DiffCast's), to float round-off,
    forward and backward, including all-zero pixels (F.normalize's eps: 0, not NaN)."""
    from diffcast.models.diffusion.layers import RMSNorm

    g = torch.Generator().manual_seed(0)
    norm = RMSNorm(6)
    with torch.no_grad():
        norm.g.add_(torch.randn(norm.g.shape, generator=g))
    x = (torch.randn(3, 6, 5, 7, generator=g) * 10).requires_grad_()
    with torch.no_grad():
        x[0, :, 0, 0] = 0
    ref = F.normalize(x, dim=1) * norm.g * 6**0.5
    out = norm(x)
    assert torch.isfinite(out).all() and (out[0, :, 0, 0] == 0).all()
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    w = torch.randn(out.shape, generator=g)
    (gx,) = torch.autograd.grad((out * w).sum(), x)
    (gr,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(gx, gr, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(norm(x.detach()), ref.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_denoiser_fast_path_bit_identical_to_reference(model16, mode):
    args = _denoiser_args(model16)
    with torch.no_grad():
        ref = ref_gtunet(model16.model, *args)
    ctx_mgr = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
    with ctx_mgr:
        out = model16.model(*args)
    assert torch.equal(out, ref)
    # the inputs are not touched by the in-place updates
    assert torch.equal(args[0], _denoiser_args(model16)[0]) and torch.equal(args[3][0], _denoiser_args(model16)[3][0])


def test_phase_dilated_unet_equals_native_dilated_to_round_off(model16, monkeypatch):
    args = _denoiser_args(model16)
    with torch.inference_mode():
        fast = model16.model(*args)
        monkeypatch.setattr(TemporalAttentionModule, "phase_dilated", False)
        native = model16.model(*args)
    assert not torch.equal(fast, native)  # the switch does change the computation path
    torch.testing.assert_close(fast, native, rtol=1e-5, atol=1e-5)


def test_training_path_unchanged_and_differentiable(model16):
    """With autograd on, the out-of-place path runs: same numbers, gradients flow."""
    args = _denoiser_args(model16)
    with torch.no_grad():
        ref = ref_gtunet(model16.model, *args)
    out = model16.model(*args)
    assert torch.equal(out, ref.detach())
    out.square().mean().backward()
    grads = [p.grad for p in model16.model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_context_encoder_bit_identical_to_reference(model16):
    x, _ = _inputs(model16)
    frames = torch.cat((x, model16.backbone_net(x)), dim=1).detach() * 2 - 1
    with torch.no_grad():
        ref_g, ref_l = ref_context(model16.ctx_net, frames, model16.local_index)
    with torch.inference_mode():
        g, loc = model16.ctx_net(frames, model16.local_index)
    assert all(torch.equal(a, b) for a, b in zip(g, ref_g))
    assert all(torch.equal(a, b) for a, b in zip(loc, ref_l))


@pytest.mark.parametrize("sampler", ["ddim", "unipc"])
def test_sample_default_path_bit_identical_to_reference(model16, sampler):
    x, noise = _inputs(model16)
    ref_fc, ref_res = ref_sample(model16, x, noise, steps=3, sampler=sampler)
    out = model16.sample(x, noise=noise, steps=3, sampler=sampler)
    assert torch.equal(out.forecast[0], ref_fc)
    assert torch.equal(out.residual[0], ref_res)


def test_sample_returns_ordinary_tensors(model16):
    x, noise = _inputs(model16)
    out = model16.sample(x, noise=noise, steps=2)
    for t in (out.forecast, out.mu, out.residual):
        assert not t.is_inference()
        assert not t.requires_grad
    out.forecast.mul_(1.0)  # in-place use outside inference mode must work
    (out.forecast * torch.ones(1, requires_grad=True)).sum().backward()


def test_flags_off_by_default(model16, monkeypatch):
    params = inspect.signature(ResidualDiffusion.sample).parameters
    assert params["compile"].default is False
    assert params["autocast_dtype"].default is None

    def boom(*a, **k):
        raise AssertionError("autocast / compile used on the default path")

    monkeypatch.setattr(torch, "autocast", boom)
    monkeypatch.setattr(torch, "compile", boom)
    x, noise = _inputs(model16)
    model16.sample(x, noise=noise, steps=2)
    assert model16._compiled == {}
    assert not any("_compiled" in k or "_orig_mod" in k for k in model16.state_dict())


def test_bf16_autocast_bounded_change(model16):
    """bf16 autocast of the denoiser: forecasts move, but by a bounded amount (measured ~0.02)."""
    x, noise = _inputs(model16)
    a = model16.sample(x, noise=noise, steps=4)
    b = model16.sample(x, noise=noise, steps=4, autocast_dtype="bf16")
    c = model16.sample(x, noise=noise, steps=4, autocast_dtype=torch.bfloat16)
    assert b.forecast.dtype == torch.float32 and b.residual.dtype == torch.float32
    assert torch.equal(b.forecast, c.forecast)
    diff = (a.forecast - b.forecast).abs()
    assert 0 < diff.max().item() < 0.1, diff.max().item()
    assert diff.mean().item() < 0.02, diff.mean().item()
    # same as the default when asked for float32
    d = model16.sample(x, noise=noise, steps=4, autocast_dtype="float32")
    assert torch.equal(a.forecast, d.forecast)


def test_bf16_warns_without_native_bf16(model16, monkeypatch):
    """On a CPU without AVX512-BF16 / AMX bf16 autocast is many times slower: sampling says so; float32 is silent."""
    import warnings

    from diffcast.models.diffusion import residual

    assert isinstance(residual.cpu_has_native_bf16(), bool)  # torch's answer on this machine
    x, noise = _inputs(model16)
    monkeypatch.setattr(residual, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="AVX512-BF16 or AMX"):
        model16.sample(x, noise=noise, steps=1, autocast_dtype="bf16")
    monkeypatch.setattr(residual, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model16.sample(x, noise=noise, steps=1, autocast_dtype="bf16")
        model16.sample(x, noise=noise, steps=1)


def test_flag_validation(model16):
    x, _ = _inputs(model16)
    with pytest.raises(ValueError, match="autocast_dtype"):
        model16.sample(x, steps=1, autocast_dtype="int8")
    with pytest.raises(ValueError, match="compile"):
        model16.sample(x, steps=1, compile="yes")


def test_compile_failure_is_clear(model16, monkeypatch):
    class OptimizedModule:  # stands in for torch._dynamo's wrapper when the backend fails
        def __init__(self, mod):
            self.mod = mod

        def __call__(self, *a, **k):
            raise OSError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda mod, **kw: OptimizedModule(mod))
    x, _ = _inputs(model16)
    with pytest.raises(RuntimeError, match=r"compile=True\) failed.*no C\+\+ compiler.*without compile"):
        model16.sample(x, steps=1, compile=True)


@pytest.mark.slow
def test_compile_matches_eager():
    """torch.compile of the tiny denoiser (minutes on a CPU): agrees with eager to round-off."""
    model = tiny_model().eval()
    x, noise = _inputs(model)
    a = model.sample(x, noise=noise, steps=3)
    try:
        b = model.sample(x, noise=noise, steps=3, compile=True)
    except RuntimeError as err:
        pytest.skip(f"torch.compile unavailable here: {err}")
    torch.testing.assert_close(b.forecast, a.forecast, rtol=0, atol=1e-4)
    assert "_orig_mod" not in "".join(model.state_dict())
