"""``diffcast demo``: the nowcast demo on a tiny setting (fast), and the training demo
(``--train``): claims logic, a tiny end-to-end run and the real ``--quick`` profile (slow)."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from diffcast.cli import main
from diffcast.demo import (
    BACKBONE_LABEL,
    DIFFCAST_LABEL,
    DemoSettings,
    NowcastDemoSettings,
    check_claims,
    run_demo,
    run_training_demo,
)

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
    info = run_training_demo(out, settings=TINY, progress=False)
    _check_report(out, real=False)
    assert info["training"]["diffcast"]["trainable_parameters"] < info["training"]["diffcast"]["parameters"]
    assert (out / "runs" / "diffcast").is_dir() and (out / "eval" / "metrics.json").is_file()
    # a rerun into the same folder replaces the previous demo
    run_training_demo(out, settings=TINY, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        run_training_demo(tmp_path / "other", settings=TINY, progress=False)


@pytest.mark.slow
def test_tiny_demo_with_real_data(tmp_path, sevir_demo):
    out = tmp_path / "demo"
    info = run_training_demo(out, settings=TINY, real=sevir_demo, progress=False)
    _check_report(out, real=True)
    assert len(info["real"]["sequences"]) == 4
    assert info["real"]["metrics"]["extrapolation"]["csi_m"] > 0
    assert "Real data" in (out / "report.md").read_text()


@pytest.mark.slow
def test_demo_quick_cli(tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert main(["demo", "--train", "--quick", "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert re.search(r"claim held: (yes|no)", stdout)
    info = _check_report(out, real=False)
    assert info["profile"] == "quick"


# ----------------------------------------------------------------------------- nowcast demo (the default)
#: 2 synthetic windows of 48 x 48, 3 leads, 2 members: seconds, not minutes.
NC_TINY = NowcastDemoSettings(t_in=4, n_lead=3, members=2, synthetic_size=48, synthetic_windows=2, animations=1,
                              sampler_steps=2)
NC_ROWS = ("persistence", "extrapolation", "steps", DIFFCAST_LABEL)
#: A tiny DiffCast over the extrapolation backbone (fully convolutional: runs on any grid).
TINY_DC = {"type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
           "backbone": {"name": "extrapolation"},
           "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                         "attn_dim_head": 8, "ta_kernel": 7}}


@pytest.fixture
def tiny_model(tmp_path):
    """A DiffCast model over the extrapolation backbone (untrained, tiny), saved as a model file."""
    import torch

    from diffcast.models import build_model
    from diffcast.training.model_io import save_model_file

    torch.manual_seed(0)
    model = build_model(TINY_DC)
    return save_model_file(tmp_path / "tiny_dc.safetensors", model.state_dict(), {"model": TINY_DC, "data": {"name": "radar"}})


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    """No shipped model installed, whatever this checkout holds."""
    monkeypatch.setattr("diffcast.shipped.WEIGHTS_DIR", tmp_path / "no_weights")


def _md_rows(md: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\| ([^|]+?) \| \d+ \|", md, re.MULTILINE)}


def test_nowcast_demo_with_a_model(tmp_path, tiny_model, no_shipped):
    out = tmp_path / "demo_out"
    info = run_demo(out, model=tiny_model, synthetic=True, settings=NC_TINY, progress=False)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert set(NC_ROWS) <= _md_rows(md)  # the skill table has the four models
    assert "Synthetic storms, not radar" in md and "synthetic: 2 windows, 3 leads" in md
    assert "No trained DiffCast model" not in md and str(tiny_model) in md
    # every image the report links exists and is embedded in the HTML page
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    for name in ("csi_by_lead.png", "crps_by_lead.png", "rank_histogram.png", "reliability.png", "window_0.gif"):
        assert any(p.endswith(name) for p in images), name
    for rel in images:
        with Image.open(out / rel) as im:
            assert im.format in ("PNG", "GIF")
            if im.format == "GIF":  # t_in + n_lead frames, 7 panels of 48 px upscaled 3x side by side
                assert im.n_frames == 4 + 3 and im.size[0] > 7 * 144
    assert page.count("data:image/") == len(images) and "<table>" in page and "<td>DiffCast</td>" in page
    # the scores: STEPS and DiffCast are ensembles with rank histograms; times are measured
    skill = json.loads((out / "skill.json").read_text())
    res = skill["results"]["synthetic"]
    assert list(res) == list(NC_ROWS) and skill["windows"] == ["synthetic 0", "synthetic 1"]
    for name in ("steps", DIFFCAST_LABEL):
        assert res[name]["members"] == 2 and len(res[name]["rank_histogram"]) == 3
        assert abs(sum(res[name]["rank_histogram"]) - 1.0) < 1e-6
    for name in NC_ROWS:
        assert res[name]["windows"] == 2 and len(res[name]["crps_by_lead"]) == 3 and res[name]["crps"] >= 0
        assert res[name]["seconds_per_forecast"] > 0
    assert res["persistence"]["members"] == 1 and "rank_histogram" not in res["persistence"]
    assert json.loads((out / "demo.json").read_text())["model"]["spec"] == str(tiny_model)
    assert info["data"]["case"] == "synthetic" and info["data"]["grid"] == [48, 48]


def test_nowcast_demo_without_a_model_shows_the_baselines(tmp_path, no_shipped, capsys, monkeypatch):
    import functools

    import diffcast.demo as demo
    import diffcast.demo.run as demo_run

    # the CLI sets members, windows, crop and sampler steps from its flags; the test shrinks the rest
    # (the CLI takes the class from the package, run_demo's defaults from diffcast.demo.run)
    small = functools.partial(
        NowcastDemoSettings, t_in=4, n_lead=2, synthetic_size=32, synthetic_windows=1, animations=1)
    monkeypatch.setattr(demo, "NowcastDemoSettings", small)
    monkeypatch.setattr(demo_run, "NowcastDemoSettings", small)
    out = tmp_path / "demo_out"
    assert main(["demo", "--synthetic", "--out", str(out), "--no-progress", "--members", "2", "--threads", "1"]) == 0
    assert "no DiffCast model shown" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "No trained DiffCast model is available" in md
    assert _md_rows(md) == {"persistence", "extrapolation", "steps"}
    assert (out / "animations" / "window_0.gif").is_file() and (out / "report.html").is_file()
    info = json.loads((out / "demo.json").read_text())
    assert info["model"]["spec"] is None and set(info["results"]) == {"persistence", "extrapolation", "steps"}


def test_nowcast_demo_model_that_cannot_run_is_reported(tmp_path, no_shipped):
    """A model that cannot take the windows (a VIL model here) is named with its reason; the baselines stay."""
    from diffcast.models import build_model
    from diffcast.training.model_io import save_model_file

    path = save_model_file(tmp_path / "vil.safetensors", build_model(TINY_DC).state_dict(),
                           {"model": TINY_DC, "data": {"name": "sevir"}})
    small = NowcastDemoSettings(t_in=4, n_lead=2, members=2, synthetic_size=32, synthetic_windows=1, animations=0)
    info = run_demo(tmp_path / "out", model=path, synthetic=True, settings=small, progress=False)
    assert info["model"]["error"] and set(info["results"]) == {"persistence", "extrapolation", "steps"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "could not forecast these windows" in md and "rain rate in mm/h" in md


def test_nowcast_demo_bad_arguments(tmp_path, no_shipped):
    with pytest.raises(FileNotFoundError, match="--model"):
        run_demo(tmp_path / "a", model=tmp_path / "missing.safetensors", settings=NC_TINY)
    with pytest.raises(ValueError, match="baselines"):
        run_demo(tmp_path / "a", model="steps", settings=NC_TINY)
    with pytest.raises(FileNotFoundError, match="--radar-root"):
        run_demo(tmp_path / "a", radar_root=tmp_path / "nowhere", settings=NC_TINY)
    with pytest.raises(ValueError, match="members"):
        NowcastDemoSettings(members=0)
    assert not (tmp_path / "a").exists()  # nothing written before the arguments are checked
    assert main(["demo", "--quick", "--out", str(tmp_path / "b")]) == 2  # --quick needs --train
    assert main(["demo", "--train", "--model", "x", "--out", str(tmp_path / "b")]) == 2


def test_nowcast_demo_on_radar(tmp_path, radar_data, tiny_model):
    """The held-out radar windows: one per test event, mm/h, the crop asked for."""
    from diffcast.demo import demo_case

    s = NowcastDemoSettings(t_in=4, n_lead=3, members=2, crop=64, windows=2, animations=1, sampler_steps=2)
    case, description = demo_case(s, radar_data, synthetic=False)
    assert case.name == "radar" and case.unit == "mm/h" and "Held-out radar windows" in description
    assert [w.x.shape for w in case.windows] == [(4, 64, 64)] * 2
    assert {w.label.split()[0] for w in case.windows} == {"mch", "fmi"}  # both test events
