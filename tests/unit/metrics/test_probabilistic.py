import math

import numpy as np
import pytest
import torch
from pysteps.verification.ensscores import rankhist
from pysteps.verification.probscores import CRPS, reldiag
from pysteps.verification.spatialscores import fss, fss_accum, fss_compute, fss_init
from scipy.ndimage import uniform_filter

from diffcast.metrics import (
    Evaluator,
    box_fraction,
    brier_score,
    crps_ensemble,
    ensemble_spread_skill,
    exceedance_probability,
    fss_from_sums,
    fss_sums,
    rank_histogram_counts,
    reliability_sums,
)


def test_crps_matches_pysteps_hersbach():
    rng = np.random.default_rng(0)
    members = rng.gamma(2.0, 3.0, size=(7, 12, 9))
    obs = rng.gamma(2.0, 3.0, size=(12, 9))
    got = crps_ensemble(torch.from_numpy(members), torch.from_numpy(obs)).mean().item()
    assert got == pytest.approx(CRPS(members, obs), rel=1e-10)


def test_crps_single_member_is_absolute_error():
    x = torch.tensor([[1.0, -2.0, 0.5]])
    y = torch.tensor([0.0, 1.0, 0.5])
    np.testing.assert_allclose(crps_ensemble(x, y).numpy(), [1.0, 3.0, 0.0])
    np.testing.assert_allclose(crps_ensemble(x, y, fair=True).numpy(), [1.0, 3.0, 0.0])


def test_crps_gaussian_closed_form():
    # CRPS(N(0, 1), y = 0) = 2 phi(0) - 1/sqrt(pi) = (sqrt(2) - 1) / sqrt(pi) = 0.2337
    expected = (math.sqrt(2.0) - 1.0) / math.sqrt(math.pi)
    g = torch.Generator().manual_seed(0)
    members = torch.randn(400, 2000, generator=g, dtype=torch.float64)
    obs = torch.zeros(2000, dtype=torch.float64)
    fair = crps_ensemble(members, obs, fair=True).mean().item()
    std = crps_ensemble(members, obs).mean().item()
    assert fair == pytest.approx(expected, abs=0.004)
    # the standard estimator is biased upwards by E|X - X'| / (2M) = (2/sqrt(pi)) / (2M)
    assert std - fair == pytest.approx(1.0 / math.sqrt(math.pi) / 400, rel=0.05)


def test_rank_histogram_matches_pysteps_without_ties():
    rng = np.random.default_rng(1)
    members = rng.random((5, 20, 20))
    obs = rng.random((20, 20))
    got = rank_histogram_counts(torch.from_numpy(members), torch.from_numpy(obs))
    ref = rankhist(members, obs, normalize=False)
    np.testing.assert_array_equal(got.numpy(), ref)


def test_rank_histogram_ties_are_shared_and_x_min_excludes_dry_points():
    members = torch.zeros(3, 4)
    obs = torch.zeros(4)
    # all tied: each point spreads 1/4 over the 4 ranks
    np.testing.assert_allclose(rank_histogram_counts(members, obs).numpy(), [1.0, 1.0, 1.0, 1.0])
    members[:, 0] = torch.tensor([1.0, 2.0, 3.0])
    obs[0] = 2.5
    got = rank_histogram_counts(members, obs, x_min=0.5)
    np.testing.assert_allclose(got.numpy(), [0.0, 0.0, 1.0, 0.0])  # dry points left out
    # pysteps draws tied ranks at random; the expectation agrees
    rng = np.random.default_rng(2)
    m = np.where(rng.random((4, 300)) < 0.5, 0.0, rng.random((4, 300)))
    o = np.where(rng.random(300) < 0.5, 0.0, rng.random(300))
    ours = rank_histogram_counts(torch.from_numpy(m), torch.from_numpy(o), x_min=0.1).numpy()
    np.random.seed(0)
    ref = np.mean([rankhist(m, o, X_min=0.1, normalize=False) for _ in range(200)], axis=0)
    np.testing.assert_allclose(ours, ref, atol=1.0)
    assert ours.sum() == pytest.approx(ref.sum())


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_reliability_matches_pysteps():
    rng = np.random.default_rng(3)
    members = rng.random((10, 40, 40)) * 10
    obs = rng.random((40, 40)) * 10
    thr = 6.0
    prob = exceedance_probability(torch.from_numpy(members), thr)
    sums = reliability_sums(prob, torch.from_numpy(obs >= thr), n_bins=10).numpy()
    r_ref, f_ref = reldiag(prob.numpy(), obs, thr, n_bins=10, min_count=1)
    ok = sums[:, 0] > 0
    np.testing.assert_allclose(sums[ok, 1] / sums[ok, 0], r_ref[ok], rtol=1e-12)
    np.testing.assert_allclose(sums[ok, 2] / sums[ok, 0], f_ref[ok], rtol=1e-12)
    assert np.all(np.isnan(r_ref[~ok]))
    assert sums[:, 0].sum() == obs.size


def test_brier_score_direct():
    p = torch.tensor([0.0, 0.5, 1.0, 0.25])
    o = torch.tensor([0, 1, 1, 0])
    assert brier_score(p, o).item() == pytest.approx((0 + 0.25 + 0 + 0.0625) / 4)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 7, 16])
def test_box_fraction_matches_scipy_uniform_filter(scale):
    x = (torch.rand(2, 23, 19, generator=torch.Generator().manual_seed(scale)) > 0.6)
    ref = np.stack([uniform_filter(a.astype(float), size=scale, mode="constant") for a in x.numpy()])
    np.testing.assert_allclose(box_fraction(x, scale).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("scale", [1, 4, 5])
def test_fss_matches_pysteps(scale):
    rng = np.random.default_rng(4)
    obs = (rng.random((2, 3, 1, 30, 26)) ** 2 * 255).astype(np.float32)
    pred = np.clip(obs + rng.normal(0, 30, obs.shape), 0, 255).astype(np.float32)
    thr = torch.tensor([16.0, 74.0])
    sums = fss_sums(torch.from_numpy(pred), torch.from_numpy(obs), thr, scale)  # (L, K, 3)
    for k, t in enumerate(thr.tolist()):
        # single frame
        assert fss_from_sums(sums[1, k]).item() == pytest.approx(
            _pysteps_fss(pred[:, 1], obs[:, 1], t, scale),
            rel=1e-6,
        )
        # accumulated over all frames, as pysteps' fss_accum does
        assert fss_from_sums(sums[:, k].sum(0)).item() == pytest.approx(
            _pysteps_fss(pred.reshape(-1, 30, 26), obs.reshape(-1, 30, 26), t, scale), rel=1e-6
        )
    assert fss(pred[0, 0, 0], obs[0, 0, 0], 16.0, scale) == pytest.approx(
        fss_from_sums(fss_sums(torch.from_numpy(pred[:1, :1]), torch.from_numpy(obs[:1, :1]), thr[:1], scale)[0, 0]).item(),
        rel=1e-6,
    )


def _pysteps_fss(pred, obs, thr, scale):
    obj = fss_init(thr, scale)
    for p, o in zip(pred.reshape(-1, *pred.shape[-2:]), obs.reshape(-1, *obs.shape[-2:])):
        fss_accum(obj, p, o)
    return fss_compute(obj)


def test_spread_skill_ratio_near_one_for_exchangeable_ensemble():
    g = torch.Generator().manual_seed(5)
    truth_mean = torch.rand(1, 1, 1, 1, 32, 32, generator=g) * 0.4 + 0.3
    members = (truth_mean + 0.05 * torch.randn(8, 4, 2, 1, 32, 32, generator=g)).clamp(0, 1)
    obs = (truth_mean[0] + 0.05 * torch.randn(4, 2, 1, 32, 32, generator=g)).clamp(0, 1)
    ev = Evaluator((100.0,), pool_sizes=())
    ev.update(obs, members)
    r = ev.compute()
    assert r["spread_skill_ratio"] == pytest.approx(1.0, abs=0.05)
    assert r["crps_fair"] < r["crps"]
    # rank histogram of an exchangeable ensemble is flat
    np.testing.assert_allclose(r["rank_histogram"], 1 / 9, atol=0.02)
    var, err = ensemble_spread_skill(members, obs)
    assert var.shape == obs.shape and err.shape == obs.shape


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_evaluator_brier_and_reliability_consistent():
    g = torch.Generator().manual_seed(6)
    obs = torch.rand(2, 3, 1, 16, 16, generator=g)
    members = torch.rand(5, 2, 3, 1, 16, 16, generator=g)
    ev = Evaluator((100.0, 200.0), pool_sizes=(), reliability_min_count=1)
    ev.update(obs, members)
    r = ev.compute()
    code_o, code_m = obs * 255, members * 255
    for t in (100.0, 200.0):
        p = exceedance_probability(code_m, t)
        o = code_o >= t
        assert r["brier"][f"{t:g}"] == pytest.approx(brier_score(p, o).item(), rel=1e-9)
        rel = r["reliability"][f"{t:g}"]
        assert sum(rel["count"]) == obs.numel()
        r_ref, f_ref = reldiag(p.numpy(), code_o.numpy(), t, n_bins=10, min_count=1)
        for i, (fp, fo) in enumerate(zip(rel["forecast_probability"], rel["observed_frequency"])):
            if fp is None:
                assert np.isnan(r_ref[i])
            else:
                assert fp == pytest.approx(r_ref[i]) and fo == pytest.approx(f_ref[i])


def test_fss_members_share_one_observation():
    g = torch.Generator().manual_seed(7)
    obs = torch.rand(2, 3, 1, 20, 18, generator=g) * 255
    members = torch.rand(3, 2, 3, 1, 20, 18, generator=g) * 255
    flat = members.reshape(6, 3, 1, 20, 18)
    thr = torch.tensor([60.0, 180.0])
    got = fss_sums(flat, obs, thr, 5)
    ref = fss_sums(flat, obs.repeat(3, 1, 1, 1, 1), thr, 5)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="do not match"):
        fss_sums(flat[:5], obs, thr, 5)
