"""SimVP modes and translators; parameter counts reported by ``diffcast info``."""

from __future__ import annotations

import pytest
import torch
from bb_data import single_thread  # noqa: F401 (autouse fixture)

from diffcast.cli.info import backbone_parameters
from diffcast.models.backbones import BACKBONES


@pytest.mark.parametrize("translator", ["incepu", "gsta"])
def test_iterated_mode_feeds_its_own_output_back(translator):
    torch.manual_seed(0)
    model = BACKBONES.build("simvp", t_in=3, t_out=9, height=16, width=16, preset="tiny", translator=translator).eval()
    x = torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        mu = model(x)
        first = model.step(x)
        second = model.step(first)
        third = model.step(second)
    torch.testing.assert_close(mu, torch.cat([first, second, third], 1), rtol=0, atol=0)


def test_direct_mode_is_one_pass_with_any_lengths():
    torch.manual_seed(0)
    model = BACKBONES.build("simvp", t_in=5, t_out=7, height=16, width=16, preset="tiny", mode="direct").eval()
    x = torch.rand(1, 5, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.step(x))
    assert model.hid.dec[-1].layers[0].conv.out_channels == 7 * model.config["hid_s"]


def test_output_is_not_squashed():
    torch.manual_seed(0)
    model = BACKBONES.build("simvp", t_in=2, t_out=2, height=8, width=8, preset="tiny")
    with torch.no_grad():
        model.dec.readout.bias.fill_(5.0)
        assert model(torch.rand(1, 2, 1, 8, 8)).min() > 1.0


def test_info_reports_preset_parameter_counts():
    counts = backbone_parameters("phydnet")
    assert counts["paper"] == 3_091_732 and 0 < counts["tiny"] < counts["paper"]
    assert backbone_parameters("persistence") == {"default": 0}
