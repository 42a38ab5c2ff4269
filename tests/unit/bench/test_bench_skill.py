"""``benchmarks/bench_skill.py``: runs on a small case, and its scores match independent references."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("pysteps")
_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_skill.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("diffcast_bench_skill", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _case(bench, windows):
    return bench.Case("test", "mm/h", (0.5, 1.0, 5.0), (1.0,), windows)


def test_small_run_writes_json_and_table(bench, tmp_path):
    payload = bench.main(["--cases", "synthetic", "--limit", "2", "--members", "2", "--n-leadtimes", "3",
                          "--synthetic-size", "48", "--out", str(tmp_path)])
    res = payload["results"]["synthetic"]
    assert set(res) == set(bench.BASELINES)
    assert res["steps"]["members"] == 2 and res["sprog"]["members"] == 1
    for r in res.values():
        assert r["windows"] == 2 and len(r["crps_by_lead"]) == 3 and np.isfinite(r["crps"])
    assert "spread_skill" in res["steps"] and "spread_skill" not in res["persistence"]
    saved = json.loads((tmp_path / "skill.json").read_text())
    assert saved["results"]["synthetic"]["steps"]["crps"] == res["steps"]["crps"]
    table = (tmp_path / "table.md").read_text()
    assert "| steps | 2 |" in table and "spread/skill" in table


def test_radar_case_uses_held_out_events(bench, radar_data, tmp_path):
    case = bench.radar_case(radar_data, t_in=3, n_lead=2, crop=64, stride=40, limit=None)
    assert case.windows, case.note
    payload = bench.main(["--cases", "radar", "--baselines", "persistence", "--t-in", "3", "--n-leadtimes", "2",
                          "--crop", "64", "--stride", "40", "--radar-root", str(radar_data)])
    assert payload["results"]["radar"]["persistence"]["unit"] == "mm/h"
    assert payload["results"]["radar"]["persistence"]["windows"] == len(case.windows)


def test_deterministic_scores_match_pysteps(bench):
    from pysteps.verification import detcatscores, probscores, spatialscores

    rng = np.random.default_rng(0)
    obs = rng.gamma(0.5, 3.0, size=(2, 40, 40))
    fc = obs * rng.lognormal(0, 0.5, size=obs.shape)
    skill = bench.Skill(_case(bench, []), 2, 1, pixel_km=1.0)
    skill.add(fc[None], obs, 0.1)
    r = skill.result()
    ref_csi = [detcatscores.det_cat_fct(fc[k], obs[k], 1.0, ["CSI"])["CSI"] for k in range(2)]
    np.testing.assert_allclose(r["csi@1_by_lead"], ref_csi)
    np.testing.assert_allclose(r["fss@1/4km_by_lead"], [spatialscores.fss(fc[k], obs[k], 1.0, 4) for k in range(2)])
    np.testing.assert_allclose(r["crps_by_lead"], [np.abs(fc[k] - obs[k]).mean() for k in range(2)])
    np.testing.assert_allclose(r["crps_by_lead"], [probscores.CRPS(fc[k][None], obs[k]) for k in range(2)])


def test_calibrated_ensemble_is_flat_and_has_spread_skill_one(bench):
    """Members and observation drawn from one distribution: spread/skill ~ 1, flat ranks, REL in closed form."""
    rng = np.random.default_rng(1)
    m = 8
    draws = rng.gamma(1.0, 2.0, size=(m + 1, 1, 120, 120))
    skill = bench.Skill(_case(bench, []), 1, m, pixel_km=1.0)
    skill.add(draws[:m], draws[m], 0.0)
    r = skill.result()
    assert abs(r["spread_skill"] - 1.0) < 0.03
    assert r["rank_flatness"] < 0.05
    # every pixel has the same event probability p0, so REL is the binomial variance of k/M (closed form)
    p0 = np.exp(-0.5)
    assert r["rel@1"] == pytest.approx(p0 * (1 - p0) / m, rel=0.05)
    # an under-dispersed ensemble (all members equal) is flagged
    skill2 = bench.Skill(_case(bench, []), 1, m, pixel_km=1.0)
    skill2.add(np.repeat(draws[:1], m, axis=0) + 1e-9 * rng.random((m, 1, 120, 120)), draws[m], 0.0)
    r2 = skill2.result()
    assert r2["spread_skill"] < 0.01 and r2["rank_flatness"] > 1.0


def test_models_are_scored_on_common_pixels(bench):
    """With mask="common" every model is scored where the observation and all models have values:
    a model that leaves the hard pixels NaN is not scored on easier ones than the others."""
    from pysteps.verification import probscores

    rng = np.random.default_rng(2)
    obs = rng.gamma(0.5, 3.0, size=(2, 30, 30))
    windows = [bench.Window(obs[:1], obs, 1.0, 5.0, "w0")]
    good = obs * rng.lognormal(0, 0.2, size=obs.shape)  # close to the observation everywhere
    shy = obs * rng.lognormal(0, 0.2, size=obs.shape)
    shy[:, :, :10] = np.nan  # no value on the upstream third (the hard part for the others below)
    bad_edge = good.copy()
    bad_edge[:, :, :10] += 50.0  # wrong exactly where "shy" has no value
    fcs = {"good": good[None], "shy": shy[None], "edge": bad_edge[None]}

    def forecast(m, w, i):
        assert w is windows[0] and i == 0
        return fcs[m]

    case = _case(bench, windows)
    common = bench.score_models(list(fcs), case, 2, 1, 0, forecast=forecast)
    own = bench.score_models(list(fcs), case, 2, 1, 0, forecast=forecast, mask="own")
    for m, fc in fcs.items():
        ref = [probscores.CRPS(fc[:, k, :, 10:], obs[k][:, 10:]) for k in range(2)]
        np.testing.assert_allclose(common[m]["crps_by_lead"], ref)  # the same pixels for all three
        assert common[m]["verification_mask"] == "common"
    assert common["edge"]["crps"] == pytest.approx(common["good"]["crps"])  # its error lies outside the common pixels
    assert own["edge"]["crps"] > 10 * own["good"]["crps"]  # on its own pixels it is scored there
    np.testing.assert_allclose(own["shy"]["crps"], common["shy"]["crps"])
    assert own["shy"]["forecast_coverage"] == pytest.approx(2 / 3) and own["good"]["forecast_coverage"] == 1.0
    assert common["shy"]["forecast_coverage"] == pytest.approx(2 / 3)  # coverage is each model's own
    with pytest.raises(ValueError, match="mask"):
        bench.score_models(["good"], case, 2, 1, 0, forecast=forecast, mask="union")


def test_optional_model_that_cannot_run_is_skipped(bench):
    windows = [bench.Window(np.ones((1, 8, 8)), np.ones((2, 8, 8)), 1.0, 5.0, "w0")]

    def forecast(m, w, i):
        if m == "vil-model":
            raise ValueError("this model forecasts VIL")
        return np.ones((1, 2, 8, 8))

    case = _case(bench, windows)
    res = bench.score_models(["persistence", "vil-model"], case, 2, 1, 0, forecast=forecast, optional=["vil-model"])
    assert res["vil-model"] == {"skipped": "this model forecasts VIL"} and res["persistence"]["crps"] == 0.0
    with pytest.raises(ValueError, match="VIL"):
        bench.score_models(["persistence", "vil-model"], case, 2, 1, 0, forecast=forecast)
