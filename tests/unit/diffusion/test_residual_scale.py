"""``residual_scale``: the residual divided per forecast frame before the diffusion, multiplied back after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffcast.models import build_model
from diffcast.training.data import residual_rms

pytestmark = pytest.mark.usefixtures("one_thread")

T_IN, T_OUT = 4, 8
SCALE = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5]


def _model(scale=None, **kw):
    diff = {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 4, "patch": 2, **kw}
    if scale is not None:
        diff["residual_scale"] = scale
    torch.manual_seed(0)
    return build_model({"type": "diffcast", "t_in": T_IN, "t_out": T_OUT, "channels": 1, "height": 16, "width": 16,
                        "backbone": {"name": "persistence"}, "diffusion": diff})


def _data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, T_IN, 1, 16, 16, generator=g), torch.rand(2, T_OUT, 1, 16, 16, generator=g)


def test_training_target_is_the_residual_over_its_scale():
    plain, scaled = _model(), _model(SCALE)
    scaled.load_state_dict(plain.state_dict())
    x, y = _data()
    a = plain.training_segments(x, y, torch.Generator().manual_seed(3))
    b = scaled.training_segments(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(a.idx, b.idx)
    # segment rows are segment-major: row = seg * B + b; frames of segment k are k*4 .. k*4+3
    s = torch.tensor(SCALE).view(2, 4)[a.idx].view(-1, 4, 1, 1, 1)
    torch.testing.assert_close(b.x0, a.x0 / s)
    torch.testing.assert_close(b.cond[a.idx > 0], (a.cond / torch.tensor(SCALE).view(2, 4)[a.idx - 1].view(
        -1, 4, 1, 1, 1))[a.idx > 0])
    assert not torch.equal(b.x0, a.x0)


def test_sampled_residual_is_scaled_back_per_frame():
    """Same weights and noise, no x0 clamp: the scaled model runs the same trajectory in the
    normalised space, so its residual is the plain model's times the scale of each frame."""
    plain, scaled = _model(), _model(SCALE)
    scaled.load_state_dict(plain.state_dict())
    x, _ = _data()
    noise = torch.randn(2, 3, 2, 4, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    a = plain.sample(x, members=3, steps=4, noise=noise, clip_x0=False)
    b = scaled.sample(x, members=3, steps=4, noise=noise, clip_x0=False)
    s = torch.tensor(SCALE).view(1, 1, T_OUT, 1, 1, 1)
    torch.testing.assert_close(b.residual, a.residual * s)
    mu_n = b.mu.unsqueeze(0) * 2 - 1
    torch.testing.assert_close(b.forecast, ((mu_n + b.residual + 1) / 2).clamp(0, 1))


def test_x0_clamp_bounds_the_unscaled_residual_at_the_smallest_scale():
    m = _model(SCALE)
    assert m.make_sampler().clip_range == pytest.approx(1 / 0.1)
    assert _model().make_sampler().clip_range == 1.0


def test_a_single_number_applies_to_every_frame():
    m = _model(0.2)
    assert m.config["residual_scale"] == [0.2] * T_OUT
    torch.testing.assert_close(m.residual_scale, torch.full((T_OUT,), 0.2))


@pytest.mark.parametrize("bad, message", [
    ("auto", "resolved from the training data by diffcast train"),
    ([0.1] * 3, "one value per forecast frame"),
    ([0.1] * 7 + [0.0], "finite and > 0"),
    ([0.1] * 7 + [float("nan")], "finite and > 0"),
    (["a"] * T_OUT, "list of numbers"),
])
def test_bad_scales_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        _model(bad)


def test_the_scale_is_not_a_weight():
    m = _model(SCALE)
    assert "residual_scale" not in m.state_dict()
    assert _model().state_dict().keys() == m.state_dict().keys()


class _Cache(torch.utils.data.Dataset):
    """Items of t_in + 2 t_out frames: inputs, truth, mu; truth - mu = c_k (+ NaN where no data)."""

    def __init__(self, c, n=5, with_mu=True, nan=False):
        self.c, self.n, self.with_mu, self.nan = c, n, with_mu, nan

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        mu = torch.rand(T_OUT, 1, 8, 8, generator=g) * 0.5
        y = mu + torch.tensor(self.c, dtype=torch.float32).view(-1, 1, 1, 1)
        if self.nan:
            y[:, :, :2] = float("nan")
        x = torch.rand(T_IN, 1, 8, 8, generator=g)
        return torch.cat([x, y, mu] if self.with_mu else [x, y])


def test_residual_rms_of_a_known_residual():
    c = np.linspace(-0.2, 0.3, T_OUT)
    np.testing.assert_allclose(residual_rms(_Cache(c), T_IN, T_OUT), 2 * np.abs(c), atol=1e-5)
    # no-data pixels (NaN) are left out, not counted as zero
    np.testing.assert_allclose(residual_rms(_Cache(c, nan=True), T_IN, T_OUT), 2 * np.abs(c), atol=1e-5)


def test_residual_rms_needs_the_backbone_mu():
    with pytest.raises(ValueError, match="backbone cache"):
        residual_rms(_Cache([0.1] * T_OUT, with_mu=False), T_IN, T_OUT)
    with pytest.raises(ValueError, match="exact on the training data"):
        residual_rms(_Cache([0.1] * 4 + [0.0] * 4), T_IN, T_OUT)
