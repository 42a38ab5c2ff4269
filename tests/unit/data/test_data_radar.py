"""Radar archives via pysteps importers: formats, time stamps, gaps, transforms, regridding."""

from __future__ import annotations

import json
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
    assert rf.quantity == {"mch": "mm/h", "fmi": "dBZ", "bom": "mm/h"}[fmt]  # what the files hold


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
    with pytest.raises(ValueError, match="share the time stamp"):  # a duplicate (or a second product)
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
    # one event (the missing frame is a 10-minute gap, not an event boundary): with the default
    # fractions it is all train, and the other splits are empty with a reason instead of an IndexError
    parts = {s: DATASETS.build("radar", root=tmp_path, split=s, seq_len=2) for s in ("train", "val", "test", "all")}
    assert [e.label for e in parts["train"].events] == ["2016-09-28"]
    assert len(parts["train"].times) == len(parts["all"].times) == len(keep)
    assert parts["val"].times == parts["test"].times == [] and len(parts["test"]) == 0
    assert parts["test"].why_empty.startswith("1 event in the archive: all in train")
    with pytest.raises(IndexError, match="radar split 'test' .* has no window of 2 frames"):
        parts["test"][0]


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


# ----------------------------------------------------------------------------- events and splits
def _knmi_folder(folder: Path, starts: list[str], n: int, shape=(8, 10)) -> list[Path]:
    """KNMI-named files, ``n`` 5-minute frames from each start time ``YYYYmmddHHMM``."""
    from datetime import timedelta

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    acc = np.full(shape, 20)
    for start in starts:
        t0 = datetime.strptime(start, "%Y%m%d%H%M")
        for i in range(n):
            p = folder / f"RAD_NL25_RAP_NA_{t0 + timedelta(minutes=5 * i):%Y%m%d%H%M}.h5"
            _write_knmi(p, acc)
            paths.append(p)
    return paths


def test_events_go_to_splits_whole(tmp_path):
    from diffcast.data.radar import RadarArchive, assign_events, find_events

    def splits(n):
        times = [datetime(2020, 1, 1 + i, tzinfo=timezone.utc) for i in range(n)]
        return assign_events(find_events(times), (0.7, 0.15, 0.15))

    assert splits(1) == ["train"] and splits(2) == ["train", "test"] and splits(3) == ["train", "val", "test"]
    assert splits(10) == ["train"] * 6 + ["val"] * 2 + ["test"] * 2  # round(1.5) = 2 each, test last
    assert splits(20) == ["train"] * 14 + ["val"] * 3 + ["test"] * 3
    # a gap longer than an hour starts an event; a shorter one does not; labels are the UTC date of the first frame
    _knmi_folder(tmp_path, ["201607112330", "201607120100", "201607121000"], 6)  # 23:30-23:55, 01:00 (65 min later)
    _knmi_folder(tmp_path, ["201607121055"], 4)  # 30 min after 10:25: same event as 10:00
    arch = {s: RadarArchive(tmp_path, split=s, seq_len=3, size=None) for s in ("train", "val", "test", "all")}
    ev = arch["all"].events
    assert [(e.label, e.n_frames) for e in ev] == [("2016-07-11", 6), ("2016-07-12", 6), ("2016-07-12", 10)]
    assert arch["all"].event_splits == ["train", "val", "test"]
    assert arch["train"].times == arch["all"].times[:6] and arch["val"].times == arch["all"].times[6:12]
    assert arch["test"].times == arch["all"].times[12:]
    # windows never cross an event boundary or the 30-minute gap inside the last event
    assert len(arch["train"]) == len(arch["val"]) == 2 and len(arch["test"]) == 2 + 1
    assert len(arch["all"]) == 2 + 2 + 3
    for a in arch.values():
        for i in range(len(a)):
            t = a.window_times(i)
            assert all((q - p).total_seconds() == 300 for p, q in zip(t[:-1], t[1:]))
    assert arch["all"].quantity == "mm/h"  # KNMI accumulations are rain (mm per 5 min -> mm/h)


def test_split_events_by_date_and_range(tmp_path):
    from diffcast.data.radar import RadarArchive

    _knmi_folder(tmp_path, ["201601010000", "201601050000", "201601090000", "201602010000"], 4)

    def labels(split, **kw):
        a = RadarArchive(tmp_path, split=split, seq_len=2, size=None, **kw)
        return sorted({f"{t:%Y-%m-%d}" for t in a.times})

    only_test = {"test": ["2016-01-05"]}  # train takes every event no split names; val none
    assert labels("test", split_events=only_test) == ["2016-01-05"]
    assert labels("train", split_events=only_test) == ["2016-01-01", "2016-01-09", "2016-02-01"]
    assert labels("val", split_events=only_test) == []
    named = {"train": "2016-01-01", "val": ["2016-01-05"], "test": ["2016-01-06/2016-02-28"]}
    assert labels("test", split_events=named) == ["2016-01-09", "2016-02-01"]
    partial = {"train": ["2016-01-01"], "test": ["2016-02-01"]}  # train named: unnamed events are unused
    assert labels("train", split_events=partial) == ["2016-01-01"]
    assert labels("all", split_events=partial) == ["2016-01-01", "2016-01-05", "2016-01-09", "2016-02-01"]
    assert labels("test", split_events={"test": ["2019-07-01"]}) == []  # no such event: allowed, just empty
    with pytest.raises(ValueError, match="named for both train and test"):
        labels("train", split_events={"train": ["2016-01-01/2016-01-05"], "test": ["2016-01-05"]})
    with pytest.raises(ValueError, match="not a date YYYY-MM-DD"):
        labels("train", split_events={"test": ["5 Jan 2016"]})
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        labels("train", split_events={"holdout": ["2016-01-05"]})
    with pytest.raises(ValueError, match="unknown split"):
        RadarArchive(tmp_path, split="validation", seq_len=2, size=None)


def test_empty_split_is_a_one_line_error_not_an_index_error(tmp_path, capsys):
    """Issue 19 item 2: one event of 92 frames, 70/15/15: no test window; evaluate says why and what to do."""
    from diffcast.cli import main
    from diffcast.evaluation import build_dataset

    _knmi_folder(tmp_path / "one", ["201008260000"], 92)
    root = tmp_path / "one"
    with pytest.raises(ValueError) as exc:
        build_dataset("radar", split="test", seq_len=25, data_root=root)
    msg = str(exc.value)
    assert str(root) in msg and "'test'" in msg and "1 event" in msg and "all in train" in msg
    assert 'split_events={"test": ["2010-08-26"]}' in msg and "split 'all'" in msg and "\n" not in msg
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "persistence", "--data", "radar", "--data-root", str(root),
                 "--out", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffcast evaluate: error: radar split 'test'"), err
    assert "Traceback" not in err[0] and str(root) in err[0]
    # the fix works: the event as the test split (or split 'all')
    assert len(build_dataset("radar", split="test", seq_len=25, data_root=root, size=8,
                             split_events={"test": ["2010-08-26"]})) == 3
    assert len(build_dataset("radar", split="all", seq_len=25, data_root=root, size=8)) == 3
    # too short events: the message says so
    with pytest.raises(ValueError, match="at most 92 consecutive frames 5 min apart; lower seq_len"):
        build_dataset("radar", split="train", seq_len=100, data_root=root)


def test_data_info_reports_events_and_empty_splits(tmp_path, capsys):
    from diffcast.cli import main

    _knmi_folder(tmp_path, ["201008260000"], 30)
    assert main(["-q", "data", "info", str(tmp_path), "--seq-len", "25", "--size", "8"]) == 0
    out = capsys.readouterr().out
    assert "2010-08-26  train    30 frames" in out
    assert "train: 1 window(s) from 1 event(s)" in out
    assert "test : 0 windows (1 event in the archive: all in train; pass split_events or a longer archive)" in out
    assert main(["-q", "data", "info", str(tmp_path), "--seq-len", "25", "--size", "8", "--json",
                 "--set", 'split_events={"test": ["2010-08-26"]}']) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{"):])  # after pysteps' banner, when it is printed
    assert info["splits"] == {"train": 0, "val": 0, "test": 1}
    assert info["events"][0]["split"] == "test" and info["split_details"]["test"]["events"] == ["2010-08-26"]
    assert info["quantity"] == "mm/h"


def test_real_mch_archive_one_event_per_split(radar_data):
    from diffcast.data.radar import RadarArchive

    root = radar_data / "mch"
    if not root.is_dir() or len([d for d in root.iterdir() if d.is_dir()]) < 3:
        pytest.skip(f"{root} with three event folders absent")
    parts = {s: RadarArchive(root, split=s, seq_len=12, size=32) for s in ("train", "val", "test")}
    days = {s: {f"{t:%Y-%m-%d}" for t in p.times} for s, p in parts.items()}
    assert days["train"] == {"2015-05-15"} and days["val"] == {"2016-07-11", "2016-07-12"}  # crosses midnight
    assert days["test"] == {"2017-01-31"}
    assert all(len(p) == 3 for p in parts.values())


# ----------------------------------------------------------------------------- lazy series
def test_series_reads_only_the_frames_used(tmp_path, monkeypatch):
    import dataclasses

    from diffcast.data import radar

    paths = _knmi_folder(tmp_path, ["201008260000"], 12)
    for p in paths[:8]:
        p.write_bytes(b"corrupt")  # never decoded
    calls = []
    fmt = radar.RADAR_FORMATS["knmi"]
    monkeypatch.setitem(radar.RADAR_FORMATS, "knmi", dataclasses.replace(
        fmt, importer=lambda path, m: (calls.append(path.name), fmt.importer(path, m))[1]))
    series = radar.RadarSeries(list(reversed(paths)), sort=True)  # sorted by time
    assert series.times == sorted(series.times) and calls == []
    lazy, mask = series.lazy("data"), series.lazy("mask")
    assert lazy.shape == (12, 8, 10) and calls == [paths[-1].name]  # the grid comes from the last frame
    x = lazy[np.array([9, 10, 11])]
    assert x.shape == (3, 8, 10) and mask[10:].shape == (2, 8, 10) and not mask[11].any()
    assert calls == [paths[i].name for i in (11, 9, 10)] and series.reads == [11, 9, 10]
    with pytest.raises(ValueError, match=paths[3].name):
        lazy[3]
    with pytest.raises(ValueError, match="not increasing"):
        radar.RadarSeries([paths[1], paths[0]])


# ----------------------------------------------------------------------------- ODIM / OPERA
def _write_odim_dataset_level(path: Path, time: str, rate: np.ndarray) -> None:
    """An OPERA-style composite: ``quantity`` (RATE) and scaling in ``dataset1/what``, none in ``data1``."""
    _write_odim(path, time)
    with h5py.File(path, "a") as f:
        del f["dataset1"]
        codes = np.where(np.isfinite(rate), np.round(np.nan_to_num(rate) / 0.01), 65535).astype(np.uint16)
        f.create_dataset("dataset1/data1/data", data=codes)
        w = f.create_group("dataset1/what")
        w.attrs["quantity"] = np.bytes_("RATE")
        for k, v in (("gain", 0.01), ("offset", 0.0), ("nodata", 65535.0), ("undetect", 0.0)):
            w.attrs[k] = v


def test_odim_quantity_at_dataset_level_read_like_pysteps(tmp_path):
    """Issue 18: OPERA composites keep ``quantity`` in datasetN/what."""
    from pysteps.io.importers import import_odim_hdf5

    from diffcast.data.radar import read_frame

    rate = np.linspace(0, 20, 16 * 20).reshape(16, 20)
    rate[:3, :4] = np.nan
    path = tmp_path / "opera_120000.h5"
    _write_odim_dataset_level(path, "120000", rate)
    ref, _, meta = import_odim_hdf5(str(path), qty="RATE")
    for fmt in ("odim", "opera"):
        x, valid, got = read_frame(path, fmt)
        np.testing.assert_array_equal(valid, np.isfinite(ref))
        np.testing.assert_allclose(x[valid], _zr_reference(ref[valid]), atol=1e-6)
        assert got["unit"] == meta["unit"] == "mm/h"
    rf = read_radar_files([path], fmt="opera")
    assert rf.quantity == "mm/h" and rf.source["format"] == "opera"
    assert detect_format([path]) == "odim"  # opera is chosen explicitly, never detected


def test_odim_error_names_the_file_once(tmp_path, monkeypatch):
    import dataclasses

    from diffcast.data import radar

    path = tmp_path / "comp_120000.h5"
    _write_odim(path, "120000")
    with h5py.File(path, "a") as f:
        f["dataset1/data1/what"].attrs["quantity"] = np.bytes_("VRADH")
    with pytest.raises(ValueError) as exc:
        radar.read_frame(path, "odim")
    msg = str(exc.value)
    assert msg.count(str(path)) == 1 and "none of the quantities DBZH, RATE, ACRR (found ['VRADH'])" in msg
    # an importer whose own message names the file: still once
    fmt = radar.RADAR_FORMATS["odim"]

    def fails(p, m):
        raise OSError(f"Unable to open file {p}")

    monkeypatch.setitem(radar.RADAR_FORMATS, "odim", dataclasses.replace(fmt, importer=fails))
    with pytest.raises(ValueError) as exc:
        radar.read_frame(path, "odim")
    assert str(exc.value).count(str(path)) == 1 and "OSError" in str(exc.value)


def test_describing_an_hdf5_archive_reads_no_pixels(tmp_path, helper_module, monkeypatch):
    """Issue 18 item 4: `data info` on a folder of ODIM composites takes the grid, unit and pixel size from the
    attributes; a 4400 x 3800 composite folder no longer costs 1 GB to describe."""
    from datetime import datetime

    from diffcast.cli.data import describe
    from diffcast.data.radar import frame_header, read_frame
    from diffcast.data.radar import frames as frames_mod

    writer = helper_module("unit/training/test_radar_windows.py")
    writer.write_odim_archive(tmp_path / "odim", [datetime(2021, 6, 1, 12)], n_frames=3, size=40, width=56)
    first = sorted((tmp_path / "odim").rglob("*.h5"))[0]
    x, _, meta = read_frame(first, "odim")
    shape, head = frame_header(first, "odim")
    assert shape == x.shape == (40, 56)
    assert {k: head[k] for k in ("unit", "xpixelsize", "cartesian_unit")} == {
        k: meta.get(k, "m") for k in ("unit", "xpixelsize", "cartesian_unit")}
    full = describe(str(tmp_path / "odim"))

    def no_pixels(*a, **k):
        raise AssertionError("read a radar field to describe the archive")

    monkeypatch.setattr(frames_mod, "read_frame", no_pixels)
    import diffcast.data.radar.archive as archive_mod

    monkeypatch.setattr(archive_mod, "read_frame", no_pixels)
    assert describe(str(tmp_path / "odim")) == full
