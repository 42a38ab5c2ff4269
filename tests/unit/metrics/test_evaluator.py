import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from diffcast.metrics import Evaluator

THR = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)
PROTOCOL_KEYS = ("csi", "pod", "far", "hss")
SCALARS = ("csi_m", "hss_m", "pod_m", "far_m", "csi_pool4_m", "csi_pool16_m", "mse", "mae", "rmse", "psnr", "ssim")


def _compare(got, ref, tol=1e-7):
    for key in SCALARS:
        assert got[key] == pytest.approx(ref[key], abs=tol, rel=tol), key
    for key in PROTOCOL_KEYS + ("csi_pool4", "csi_pool16"):
        for k, v in ref[key].items():
            assert got[key][k] == pytest.approx(v, abs=tol), (key, k)
    for key in PROTOCOL_KEYS:
        for k in ref[f"{key}_by_lead"]:
            np.testing.assert_allclose(got[f"{key}_by_lead"][k], ref[f"{key}_by_lead"][k], atol=tol)
    for key in ("mse", "mae", "rmse", "psnr", "ssim"):
        np.testing.assert_allclose(got[f"{key}_by_lead"], ref[f"{key}_by_lead"], rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(3, 4, 1, 40, 36), (2, 3, 1, 32, 32)])
def test_matches_per_frame_reference_loop(bench, shape, radar_like):
    y, p = radar_like(shape, seed=5)
    ref = bench.reference_protocol(y, p, THR, 255.0, (4, 16))
    ev = Evaluator(THR, scale=255.0, pool_sizes=(4, 16))
    ev.update(torch.from_numpy(y), torch.from_numpy(p))
    _compare(ev.compute(), ref)


def test_numpy_and_torch_inputs_agree_and_values_are_clipped(bench, radar_like):
    y, p = radar_like((2, 3, 1, 24, 24), seed=6)
    p_out = p * 1.3 - 0.1  # outside [0, 1]: clipped by the protocol
    ev1 = Evaluator(THR)
    ev1.update(y, p_out)
    ev2 = Evaluator(THR)
    ev2.update(torch.from_numpy(y), torch.from_numpy(np.clip(p_out, 0, 1)))
    assert ev1.compute() == ev2.compute()
    ref = bench.reference_protocol(y, p_out, THR, 255.0, (4, 16))
    _compare(ev1.compute(), ref)


def _stream(y, p, chunks, **kw):
    ev = Evaluator(THR, fss_scales=(1, 5), **kw)
    for idx in chunks:
        ev.update(y[idx], p[:, idx] if p.ndim == 6 else p[idx])
    return ev


@pytest.mark.parametrize("members", [None, 3])
def test_streaming_equals_batch(members, radar_like):
    y, p = radar_like((5, 3, 1, 20, 20), seed=7)
    if members:
        p = np.clip(y[None] + 0.1 * np.random.default_rng(8).standard_normal((members, *y.shape)), 0, 1).astype(np.float32)
    whole = _stream(y, p, [slice(0, 5)]).compute()
    parts = _stream(y, p, [slice(0, 2), slice(2, 3), slice(3, 5)]).compute()
    _close(whole, parts)


def _close(a, b, tol=1e-9):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_close(x, z, tol) for x, z in zip(a, b))
    if isinstance(a, float):
        assert a == b if tol == 0 else a == pytest.approx(b, rel=tol, abs=tol)
        return True
    assert a == b
    return True


def test_merge_equals_batch_and_state_roundtrip(tmp_path, radar_like):
    y, p = radar_like((6, 3, 1, 20, 20), seed=9)
    ens = np.stack([p, np.clip(p + 0.05, 0, 1)])
    whole = _stream(y, ens, [slice(0, 6)]).compute()
    a = _stream(y, ens, [slice(0, 4)])
    b = _stream(y, ens, [slice(4, 6)])
    # through a file, as a process would hand its state over
    save_file(b.state_dict(), str(tmp_path / "b.safetensors"))
    b2 = Evaluator.from_state(load_file(str(tmp_path / "b.safetensors")))
    torch.save(a.state_dict(), tmp_path / "a.pt")
    a2 = Evaluator.from_state(torch.load(tmp_path / "a.pt", weights_only=True))
    merged = a2.merge(b2).compute()
    merged.pop("skipped"), whole.pop("skipped")
    _close(whole, merged)
    with pytest.raises(ValueError, match="different thresholds"):
        a.merge(Evaluator((16.0,)))


def test_presized_state_for_processes_without_data(radar_like):
    ev = Evaluator(THR, lead_times=3, members=1)
    empty = Evaluator.from_state(ev.state_dict())
    y, p = radar_like((2, 3, 1, 16, 16), seed=10)
    full = Evaluator(THR, lead_times=3, members=1)
    full.update(y, p)
    assert set(ev.state_dict()) == set(full.state_dict())
    before = full.compute()
    _close(full.merge(empty).compute(), before, tol=0)
    with pytest.raises(ValueError, match="no samples"):
        ev.compute()


def test_identical_members_crps_equals_mae_and_spread_zero(radar_like):
    y, p = radar_like((2, 3, 1, 16, 16), seed=11)
    ens = np.stack([p] * 4)
    ev = Evaluator(THR)
    ev.update(y, ens)
    r = ev.compute()
    assert r["members"] == 4
    assert r["crps"] == pytest.approx(r["mae"], rel=1e-9)
    assert r["crps_fair"] == pytest.approx(r["mae"], rel=1e-9)
    assert r["spread"] == 0.0 and r["spread_skill_ratio"] == 0.0
    assert r["ensemble_mean"]["csi_m"] == pytest.approx(r["csi_m"])
    det = Evaluator(THR)
    det.update(y, p)
    rd = det.compute()
    assert rd["crps"] == pytest.approx(rd["mae"], rel=1e-9)
    assert rd["crps_norm"] == pytest.approx(rd["mae"] / 255.0, rel=1e-9)
    assert "crps_fair" not in rd and "ensemble_mean" not in rd
    # the top-level scores average over members: identical members score like one
    for k in ("csi_m", "hss_m", "mse", "ssim", "csi_pool16_m"):
        assert r[k] == pytest.approx(rd[k], rel=1e-9)


def test_ensemble_mean_scores_use_the_mean(bench, radar_like):
    y, _ = radar_like((2, 3, 1, 24, 24), seed=12)
    rng = np.random.default_rng(13)
    ens = np.clip(y[None] + 0.2 * rng.standard_normal((3, *y.shape)), 0, 1).astype(np.float32)
    ev = Evaluator(THR)
    ev.update(y, ens)
    r = ev.compute()
    mean = (np.clip(ens, 0, 1) * np.float32(255)).mean(0) / np.float32(255)
    ref = bench.reference_protocol(y, mean, THR, 255.0, (4, 16))
    _compare(r["ensemble_mean"], ref, tol=1e-5)
    # members as samples equals the reference on the stacked members
    ref_m = bench.reference_protocol(np.concatenate([y] * 3), ens.reshape(-1, *y.shape[1:]), THR, 255.0, (4, 16))
    _compare(r, ref_m)


def test_json_has_no_nan_and_string_keys(radar_like):
    y, p = radar_like((2, 2, 1, 16, 16), seed=14)
    ens = np.stack([p, y, p])
    ev = Evaluator((16.0, 74.5), fss_scales=(3,))
    ev.update(y, ens)
    r = ev.compute()
    json.dumps(r, allow_nan=False)
    assert set(r["csi"]) == {"16", "74.5"}
    assert set(r["fss"]) == {"3"}
    assert len(r["rank_histogram"]) == 4 and sum(r["rank_histogram"]) == pytest.approx(1.0)


def test_bad_inputs_raise():
    ev = Evaluator(THR)
    y = np.zeros((1, 2, 1, 16, 16), np.float32)
    with pytest.raises(ValueError, match="shape"):
        ev.update(y, np.zeros((1, 3, 1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ev.update(y, np.full_like(y, np.nan))
    with pytest.raises(ValueError, match="floating"):
        ev.update(y.astype(np.int32), y)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        ev.update(y[0], y[0])
    ev.update(y, y)
    with pytest.raises(ValueError, match="member"):
        ev.update(y, np.stack([y, y]))
    with pytest.raises(ValueError, match="increasing"):
        Evaluator((74.0, 16.0))
    with pytest.raises(ValueError, match="positive integers"):
        Evaluator(THR, pool_sizes=(0,))


def test_small_frames_skip_ssim_with_reason(radar_like):
    y, p = radar_like((1, 2, 1, 8, 8), seed=15)
    ev = Evaluator(THR)
    ev.update(y, p)
    r = ev.compute()
    assert "ssim" not in r and "11x11" in r["skipped"]["ssim"]
    assert "lpips" in r["skipped"]
