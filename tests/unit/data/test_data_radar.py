"""Radar archives via pysteps importers: formats, time stamps, gaps, transforms, regridding."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffcast.data import DATASETS
from diffcast.data.radar import (
    RADAR_FORMATS,
    detect_format,
    list_radar_files,
    read_radar_files,
    regrid,
    to_unit_interval,
)

FORMAT_DIRS = {"mch": "mch/20160711", "fmi": "fmi/pgm/20160928", "bom": "bom/prcp-cscn"}


def _dir(radar_data: Path, fmt: str) -> Path:
    d = radar_data / FORMAT_DIRS[fmt]
    if not d.is_dir():
        pytest.skip(f"{d} absent")
    return d


def _zr_reference(rate_mmh: np.ndarray) -> np.ndarray:
    """dBZ/90 from Z = 200 R^1.6, written independently of the library."""
    with np.errstate(divide="ignore"):
        dbz = 10 * np.log10(200.0 * np.power(rate_mmh, 1.6))
    return np.clip(np.nan_to_num(dbz, neginf=0.0) / 90.0, 0, 1)


@pytest.mark.parametrize("fmt", sorted(FORMAT_DIRS))
def test_real_archives_sorted_and_readable(radar_data, fmt):
    found, items = list_radar_files(_dir(radar_data, fmt))
    assert found == fmt and len(items) >= 10
    times = [t for t, _ in items]
    assert times == sorted(times) and len(set(times)) == len(times)
    rf = read_radar_files([p for _, p in items[:3]], size=64)
    assert rf.data.shape == (3, 64, 64) and rf.data.dtype == np.float32
    assert 0 <= rf.data.min() and rf.data.max() <= 1 and rf.data.max() > 0
    assert rf.mask.shape == rf.data.shape and rf.mask.dtype == bool
    assert np.all(rf.data[rf.mask] == 0) and rf.mask.mean() < 0.5  # mask = no data
    step = (times[1] - times[0]).total_seconds() / 60
    assert rf.timestep_min == step and rf.meta.timestep_min == step
    assert rf.times == times[:3] and rf.source["format"] == fmt
    assert rf.files == [str(p) for _, p in items[:3]] and rf.pixel_km == rf.meta.pixel_km
    assert rf.meta.scale == 90.0 and rf.meta.unit == "dBZ"


def test_mch_values_follow_marshall_palmer(radar_data):
    from pysteps.io.importers import import_mch_gif

    _, items = list_radar_files(_dir(radar_data, "mch"))
    path = items[10][1]
    rate, _, _ = import_mch_gif(str(path), "AQC", "mm/h", 5.0)
    rf = read_radar_files([path], size=None)
    valid = np.isfinite(rate)
    np.testing.assert_allclose(rf.data[0][valid], _zr_reference(rate[valid]), atol=1e-5)
    np.testing.assert_array_equal(rf.mask[0], ~valid)
    assert np.all(rf.data[0][~valid] == 0)
    assert rf.times[0] == RADAR_FORMATS["mch"].timestamp(path)


def test_mch_timestamp_parsing():
    fmt = RADAR_FORMATS["mch"]
    assert fmt.timestamp(Path("AQC161932100V_00005.801.gif")) == datetime(
        2016, 7, 11, 21, 0, tzinfo=timezone.utc
    )
    assert RADAR_FORMATS["fmi"].timestamp(
        Path("201609281600_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz")
    ) == datetime(2016, 9, 28, 16, 0, tzinfo=timezone.utc)
    assert RADAR_FORMATS["bom"].timestamp(Path("66_20201031_001000.prcp-c10.nc")) == datetime(
        2020, 10, 31, 0, 10, tzinfo=timezone.utc
    )
    assert RADAR_FORMATS["knmi"].timestamp(Path("RAD_NL25_RAP_NA_201008260005.h5")) == datetime(
        2010, 8, 26, 0, 5, tzinfo=timezone.utc
    )
    assert detect_format([Path("RAD_NL25_RAP_NA_201008260005.h5")]) == "knmi"
    with pytest.raises(ValueError, match="single radar format"):
        detect_format([Path("AQC161932100V_00005.801.gif"), Path("66_20201031_001000.prcp-c10.nc")])


def test_gaps_and_order_are_errors(radar_data):
    _, items = list_radar_files(_dir(radar_data, "fmi"))
    paths = [p for _, p in items[:4]]
    with pytest.raises(
        ValueError, match="gap in the radar time series: 10 min between " + paths[0].name
    ):
        read_radar_files([paths[0], paths[2], paths[3]])
    with pytest.raises(ValueError, match="not increasing"):
        read_radar_files([paths[1], paths[0]])
    with pytest.raises(ValueError, match="not increasing"):
        read_radar_files([paths[0], paths[0]])
    with pytest.raises(FileNotFoundError):
        read_radar_files(
            [
                paths[0],
                paths[0].with_name("201609281600_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz.x"),
            ]
        )


def test_dataset_windows_never_span_gaps(radar_data, tmp_path):
    _, items = list_radar_files(_dir(radar_data, "fmi"))
    keep = [p for i, (_, p) in enumerate(items[:20]) if i != 7]  # simulate a missing frame
    for p in keep:
        os.symlink(p, tmp_path / p.name)
    ds = DATASETS.build(
        "radar",
        root=tmp_path,
        split="train",
        seq_len=4,
        stride=1,
        size=32,
        split_fractions=(1, 0, 0),
    )
    # runs 0..6 (7 frames) and 8..19 (12 frames): 4 + 9 windows of 4 frames
    assert len(ds) == 4 + 9
    for i in range(len(ds)):
        t = ds.window_times(i)
        assert all((b - a).total_seconds() == 300 for a, b in zip(t[:-1], t[1:]))
    x = ds[5]
    assert x.shape == (4, 1, 32, 32) and ds.meta.timestep_min == 5.0
    # time-fraction splits are disjoint consecutive blocks
    parts = {
        s: DATASETS.build(
            "radar", root=tmp_path, split=s, seq_len=2, split_fractions=(0.5, 0.25, 0.25)
        )
        for s in ("train", "val", "test")
    }
    assert (
        parts["train"].times[-1]
        < parts["val"].times[0]
        <= parts["val"].times[-1]
        < parts["test"].times[0]
    )
    assert sum(len(p.times) for p in parts.values()) == len(keep)


def test_corrupt_file_named(tmp_path):
    bad = tmp_path / "AQC161932100V_00005.801.gif"
    bad.write_bytes(b"GIF89a garbage")
    with pytest.raises(ValueError, match="AQC161932100V_00005.801.gif"):
        read_radar_files([bad])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no fmi files"):
        list_radar_files(tmp_path, fmt="fmi")
    with pytest.raises(FileNotFoundError):
        list_radar_files(tmp_path / "nope")


def test_unit_transforms():
    rate = np.array([[0.0, 1.0], [10.0, np.nan]])
    x, m = to_unit_interval(rate, {"unit": "mm/h", "transform": None})
    np.testing.assert_allclose(x[m], _zr_reference(rate[m]), atol=1e-6)
    assert not m[1, 1] and x[1, 1] == 0
    x2, _ = to_unit_interval(rate * 5 / 60, {"unit": "mm", "accutime": 5, "transform": None})
    np.testing.assert_allclose(x2, x, atol=1e-6)
    x3, _ = to_unit_interval(
        10 * np.log10(np.maximum(rate, 1e-10)), {"unit": "mm/h", "transform": "dB"}
    )
    np.testing.assert_allclose(x3, x, atol=1e-5)
    dbz = np.array([[-10.0, 45.0, 100.0]])
    x4, _ = to_unit_interval(dbz, {"unit": "dBZ", "transform": "dB"})
    np.testing.assert_allclose(x4, [[0.0, 0.5, 1.0]])
    with pytest.raises(ValueError, match="unsupported radar unit"):
        to_unit_interval(dbz, {"unit": "K"})
    with pytest.raises(ValueError, match="accutime"):
        to_unit_interval(dbz, {"unit": "mm"})


def test_regrid_area_and_crop():
    x = np.arange(12 * 18, dtype=np.float32).reshape(12, 18) / 300
    m = np.ones_like(x, bool)
    a, am = regrid(x, m, (4, 4), "area")  # centred 12x12 square, 3x3 block means
    np.testing.assert_allclose(a, x[:, 3:15].reshape(4, 3, 4, 3).mean(axis=(1, 3)), atol=1e-6)
    c, cm = regrid(x, m, (4, 4), "crop")
    np.testing.assert_array_equal(c, x[4:8, 7:11])
    big, bm = regrid(x, m, (16, 20), "crop")  # larger than the image: padded, masked
    assert big.shape == (16, 20) and bm.sum() == 12 * 18 and big[~bm].max() == 0


def _write_odim(path: Path, time: str) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_2")
        w = f.create_group("what")
        w.attrs["date"], w.attrs["time"] = np.bytes_("20200101"), np.bytes_(time)
        wh = f.create_group("where")
        wh.attrs["projdef"] = np.bytes_("+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +ellps=WGS84")
        for k, v in (
            ("LL_lat", 50.0),
            ("LL_lon", 0.0),
            ("UR_lat", 51.0),
            ("UR_lon", 2.0),
            ("xscale", 1000.0),
            ("yscale", 1000.0),
        ):
            wh.attrs[k] = v
        data = np.full((16, 20), 154, np.uint8)  # 154 * 0.5 - 32 = 45 dBZ
        data[0, 0] = 255  # nodata
        data[1, 1] = 0  # undetect
        d = f.create_group("dataset1/data1")
        d.create_dataset("data", data=data)
        dw = d.create_group("what")
        dw.attrs["quantity"] = np.bytes_("DBZH")
        for k, v in (("gain", 0.5), ("offset", -32.0), ("nodata", 255.0), ("undetect", 0.0)):
            dw.attrs[k] = v


def test_odim_hdf5(tmp_path):
    pytest.importorskip("pyproj")
    for t in ("120000", "120500", "121000"):
        _write_odim(tmp_path / f"comp_{t}.h5", t)
    fmt, items = list_radar_files(tmp_path)
    assert fmt == "odim" and [t.minute for t, _ in items] == [0, 5, 10]
    rf = read_radar_files([p for _, p in items])
    assert rf.data.shape == (3, 16, 20) and rf.timestep_min == 5.0
    assert rf.data[0, 5, 5] == pytest.approx(0.5)
    assert rf.mask[0, 0, 0] and rf.data[0, 0, 0] == 0  # nodata is masked
    assert rf.data[0, 1, 1] == 0 and not rf.mask[0, 1, 1]  # undetect = valid, no echo


def _write_knmi(path: Path, acc_hundredths: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("image1/image_data", data=acc_hundredths.astype(np.uint16))
        g = f.create_group("geographic")
        for k, v in (
            ("geo_column_offset", 0.0),
            ("geo_row_offset", 3650.0),
            ("geo_pixel_size_x", 1.0),
            ("geo_pixel_size_y", -1.0),
            ("geo_number_columns", float(acc_hundredths.shape[1])),
            ("geo_number_rows", float(acc_hundredths.shape[0])),
        ):
            g.attrs[k] = np.array([v], dtype=np.float32)
        g.attrs["geo_dim_pixel"] = np.bytes_("KM,KM")
        mp = g.create_group("map_projection")
        mp.attrs["projection_proj4_params"] = np.bytes_(
            "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752"
        )


def test_knmi_hdf5(tmp_path):
    acc = np.full((10, 12), 100)  # 1.00 mm in 5 min = 12 mm/h
    acc[0, 0] = 65535  # nodata
    for minute in (0, 5, 10):
        _write_knmi(tmp_path / f"RAD_NL25_RAP_NA_2010082600{minute:02d}.h5", acc)
    fmt, items = list_radar_files(tmp_path)
    assert fmt == "knmi"
    rf = read_radar_files([p for _, p in items])
    assert rf.data.shape == (3, 10, 12) and rf.timestep_min == 5.0
    np.testing.assert_allclose(rf.data[0, 5, 5], _zr_reference(np.array(12.0)), atol=1e-5)
    assert rf.mask[0, 0, 0] and rf.data[0, 0, 0] == 0
    assert rf.meta.pixel_km == pytest.approx(1.0)


def test_several_series_need_a_choice(radar_data):
    root = radar_data / "bom"
    if not (root / "prcp-c10").is_dir() or not (root / "prcp-cscn").is_dir():
        pytest.skip("BoM sample folders absent")
    with pytest.raises(ValueError, match="several bom series"):
        list_radar_files(root)
    fmt, items = list_radar_files(root, series="2/prcp-cscn")
    assert fmt == "bom" and len(items) == len(list_radar_files(root / "prcp-cscn")[1])
    mixed = [
        list_radar_files(root / "prcp-cscn")[1][0][1],
        list_radar_files(root / "prcp-c10")[1][0][1],
    ]
    with pytest.raises(ValueError, match="mix several series"):
        read_radar_files(mixed)


def test_cli_treats_gif_folder_as_radar(radar_data):
    from diffcast.cli.data import resolve_source

    assert resolve_source(str(_dir(radar_data, "mch")))[0] == "radar"


def test_lower_origin_files_are_flipped_north_up(tmp_path, monkeypatch):
    """pysteps metadata with yorigin="lower" (row 0 = bottom): frames come out north-up."""
    import dataclasses

    from diffcast.data import radar

    field = np.zeros((6, 4))
    field[0, 1] = 40.0  # bottom row in the file's own orientation
    meta = {"unit": "dBZ", "transform": "dB", "yorigin": "lower", "zerovalue": 0.0}
    fake = dataclasses.replace(
        radar.RADAR_FORMATS["fmi"], importer=lambda path, m: (field.copy(), dict(meta))
    )
    monkeypatch.setitem(radar.RADAR_FORMATS, "fmi", fake)
    path = tmp_path / "201609281600_fmi.radar.composite.lowest_FIN_SUOMI1.pgm"
    path.write_bytes(b"")
    x, valid, got = radar.read_frame(path, "fmi")
    assert got["yorigin"] == "upper" and meta["yorigin"] == "lower"
    assert x[-1, 1] == pytest.approx(40.0 / 90.0) and x[0, 1] == 0.0
    meta["yorigin"] = "upper"
    x2, _, _ = radar.read_frame(path, "fmi")
    assert x2[0, 1] == pytest.approx(40.0 / 90.0)  # upper-origin files are left as they are
