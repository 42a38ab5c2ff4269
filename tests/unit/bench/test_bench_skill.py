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
