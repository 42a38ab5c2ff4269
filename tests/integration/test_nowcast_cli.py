"""``diffcast nowcast`` end to end: every input kind (SEVIR files included), baselines and checkpoints,
georeferencing of radar input, bad input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pyproj
import pytest
import torch
import xarray as xr
from PIL import Image

from diffcast.cli import main
from diffcast.data.sevir import SEVIRDataset
from diffcast.data.transforms import SEVIR_META
from diffcast.models.factory import build_model
from diffcast.pipeline import prepare_input, read_input
from diffcast.training.model_io import save_model_file
from diffcast.writers.netcdf import build_forecast_dataset

OUTPUTS = {"forecast.nc", "forecast.gif", "panel.png", "forecast.html", "run.json"}


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
        fc = ds["forecast"].values
        if "coverage" in ds:  # radar: NaN exactly outside coverage
            covered = ds["coverage"].values == 1
            assert np.isfinite(fc[..., covered]).all() and np.isnan(fc[..., ~covered]).all()
        else:
            assert np.isfinite(fc).all()
        prob = ds["exceedance_probability"].values
        assert np.nanmin(prob) >= 0 and np.nanmax(prob) <= 1
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
    info = _check_outputs(out, 1, 3, 64, 64, units="mm h-1")  # MeteoSwiss GIFs hold rain rates
    assert info["input"]["kind"] == "radar" and not info["input"]["times_nominal"]
    assert info["input"]["quantity"] == "mm/h" and info["prob_threshold"] == 1.0 and info["prob_threshold_unit"] == "mm/h"
    assert info["meta"]["timestep_min"] == 5.0
    day = f"{folders[0].name[:4]}-{folders[0].name[4:6]}-{folders[0].name[6:8]}"  # folders are named YYYYMMDD
    assert info["analysis_time"].startswith(day)
    assert [Path(f).name for f in info["input"]["files"]] == [f.name for f in files[1:]]  # the last 5 of 6
    # the file timestamps set the analysis time; valid times follow it in 5-minute steps
    with xr.open_dataset(out / "forecast.nc") as ds:
        t0 = ds["forecast_reference_time"].values
        assert str(t0).startswith(day)
        np.testing.assert_array_equal(ds["time"].values - t0, np.array([5, 10, 15], dtype="timedelta64[m]"))
        assert ds["forecast"].attrs["standard_name"] == "rainfall_rate"
        assert list(ds["threshold"].values) == [0.5, 1.0, 5.0, 10.0]


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


def test_diffcast_member_chunk_gives_the_same_members(tmp_path, capsys):
    ckpt = _tiny_model_file(tmp_path, "diffcast")
    np.save(tmp_path / "x.npy", _blob_frames(5, 16, 16))
    vals = []
    for extra in ([], ["--member-chunk", "1"]):
        out = tmp_path / f"o{len(extra)}"
        assert main(["nowcast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "x.npy"), "--out", str(out),
                     "--members", "3", "--seed", "5", "--steps", "2", "--prob-matching", "none", *extra]) == 0
        with xr.open_dataset(out / "forecast.nc") as ds:
            vals.append(ds["forecast"].values)
    # raw members (probability matching could swap two pixels whose values tie to round-off)
    np.testing.assert_allclose(vals[1], vals[0], rtol=1e-4, atol=1e-4)
    assert main(["nowcast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "bad"), "--members", "2", "--member-chunk", "0"]) == 2
    assert "member_chunk must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_diffcast_precision_flag(tmp_path, monkeypatch):
    """--precision bf16 runs the denoiser under bfloat16 autocast: the members move by round-off, run.json says so."""
    from diffcast.models.diffusion import residual

    monkeypatch.setattr(residual, "cpu_has_native_bf16", lambda: True)  # no speed warning on any CPU
    ckpt = _tiny_model_file(tmp_path, "diffcast")
    np.save(tmp_path / "x.npy", _blob_frames(5, 16, 16))
    vals = {}
    for prec in ("fp32", "bf16"):
        out = tmp_path / prec
        assert main(["nowcast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "x.npy"), "--out", str(out),
                     "--members", "2", "--seed", "3", "--steps", "2", "--prob-matching", "none",
                     "--precision", prec]) == 0
        info = _check_outputs(out, 2, 5, 16, 16)
        assert info["sample_kwargs"].get("autocast_dtype") == (None if prec == "fp32" else "bf16")
        with xr.open_dataset(out / "forecast.nc") as ds:
            vals[prec] = ds["forecast"].values
    diff = np.abs(vals["bf16"] - vals["fp32"])
    scale = np.abs(vals["fp32"]).max()
    assert 0 < diff.max() < 0.1 * scale, (diff.max(), scale)


def test_diffcast_probability_matching_flag(tmp_path):
    """Default: every member takes the last observed frame's distribution (run.json says so); none: raw."""
    ckpt = _tiny_model_file(tmp_path, "diffcast")
    frames = _blob_frames(5, 16, 16)
    np.save(tmp_path / "x.npy", frames)
    runs = {}
    for flag in ("cdf", "none"):
        out = tmp_path / flag
        assert main(["nowcast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "x.npy"), "--out", str(out),
                     "--members", "2", "--seed", "3", "--steps", "2", "--prob-matching", flag]) == 0
        runs[flag] = _check_outputs(out, 2, 5, 16, 16)
        with xr.open_dataset(out / "forecast.nc") as ds:
            runs[flag]["values"] = ds["forecast"].values
    assert runs["cdf"]["prob_matching"] == "cdf" and runs["none"]["prob_matching"] is None
    with xr.open_dataset(tmp_path / "cdf" / "forecast.nc") as ds:
        last_obs = ds["observation"].values[-1].ravel()
    fc = runs["cdf"]["values"]
    for m in range(2):
        for t in range(5):
            assert np.isin(fc[m, t].ravel(), last_obs).all()  # only the observation's values
            assert fc[m, t].max() == last_obs.max()
    assert not np.allclose(fc, runs["none"]["values"])


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


# ----------------------------------------------------------------------------- SEVIR files
def test_sevir_hdf5_input(tmp_path, capsys, helper_module):
    helper_module("unit/data/test_data_sevir.py").write_fixture(tmp_path / "sevir")
    h5 = tmp_path / "sevir" / "vil" / "2019" / "B.h5"
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(h5), "--sample-index", "1", "--size", "4", "4",
                 "--t-out", "6", "--out", str(out)]) == 0
    info = _check_outputs(out, 1, 6, 4, 4)
    assert info["input"]["files"] == [f"{h5}:vil[1]"] and info["input"]["raw_shape"] == [49, 12, 12]
    assert any("SEVIR layout" in n for n in info["input"]["notes"])
    assert any("used frames 0..4 of 49" in n for n in info["input"]["notes"])
    assert info["meta"]["name"] == "sevir" and info["input"]["georeferencing"] is None
    ds_sevir = SEVIRDataset.from_file(h5, seq_len=25, stride=12, size=4)
    window = ds_sevir.sequence(1 * ds_sevir.windows_per_event)  # event 1, frames 0-24, area-resized
    with xr.open_dataset(out / "forecast.nc") as ds:
        np.testing.assert_allclose(ds["observation"].values, SEVIR_META.to_physical(window[:5]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ds["forecast"].values[0, 0], ds["observation"].values[-1], rtol=1e-6)
        assert ds.attrs["georeferencing"].startswith("none")
    # the last window of the event, chosen explicitly
    out2 = tmp_path / "out2"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(h5), "--sample-index", "1", "--size", "4", "4",
                 "--t-out", "6", "--start-frame", "44", "--out", str(out2)]) == 0
    assert any("used frames 44..48 of 49" in n for n in json.loads((out2 / "run.json").read_text())["input"]["notes"])
    # errors: one line each, no output
    bad = tmp_path / "bad"
    base = ["nowcast", "--baseline", "persistence", "--out", str(bad)]
    _fail([*base, "--input", str(h5)], capsys, bad, "--sample-index")
    _fail([*base, "--input", str(h5), "--sample-index", "1", "--start-frame", "46"], capsys, bad, "--start-frame 46")
    with h5py.File(h5) as fh:
        np.save(tmp_path / "event.npy", fh["vil"][1])  # (12, 12, 49): one event without its N axis
    _fail([*base, "--input", str(tmp_path / "event.npy")], capsys, bad, "--layout time-first or --layout time-last")
    out3 = tmp_path / "out3"
    assert main([*base[:-1], str(out3), "--input", str(tmp_path / "event.npy"), "--layout", "time-last",
                 "--t-out", "2"]) == 0
    _check_outputs(out3, 1, 2, 12, 12)


# ----------------------------------------------------------------------------- radar georeferencing
RADAR_SERIES = {  # format, folder under the shared radar data
    "mch": "mch/20160711",
    "fmi": "fmi/pgm/20160928",
    "bom-c10": "bom/prcp-c10",
    "bom-cscn": "bom/prcp-cscn",
}


def _series_files(radar_data: Path, name: str) -> list[Path]:
    folder = radar_data / RADAR_SERIES[name]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []
    if len(files) < 5:
        pytest.skip(f"{folder} absent or with fewer than 5 files")
    return files[:5]


def _pysteps_reference(path: Path) -> tuple[dict, tuple[int, int], np.ndarray, np.ndarray]:
    """Importer metadata, grid shape and the pixel-centre x/y (2-D, rows as stored) derived independently.

    MeteoSwiss/FMI: pysteps' own ``get_geogrid`` (x1..x2 = grid edges). BoM: the file's
    own CF coordinates, since pysteps' BoM importer gives x1..x2 as pixel centres.
    """
    from pysteps.io import importers
    from pysteps.visualization.utils import get_geogrid

    if path.suffix == ".gif":
        data, _, meta = importers.import_mch_gif(str(path), product=path.name[:3], unit="mm/h", accutime=5.0)
    elif path.name.endswith(".pgm.gz"):
        data, _, meta = importers.import_fmi_pgm(str(path), gzipped=True)
    else:
        data, _, meta = importers.import_bom_rf3(str(path))
    h, w = data.shape
    assert meta["yorigin"] == "upper"
    if path.suffix == ".nc":
        with netCDF4.Dataset(path) as nc:
            scale = 1000.0 if nc["x"].units == "km" else 1.0
            xx, yy = np.meshgrid(np.asarray(nc["x"][:], float) * scale, np.asarray(nc["y"][:], float) * scale)
    else:
        xx, yy, *_ = get_geogrid(h, w, meta)
    return meta, (h, w), xx, yy


@pytest.mark.parametrize("name", sorted(RADAR_SERIES))
def test_radar_forecast_is_georeferenced(tmp_path, radar_data, name):
    files = _series_files(radar_data, name)
    meta, (h, w), xx, yy = _pysteps_reference(files[0])
    proj = pyproj.Proj(meta["projection"])
    # native grid (library path, no GIF): pixel (0, 0) and (-1, -1) against pysteps' metadata
    raw = read_input(files)
    prep = prepare_input(raw, t_in=5, size=(h, w), meta=raw.meta)
    ds = build_forecast_dataset(prep.x_in[None, :1], prep.meta, prep.analysis_time, x_in=prep.x_in, grid=prep.grid)
    np.testing.assert_allclose(ds["x"].values, xx[0], rtol=0, atol=0.01)
    np.testing.assert_allclose(ds["y"].values, yy[:, 0], rtol=0, atol=0.01)  # rows top -> bottom: y decreasing
    assert (np.diff(ds["y"].values) < 0).all()
    for i, j in ((0, 0), (-1, -1)):
        lon, lat = proj(xx[i, j], yy[i, j], inverse=True)
        assert float(ds["lon"][i, j]) == pytest.approx(lon, abs=1e-7)
        assert float(ds["lat"][i, j]) == pytest.approx(lat, abs=1e-7)

    # CLI with crop + resize: the file on disk, pixel (0, 0) = centre of its block of native pixels
    size, f = {"mch": (64, 10), "fmi": (76, 10), "bom-c10": (64, 8), "bom-cscn": (64, 8)}[name]
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "persistence", "--input", *map(str, files), "--out", str(out),
                 "--size", str(size), str(size), "--crop", "center", "--t-out", "2", "--no-progress"]) == 0
    info = _check_outputs(out, 1, 2, size, size, units="dBZ" if name == "fmi" else "mm h-1")  # FMI: reflectivity
    assert info["input"]["georeferencing"]["projection"] == meta["projection"]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x00 = xx[top : top + f, left : left + f].mean()
    y00 = yy[top : top + f, left : left + f].mean()
    lon, lat = proj(x00, y00, inverse=True)
    with xr.open_dataset(out / "forecast.nc") as ds:
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate" and ds["x"].attrs["units"] == "m"
        assert ds["y"].attrs["standard_name"] == "projection_y_coordinate"
        assert float(ds["x"][0]) == pytest.approx(x00, abs=0.01) and float(ds["y"][0]) == pytest.approx(y00, abs=0.01)
        assert float(ds["lon"][0, 0]) == pytest.approx(lon, abs=1e-7)
        assert float(ds["lat"][0, 0]) == pytest.approx(lat, abs=1e-7)
        for var in ("forecast", "ensemble_mean", "exceedance_probability", "observation"):
            assert ds[var].attrs["grid_mapping"] == "crs" and "lat" in ds[var].coords
        gm = dict(ds["crs"].attrs)
        assert pyproj.CRS.from_cf(gm) == pyproj.CRS(meta["projection"])
        assert gm["spatial_ref"] == gm["crs_wkt"] and gm["grid_mapping_name"]


def test_odim_files_georeferenced_like_pysteps(tmp_path, helper_module):
    from pysteps.io.importers import import_odim_hdf5
    from pysteps.visualization.utils import get_geogrid

    writer = helper_module("unit/data/test_data_radar.py")._write_odim  # 16 x 20 DBZH composite
    for t in ("120000", "120500", "121000"):
        writer(tmp_path / f"comp_{t}.h5", t)
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(tmp_path / "comp_120000.h5"),
                 str(tmp_path / "comp_120500.h5"), str(tmp_path / "comp_121000.h5"), "--t-in", "3", "--t-out", "2",
                 "--out", str(out)]) == 0
    _check_outputs(out, 1, 2, 16, 20, units="dBZ")
    data, _, meta = import_odim_hdf5(str(tmp_path / "comp_121000.h5"), qty="DBZH")
    xx, yy, *_ = get_geogrid(*data.shape, meta)  # the fixture's pixel size does not fit its corners: extent wins
    lon, lat = pyproj.Proj(meta["projection"])(xx, yy, inverse=True)
    with xr.open_dataset(out / "forecast.nc") as ds:
        np.testing.assert_allclose(ds["lon"].values, lon, atol=1e-7)
        np.testing.assert_allclose(ds["lat"].values, lat, atol=1e-7)
        assert pyproj.CRS.from_cf(dict(ds["crs"].attrs)) == pyproj.CRS(meta["projection"])
        assert "pysteps' convention" in ds.attrs["georeferencing_notes"]


# ----------------------------------------------------------------------------- radar: reads, coverage, units
def _knmi_rain_folder(folder: Path, writer, n: int = 40, corrupt: int = 0) -> list[Path]:
    """``n`` KNMI 5-min accumulations (uint16 hundredths of mm) of 12 x 16 px; no data on the left, more in the last.

    The first ``corrupt`` files are garbage: a nowcast must never decode them.
    """
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        acc = rng.integers(0, 400, (12, 16))  # 0 - 4 mm in 5 min = 0 - 48 mm/h
        acc[:, :1] = 0
        acc[0, 1:4] = [1, 2, 0]  # 0.12, 0.24 mm/h and none
        acc[:, 14 if i == n - 1 else 15:] = 65535  # no data; the last frame lacks one more column
        p = folder / f"RAD_NL25_RAP_NA_{dt.datetime(2010, 8, 26) + dt.timedelta(minutes=5 * i):%Y%m%d%H%M}.h5"
        writer(p, acc)
        paths.append(p)
    for p in paths[:corrupt]:
        p.write_bytes(b"\x89HDF corrupt")
    return paths


def test_radar_rain_rate_nowcast_reads_needed_files_and_writes_mm_h(tmp_path, helper_module, monkeypatch, capsys):
    """Issue 19 items 3-5 on KNMI-like rain accumulations: reads, NaN outside coverage, mm/h out."""
    import dataclasses

    from pysteps.io.importers import import_knmi_hdf5

    from diffcast.data import radar

    paths = _knmi_rain_folder(tmp_path / "in", helper_module("unit/data/test_data_radar.py")._write_knmi, corrupt=35)
    reads: list[str] = []
    fmt = radar.RADAR_FORMATS["knmi"]
    monkeypatch.setitem(radar.RADAR_FORMATS, "knmi", dataclasses.replace(
        fmt, importer=lambda p, m: (reads.append(p.name), fmt.importer(p, m))[1]))
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(tmp_path / "in"), "--out", str(out),
                 "--t-out", "3", "--no-progress"]) == 0
    assert sorted(reads) == sorted(p.name for p in paths[-5:]) and len(reads) == 5  # 5 of 40 files, once each
    info = _check_outputs(out, 1, 3, 12, 16, units="mm h-1")
    assert info["input"]["quantity"] == "mm/h" and info["output"]["thresholds"] == [0.5, 1.0, 5.0, 10.0]
    assert [Path(f).name for f in info["input"]["files"]] == [p.name for p in paths[-5:]]
    # the input as pysteps reads it, in mm/h (5-min accumulation x 12)
    obs = []
    for p in paths[-5:]:
        r, _, meta = import_knmi_hdf5(str(p), qty="ACRR", accutime=5.0)
        assert meta["unit"] == "mm"
        obs.append(np.where(r * 12 >= (1 / 200) ** (1 / 1.6), r * 12, np.where(np.isfinite(r), 0.0, np.nan)))
    obs = np.asarray(obs)
    no_data = np.isnan(obs[-1])
    assert no_data.sum() == 24 and np.isnan(obs[0]).sum() == 12  # the last frame lacks one more column
    with xr.open_dataset(out / "forecast.nc") as ds:
        assert ds["forecast"].attrs["standard_name"] == "rainfall_rate" and ds["coverage"].attrs["flag_meanings"]
        np.testing.assert_array_equal(ds["coverage"].values == 0, no_data)
        for name in ("forecast", "ensemble_mean", "exceedance_probability", "observation"):
            v = ds[name].values
            np.testing.assert_array_equal(np.isnan(v), np.broadcast_to(no_data, v.shape), err_msg=name)
        # persistence: every lead is the last input frame, back in mm/h (float tolerance; < 0.036 mm/h -> 0)
        for k in range(3):
            np.testing.assert_allclose(ds["forecast"].values[0, k], obs[-1], rtol=2e-5, equal_nan=True)
        np.testing.assert_allclose(ds["observation"].values[:, ~no_data], obs[:, ~no_data], rtol=2e-5)
        np.testing.assert_allclose(ds["forecast"].values[0, 0, 0, :4], [0.0, 0.12, 0.24, 0.0], rtol=1e-5)
        p1 = ds["exceedance_probability"].sel(threshold=1.0).values[0]
        np.testing.assert_array_equal(p1[~no_data], (obs[-1] >= 1.0)[~no_data])
    # --units dBZ keeps reflectivity; --prob-threshold in those units
    out2 = tmp_path / "out2"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(tmp_path / "in"), "--out", str(out2),
                 "--t-out", "2", "--units", "dBZ", "--prob-threshold", "25"]) == 0
    info = _check_outputs(out2, 1, 2, 12, 16, units="dBZ")
    assert info["prob_threshold"] == 25.0 and info["prob_threshold_unit"] == "dBZ"
    with xr.open_dataset(out2 / "forecast.nc") as ds:
        assert ds["forecast"].attrs["standard_name"] == "equivalent_reflectivity_factor"
        want = 10 * np.log10(200 * obs[-1][~no_data] ** 1.6, where=obs[-1][~no_data] > 0,
                             out=np.zeros((~no_data).sum()))
        np.testing.assert_allclose(ds["forecast"].values[0, 0][~no_data], want, atol=1e-4)
        assert 25.0 in ds["threshold"].values and 30.0 in ds["threshold"].values
    # a rain-rate threshold below what the encoding holds is refused
    bad = tmp_path / "bad"
    _fail(["nowcast", "--baseline", "persistence", "--input", str(tmp_path / "in"), "--out", str(bad),
           "--prob-threshold", "0.01"], capsys, bad, "--prob-threshold 0.01 mm/h is outside the rain rates")


def test_odim_errors_name_the_file_once_and_opera_format(tmp_path, helper_module, capsys):
    helpers = helper_module("unit/data/test_data_radar.py")
    rate = np.full((16, 20), 2.5)
    rate[:2, :2] = np.nan
    for t in ("120000", "120500", "121000"):
        helpers._write_odim_dataset_level(tmp_path / f"opera_{t}.h5", t, rate)  # quantity in dataset1/what
    files = [str(tmp_path / f"opera_{t}.h5") for t in ("120000", "120500", "121000")]
    for fmt in ("opera", "odim"):
        out = tmp_path / f"out_{fmt}"
        assert main(["nowcast", "--baseline", "persistence", "--input", *files, "--radar-format", fmt,
                     "--t-in", "3", "--t-out", "2", "--out", str(out)]) == 0
        _check_outputs(out, 1, 2, 16, 20, units="mm h-1")
        with xr.open_dataset(out / "forecast.nc") as ds:
            np.testing.assert_allclose(ds["forecast"].values[0, 0][2:], 2.5, rtol=1e-5)
            assert np.isnan(ds["forecast"].values[0, 0, :2, :2]).all()
    capsys.readouterr()
    broken = tmp_path / "broken"
    broken.mkdir()
    helpers._write_odim(broken / "comp_120000.h5", "120000")
    with h5py.File(broken / "comp_120000.h5", "a") as f:
        f["dataset1/data1/what"].attrs["quantity"] = np.bytes_("VRADH")
    bad = tmp_path / "bad"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(broken / "comp_120000.h5"), "--t-in", "1",
                 "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].count(str(broken / "comp_120000.h5")) == 1, err
    assert "none of the quantities DBZH, RATE, ACRR" in err[0]
