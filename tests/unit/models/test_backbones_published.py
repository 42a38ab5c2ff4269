"""The published DiffCast backbone layouts (SimVP, PhyDNet) load into our modules."""

from __future__ import annotations

import pytest
import torch
from bb_data import single_thread  # noqa: F401 (autouse fixture)
from bb_listing import listed_parameter_count, listing, random_state_dict

from diffcast.models.backbones import BACKBONES
from diffcast.models.factory import count_parameters


@pytest.mark.parametrize("name,expected", [("phydnet", 3_091_732), ("simvp", 11_063_105)])
def test_paper_preset_loads_published_layout(name, expected):
    entries = listing(name)
    model = BACKBONES.build(name, t_in=5, t_out=20, channels=1, height=128, width=128, preset="paper")
    assert listed_parameter_count(entries) == expected
    assert count_parameters(model) == expected
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = {e["key"][len("backbone_net."):]: tuple(e["shape"]) for e in entries}
    assert ours == ref
    state = random_state_dict(entries)
    model.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        assert value.dtype == state[key].dtype, key
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_phydnet_aliases_share_storage():
    model = BACKBONES.build("phydnet", t_in=5, t_out=20, preset="paper")
    sd = model.state_dict()
    assert sd["encoder.phycell.cell_list.0.F.conv1.weight"].data_ptr() == sd["phycell.cell_list.0.F.conv1.weight"].data_ptr()
    assert sd["encoder.convcell.cell_list.2.conv.bias"].data_ptr() == sd["convcell.cell_list.2.conv.bias"].data_ptr()
    assert sd["k2m._M0"].dtype == torch.float64
