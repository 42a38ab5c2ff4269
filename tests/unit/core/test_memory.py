"""The memory estimate and cap of DiffCast nowcasts (issue 16): members in turns, same numbers."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import torch

import diffcast
from diffcast import memory
from diffcast.cli import main
from diffcast.inference import Nowcaster
from diffcast.models import build_model
from diffcast.training.model_io import save_model_file

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("pysteps")

MCFG = {"type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
        "backbone": {"name": "extrapolation"},
        "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                      "attn_dim_head": 8, "ta_kernel": 7, "sampling_steps": 2}}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mem") / "dc.safetensors"
    return save_model_file(path, build_model(MCFG).state_dict(), {"model": MCFG, "data": {"name": "radar"}})


@pytest.mark.parametrize("text, expect", [("4G", 4 * 2**30), ("3.5GiB", int(3.5 * 2**30)), ("800M", 800 * 2**20),
                                          ("2GB", 2 * 10**9), ("512 k", 512 * 1024), (10**9, 10**9)])
def test_parse_size(text, expect):
    assert memory.parse_size(text) == expect


@pytest.mark.parametrize("text, match", [("4", "no unit"), ("lots", "cannot read"), ("4X", "cannot read"),
                                         ("0G", "positive"), (-5, "positive"), (True, "number of bytes")])
def test_parse_size_errors(text, match):
    with pytest.raises(ValueError, match=match):
        memory.parse_size(text)


def test_live_tensor_bytes_counts_what_is_alive():
    x = torch.ones(1024)  # before: not counted
    with memory.LiveTensorBytes() as m:
        y = x * 2  # 4 KiB
        z = y + 1  # 8 KiB live
        del y
        w = z * 3  # 8 KiB live again (y freed)
        del z, w
    assert m.peak == 2 * 4096 and m.current == 0


def test_probe_predicts_a_larger_grid(model_file):
    """Measured on the probe grid and scaled by area, against the same measurement on the large grid."""
    nc = Nowcaster.from_checkpoint(model_file, grid=(128, 96))
    fixed, per_chunk, per_member = memory.probe_sample_bytes(nc.model, 128, 96)
    assert memory._probe_grid(nc.model, 128, 96) == (64, 64) and per_chunk > 0
    x = torch.rand(1, 3, 1, 128, 96) * 0.5
    with torch.inference_mode(), memory.LiveTensorBytes() as m:
        nc.model.sample(x, members=3, member_chunk=2, steps=1, generator=torch.Generator().manual_seed(0))
    predicted = fixed + 2 * per_chunk + 3 * per_member
    assert 0.75 < predicted / m.peak < 1.35, (predicted, m.peak)
    # and a small grid is measured as it is
    assert memory._probe_grid(nc.model, 48, 40) == (48, 40)
    # measured once per model and grid (a watch loop does not pay it every cycle)
    assert memory.probe_sample_bytes(nc.model, 128, 96) is memory.probe_sample_bytes(nc.model, 128, 96)


def test_cap_changes_the_schedule_not_the_numbers(model_file):
    nc = Nowcaster.from_checkpoint(model_file, grid=(64, 64))
    probe = memory.probe_sample_bytes(nc.model, 64, 64)
    roomy = memory.plan_members(nc.model, 64, 64, 4, cap=2**40, probe=probe, baseline=2**28)
    assert roomy.member_chunk == 4 and roomy.baseline == 2**28
    base = roomy.estimate - roomy.per_chunk_member * 4
    tight = memory.plan_members(nc.model, 64, 64, 4, cap=base + roomy.per_chunk_member + 4096, probe=probe,
                                baseline=2**28)
    assert tight.member_chunk == 1 and tight.estimate <= tight.cap
    two = memory.plan_members(nc.model, 64, 64, 4, cap=base + 2 * roomy.per_chunk_member + 4096, probe=probe,
                              baseline=2**28)
    assert two.member_chunk == 2
    rng = np.random.default_rng(0)
    precip = np.clip(rng.gamma(1.0, 3.0, size=(3, 64, 64)) - 1.0, 0, None)
    kw = {"n_leadtimes": 4, "n_ens_members": 4, "seed": 3, "model": str(model_file), "prob_matching": None}
    a = diffcast.nowcast(precip, max_memory=2**40, **kw)  # all 4 members at once
    b = diffcast.nowcast(precip, member_chunk=1, **kw)  # one at a time
    # the same members, to the float round-off of batched convolutions
    assert np.array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(memory.MemoryCapError, match="even one member at a time"):
        memory.plan_members(nc.model, 64, 64, 4, cap=1024, probe=probe, baseline=2**28)
    with pytest.raises(memory.MemoryCapError, match="member chunk 4"):
        memory.plan_members(nc.model, 64, 64, 4, cap=tight.cap, member_chunk=4, probe=probe, baseline=2**28)


def test_cli_refuses_before_any_work(tmp_path, model_file, helper_module):
    writer = helper_module("unit/training/test_radar_windows.py")
    folder = tmp_path / "odim"
    writer.write_odim_archive(folder, [datetime(2021, 6, 1, 12)], n_frames=4, size=40)
    out = tmp_path / "nc"
    args = ["nowcast", "--checkpoint", str(model_file), "--input", str(folder), "--members", "3", "--seed", "0",
            "--out", str(out)]
    assert main(args + ["--max-memory", "1M"]) == 2
    assert not out.exists()  # nothing written, not even a partial folder
    assert main(args + ["--max-memory", "lots"]) == 2
    assert main(args + ["--max-memory", "64G"]) == 0
    import json

    info = json.loads((out / "run.json").read_text())
    assert info["memory"]["member_chunk"] == 3 and info["memory"]["cap_bytes"] == 64 * 2**30
    assert info["memory"]["estimate_bytes"] < info["memory"]["cap_bytes"]
