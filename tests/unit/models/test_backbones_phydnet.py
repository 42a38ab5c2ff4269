"""PhyDNet specifics: moment matrices, moment loss, the inference schedule, teacher forcing."""

from __future__ import annotations

import math

import pytest
import torch
from bb_data import single_thread  # noqa: F401 (autouse fixture)

from diffcast.models.backbones import BACKBONES
from diffcast.models.backbones.phydnet import K2M, moment_constraints


def _moments_by_loop(kernel: torch.Tensor) -> torch.Tensor:
    """Independent reference: m[i, j] = sum_pq k[p, q] (p - c)^i (q - c)^j / (i! j!)."""
    n = kernel.shape[-1]
    c = (n - 1) // 2
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            s = 0.0
            for p in range(n):
                for q in range(n):
                    s += float(kernel[p, q]) * (p - c) ** i * (q - c) ** j
            out[i, j] = s / (math.factorial(i) * math.factorial(j))
    return out


def test_k2m_matches_definition_and_inverts():
    k2m = K2M((7, 7))
    kernel = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(k2m(kernel), _moments_by_loop(kernel))
    torch.testing.assert_close(k2m.inverse(k2m(kernel)), kernel)
    batch = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(k2m(batch)[1, 0], _moments_by_loop(batch[1, 0]))


def test_k2m_of_finite_difference_stencils():
    k2m = K2M((3, 3))
    identity = torch.zeros(3, 3, dtype=torch.float64)
    identity[1, 1] = 1
    m = k2m(identity)
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected[0, 0] = 1
    torch.testing.assert_close(m, expected)
    # central difference along the first axis: moments (1, 0) = 1 only
    d0 = torch.zeros(3, 3, dtype=torch.float64)
    d0[2, 1], d0[0, 1] = 0.5, -0.5
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected[1, 0] = 1
    torch.testing.assert_close(k2m(d0), expected)


def test_moment_loss_is_zero_for_constrained_filters():
    model = BACKBONES.build("phydnet", t_in=3, t_out=2, height=16, width=16, preset="tiny")
    conv1 = model.phycell.cell_list[0].F.conv1
    target = model.k2m.inverse(moment_constraints(7).double())  # (49, 7, 7)
    with torch.no_grad():
        conv1.weight.copy_(target[:, None].expand_as(conv1.weight).float())
    assert model.moment_loss().item() < 1e-8
    with torch.no_grad():
        conv1.weight.add_(0.01)
    assert model.moment_loss().item() > 1e-4


def test_moment_loss_equals_per_channel_sum():
    model = BACKBONES.build("phydnet", t_in=3, t_out=2, height=16, width=16, preset="tiny")
    w = model.phycell.cell_list[0].F.conv1.weight
    c = moment_constraints(7)
    ref = sum(torch.mean((model.k2m(w[:, b].double()).float() - c) ** 2) for b in range(w.shape[1]))
    torch.testing.assert_close(model.moment_loss(), ref)


def test_rollout_schedule_matches_manual_steps():
    torch.manual_seed(0)
    model = BACKBONES.build("phydnet", t_in=4, t_out=3, height=16, width=16, preset="tiny").eval()
    x = torch.rand(2, 4, 1, 16, 16)
    with torch.no_grad():
        mu = model(x)
        phy, lstm = model.init_states(x[:, 0])
        for t in range(3):
            _, phy, lstm = model.encoder(x[:, t], phy, lstm)
        frame, outs = x[:, 3], []
        for _ in range(3):
            frame, phy, lstm = model.encoder(frame, phy, lstm)
            outs.append(frame)
    torch.testing.assert_close(mu, torch.stack(outs, 1), rtol=0, atol=0)
    assert (mu > 0).all() and (mu < 1).all()


def test_teacher_forcing_feeds_truth_only_in_training():
    torch.manual_seed(0)
    model = BACKBONES.build("phydnet", t_in=3, t_out=4, height=16, width=16, preset="tiny")
    x, y = torch.rand(1, 3, 1, 16, 16), torch.rand(1, 4, 1, 16, 16)
    model.train()
    free, _ = model.forward_with_loss(x, y, teacher_forcing=0.0)
    forced, terms = model.forward_with_loss(x, y, teacher_forcing=1.0)
    torch.testing.assert_close(free[:, 0], forced[:, 0])
    assert not torch.allclose(free[:, 1:], forced[:, 1:])
    assert set(terms) == {"loss", "mse", "moment"}
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["moment"])
    model.eval()
    with torch.no_grad():
        ev, _ = model.forward_with_loss(x, y, teacher_forcing=1.0)
        torch.testing.assert_close(ev, model(x))
    with pytest.raises(ValueError, match="teacher_forcing"):
        model.forward_with_loss(x, y, teacher_forcing=2.0)


def test_patch_size_two():
    model = BACKBONES.build("phydnet", t_in=2, t_out=2, height=8, width=12, preset="tiny", patch_size=2)
    assert model(torch.rand(1, 2, 1, 8, 12)).shape == (1, 2, 1, 8, 12)
