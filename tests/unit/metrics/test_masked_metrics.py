"""Scores over the pixels with data (no-data masks): each equals the unmasked score of the covered part.

A rectangular covered region must score like the frames cropped to it (the rules of
:mod:`diffcast.metrics.nodata` are built for that), a mask that is True everywhere must
change nothing, bit for bit, and a window without data is skipped and counted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffcast.metrics import (
    Evaluator,
    fss_sums,
    masked_fss_sums,
    masked_pool_counts,
    masked_ssim_frames,
    nodata_mask,
    ssim_frames,
    threshold_bins,
)
from diffcast.metrics import kernels as metric_kernels

THR = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)
#: Scores from integer counts: a masked count equals the cropped one exactly.
EXACT = ("csi", "pod", "far", "hss", "events", "csi_pool4", "csi_pool16", "csi_m", "hss_m", "pod_m", "far_m",
         "csi_pool4_m", "csi_pool16_m", "rank_histogram_counts")


def _fields(shape, seed, members=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(shape, dtype=np.float32) ** 2).astype(np.float32)
    n = () if members is None else (members,)
    p = np.clip(y + 0.15 * rng.standard_normal(n + shape).astype(np.float32), 0, 1).astype(np.float32)
    return y, p


def _outside_nan(y, p, rows, cols):
    """NaN outside ``[rows, cols]`` in the observation *and* the forecast (never scored there)."""
    valid = np.zeros(y.shape[-2:], bool)
    valid[rows, cols] = True
    return np.where(valid, y, np.nan).astype(np.float32), np.where(valid, p, np.nan).astype(np.float32)


def _walk(got, ref, path=""):
    if isinstance(ref, dict):
        assert set(got) == set(ref), path
        for k in ref:
            yield from _walk(got[k], ref[k], f"{path}.{k}")
    elif isinstance(ref, list):
        assert len(got) == len(ref), path
        for i, (g, r) in enumerate(zip(got, ref)):
            yield from _walk(g, r, f"{path}[{i}]")
    else:
        yield path, got, ref


def _assert_scores_equal(got, ref, rtol=1e-9, ssim_rtol=1e-6):
    """Counts-based scores exactly, continuous ones to float rounding (SSIM: OpenCV vs torch filtering)."""
    got, ref = dict(got), dict(ref)
    got.pop("no_data")
    assert got.pop("skipped") == ref.pop("skipped")
    for path, g, r in _walk(got, ref):
        parts = {x.split("[")[0] for x in path.split(".")}
        if parts & set(EXACT) or not isinstance(r, float):
            assert g == r, path
        else:
            tol = ssim_rtol if "ssim" in path else rtol
            assert g == pytest.approx(r, rel=tol, abs=1e-12), path


@pytest.mark.parametrize("members", [None, 4])
def test_covered_rectangle_scores_like_the_cropped_frames(members):
    # every score: contingency, pooled CSI (region aligned to 16 x 16 cells), FSS, MSE/MAE/RMSE/PSNR,
    # SSIM, CRPS, Brier, reliability, rank histogram, spread/skill, ensemble-mean scores
    y, p = _fields((3, 4, 1, 48, 40), seed=1, members=members)
    rows, cols = slice(16, 48), slice(0, 32)
    y_nan, p_nan = _outside_nan(y, p, rows, cols)
    kw = dict(fss_scales=(1, 4, 7), rank_min=16.0)
    masked = Evaluator(THR, **kw)
    masked.update(y_nan, p_nan, mask=nodata_mask(torch.from_numpy(y_nan)))
    got = masked.compute()
    crop = Evaluator(THR, backend="torch", **kw)  # the masked path runs torch operations too
    crop.update(y[..., rows, cols], p[..., rows, cols])
    ref = crop.compute()
    _assert_scores_equal(got, ref)
    assert got["no_data"]["windows_skipped"] == 0
    assert got["no_data"]["covered_fraction"] == pytest.approx(32 * 32 / (48 * 40))
    assert got["no_data"]["covered_fraction_by_lead"] == pytest.approx([32 * 32 / (48 * 40)] * 4)
    if members:
        assert "ensemble_mean" in got and "crps_fair" in got and "brier" in got
    json.dumps(got, allow_nan=False)


def test_pooled_csi_with_a_mask_aligned_to_pool_cells_equals_the_crop():
    y, p = _fields((2, 3, 1, 32, 32), seed=2)
    valid = np.zeros(y.shape, bool)
    valid[..., 0:16, 16:32] = True  # one 16 x 16 cell, four 4 x 4 cells wide
    valid[..., 16:20, 0:8] = True  # and two more 4 x 4 cells
    ev = Evaluator(THR, pool_sizes=(4,), ssim=False)
    ev.update(np.where(valid, y, np.nan), p, mask=valid)
    pooled = torch.zeros(3, len(THR), 4, dtype=torch.float64)
    for r, c in [(slice(0, 16), slice(16, 32)), (slice(16, 20), slice(0, 8))]:  # the covered parts, cropped
        part = Evaluator(THR, pool_sizes=(4,), ssim=False, backend="torch")
        part.update(y[..., r, c], p[..., r, c])
        pooled += part.state_dict()["det.pool4"]
    torch.testing.assert_close(ev.state_dict()["det.pool4"], pooled, rtol=0, atol=0)


def test_a_pooled_cell_counts_where_one_pixel_has_data_and_pools_those_only():
    thr = torch.tensor([0.5])
    obs = torch.zeros(1, 1, 1, 4, 8)
    pred = torch.zeros(1, 1, 1, 4, 8)
    valid = torch.zeros(1, 1, 1, 4, 8, dtype=torch.bool)
    obs[..., 0, 0] = 1.0  # cell 1: an event, but on a pixel without data ...
    valid[..., 3, 3] = True  # ... the cell's only pixel with data has none
    pred[..., 1, 1] = 1.0  # the forecast's event there lies on a pixel without data too
    # cell 2 (columns 4..7) has no pixel with data: not counted at all
    obs[..., 2, 6] = pred[..., 2, 6] = 1.0
    b_obs, b_pred = threshold_bins(obs, thr), threshold_bins(pred, thr)
    counts = masked_pool_counts(b_obs, b_pred, valid, 4, 1)
    assert counts.tolist() == [[[0.0, 0.0, 0.0, 1.0]]]  # one cell, a correct negative
    valid[..., 0, 0] = True  # now the observed event has data: a miss (the forecast's event still has none)
    assert masked_pool_counts(b_obs, b_pred, valid, 4, 1).tolist() == [[[0.0, 1.0, 0.0, 0.0]]]


def test_fss_sums_over_the_data_equal_the_cropped_frames():
    y, p = _fields((2, 3, 1, 30, 28), seed=3, members=3)
    rows, cols = slice(5, 30), slice(3, 21)
    valid = torch.zeros(y.shape, dtype=torch.bool)
    valid[..., rows, cols] = True
    obs, pred = torch.from_numpy(y) * 255.0, torch.from_numpy(p).reshape(-1, *y.shape[1:]) * 255.0
    thr = torch.tensor(THR[:3])
    for scale in (1, 4, 5):
        got = masked_fss_sums(pred, obs.masked_fill(~valid, float("nan")), valid, thr, scale)
        ref = fss_sums(pred[..., rows, cols].contiguous(), obs[..., rows, cols].contiguous(), thr, scale)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)


def test_ssim_over_complete_windows_equals_the_crop_and_ignores_nan():
    y, p = _fields((2, 3, 1, 40, 36), seed=4)
    obs, pred = torch.from_numpy(y), torch.from_numpy(p)
    valid = torch.zeros(obs.shape, dtype=torch.bool)
    valid[..., 3:30, 10:36] = True
    nan_pred, nan_obs = pred.masked_fill(~valid, float("nan")), obs.masked_fill(~valid, float("nan"))
    ref = ssim_frames(pred[..., 3:30, 10:36], obs[..., 3:30, 10:36], 1.0, backend="torch")[..., 0]
    got, weight = masked_ssim_frames(nan_pred, nan_obs, valid, 1.0, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)  # the same float32 map, averaged in float64
    got_cv, _ = masked_ssim_frames(nan_pred, nan_obs, valid, 1.0)  # OpenCV filtering (the CPU default)
    torch.testing.assert_close(got_cv, ref, rtol=1e-6, atol=1e-7)
    n_complete = (27 - 10) * (26 - 10)
    torch.testing.assert_close(weight, torch.full_like(weight, n_complete / (30 * 26)))
    # all valid: the protocol's SSIM with weight 1
    full, w1 = masked_ssim_frames(pred, obs, torch.ones_like(valid), 1.0, backend="torch")
    torch.testing.assert_close(full, ssim_frames(pred, obs, 1.0, backend="torch")[..., 0], rtol=1e-12, atol=1e-12)
    assert bool((w1 == 1.0).all())


def _backends():
    out = ["auto", "torch"]
    if metric_kernels.available():
        out.append("opencv")
    return out


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("members", [None, 3])
def test_a_mask_true_everywhere_changes_nothing_bit_for_bit(backend, members):
    y, p = _fields((2, 3, 1, 24, 24), seed=5, members=members)
    kw = dict(fss_scales=(3,), rank_min=16.0, backend=backend)
    plain = Evaluator(THR, **kw)
    plain.update(y, p)
    for mask in (np.ones(y.shape, bool), torch.ones(1, 1, 1, 24, 24, dtype=torch.bool)):
        ev = Evaluator(THR, **kw)
        ev.update(y, p, mask=mask)
        assert ev.compute() == plain.compute()
        for name, v in plain.state_dict().items():
            assert torch.equal(ev.state_dict()[name], v) or name == "config.options", name
    assert "no_data" not in plain.compute()


@pytest.mark.parametrize("members", [None, 3])
def test_a_window_without_data_is_skipped_and_counted(members):
    y, p = _fields((3, 2, 1, 20, 20), seed=6, members=members)
    y = y.copy()
    y[1] = np.nan  # window 1: no data at all
    y[2, :, :, :5] = np.nan
    mask = ~np.isnan(y)
    ev = Evaluator(THR, fss_scales=(3,))
    ev.update(y, p, mask=mask)
    got = ev.compute()
    keep = [0, 2]
    ref_ev = Evaluator(THR, fss_scales=(3,))
    ref_ev.update(y[keep], p[:, keep] if members else p[keep], mask=mask[keep])
    ref = ref_ev.compute()
    assert got["n_samples"] == 2 and got["no_data"]["windows_skipped"] == 1
    assert ref["no_data"]["windows_skipped"] == 0
    got.pop("no_data"), ref.pop("no_data")
    assert got == ref
    only = Evaluator(THR)
    only.update(y[1:2], p[:, 1:2] if members else p[1:2], mask=mask[1:2])
    with pytest.raises(ValueError, match="had no data"):
        only.compute()


def test_masked_streaming_and_merge_equal_one_batch():
    y, p = _fields((5, 3, 1, 24, 24), seed=7, members=3)
    y = y.copy()
    y[:, :, :, 18:, :] = np.nan
    y[3] = np.nan
    mask = ~np.isnan(y)

    def run(chunks):
        ev = Evaluator(THR, fss_scales=(3,), rank_min=16.0)
        for c in chunks:
            ev.update(y[c], p[:, c], mask=mask[c])
        return ev

    whole = run([slice(0, 5)]).compute()
    a, b = run([slice(0, 2)]), run([slice(2, 5)])
    merged = Evaluator.from_state(a.state_dict(), skipped=a.skipped).merge(Evaluator.from_state(b.state_dict())).compute()
    for got in (run([slice(0, 2), slice(2, 3), slice(3, 5)]).compute(), merged):
        for path, g, r in _walk(got, whole):
            assert g == r if not isinstance(r, float) else g == pytest.approx(r, rel=1e-12, abs=1e-12), path


def test_old_states_without_no_data_entries_still_load():
    y, p = _fields((2, 2, 1, 16, 16), seed=8)
    ev = Evaluator(THR)
    ev.update(y, p)
    state = {k: v for k, v in ev.state_dict().items() if not k.startswith("nodata.")}
    assert Evaluator.from_state(state, skipped=ev.skipped).compute() == ev.compute()


def test_nan_is_still_an_error_without_a_mask_or_where_the_mask_says_data():
    y, p = _fields((1, 2, 1, 16, 16), seed=9)
    y_nan = y.copy()
    y_nan[..., 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Evaluator(THR).update(y_nan, p)
    mask = np.ones(y.shape, bool)
    mask[..., 8:, :] = False
    with pytest.raises(ValueError, match="NaN or inf"):  # the mask says pixel (0, 0) has data
        Evaluator(THR).update(y_nan, p, mask=mask)
    p_nan = p.copy()
    p_nan[..., 5, 5] = np.nan  # a forecast NaN where the observation has data
    with pytest.raises(ValueError, match="y_pred"):
        Evaluator(THR).update(y_nan, p_nan, mask=~np.isnan(y_nan))
    with pytest.raises(ValueError, match="boolean"):
        Evaluator(THR).update(y, p, mask=np.ones(y.shape, np.float32))
    with pytest.raises(ValueError, match="broadcast"):
        Evaluator(THR).update(y, p, mask=np.ones((3, 16, 16), bool))


def test_lpips_uses_fully_covered_frames_only():
    from diffcast.metrics import LPIPSAlex

    torch.manual_seed(0)
    net = LPIPSAlex()  # random weights: a deterministic network is all this test needs
    y, p = _fields((2, 2, 1, 32, 32), seed=10)
    y = y.copy()
    y[1, :, :, :4, :4] = np.nan  # window 1 partly covered: left out of LPIPS, in every other score
    ev = Evaluator(THR, lpips=net, ssim=False, pool_sizes=())
    ev.update(y, p, mask=~np.isnan(y))
    ref = Evaluator(THR, lpips=net, ssim=False, pool_sizes=())
    ref.update(y[:1], p[:1])
    assert ev.compute()["lpips_by_lead"] == pytest.approx(ref.compute()["lpips_by_lead"], rel=1e-12)
    none = Evaluator(THR, lpips=net, ssim=False, pool_sizes=())
    none.update(y[1:], p[1:], mask=~np.isnan(y[1:]))
    r = none.compute()
    assert "lpips" not in r and "fully covered" in r["skipped"]["lpips"]


class _NodataSeqs(list):
    """Items with NaN = no data, as the mlcast dataset says."""

    nan_is_nodata = True


def test_evaluate_fills_model_inputs_and_scores_only_data():
    from diffcast.data.transforms import RADAR_DBZ_META
    from diffcast.evaluation import evaluate, markdown_table
    from diffcast.inference import Nowcaster

    seq = torch.rand(3, 7, 1, 16, 16)
    seq[0, :, 0, :4, :4] = float("nan")  # no data in inputs and targets
    seq[1, 3:] = float("nan")  # a window whose targets have no data at all
    nc = Nowcaster.from_spec("persistence", t_in=3, t_out=4, channels=1, height=16, width=16, meta=RADAR_DBZ_META)
    res = evaluate([nc], _NodataSeqs(seq), meta=RADAR_DBZ_META, progress=False, batch_size=3)["persistence"]
    assert res["n_samples"] == 2 and res["no_data"]["windows_skipped"] == 1
    assert 0 < res["no_data"]["covered_fraction"] < 1
    json.dumps(res, allow_nan=False)
    assert "window(s) without any data skipped" in markdown_table({"persistence": res}, RADAR_DBZ_META)
    # the same as scoring persistence of the NaN-filled inputs over the data by hand
    x = torch.nan_to_num(seq[[0, 2], :3], nan=0.0)
    y = seq[[0, 2], 3:]
    ev = Evaluator(RADAR_DBZ_META.thresholds, scale=RADAR_DBZ_META.scale, fss_scales=(4, 16), lead_times=4,
                   members=1, rank_min=RADAR_DBZ_META.thresholds[0])
    ev.update(y, x[:, -1:].expand(-1, 4, -1, -1, -1), mask=~torch.isnan(y))
    want = ev.compute()
    for key in ("csi_m", "mse", "crps", "csi_pool4_m"):
        assert res[key] == pytest.approx(want[key], rel=1e-12), key


def test_covered_fraction_per_lead_follows_a_coverage_that_shrinks_with_lead():
    """Rows without data grow with the lead (inflow); the per-lead share and the per_lead.csv column count them."""
    import csv
    import io

    from diffcast.evaluation import per_lead_csv

    y, p = _fields((2, 4, 1, 32, 40), seed=3, members=3)
    y = y.copy()
    for t in range(4):
        y[:, t, :, : 4 * t] = np.nan  # lead t: its first 4 t rows have no data
    ev = Evaluator(THR)
    ev.update(y, p, mask=nodata_mask(torch.from_numpy(y)))
    got = ev.compute()
    want = [(32 - 4 * t) / 32 for t in range(4)]
    assert got["no_data"]["covered_fraction_by_lead"] == pytest.approx(want)
    assert got["no_data"]["covered_fraction"] == pytest.approx(np.mean(want))
    rows = list(csv.DictReader(io.StringIO(per_lead_csv({"m": got}))))
    assert [float(r["covered_fraction"]) for r in rows] == pytest.approx(want)
    full = Evaluator(THR)
    full.update(np.nan_to_num(y), p)
    rows = list(csv.DictReader(io.StringIO(per_lead_csv({"m": full.compute()}))))
    assert [float(r["covered_fraction"]) for r in rows] == [1.0] * 4
