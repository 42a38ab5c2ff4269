"""The official-checkpoint converter: round trip in the published layout, aliases, rejections."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from diffusion_stubs import STUB, TEST_ARCH
from test_schedules import _original_sigmoid_betas  # same folder: the original code, written once

from diffcast.cli import main as cli_main
from diffcast.inference import Nowcaster
from diffcast.models.diffusion.convert import (
    OFFICIAL_CONFIG,
    convert_official,
    map_state_dict,
)
from diffcast.models.diffusion.schedules import schedule_buffers
from diffcast.models.factory import build_model
from diffcast.training.model_io import load_model_file

LISTING = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "official_state_dict_diffcast_phydnet.json"


def _tiny_config():
    return {
        "name": "tiny_official_layout",
        "data": {"name": "sevir"},
        "model": {
            "type": "diffcast",
            "t_in": 5,
            "t_out": 10,
            "channels": 1,
            "height": 8,
            "width": 8,
            "backbone": {"name": STUB},
            "diffusion": {"preset": "tiny", **TEST_ARCH, "sampler": "ddim", "sampling_steps": 3,
                          "timestep_spacing": "diffcast"},
        },
    }


def _original_schedule(timesteps=1000, start=-3, end=3, tau=1):
    """The 13 buffers of the original DiffCast ``GaussianDiffusion`` (sigmoid schedule, pred_v).

    Written out from the original code (denoising-diffusion-pytorch arithmetic) without
    calling diffcast: ``sigmoid(start/tau)`` and ``sigmoid(end/tau)`` are float32 0-dim
    tensors (the default dtype) inside a float64 formula; every buffer is a float64
    formula stored as float32. Returns ``(buffers, alphas_cumprod_float64)``.
    """
    betas = _original_sigmoid_betas(timesteps, start, end, tau)  # the original's beta arithmetic, verbatim

    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": torch.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": torch.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": torch.log(posterior_variance.clamp(min=1e-20)),
        "posterior_mean_coef1": betas * torch.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * torch.sqrt(alphas) / (1.0 - alphas_cumprod),
        "loss_weight": snr.clone() / (snr + 1),
    }
    return {k: v.to(torch.float32) for k, v in buffers.items()}, alphas_cumprod


class NotATensor:
    """Something torch.load(weights_only=True) refuses to unpickle."""


def _published_layout(sd, path, schedule="sigmoid", extra=None, buffers=None):
    """Write ``sd`` in the published layout; schedule buffers from ``buffers`` or diffcast's ``schedule``."""
    g = torch.Generator().manual_seed(1)
    ema_sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in sd.items()}
    if buffers is None:
        buffers = schedule_buffers(schedule, 1000, "v")
    ckpt = {
        "step": 123456,
        "epoch": 7,
        "model": {**buffers, **sd},
        "ema": {
            "initted": torch.tensor(True),
            "step": torch.tensor(99),
            **{f"ema_model.{k}": v for k, v in {**buffers, **ema_sd}.items()},
            **{f"online_model.{k}": v for k, v in {**buffers, **sd}.items()},
        },
        "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.99)}]},
        "scheduler": {"last_epoch": 7},
        **(extra or {}),
    }
    torch.save(ckpt, path)
    return ema_sd


@pytest.fixture
def tiny_ckpt(tmp_path):
    cfg = _tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in model.state_dict().items()}
    src = tmp_path / "diffcast_tiny.pt"
    ema_sd = _published_layout(sd, src)
    return cfg, sd, ema_sd, src


def test_roundtrip_model_weights(tiny_ckpt, tmp_path):
    cfg, sd, _, src = tiny_ckpt
    out = convert_official(src, tmp_path / "tiny.safetensors", config=cfg)
    state, config, metadata = load_model_file(out)
    assert config == cfg and metadata["weights"] == "model" and metadata["step"] == "123456"
    assert set(state) == set(sd) and not any(k in state for k in ("betas", "alphas_cumprod", "loss_weight"))
    nc = Nowcaster.from_checkpoint(out)
    for k, v in nc.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # outputs equal those of the model built directly from the random state dict
    direct = build_model(cfg["model"])
    direct.load_state_dict(sd)
    direct.eval()
    x = torch.rand(2, 5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, 2, 2, 5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    a = nc.predict(x, members=2, noise=noise).forecast
    b = direct.sample(x, members=2, noise=noise).forecast
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert nc.meta.name == "sevir"


def test_roundtrip_ema_weights(tiny_ckpt, tmp_path):
    cfg, sd, ema_sd, src = tiny_ckpt
    out = convert_official(src, tmp_path / "ema.safetensors", weights="ema", config=cfg)
    state, _, metadata = load_model_file(out)
    assert metadata["weights"] == "ema"
    for k in sd:
        assert torch.equal(state[k], ema_sd[k]), k


def test_rejects_files_that_are_not_checkpoints(tmp_path, tiny_ckpt):
    cfg, sd, _, _ = tiny_ckpt
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.pt is not a PyTorch checkpoint"):
        convert_official(text, tmp_path / "o.safetensors", config=cfg)
    other = tmp_path / "other.pt"
    torch.save({"weights": {"a": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match="other.pt is not a DiffCast training checkpoint.*'model'"):
        convert_official(other, tmp_path / "o.safetensors", config=cfg)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {k: v for k, v in list(sd.items())[:-3]}}, partial)
    with pytest.raises(ValueError, match="3 missing tensor"):
        convert_official(partial, tmp_path / "o.safetensors", config=cfg)
    shapes = tmp_path / "shapes.pt"
    bad = dict(sd)
    bad["model.final_conv.bias"] = torch.zeros(7)
    torch.save({"model": bad}, shapes)
    with pytest.raises(ValueError, match="shapes differ.*final_conv.bias"):
        convert_official(shapes, tmp_path / "o.safetensors", config=cfg)
    noema = tmp_path / "noema.pt"
    torch.save({"model": sd}, noema)
    with pytest.raises(ValueError, match="no 'ema' entry"):
        convert_official(noema, tmp_path / "o.safetensors", weights="ema", config=cfg)
    assert not (tmp_path / "o.safetensors").exists()


def test_rejects_pickled_objects_clearly(tmp_path, tiny_ckpt):
    cfg, sd, _, _ = tiny_ckpt
    src = tmp_path / "pickled.pt"
    _published_layout(sd, src, extra={"scheduler": NotATensor()})
    with pytest.raises(ValueError, match="weights_only=True.*pickled objects"):
        convert_official(src, tmp_path / "o.safetensors", config=cfg)


def _with_schedule(cfg, schedule):
    cfg = json.loads(json.dumps(cfg))
    if schedule is not None:
        cfg["model"]["diffusion"]["schedule"] = schedule
    return cfg


@pytest.mark.parametrize("config_schedule", [None, "sigmoid", "sigmoid_official"])
def test_converts_a_file_with_the_original_schedule_arithmetic(tiny_ckpt, tmp_path, caplog, config_schedule):
    """Buffers as the original code writes them (float32 sigmoid end points): converted with its exact schedule."""
    cfg, sd, _, _ = tiny_ckpt
    cfg = _with_schedule(cfg, config_schedule)
    buffers, abar64 = _original_schedule()
    src = tmp_path / "original.pt"
    _published_layout(sd, src, buffers=buffers)
    with caplog.at_level(logging.INFO, logger="diffcast.models.diffusion.convert"):
        out = convert_official(src, tmp_path / "o.safetensors", config=cfg)
    switched = config_schedule != "sigmoid_official"
    assert ("not of the config's" in caplog.text) == switched
    _, config, _ = load_model_file(out)
    assert config["model"]["diffusion"]["schedule"] == "sigmoid_official"
    model = Nowcaster.from_checkpoint(out).model
    # the model's float64 schedule (what every sampler uses) is the original's, to the last bit
    assert model.alphas_cumprod.dtype == torch.float64 and torch.equal(model.alphas_cumprod, abar64)
    assert torch.equal(model.loss_weight, buffers["loss_weight"])
    sampler = model.make_sampler()
    assert torch.equal(sampler.alphas_cumprod, abar64)
    assert torch.equal(sampler._sqrt_a, buffers["sqrt_alphas_cumprod"])
    assert torch.equal(sampler._sqrt_1ma, buffers["sqrt_one_minus_alphas_cumprod"])
    # and all 13 buffers recomputed from the written config equal the file's
    ours = schedule_buffers(config["model"]["diffusion"]["schedule"], 1000, "v")
    for name, value in buffers.items():
        assert torch.equal(ours[name], value), name


@pytest.mark.parametrize("config_schedule", [None, "sigmoid", "sigmoid_official"])
def test_converts_a_file_with_our_float64_sigmoid(tiny_ckpt, tmp_path, config_schedule):
    cfg, sd, _, _ = tiny_ckpt
    cfg = _with_schedule(cfg, config_schedule)
    src = tmp_path / "ours.pt"
    _published_layout(sd, src, schedule="sigmoid")
    out = convert_official(src, tmp_path / "o.safetensors", config=cfg)
    _, config, _ = load_model_file(out)
    assert config["model"]["diffusion"].get("schedule", "sigmoid") == "sigmoid"
    model = Nowcaster.from_checkpoint(out).model
    assert torch.equal(model.alphas_cumprod.float(), schedule_buffers("sigmoid", 1000, "v")["alphas_cumprod"])


def test_official_config_uses_the_original_schedule_arithmetic():
    assert OFFICIAL_CONFIG["model"]["diffusion"]["schedule"] == "sigmoid_official"


def test_exact_match_wins_when_both_sigmoid_variants_are_within_tolerance(tiny_ckpt, tmp_path):
    """With 10 steps the two arithmetics agree to ~1e-7: the bit-exact one is chosen."""
    cfg, sd, _, _ = tiny_ckpt
    cfg = _with_schedule(cfg, "sigmoid")
    cfg["model"]["diffusion"]["timesteps"] = 10
    buffers, abar64 = _original_schedule(10)
    assert torch.allclose(buffers["betas"], schedule_buffers("sigmoid", 10, "v")["betas"], rtol=1e-5, atol=1e-7)
    src = tmp_path / "short.pt"
    _published_layout(sd, src, buffers=buffers)
    out = convert_official(src, tmp_path / "o.safetensors", config=cfg)
    _, config, _ = load_model_file(out)
    assert config["model"]["diffusion"]["schedule"] == "sigmoid_official"
    assert torch.equal(Nowcaster.from_checkpoint(out).model.alphas_cumprod, abar64)


@pytest.mark.parametrize(
    ("config_schedule", "file_schedule"),
    [(None, "linear"), ("sigmoid_official", "linear"), ("sigmoid", "cosine"), ("linear", "original")],
)
def test_rejects_other_schedule(tmp_path, tiny_ckpt, config_schedule, file_schedule):
    """A genuinely different schedule is refused, whichever sigmoid arithmetic the config names."""
    cfg, sd, _, _ = tiny_ckpt
    cfg = _with_schedule(cfg, config_schedule)
    src = tmp_path / "other.pt"
    if file_schedule == "original":
        _published_layout(sd, src, buffers=_original_schedule()[0])
    else:
        _published_layout(sd, src, schedule=file_schedule)
    expected = config_schedule or "sigmoid"
    with pytest.raises(ValueError, match=f"'betas' buffer does not match the {expected} schedule.*another noise"):
        convert_official(src, tmp_path / "o.safetensors", config=cfg)
    assert not (tmp_path / "o.safetensors").exists()


def test_alias_resolution():
    w, b = torch.randn(3, 3), torch.randn(3)
    src = {
        "backbone_net.phycell.cell_list.0.w": w,
        "backbone_net.encoder.phycell.cell_list.0.w": w.clone(),
        "backbone_net.convcell.cell_list.0.b": b,
        "model.x": torch.ones(2),
    }
    # our model registers the phycell once (top level) and the convcell only under encoder
    target = {
        "backbone_net.phycell.cell_list.0.w": torch.zeros(3, 3),
        "backbone_net.encoder.convcell.cell_list.0.b": torch.zeros(3),
        "model.x": torch.zeros(2),
    }
    out = map_state_dict(dict(src), target)
    assert set(out) == set(target)
    assert torch.equal(out["backbone_net.phycell.cell_list.0.w"], w)
    assert torch.equal(out["backbone_net.encoder.convcell.cell_list.0.b"], b)
    # a model with both names gets both, from one tensor
    both = {**target, "backbone_net.convcell.cell_list.0.b": torch.zeros(3)}
    out = map_state_dict(dict(src), both)
    assert torch.equal(out["backbone_net.convcell.cell_list.0.b"], out["backbone_net.encoder.convcell.cell_list.0.b"])
    # aliases that differ are an inconsistent file
    src["backbone_net.encoder.phycell.cell_list.0.w"] = w + 1
    with pytest.raises(ValueError, match="aliased tensors"):
        map_state_dict(dict(src), target)


def test_cli_convert_official_errors(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00\x01")
    assert cli_main(["convert-official", str(bad), str(tmp_path / "o.safetensors")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert cli_main(["convert-official", str(bad), str(tmp_path / "o.bin")]) == 2
    assert ".safetensors" in capsys.readouterr().err


def test_official_config_builds_paper_model_matching_listing():
    """The paper model (PhyDNet backbone) has exactly the listing's non-buffer names and shapes."""
    if not LISTING.is_file():
        pytest.skip(f"{LISTING} not found")
    listing = json.loads(LISTING.read_text())
    model = build_model(OFFICIAL_CONFIG["model"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = {e["key"]: tuple(e["shape"]) for e in listing if e["key"] not in schedule_buffers("linear", 2)}
    assert ours == ref
    non_bb = {k for k in ours if not k.startswith("backbone_net.")}
    assert non_bb == {e["key"] for e in listing if e["kind"] == "param" and not e["key"].startswith("backbone_net.")}


@pytest.mark.slow
def test_paper_size_roundtrip_with_aliases(tmp_path):
    """A synthetic checkpoint in the published layout at paper size (aliases shared as in PhyDNet)."""
    if not LISTING.is_file():
        pytest.skip(f"{LISTING} not found")
    listing = json.loads(LISTING.read_text())
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for e in listing:
        if e["kind"] == "buffer" and not e["key"].startswith("backbone_net."):
            continue
        if e["alias_of"]:
            continue
        sd[e["key"]] = torch.randn(e["shape"], generator=g) * 0.02
    for e in listing:
        if e["alias_of"]:
            sd[e["key"]] = sd[e["alias_of"]]  # the same tensor, as torch.save stores it
    src = tmp_path / "diffcast_phydnet_sevir128.pt"
    buffers, abar64 = _original_schedule()
    _published_layout(sd, src, buffers=buffers)
    out = convert_official(src, tmp_path / "paper.safetensors")
    nc = Nowcaster.from_checkpoint(out)
    for k, v in nc.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert nc.model.sampling_steps == 250 and nc.model.timestep_spacing == "diffcast"
    assert torch.equal(nc.model.alphas_cumprod, abar64)
