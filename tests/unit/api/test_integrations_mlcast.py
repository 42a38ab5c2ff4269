"""The mlcast network adapter (issue 21, item 8), tested without the ``mlcast`` package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffcast
from diffcast.data.mlcast.synthetic import synthetic_rain
from diffcast.integrations.mlcast import MlcastNetwork, from_mlcast_values, to_mlcast_values
from diffcast.models import build_model
from diffcast.shipped import DEFAULT_SHIPPED, shipped_models
from diffcast.training.model_io import save_model_file

pytest.importorskip("pysteps")
pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = DEFAULT_SHIPPED  # the adapter's default, as diffcast.nowcast's (DiffCast over S-PROG)
needs_shipped = pytest.mark.skipif(SHIPPED not in shipped_models(), reason="the shipped radar model is not installed")
EXTRAPOLATION_MODEL = "radar_diffcast_extrapolation"  # the earlier default: DiffCast over extrapolation


def mlcast_normalized(rain: np.ndarray) -> np.ndarray:
    """mlcast's ``rainrate_to_normalized`` (mlcast.data.normalization), written out independently."""
    dbz = (10 * np.log10(200 * rain**1.6 + 1e-16)).clip(0, 60)
    return dbz / 30.0 - 1.0


def _rain(b: int = 2, t: int = 4, size: int = 32) -> np.ndarray:
    return np.stack([synthetic_rain(t, (size, size), seed=s) for s in range(b)]).astype(np.float64)


def test_value_convention_is_mlcasts():
    rain = np.array([0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 500.0])
    np.testing.assert_allclose(to_mlcast_values(rain), mlcast_normalized(rain), atol=1e-6)
    back = from_mlcast_values(mlcast_normalized(rain))
    wet = (rain > 0.04) & (rain < 200)  # above the 0 dBZ floor, below mlcast's 60 dBZ ceiling
    np.testing.assert_allclose(back[wet], rain[wet], rtol=1e-5)
    assert back[0] == 0.0 and back[1] == 0.0


@needs_shipped
@pytest.mark.parametrize("name", [SHIPPED, EXTRAPOLATION_MODEL])
def test_shipped_model_keeps_the_contract_and_equals_diffcast_nowcast(name):
    if name not in shipped_models():
        pytest.skip(f"{name} is not installed")
    net = MlcastNetwork.from_shipped(name, values="mm/h", prob_matching=None, seed=3)
    assert (net.t_in, net.t_out, net.timestep) == (4, 12, 5.0) and net.is_probabilistic
    assert sum(p.numel() for p in net.parameters()) > 0  # the network moves with .to(device)
    rain = _rain()
    x = torch.from_numpy(rain)[:, :, None].float()
    y = net(x, steps=2, ensemble_size=2)  # keywords, as mlcast's NowcastLightningModule calls its network
    assert y.shape == (2, 2, 2, 32, 32) and y.dtype == torch.float32 and torch.isfinite(y).all()
    for b in range(2):  # item b is sampled with seed + b
        ref = diffcast.nowcast(rain[b].astype(np.float32), n_leadtimes=2, n_ens_members=2, seed=3 + b,
                               model=name, prob_matching=None)
        got = y[b].numpy().transpose(1, 0, 2, 3)  # [steps, members, H, W] -> [members, steps, H, W]
        ok = np.isfinite(ref)  # diffcast.nowcast leaves the inflow NaN; the adapter keeps the model's values
        assert ok.mean() > 0.8
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-5, atol=1e-4)
    assert (y[:, :, 0] != y[:, :, 1]).any()  # two different members
    np.testing.assert_array_equal(net(x, 2, 2).numpy(), y.numpy())  # seeded: same input, same output


@needs_shipped
def test_mlcast_space_in_and_out():
    rain = _rain(b=1)
    x = torch.from_numpy(mlcast_normalized(rain))[:, :, None].float()
    y = MlcastNetwork(SHIPPED, seed=0, prob_matching=None)(x, 1, 3)
    assert y.shape == (1, 1, 3, 32, 32)
    assert y.min() >= -1.0 and y.max() <= 1.0 and torch.isfinite(y).all()
    ref = diffcast.nowcast(rain[0], n_leadtimes=1, n_ens_members=3, seed=0, model=SHIPPED, prob_matching=None)
    ok = np.isfinite(ref)
    got = y[0].numpy().transpose(1, 0, 2, 3)
    np.testing.assert_allclose(got[ok], mlcast_normalized(ref[ok]), atol=1e-4)  # float32 input and output
    # prob_matching="cdf" (the default): each member takes the last input frame's distribution
    matched = MlcastNetwork(SHIPPED, seed=0)(x, 1, 3)
    target = np.sort(x[0, -1, 0].numpy().ravel())

    def misfit(field):  # pysteps' matching leaves surplus dry pixels dry: compare the distributions on average
        return np.abs(np.sort(field.numpy().ravel()) - target).mean()

    for m in range(3):
        assert misfit(matched[0, 0, m]) < 0.02 < misfit(y[0, 0, m])
        assert matched[0, 0, m].max().item() == pytest.approx(target[-1], abs=1e-4)


def test_deterministic_model_repeats_its_one_member(tmp_path):
    mcfg = {"type": "backbone", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "persistence"}}
    path = save_model_file(tmp_path / "radar.safetensors", build_model(mcfg).state_dict(),
                           {"model": mcfg, "data": {"name": "radar"}})
    net = MlcastNetwork(str(path), values="mm/h")
    rain = _rain(b=1, t=3, size=24)  # another grid than trained: rebuilt for it
    rain[0, -1, :3] = np.nan  # NaN is no rain
    y = net(torch.from_numpy(rain)[:, :, None], steps=4, ensemble_size=3)
    assert y.shape == (1, 4, 3, 24, 24) and y.dtype == torch.float64
    last = np.nan_to_num(rain[0, -1])
    wet = last > 0.05
    for m in range(3):
        np.testing.assert_allclose(y[0, 3, m].numpy()[wet], last[wet], rtol=1e-4)
    assert (y[0, :, :, :3] == 0).all()


@needs_shipped
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda net: net(torch.zeros(1, 4, 1, 32, 32), steps=13, ensemble_size=1), "no autoregressive"),
        (lambda net: net(torch.zeros(1, 4, 2, 32, 32), steps=1, ensemble_size=1), "C = 1"),
        (lambda net: net(torch.zeros(4, 1, 32, 32), steps=1, ensemble_size=1), r"\[B, T_in, C, H, W\]"),
        (lambda net: net(torch.zeros(1, 2, 1, 32, 32), steps=1, ensemble_size=1), "needs 4 frames"),
        (lambda net: net(torch.zeros(1, 4, 1, 32, 32), steps=0, ensemble_size=1), ">= 1"),
    ],
)
def test_call_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(MlcastNetwork.from_shipped(SHIPPED))


@needs_shipped
def test_default_is_diffcast_nowcasts_default():
    assert MlcastNetwork.from_shipped().spec == MlcastNetwork().spec == DEFAULT_SHIPPED


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: MlcastNetwork.from_shipped("no_such_model"), "no shipped model"),
        (lambda: MlcastNetwork("no_such_model"), "unknown model"),
        (lambda: MlcastNetwork(SHIPPED, values="dBZ"), "values must be one of"),
        (lambda: MlcastNetwork(SHIPPED, prob_matching="mean"), "prob_matching"),
    ],
)
def test_build_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()
