"""``diffcast nowcast`` end to end: every input kind, baselines and checkpoints, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image

from diffcast.cli import main
from diffcast.models.factory import build_model
from diffcast.training.model_io import save_model_file

OUTPUTS = {"forecast.nc", "forecast.gif", "panel.png", "run.json"}


def _blob_frames(t: int = 7, h: int = 32, w: int = 32) -> np.ndarray:
    """A Gaussian blob moving one pixel right per frame, values in [0, 0.9]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack(
        [0.9 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 3 - i) ** 2) / (2 * (w / 8) ** 2)) for i in range(t)]
    ).astype(np.float32)


def _check_outputs(out: Path, members: int, t_out: int, h: int, w: int, units: str = "kg m-2") -> dict:
    assert {p.name for p in out.iterdir()} == OUTPUTS
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]
    with xr.open_dataset(out / "forecast.nc") as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert dict(ds["forecast"].sizes) == {"member": members, "time": t_out, "y": h, "x": w}
        assert ds["forecast"].attrs["units"] == units
        assert ds["threshold"].attrs["units"] == units
        assert np.issubdtype(ds["time"].dtype, np.datetime64)
        steps = np.diff(ds["time"].values).astype("timedelta64[m]").astype(int)
        assert (steps == steps[0]).all() and steps[0] > 0
        assert ds["time"].values[0] > ds["forecast_reference_time"].values
        assert np.isfinite(ds["forecast"].values).all()
        prob = ds["exceedance_probability"].values
        assert prob.min() >= 0 and prob.max() <= 1
    with Image.open(out / "forecast.gif") as im:
        assert im.format == "GIF" and im.n_frames > 1
    with Image.open(out / "panel.png") as im:
        im.verify()
    info = json.loads((out / "run.json").read_text())
    assert info["members"] == members and info["forecast_shape"] == [members, t_out, h, w]
    assert info["software"]["diffcast"] and info["elapsed_s"]["total"] > 0
    return info


def _fail(argv: list[str], capsys, out: Path, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffcast nowcast: error:"), err
    assert match in err[0], err[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


@pytest.mark.parametrize("baseline", ["persistence", "extrapolation"])
def test_npy_with_each_baseline(tmp_path, baseline):
    np.save(tmp_path / "x.npy", _blob_frames())
    out = tmp_path / "out"
    assert main(["nowcast", "--checkpoint", baseline, "--input", str(tmp_path / "x.npy"), "--out", str(out),
                 "--t-out", "6", "--no-progress"]) == 0
    info = _check_outputs(out, 1, 6, 32, 32)
    assert info["model"]["name"] == baseline and info["input"]["kind"] == "npy"
    assert info["input"]["x_in_shape"] == [5, 32, 32]
    with xr.open_dataset(out / "forecast.nc") as ds:
        first = ds["forecast"].values[0, 0]
        last_obs = ds["observation"].values[-1]
    if baseline == "persistence":
        np.testing.assert_allclose(first, last_obs, rtol=1e-5, atol=1e-6)
    else:  # the blob moves right: the forecast's mass centre lies right of the last observation's
        xs = np.arange(32)
        assert (first.sum(0) * xs).sum() / first.sum() > (last_obs.sum(0) * xs).sum() / last_obs.sum() + 0.5


def test_uint8_npy_and_hdf5_inputs(tmp_path):
    codes = (_blob_frames() * 255).astype(np.uint8)
    np.save(tmp_path / "c.npy", codes[:, None])
    with h5py.File(tmp_path / "x.h5", "w") as fh:
        fh["seq/vil"] = np.stack([codes, codes])  # (N, T, H, W)
        fh["other"] = np.zeros(3)
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(tmp_path / "c.npy"), "--out", str(out1),
                 "--size", "16", "16", "--t-out", "4"]) == 0
    _check_outputs(out1, 1, 4, 16, 16)
    assert main(["nowcast", "--baseline", "persistence", "--input", str(tmp_path / "x.h5"), "--h5-key", "seq/vil",
                 "--sample-index", "1", "--out", str(out2), "--t-out", "4",
                 "--analysis-time", "2024-05-01T12:00"]) == 0
    info = _check_outputs(out2, 1, 4, 32, 32)
    assert info["analysis_time"] == "2024-05-01T12:00:00Z" and not info["input"]["times_nominal"]
    with xr.open_dataset(out2 / "forecast.nc") as ds:
        assert ds["time"].values[0] == np.datetime64("2024-05-01T12:05")
        np.testing.assert_allclose(ds.attrs["pixel_km"], 3.0)


def test_png_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_blob_frames(6, 64, 64)):
        Image.fromarray((f * 255).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "extrapolation", "--input", str(folder), "--out", str(out),
                 "--size", "32", "32", "--t-out", "5"]) == 0
    info = _check_outputs(out, 1, 5, 32, 32)
    assert [Path(f).name for f in info["input"]["files"]] == ["1.png", "2.png", "3.png", "4.png", "5.png"]
    assert any("resized 64x64 -> 32x32" in n for n in info["input"]["notes"])
    with xr.open_dataset(out / "forecast.nc") as ds:
        np.testing.assert_allclose(ds.attrs["pixel_km"], 6.0)


def test_sevir_demo_preds_layout(tmp_path, sevir_demo):
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(sevir_demo / "demo_0"), "--out", str(out)]) == 0
    info = _check_outputs(out, 1, 20, 128, 128)
    assert all("/preds/" in f for f in info["input"]["files"]) and len(info["input"]["files"]) == 5


def test_radar_folder(tmp_path, radar_data):
    folders = sorted(p for p in (radar_data / "mch").iterdir() if p.is_dir()) if (radar_data / "mch").is_dir() else []
    if not folders:
        pytest.skip("no MeteoSwiss radar folder in the shared data")
    files = sorted(f for f in folders[0].iterdir() if f.is_file())[:6]
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "persistence", "--input", *map(str, files), "--out", str(out),
                 "--size", "64", "64", "--crop", "center", "--t-out", "3"]) == 0
    info = _check_outputs(out, 1, 3, 64, 64, units="dBZ")
    assert info["input"]["kind"] == "radar" and not info["input"]["times_nominal"]
    assert info["meta"]["timestep_min"] == 5.0
    day = f"{folders[0].name[:4]}-{folders[0].name[4:6]}-{folders[0].name[6:8]}"  # folders are named YYYYMMDD
    assert info["analysis_time"].startswith(day)
    assert [Path(f).name for f in info["input"]["files"]] == [f.name for f in files[1:]]  # the last 5 of 6
    # the file timestamps set the analysis time; valid times follow it in 5-minute steps
    with xr.open_dataset(out / "forecast.nc") as ds:
        t0 = ds["forecast_reference_time"].values
        assert str(t0).startswith(day)
        np.testing.assert_array_equal(ds["time"].values - t0, np.array([5, 10, 15], dtype="timedelta64[m]"))
        assert ds["forecast"].attrs["standard_name"] == "equivalent_reflectivity_factor"


def _tiny_model_file(tmp_path: Path, kind: str) -> Path:
    mcfg = {"type": kind, "t_in": 5, "t_out": 5, "channels": 1, "height": 16, "width": 16,
            "backbone": {"name": "convgru", "preset": "tiny"}}
    if kind == "diffcast":
        mcfg["diffusion"] = {"preset": "tiny", "dim": 8, "groups": 4}
    torch.manual_seed(0)
    model = build_model(mcfg)
    return save_model_file(tmp_path / f"{kind}.safetensors", model.state_dict(), {"model": mcfg, "data": {"name": "synthetic"}, "name": f"tiny-{kind}"})


def test_backbone_checkpoint(tmp_path):
    ckpt = _tiny_model_file(tmp_path, "backbone")
    np.save(tmp_path / "x.npy", _blob_frames(5, 32, 32))
    out = tmp_path / "out"
    assert main(["nowcast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "x.npy"), "--out", str(out),
                 "--members", "3"]) == 0  # deterministic: one member, with a warning
    info = _check_outputs(out, 1, 5, 16, 16)
    assert info["model"]["name"] == "tiny-backbone" and info["members_requested"] == 3


def test_diffcast_checkpoint_members_and_seed(tmp_path):
    ckpt = _tiny_model_file(tmp_path, "diffcast")
    np.save(tmp_path / "x.npy", _blob_frames(5, 16, 16))
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["nowcast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "x.npy"), "--out", str(out),
                     "--members", "2", "--seed", "7", "--steps", "2"]) == 0
        info = _check_outputs(out, 2, 5, 16, 16)
        assert info["model"]["probabilistic"] and info["seed"] == 7
    with xr.open_dataset(outs[0] / "forecast.nc") as a, xr.open_dataset(outs[1] / "forecast.nc") as b:
        np.testing.assert_array_equal(a["forecast"].values, b["forecast"].values)  # same seed, same members


def test_bad_inputs_fail_with_one_line_and_no_output(tmp_path, capsys):
    out = tmp_path / "out"
    np.save(tmp_path / "short.npy", _blob_frames(3))
    np.save(tmp_path / "range.npy", _blob_frames() * 10)
    np.save(tmp_path / "rect.npy", np.zeros((5, 16, 32), np.float32))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.png").write_bytes(b"not a png")
    ckpt = _tiny_model_file(tmp_path, "backbone")
    base = ["nowcast", "--out", str(out)]
    _fail([*base, "--baseline", "persistence", "--input", str(tmp_path / "short.npy")], capsys, out, "needs 5 input frames")
    _fail([*base, "--baseline", "persistence", "--input", str(tmp_path / "range.npy")], capsys, out, "[0, 1]")
    _fail([*base, "--baseline", "persistence", "--input", str(tmp_path / "missing.npy")], capsys, out, "does not exist")
    _fail([*base, "--baseline", "persistence", "--input", str(tmp_path / "broken")], capsys, out, "0.png")
    _fail([*base, "--checkpoint", str(ckpt), "--input", str(tmp_path / "rect.npy")], capsys, out, "--crop center")
    _fail([*base, "--checkpoint", str(tmp_path / "nope"), "--input", str(tmp_path / "rect.npy")], capsys, out, "does not exist")
    _fail([*base, "--baseline", "persistence", "--input", str(tmp_path / "short.npy"), "--members", "0"], capsys, out, "--members")
    (tmp_path / "ok.npy").write_bytes((tmp_path / "rect.npy").read_bytes())
    _fail([*base, "--baseline", "persistence", "--input", str(tmp_path / "ok.npy"), "--prob-threshold", "999"],
          capsys, out, "--prob-threshold")
