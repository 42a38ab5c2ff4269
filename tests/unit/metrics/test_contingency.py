import json

import numpy as np
import pytest
import torch
from pysteps.verification.detcatscores import det_cat_fct

from diffcast.metrics import Evaluator, contingency_counts, max_pool_frames, scores_from_counts

THR = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)


def test_textbook_contingency_table():
    # hits 82, false alarms 38, misses 23, correct negatives 222 (Wilks' textbook example)
    counts = torch.tensor([82.0, 23.0, 38.0, 222.0], dtype=torch.float64)
    s = scores_from_counts(counts)
    assert float(s["csi"]) == pytest.approx(0.573426, abs=1e-6)
    assert float(s["hss"]) == pytest.approx(0.608871, abs=1e-6)
    assert float(s["pod"]) == pytest.approx(82 / 105)
    assert float(s["far"]) == pytest.approx(38 / 120)
    # scale invariance: averaged counts give the same scores as summed counts
    s2 = scores_from_counts(counts / 7.0)
    for k in s:
        assert float(s2[k]) == pytest.approx(float(s[k]), rel=1e-12)


def test_counts_single_frame_match_pysteps():
    rng = np.random.default_rng(1)
    obs = (rng.random((1, 1, 37, 29)) * 255).astype(np.float32)
    pred = np.clip(obs + rng.normal(0, 40, obs.shape), 0, 255).astype(np.float32)
    counts = contingency_counts(torch.from_numpy(obs), torch.from_numpy(pred), torch.tensor(THR))
    scores = scores_from_counts(counts)
    for i, thr in enumerate(THR):
        ref = det_cat_fct(pred[0, 0], obs[0, 0], thr, scores=["CSI", "POD", "FAR", "HSS"])
        for key in ("csi", "pod", "far", "hss"):
            assert float(scores[key][0, i]) == pytest.approx(ref[key.upper()], abs=1e-12), (key, thr)
        # and the raw counts
        oe, pe = obs[0, 0] >= thr, pred[0, 0] >= thr
        expect = [np.sum(oe & pe), np.sum(oe & ~pe), np.sum(~oe & pe), np.sum(~oe & ~pe)]
        assert counts[0, i].tolist() == expect


def test_counts_are_per_lead_and_summed_over_samples():
    rng = np.random.default_rng(2)
    obs = torch.from_numpy((rng.random((3, 4, 1, 8, 8)) * 255).astype(np.float32))
    pred = torch.from_numpy((rng.random((3, 4, 1, 8, 8)) * 255).astype(np.float32))
    counts = contingency_counts(obs, pred, torch.tensor(THR))
    assert counts.shape == (4, len(THR), 4)
    assert torch.all(counts.sum(-1) == 3 * 64)
    one = contingency_counts(obs[:, 2:3], pred[:, 2:3], torch.tensor(THR))
    assert torch.equal(one[0], counts[2])


def test_boundary_value_is_an_event():
    obs = torch.full((1, 1, 1, 2, 2), 16.0)
    pred = torch.tensor([15.999, 16.0, 74.0, 0.0]).view(1, 1, 1, 2, 2)
    c = contingency_counts(obs, pred, torch.tensor([16.0, 74.0]))
    assert c[0, 0].tolist() == [2, 2, 0, 0]  # >= threshold counts
    assert c[0, 1].tolist() == [0, 0, 1, 3]


@pytest.mark.parametrize("h,w,k", [(16, 16, 4), (18, 13, 4), (40, 36, 16), (5, 7, 1)])
def test_max_pool_matches_numpy_blocks(h, w, k):
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, h, w)).astype(np.float32)
    got = max_pool_frames(torch.from_numpy(x), k).numpy()
    ph, pw = (-h) % k, (-w) % k
    pad = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)))
    ref = pad.reshape(2, 3, (h + ph) // k, k, (w + pw) // k, k).max(axis=(3, 5))
    np.testing.assert_array_equal(got, ref)


def test_perfect_forecast_scores():
    y = np.random.default_rng(4).random((2, 3, 1, 32, 32)).astype(np.float32)
    ev = Evaluator(THR, scale=255.0)
    ev.update(y, y)
    r = ev.compute()
    for k in map(lambda t: f"{t:g}", THR):
        assert r["csi"][k] == 1.0 and r["pod"][k] == 1.0 and r["far"][k] == 0.0 and r["hss"][k] == 1.0
    assert r["csi_m"] == 1.0 and r["hss_m"] == 1.0 and r["csi_pool4_m"] == 1.0 and r["csi_pool16_m"] == 1.0
    assert r["mse"] == 0.0 and r["mae"] == 0.0 and r["rmse"] == 0.0
    assert r["psnr"] == 100.0  # capped, never inf
    assert r["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert r["crps"] == 0.0


def test_empty_events_give_defined_values():
    zeros = np.zeros((2, 3, 1, 16, 16), np.float32)
    ev = Evaluator(THR, scale=255.0, fss_scales=(1, 4))
    ev.update(zeros, zeros)
    r = ev.compute()
    text = json.dumps(r, allow_nan=False)  # raises on NaN / inf
    assert "NaN" not in text
    assert r["csi_m"] == 0.0 and r["hss_m"] == 0.0  # published convention: undefined -> 0
    assert all(e == {"obs": 0.0, "fcst": 0.0, "hits": 0.0} for e in r["events"].values())
    ev1 = Evaluator(THR, scale=255.0, empty_value=1.0)
    ev1.update(zeros, zeros)
    assert ev1.compute()["csi_m"] == 1.0


def test_events_counts_reported():
    y = np.zeros((1, 2, 1, 4, 4), np.float32)
    y[0, 0, 0, 0, 0] = 0.5  # 127.5: an event at 16 and 74 only
    p = np.zeros_like(y)
    ev = Evaluator((16.0, 74.0, 133.0), scale=255.0, pool_sizes=())
    ev.update(y, p)
    r = ev.compute()
    assert r["events"]["16"] == {"obs": 1.0, "fcst": 0.0, "hits": 0.0}
    assert r["events"]["133"]["obs"] == 0.0
    assert r["csi_by_lead"]["16"] == [0.0, 0.0]
    assert r["far"]["16"] == 0.0 and r["pod"]["16"] == 0.0
