"""Interface tests shared by every registered backbone (tiny presets, small frames)."""

from __future__ import annotations

import pytest
import torch
from bb_data import moving_blobs, single_thread  # noqa: F401 (autouse fixture)

from diffcast.models.backbones import BACKBONES, Backbone

# Tiny, fast construction arguments per backbone (beyond the shape keys).
TINY: dict[str, dict] = {
    "persistence": {},
    "extrapolation": {},
    "convgru": {"preset": "tiny"},
    "simvp": {"preset": "tiny"},
    "simvp_gsta_direct": {"preset": "tiny", "translator": "gsta", "mode": "direct"},
    "phydnet": {"preset": "tiny"},
    "earthformer": {"preset": "tiny"},
    "sprog": {"intensity": "vil", "scale": 255.0},
    "steps": {"intensity": "vil", "scale": 255.0},
}
#: pysteps' cascade methods fit an AR(2) model: three observed frames at least.
MIN_T_IN = {"sprog": 3, "steps": 3}
SHAPES = [(5, 20, 32, 32), (5, 10, 16, 24), (2, 4, 24, 16)]


def _name(key: str) -> str:
    return key.split("_")[0]


def _build(key: str, t_in=5, t_out=20, h=32, w=32, channels=1, **extra) -> Backbone:
    return BACKBONES.build(_name(key), t_in=t_in, t_out=t_out, channels=channels, height=h, width=w,
                           **{**TINY[key], **extra})


def test_every_registered_backbone_is_covered():
    # Other test modules register test-only stubs; the package's own backbones live in
    # diffcast.models.backbones and every one of them must be covered here.
    ours = {n for n in BACKBONES.names() if BACKBONES.get(n).__module__.startswith("diffcast.models.backbones.")}
    assert {"persistence", "extrapolation", "simvp", "phydnet", "convgru", "earthformer"} <= ours
    assert ours <= {_name(k) for k in TINY}


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("t_in,t_out,h,w", SHAPES)
def test_output_shape_and_dtype(key, t_in, t_out, h, w):
    if _name(key) not in BACKBONES:
        pytest.skip(f"{key} not registered")
    if t_in < MIN_T_IN.get(key, 1):
        with pytest.raises(ValueError, match="t_in >= 3"):
            _build(key, t_in, t_out, h, w)
        return
    torch.manual_seed(0)
    model = _build(key, t_in, t_out, h, w).eval()
    x = torch.rand(2, t_in, 1, h, w)
    with torch.no_grad():
        mu = model(x)
    assert mu.shape == (2, t_out, 1, h, w)
    assert mu.dtype == torch.float32
    assert torch.isfinite(mu).all()
    terms = model.loss(x, torch.rand(2, t_out, 1, h, w))
    assert {"loss", "mse"} <= set(terms)
    assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])


@pytest.mark.parametrize("key", ["convgru", "simvp", "extrapolation", "persistence"])
def test_two_channels(key):
    model = _build(key, 4, 4, 16, 16, channels=2).eval()
    x = torch.rand(1, 4, 2, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (1, 4, 2, 16, 16)


@pytest.mark.parametrize("key", sorted(TINY))
def test_gradients_reach_every_parameter(key):
    if _name(key) not in BACKBONES:
        pytest.skip(f"{key} not registered")
    torch.manual_seed(0)
    model = _build(key, 4, 8, 16, 16).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not model.trainable:
        assert params == []
        terms = model.loss(torch.rand(2, 4, 1, 16, 16), torch.rand(2, 8, 1, 16, 16))
        assert not terms["loss"].requires_grad
        return
    assert params
    x, y = torch.rand(2, 4, 1, 16, 16), torch.rand(2, 8, 1, 16, 16)
    model.loss(x, y)["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


@pytest.mark.parametrize("key", sorted(TINY))
def test_same_seed_same_output(key):
    if _name(key) not in BACKBONES:
        pytest.skip(f"{key} not registered")
    x = moving_blobs(batch=1, t=4, size=16)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = _build(key, 4, 4, 16, 16).eval()
        with torch.no_grad():
            outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    if any(p.requires_grad for p in model.parameters()):
        torch.manual_seed(124)
        other = _build(key, 4, 4, 16, 16).eval()
        with torch.no_grad():
            assert not torch.equal(other(x), outs[0])


@pytest.mark.parametrize("key", sorted(TINY))
def test_wrong_input_shape_raises(key):
    if _name(key) not in BACKBONES:
        pytest.skip(f"{key} not registered")
    model = _build(key, 4, 4, 16, 16)
    with pytest.raises(ValueError, match="expects x_in"):
        model(torch.rand(1, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="expects x_in"):
        model(torch.rand(1, 4, 1, 16, 8))


@pytest.mark.parametrize("name", ["convgru", "simvp", "phydnet", "earthformer", "persistence", "extrapolation"])
def test_unknown_kwargs_and_presets_raise(name):
    if name not in BACKBONES:
        pytest.skip(f"{name} not registered")
    with pytest.raises(ValueError, match="unknown"):
        BACKBONES.build(name, t_in=4, t_out=4, height=16, width=16, not_a_kwarg=3)
    if BACKBONES.get(name).PRESETS:
        with pytest.raises(ValueError, match="preset"):
            BACKBONES.build(name, t_in=4, t_out=4, height=16, width=16, preset="nope")


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("simvp", {"t_in": 5, "t_out": 12, "preset": "tiny", "mode": "iterated"}, "multiple of t_in"),
        ("simvp", {"preset": "tiny", "mode": "sideways"}, "mode"),
        ("simvp", {"preset": "tiny", "translator": "lstm"}, "translator"),
        ("simvp", {"preset": "tiny", "height": 15}, "divisible"),
        ("simvp", {"preset": "tiny", "n_t": 1}, "n_t"),
        ("convgru", {"preset": "tiny", "height": 20}, "divisible by 8"),
        ("convgru", {"preset": "tiny", "hidden": (8, 8)}, "hidden"),
        ("convgru", {"preset": "tiny", "kernel_size": 4}, "odd"),
        ("extrapolation", {"t_in": 1}, "at least 2"),
        ("extrapolation", {"motion_frames": 9}, "motion_frames"),
        ("persistence", {"t_out": 0}, "positive"),
        ("phydnet", {"preset": "tiny", "height": 18}, "divisible by 4"),
        ("earthformer", {"preset": "tiny", "height": 18}, "divisible"),
    ],
)
def test_invalid_configurations_raise(name, kwargs, match):
    if name not in BACKBONES:
        pytest.skip(f"{name} not registered")
    args = {"t_in": 5, "t_out": 10, "height": 16, "width": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        BACKBONES.build(name, **args)


def test_explicit_kwargs_override_preset():
    model = BACKBONES.build("simvp", t_in=5, t_out=5, height=16, width=16, preset="tiny", hid_s=4)
    assert model.config["hid_s"] == 4 and model.config["hid_t"] == BACKBONES.get("simvp").PRESETS["tiny"]["hid_t"]


def test_persistence_repeats_last_frame():
    x = torch.rand(2, 5, 1, 8, 8)
    mu = BACKBONES.build("persistence", t_in=5, t_out=3, height=8, width=8)(x)
    for k in range(3):
        torch.testing.assert_close(mu[:, k], x[:, -1])
