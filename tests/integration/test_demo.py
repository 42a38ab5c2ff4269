"""``diffcast demo``: claims logic, a tiny end-to-end run, and the real ``--quick`` profile (slow)."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from diffcast.cli import main
from diffcast.demo import BACKBONE_LABEL, DIFFCAST_LABEL, DemoSettings, check_claims, run_demo

TINY = DemoSettings(size=16, n_train=64, n_test=4, backbone_steps=3, diffusion_steps=3, batch_size=2, members=2,
                    sampler_steps=2, n_cases=1, eval_batch=2)


def _res(csi_m, pool16, crps):
    return {"csi_m": csi_m, "csi_pool16_m": pool16, "crps": crps}


def test_check_claims():
    results = {"persistence": _res(0.2, 0.3, 9.0), BACKBONE_LABEL: _res(0.3, 0.4, 6.0),
               DIFFCAST_LABEL: _res(0.25, 0.5, 5.0)}
    out = check_claims(results)
    assert out["held"] and [c["held"] for c in out["checks"]] == [True, True, True, True]
    results[DIFFCAST_LABEL] = _res(0.25, 0.35, 5.0)  # pool16 below the backbone's
    out = check_claims(results)
    assert not out["held"] and [c["held"] for c in out["checks"]] == [False, True, True, True]
    assert out["checks"][0]["diffcast"] == 0.35 and out["checks"][0]["other"] == 0.4


def test_report_from_measured_numbers(tmp_path):
    """The report states the measured numbers and the claim line, and embeds the images it links."""
    from diffcast.demo import _build_report
    from diffcast.viz.report import write_report

    (tmp_path / "eval").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "eval" / "csi_by_lead.png")
    results = {"persistence": {**_res(0.2, 0.3, 9.0), "members": 1},
               "extrapolation": {**_res(0.3, 0.35, 8.0), "members": 1},
               BACKBONE_LABEL: {**_res(0.3, 0.4, 6.0), "members": 1},
               DIFFCAST_LABEL: {**_res(0.25, 0.35, 5.0), "members": 4, "ensemble_mean": _res(0.3, 0.3, 4.0)}}
    info = {"settings": DemoSettings().__dict__, "claims": check_claims(results), "results": results, "cases": [],
            "training": {"backbone": {"steps": 3, "trainable_parameters": 10, "parameters": 10, "final_loss": 0.1,
                                      "wall_s": 1.0}},
            "architecture": {"backbone": "name=simvp", "diffusion": {"dim": 8}, "diffusion_parameters": 5},
            "profile": "default", "seed": 0, "timestep_min": 5.0, "elapsed_s": {"total": 60.0},
            "machine": {"cpu_count": 2, "torch_threads": 2}, "software": {"diffcast": "x", "torch": "y"}}
    md_path, html_path = write_report(_build_report(info, tmp_path), tmp_path)
    md = md_path.read_text()
    assert "**claim held: no**" in md
    assert "DiffCast 0.3500 vs backbone 0.4000 -> **did not hold**" in md
    assert "DiffCast 5.0000 vs backbone 6.0000 -> **held**" in md
    assert "| DiffCast | 4 | 0.2500 |" in md and "eval/csi_by_lead.png" in md
    assert "eval/rank_histogram.png" not in md  # missing pictures are not linked
    assert html_path.read_text().count("data:image/png;base64,") == 1


def _check_report(out, real: bool) -> dict:
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert re.search(r"claim held: (yes|no)", md, re.IGNORECASE)
    assert "| model | members | CSI-M ↑ |" in md
    for name in ("persistence", "extrapolation", BACKBONE_LABEL, DIFFCAST_LABEL):
        assert f"| {name} |" in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert any(p.endswith(".gif") for p in images) and any("csi_by_lead" in p for p in images)
    assert any("rank_histogram" in p for p in images)
    for rel in images:
        with Image.open(out / rel) as im:
            assert im.format in ("PNG", "GIF")
            if im.format == "GIF":
                assert im.n_frames > 1
    assert page.count("data:image/") == len(images)
    info = json.loads((out / "demo.json").read_text())
    assert set(info["results"]) == {"persistence", "extrapolation", BACKBONE_LABEL, DIFFCAST_LABEL}
    assert info["results"][DIFFCAST_LABEL]["members"] == info["settings"]["members"]
    assert (info["real"] is not None) == real
    return info


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    info = run_demo(out, settings=TINY, progress=False)
    _check_report(out, real=False)
    assert info["training"]["diffcast"]["trainable_parameters"] < info["training"]["diffcast"]["parameters"]
    assert (out / "runs" / "diffcast").is_dir() and (out / "eval" / "metrics.json").is_file()
    # a rerun into the same folder replaces the previous demo
    run_demo(out, settings=TINY, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        run_demo(tmp_path / "other", settings=TINY, progress=False)


@pytest.mark.slow
def test_tiny_demo_with_real_data(tmp_path, sevir_demo):
    out = tmp_path / "demo"
    info = run_demo(out, settings=TINY, real=sevir_demo, progress=False)
    _check_report(out, real=True)
    assert len(info["real"]["sequences"]) == 4
    assert info["real"]["metrics"]["extrapolation"]["csi_m"] > 0
    assert "Real data" in (out / "report.md").read_text()


@pytest.mark.slow
def test_demo_quick_cli(tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert re.search(r"claim held: (yes|no)", stdout)
    info = _check_report(out, real=False)
    assert info["profile"] == "quick"
