"""Radar evaluation in rain rate: the mm/h encoding, re-encoding for models, and `diffcast evaluate --data radar`."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
import torch

from diffcast.cli import main
from diffcast.data.radar import RadarArchive
from diffcast.data.transforms import RADAR_DBZ_META, RADAR_RATE_META, dbz_to_rainrate, transcode

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("h5py")
pytest.importorskip("pysteps")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, helper_module):
    writer = helper_module("unit/training/test_radar_windows.py")
    root = tmp_path_factory.mktemp("odim_rate")
    writer.write_odim_archive(root, [datetime(2021, 6, d, 12) for d in (1, 2, 3)], n_frames=12, size=64)
    return root


def test_transcode_marshall_palmer_and_round_trip():
    dbz = np.array([0.0, 10.0, 23.0, 40.0, 55.0])
    x = (dbz / 90.0).astype(np.float32)
    rate = transcode(x, RADAR_DBZ_META, RADAR_RATE_META) * 200.0
    expected = np.where(dbz > 0, (10 ** (dbz / 10) / 200) ** (1 / 1.6), 0.0)  # Z = 200 R^1.6
    np.testing.assert_allclose(rate, expected, rtol=1e-5)
    np.testing.assert_allclose(rate[1:], dbz_to_rainrate(dbz[1:]), rtol=1e-5)
    back = transcode(transcode(x, RADAR_DBZ_META, RADAR_RATE_META), RADAR_RATE_META, RADAR_DBZ_META)
    np.testing.assert_allclose(back, x, atol=2e-6)
    t = transcode(torch.from_numpy(x), RADAR_DBZ_META, RADAR_RATE_META)
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), rate / 200.0)
    with pytest.raises(ValueError, match="no conversion"):
        from diffcast.data.transforms import SEVIR_META

        transcode(x, SEVIR_META, RADAR_DBZ_META)


def test_archive_in_mm_per_hour(archive):
    dbz = RadarArchive(archive, split="all", seq_len=6, size=None, stride=6)
    rate = RadarArchive(archive, split="all", seq_len=6, size=None, stride=6, units="mm/h")
    assert rate.meta.unit == "mm/h" and rate.model_meta.unit == "dBZ" and len(rate) == len(dbz)
    np.testing.assert_allclose(rate[0].numpy(), transcode(dbz[0].numpy(), dbz.meta, rate.meta))
    assert float(rate[0].max()) * 200.0 > 5.0  # heavy cells of the fixture are > 5 mm/h
    with pytest.raises(ValueError, match="unknown units"):
        RadarArchive(archive, split="all", seq_len=6, units="inch/h")


def test_evaluate_radar_scores_in_mm_per_hour(archive, tmp_path):
    from pysteps.verification import detcatscores

    out = tmp_path / "ev"
    rc = main(["evaluate", "-m", "persistence", "-m", "sprog", "--data", "radar", "--data-root", str(archive),
               "--split", "all", "--t-in", "3", "--t-out", "3", "--size", "48", "--fss-km", "2,8",
               "--no-plots", "--no-progress", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["dataset"]["unit"] == "mm/h" and res["dataset"]["thresholds"] == [0.5, 1.0, 5.0, 10.0]
    pers = res["models"]["persistence"]
    assert set(pers["csi"]) == {"0.5", "1", "5", "10"} and set(pers["fss"]) == {"2", "8"}
    # the CSI at 1 mm/h equals pysteps' on the same rain rates (persistence: last input frame vs each lead)
    ds = RadarArchive(archive, split="all", seq_len=6, size=48, resample="crop", units="mm/h")
    tables = [detcatscores.det_cat_fct_init(1.0) for _ in range(3)]  # one contingency table per lead time
    for i in range(len(ds)):
        seq = ds[i][:, 0].numpy() * 200.0
        for k in range(3):
            detcatscores.det_cat_fct_accum(tables[k], seq[2], seq[3 + k])
    by_lead = [detcatscores.det_cat_fct_compute(t, ["CSI"])["CSI"] for t in tables]
    np.testing.assert_allclose(pers["csi_by_lead"]["1"], by_lead, rtol=1e-6)
    assert "CRPS (mm/h)" in (out / "table.md").read_text()
    assert res["models"]["sprog"]["crps"] > 0
