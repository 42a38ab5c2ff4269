"""The CPU paths of the Evaluator (Numba and OpenCV kernels) against the torch path and the
per-frame loop; each CPU test runs with both kernels."""

import numpy as np
import pytest
import torch

from diffcast.metrics import Evaluator, chunked, fused, kernels

pytest.importorskip("cv2")

NO_NUMBA = "Numba kernels unavailable here (numba missing or failed to compile)"


@pytest.fixture(params=["opencv", pytest.param("numba", marks=pytest.mark.skipif(not fused.available(), reason=NO_NUMBA))])
def cpu(request):
    """A CPU backend of the Evaluator."""
    return request.param

THR = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)
SCALARS = ("csi_m", "hss_m", "pod_m", "far_m", "csi_pool4_m", "csi_pool16_m", "mse", "mae", "rmse", "psnr", "ssim")


def _close(a, b, tol, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], tol, f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, tol, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=tol, abs=tol), path
    else:
        assert a == b, path


def _both(y, p, cpu, **kw):
    out = []
    for backend in (cpu, "torch"):
        ev = Evaluator(THR, backend=backend, **kw)
        ev.update(torch.from_numpy(y), torch.from_numpy(p))
        out.append(ev)
    return out


def _ensemble(y, members, seed, noise=0.15):
    rng = np.random.default_rng(seed)
    return np.clip(y[None] + noise * rng.standard_normal((members, *y.shape)), 0, 1).astype(np.float32)


def test_event_levels_reproduce_float32_threshold_space():
    rng = np.random.default_rng(0)
    thresholds = [-1.0, 0.0, 1e-30, 0.3, 16.0, 74.0, 74.5, 133.3, 219.0, 254.99, 255.0, 255.5, 300.0]
    for scale in (255.0, 70.0, 1.0, 0.1):
        levels = kernels.event_levels(thresholds, scale)
        s = np.float32(scale)
        # all uint8-derived values, random values and the float32 neighbours of every level
        x = [np.arange(256, dtype=np.float32) / np.float32(255), rng.random(5000, dtype=np.float32),
             np.array([0.0, 1.0], np.float32)]
        for lv in levels[np.isfinite(levels)]:
            bits = lv.view(np.int32) + np.arange(-40, 41, dtype=np.int32)
            x.append(np.clip(bits[bits >= 0].view(np.float32), 0, 1))
        x = np.concatenate(x)
        for thr, lv in zip(thresholds, levels):
            np.testing.assert_array_equal(x >= lv, x * s >= np.float32(thr), err_msg=f"thr {thr} scale {scale}")


def test_sorting_network_sorts_any_size():
    rng = np.random.default_rng(1)
    for n in range(1, 12):
        x = rng.integers(0, 4, (n, 50)).astype(np.float32)  # many ties
        members = [a.copy() for a in x]
        got = np.stack(chunked.sort_members(members, np.empty(50, np.float32)))
        np.testing.assert_array_equal(got, np.sort(x, axis=0))


@pytest.mark.parametrize(
    "shape,members,kw",
    [
        ((3, 4, 1, 40, 36), 1, {}),
        ((2, 3, 2, 19, 23), 1, {"fss_scales": (1, 4, 5)}),  # channels, sizes not divisible by 4 or 16
        ((3, 2, 1, 24, 20), 3, {"fss_scales": (3, 8)}),
        ((2, 2, 1, 16, 16), 9, {"rank_min": 30.0}),
    ],
)
def test_cpu_and_torch_paths_agree(shape, members, kw, radar_like, cpu):
    y, p = radar_like(shape, seed=21)
    if members > 1:
        p = _ensemble(y, members, seed=22)
    cv, tr = (ev.compute() for ev in _both(y, p, cpu, **kw))
    assert cv["skipped"] == tr["skipped"]
    # integer counts are identical; float scores agree to float32 rounding
    assert cv["events"] == tr["events"]
    mean_cv, mean_tr = cv.pop("ensemble_mean", None), tr.pop("ensemble_mean", None)
    _close(cv, tr, 1e-6)
    if members > 1:  # the mean of [0, 1] values vs the mean of scaled values: last-bit differences
        _close(mean_cv, mean_tr, 1e-5)


def test_state_counts_identical_between_paths(radar_like, cpu):
    y, p = radar_like((2, 3, 1, 33, 31), seed=23)
    ens = _ensemble(y, 4, seed=24)
    cv, tr = (ev.state_dict() for ev in _both(y, ens, cpu, fss_scales=(4,)))
    for name in ("det.counts", "det.pool4", "det.pool16", "prob.rank"):
        assert torch.equal(cv[name], tr[name]), name
    for name in ("prob.brier", "prob.reliability", "det.fss4", "prob.crps", "prob.spread"):
        torch.testing.assert_close(cv[name], tr[name], rtol=1e-6, atol=1e-6, msg=name)


def test_matches_reference_on_edge_cases(bench, monkeypatch, cpu):
    rng = np.random.default_rng(25)
    shape = (5, 3, 1, 37, 45)  # not divisible by 4 or 16; five samples over several chunks
    for name in ("CHUNK_PIXELS", "FUSED_CHUNK_PIXELS"):  # chunks of 2 samples and a remainder of 1
        monkeypatch.setattr(chunked, name, 2 * 37 * 45)
    y = (rng.integers(0, 256, shape) / 255.0).astype(np.float32)  # values exactly on the thresholds' codes
    p = (rng.integers(0, 256, shape) / 255.0).astype(np.float32) * 1.2 - 0.1  # outside [0, 1]: clipped
    p[0, 0] = y[0, 0]  # one perfect frame (PSNR cap)
    y[1] = 0.0  # a sample without any event
    ref = bench.reference_protocol(y, p, THR, 255.0, (4, 16))
    ev = Evaluator(THR, backend=cpu)
    ev.update(y.astype(np.float64), p.astype(np.float64))  # float64 input: clip, then round to float32
    got = ev.compute()
    for key in SCALARS:
        assert got[key] == pytest.approx(ref[key], rel=1e-7, abs=1e-7), key
    for key in ("csi", "pod", "far", "hss"):
        for k in ref[f"{key}_by_lead"]:
            np.testing.assert_allclose(got[f"{key}_by_lead"][k], ref[f"{key}_by_lead"][k], atol=1e-12)
    for k, v in ref["csi_pool16"].items():
        assert got["csi_pool16"][k] == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize("members,kw", [(3, {"fss_scales": (4,)}), (1, {}), (1, {"pool_sizes": (2, 3)})])
def test_chunking_and_strides_do_not_change_results(monkeypatch, radar_like, cpu, members, kw):
    y, p = radar_like((4, 3, 2, 20, 20), seed=26)
    ens = _ensemble(y, members, seed=27)
    whole = Evaluator(THR, backend=cpu, **kw)  # one chunk: all leads and samples
    whole.update(y, ens)
    # non-contiguous views of the same values
    y_t = torch.from_numpy(np.ascontiguousarray(y.transpose(1, 0, 2, 3, 4))).transpose(0, 1)
    e_t = torch.from_numpy(np.ascontiguousarray(ens.transpose(2, 0, 1, 3, 4, 5))).permute(1, 2, 0, 3, 4, 5)
    # one sample of one lead per chunk; and 2 leads of all samples per chunk (3 leads: 2 + 1)
    for chunk_pixels in (1, 2 * 4 * 2 * 20 * 20):
        monkeypatch.setattr(chunked, "CHUNK_PIXELS", chunk_pixels)
        monkeypatch.setattr(chunked, "FUSED_CHUNK_PIXELS", chunk_pixels)
        strided = Evaluator(THR, backend=cpu, **kw)
        strided.update(y_t, e_t)
        for name, v in whole.state_dict().items():
            torch.testing.assert_close(strided.state_dict()[name], v, rtol=1e-12, atol=0, equal_nan=True, msg=name)


@pytest.mark.parametrize("where", ["y_true", "y_pred"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_cpu_path_rejects_non_finite_before_changing_state(where, bad, cpu):
    y = np.full((2, 2, 1, 16, 16), 0.5, np.float32)
    p = y.copy()
    (y if where == "y_true" else p)[1, 1, 0, 3, 4] = bad
    ev = Evaluator(THR, backend=cpu)
    with pytest.raises(ValueError, match=f"{where} contains NaN or inf"):
        ev.update(y, p)
    assert ev.lead_times is None  # nothing allocated


def test_backend_choice_is_validated():
    with pytest.raises(ValueError, match="backend"):
        Evaluator(THR, backend="cuda")


def test_thread_count_does_not_change_results(radar_like, cpu):
    y, _ = radar_like((3, 5, 1, 24, 24), seed=28)
    ens = _ensemble(y, 3, seed=29)
    states = []
    for threads in (1, 2, 5):
        ev = Evaluator(THR, fss_scales=(4,), backend=cpu, num_threads=threads)
        ev.update(y, ens)
        states.append(ev.state_dict())
    for other in states[1:]:
        for name, v in states[0].items():
            torch.testing.assert_close(other[name], v, rtol=0, atol=0, equal_nan=True, msg=name)
    with pytest.raises(ValueError, match="num_threads"):
        Evaluator(THR, num_threads=0)


def test_large_ensemble_rank_histogram_matches_torch(radar_like, cpu):
    # 17 members: (M + 1)^2 > 256 rank codes take the bincount path; ties from clipping at 0
    y, _ = radar_like((2, 2, 1, 16, 16), seed=30)
    ens = _ensemble(y, 17, seed=31, noise=0.3)
    cv, tr = (ev.state_dict() for ev in _both(y, ens, cpu, rank_min=10.0))
    # fractional (shared-tie) counts, summed in a different order
    torch.testing.assert_close(cv["prob.rank"], tr["prob.rank"], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(cv["prob.crps"], tr["prob.crps"], rtol=1e-6, atol=1e-6)
    assert float(cv["prob.rank"].sum()) > 0


def test_cpu_path_takes_grad_and_half_precision_tensors(radar_like, cpu):
    y, p = radar_like((2, 2, 1, 16, 16), seed=32)
    ref = Evaluator(THR, backend=cpu)
    ref.update(y, p)
    ev = Evaluator(THR, backend=cpu)
    ev.update(torch.from_numpy(y).requires_grad_(), torch.from_numpy(p).requires_grad_())
    assert ev.compute() == ref.compute()
    half = Evaluator(THR, backend=cpu)
    half.update(torch.from_numpy(y).half(), torch.from_numpy(p).half())  # rounded to float16 first
    tr = Evaluator(THR, backend="torch")
    tr.update(torch.from_numpy(y).half(), torch.from_numpy(p).half())
    assert half.compute()["events"] == tr.compute()["events"]
