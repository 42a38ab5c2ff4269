"""Input resolution for ``diffcast nowcast``: reading (array layouts, SEVIR files), fitting to the model
(windows, grid, georeferencing), staged output."""

from __future__ import annotations

import dataclasses
import datetime as dt

import h5py
import numpy as np
import pytest

from diffcast.data.sevir import SEVIRDataset
from diffcast.data.transforms import CIKM_META, RADAR_DBZ_META, SEVIR_META
from diffcast.geo import ProjectedGrid
from diffcast.pipeline import (
    NOMINAL_ANALYSIS_TIME,
    RawInput,
    convert_units,
    detect_kind,
    fit_grid,
    fit_projected_grid,
    prepare_input,
    read_input,
)
from diffcast.writers import staged_output


def _frames(t=6, h=8, w=8, seed=0):
    return np.random.default_rng(seed).random((t, h, w), dtype=np.float32)


# ----------------------------------------------------------------------------- reading
def test_npy_layouts(tmp_path):
    x = _frames()
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x[:, None])
    np.save(tmp_path / "c.npy", (x * 255).astype(np.uint8))
    np.save(tmp_path / "d.npy", np.stack([x, 1 - x]))
    for name in ("a", "b"):
        raw = read_input([tmp_path / f"{name}.npy"])
        assert raw.kind == "npy" and raw.frames.shape == (6, 8, 8)
        np.testing.assert_allclose(raw.frames, x)
    raw = read_input([tmp_path / "c.npy"])
    np.testing.assert_allclose(raw.frames, (x * 255).astype(np.uint8) / 255.0)
    with pytest.raises(ValueError, match="--sample-index"):
        read_input([tmp_path / "d.npy"])
    np.testing.assert_allclose(read_input([tmp_path / "d.npy"], sample_index=1).frames, 1 - x)


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.full((4, 8, 8), 3.0, np.float32), r"values in \[3, 3\]"),
        (np.full((4, 8, 8), np.nan, np.float32), "NaN"),
        (np.zeros((4, 8, 8), np.int32), "dtype int32"),
        (np.zeros((4, 2, 8, 8), np.float32), "sample-index"),
        (np.zeros((8, 8), np.float32), r"\(T, H, W\)"),
    ],
)
def test_npy_bad_arrays(tmp_path, arr, match):
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(ValueError, match=match):
        read_input([tmp_path / "x.npy"])


def test_hdf5_key_selection(tmp_path):
    x = _frames()
    with h5py.File(tmp_path / "one.h5", "w") as fh:
        fh["grp/vil"] = x
    with h5py.File(tmp_path / "two.h5", "w") as fh:
        fh["a"] = x
        fh["b"] = (x * 255).astype(np.uint8)[:, None]
    raw = read_input([tmp_path / "one.h5"])
    assert raw.kind == "h5" and raw.sources == [f"{tmp_path / 'one.h5'}:grp/vil"]
    np.testing.assert_allclose(raw.frames, x)
    with pytest.raises(ValueError, match="--h5-key"):
        read_input([tmp_path / "two.h5"])
    with pytest.raises(ValueError, match="no dataset 'c'"):
        read_input([tmp_path / "two.h5"], h5_key="c")
    assert read_input([tmp_path / "two.h5"], h5_key="b").frames.shape == (6, 8, 8)


def test_detect_kind_and_missing(tmp_path):
    (tmp_path / "frames").mkdir()
    for i in range(3):
        (tmp_path / "frames" / f"{i}.png").write_bytes(b"")
    assert detect_kind([tmp_path / "frames"]) == "images"
    (tmp_path / "demo" / "preds").mkdir(parents=True)
    assert detect_kind([tmp_path / "demo"]) == "images"
    with pytest.raises(ValueError, match="folder"):
        detect_kind([tmp_path / "frames" / "0.png"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_input([tmp_path / "nope.npy"])
    with pytest.raises(ValueError, match="no input"):
        read_input([])


def test_radar_files_with_image_suffixes_are_radar(tmp_path, monkeypatch):
    """FMI GeoTIFFs (``.tif``) named as such go to pysteps' importer, not to the image reader (issue 18)."""
    import diffcast.data.radar.importers as imp

    folder = tmp_path / "fmi"
    folder.mkdir()
    tifs = [folder / f"20160928{1600 + 5 * i}_FINUTM.tif" for i in range(3)]
    for p in tifs:
        p.write_bytes(b"II*\x00")
    assert detect_kind([folder]) == detect_kind(tifs) == detect_kind(tifs[:1]) == "radar"
    numbered = tmp_path / "numbered"
    numbered.mkdir()
    for i in range(3):
        (numbered / f"{i}.tif").write_bytes(b"")
    assert detect_kind([numbered]) == "images"  # numbered pictures stay pictures
    # without GDAL the GeoTIFFs give the one error naming it, never grey-scale frames without a projection
    real = imp.importlib.util.find_spec
    monkeypatch.setattr(imp.importlib.util, "find_spec", lambda n, *a: None if n in ("osgeo", "rasterio") else real(n, *a))
    with pytest.raises(ValueError, match="fmi_geotiff radar files needs GDAL"):
        read_input([folder])


@pytest.mark.parametrize("fmt", ["dwd_hdf5", "mch_hdf5"])
def test_dwd_and_meteoswiss_hdf5_are_radar(tmp_path, helper_module, fmt):
    """A DWD or MeteoSwiss HDF5 file, a list of them or their folder is radar input, not an HDF5 array."""
    formats = helper_module("unit/data/test_radar_formats_pysteps.py")
    name, write, _, _ = formats.CASES[fmt]
    paths = []
    for k in range(3):
        t = formats.T0 + dt.timedelta(minutes=5 * k)
        paths.append(tmp_path / name(t))
        write(paths[-1], t)
    if fmt == "mch_hdf5":  # MeteoSwiss files need no root what group (pysteps reads without it): known by name
        with h5py.File(paths[0], "a") as f:
            del f["what"]
    for given in ([tmp_path], paths, paths[:1]):
        assert detect_kind(given) == "radar", given
    raw = read_input(paths[:1])
    assert raw.kind == "radar" and raw.grid is not None and raw.times == [formats.T0]


# ----------------------------------------------------------------------------- fitting
def test_fit_grid_area_average_matches_block_mean():
    x = _frames(2, 16, 24)
    out, factor, notes = fit_grid(x, (4, 6))
    want = x.reshape(2, 4, 4, 6, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert factor == 4.0 and "area average" in notes[0]
    same, f1, n1 = fit_grid(x, (16, 24))
    assert same is x and f1 == 1.0 and n1 == []


def test_fit_grid_aspect_mismatch_and_centre_crop():
    x = _frames(1, 16, 32)
    with pytest.raises(ValueError, match="--crop center"):
        fit_grid(x, (8, 8))
    out, factor, notes = fit_grid(x, (8, 8), crop="center")
    want = x[:, :, 8:24].reshape(1, 8, 2, 8, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert factor == 2.0 and "cropped" in notes[0]


def test_prepare_uses_last_frames_and_nominal_time():
    raw = RawInput(_frames(7), "npy", ["x.npy"])
    prep = prepare_input(raw, t_in=5, size=(4, 4), meta=SEVIR_META)
    assert prep.x_in.shape == (5, 4, 4)
    np.testing.assert_allclose(prep.x_in, raw.frames[2:].reshape(5, 4, 2, 4, 2).mean(axis=(2, 4)), atol=1e-5)
    assert prep.time_nominal and prep.analysis_time == NOMINAL_ANALYSIS_TIME
    assert prep.times[0] == NOMINAL_ANALYSIS_TIME - dt.timedelta(minutes=20)
    assert prep.meta.pixel_km == SEVIR_META.pixel_km * 2
    assert any("last 5 of 7" in n for n in prep.notes)
    given = prepare_input(raw, t_in=5, size=(8, 8), meta=SEVIR_META, analysis_time="2020-02-03T04:05Z")
    assert not given.time_nominal and given.analysis_time == dt.datetime(2020, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="ISO"):
        prepare_input(raw, t_in=5, size=(8, 8), meta=SEVIR_META, analysis_time="yesterday")


def test_prepare_too_few_frames():
    raw = RawInput(_frames(3), "npy", ["x.npy"])
    with pytest.raises(ValueError, match="needs 5 input frames 5 min apart, got 3"):
        prepare_input(raw, t_in=5, size=(8, 8), meta=SEVIR_META)


def test_prepare_time_step_rules():
    t0 = dt.datetime(2020, 1, 1)
    times = [t0 + dt.timedelta(minutes=5 * i) for i in range(10)]
    raw = RawInput(_frames(10), "radar", ["f"], meta=RADAR_DBZ_META, times=times, timestep_min=5.0)
    meta10 = dataclasses.replace(RADAR_DBZ_META, timestep_min=10.0)
    prep = prepare_input(raw, t_in=3, size=(8, 8), meta=meta10)
    np.testing.assert_allclose(prep.x_in, raw.frames[[5, 7, 9]])
    assert prep.times == [times[5], times[7], times[9]] and prep.analysis_time == times[9]
    assert not prep.time_nominal
    meta7 = dataclasses.replace(RADAR_DBZ_META, timestep_min=7.0)
    with pytest.raises(ValueError, match="5 min apart but .* expects 7 min"):
        prepare_input(raw, t_in=3, size=(8, 8), meta=meta7)
    raw10 = dataclasses.replace(raw, timestep_min=10.0)
    with pytest.raises(ValueError, match="10 min apart"):
        prepare_input(raw10, t_in=3, size=(8, 8), meta=RADAR_DBZ_META)


def test_convert_units():
    x = np.array([0.5], np.float32)
    assert convert_units(x, None, SEVIR_META) is x
    np.testing.assert_allclose(convert_units(x, RADAR_DBZ_META, CIKM_META), x)  # dBZ/90 both
    scaled = dataclasses.replace(RADAR_DBZ_META, scale=60.0)
    np.testing.assert_allclose(convert_units(x, scaled, RADAR_DBZ_META), [30.0 / 90.0])
    with pytest.raises(ValueError, match="no conversion rule"):
        convert_units(x, RADAR_DBZ_META, SEVIR_META, "model m")


# ----------------------------------------------------------------------------- output
def test_staged_output_publishes_or_cleans(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out) as tmp:
            (tmp / "a.txt").write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_output(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with staged_output(out) as tmp:  # existing folder: files replaced one by one
        (tmp / "a.txt").write_text("2")
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "a.txt").read_text() == "2" and (out / "b.txt").read_text() == "3"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        with staged_output(tmp_path / "file"):
            pass


# ----------------------------------------------------------------------------- array layouts and SEVIR files
@pytest.fixture()
def sevir_file(tmp_path, helper_module):
    """The data tests' tiny SEVIR archive: vil (5, 12, 12, 49) uint8, time last, plus id."""
    helper_module("unit/data/test_data_sevir.py").write_fixture(tmp_path)
    return tmp_path / "vil" / "2019" / "B.h5"


def test_sevir_file_detected_and_read_like_the_data_layer(sevir_file):
    with pytest.raises(ValueError, match=r"5 SEVIR events; choose one with --sample-index I \(0 to 4\)"):
        read_input([sevir_file])
    raw = read_input([sevir_file], sample_index=2)
    with h5py.File(sevir_file) as fh:
        codes = fh["vil"][2]  # (12, 12, 49)
        event_id = fh["id"][2].decode()
    np.testing.assert_allclose(raw.frames, np.moveaxis(codes, -1, 0) / 255.0)
    assert raw.kind == "h5" and raw.sources == [f"{sevir_file}:vil[2]"]
    assert raw.meta.name == "sevir" and raw.timestep_min == 5.0 and raw.start_frame == 0
    assert raw.pixel_km == pytest.approx(384 / 12)  # the SEVIR domain is 384 km across
    assert any(f"id {event_id}" in n for n in raw.notes)
    # default window = the data layer's first window of the event: frames 0-4 in, 5-24 the future
    prep = prepare_input(raw, t_in=5, size=(4, 4), meta=SEVIR_META, t_out=20)
    ds = SEVIRDataset.from_file(sevir_file, seq_len=25, stride=12, size=4)
    want = ds.sequence(2 * ds.windows_per_event)  # event 2, start 0, area-resized 12 -> 4
    np.testing.assert_allclose(prep.x_in, want[:5], atol=1e-6)
    np.testing.assert_allclose(prep.y_true, want[5:], atol=1e-6)
    assert prep.meta.pixel_km == pytest.approx(96.0) and prep.grid is None
    # another window: frames 12-16 in, 17.. the future (limited to t_out)
    later = prepare_input(raw, t_in=5, size=(4, 4), meta=SEVIR_META, start_frame=12, t_out=3)
    np.testing.assert_allclose(later.x_in, ds.sequence(2 * ds.windows_per_event + 1)[:5], atol=1e-6)
    assert later.y_true.shape == (3, 4, 4)
    with pytest.raises(ValueError, match="--start-frame 45: .* frames 0..48; choose a start frame from 0 to 44"):
        prepare_input(raw, t_in=5, size=(4, 4), meta=SEVIR_META, start_frame=45)


def test_sevir_key_chosen_without_h5_key(sevir_file, tmp_path):
    # vil beside id: the one dataset with frames is used; ids travel into the notes
    assert read_input([sevir_file], sample_index=0).frames.shape == (49, 12, 12)
    with h5py.File(tmp_path / "one.h5", "w") as fh:  # a single event, N = 1: no index needed
        with h5py.File(sevir_file) as src:
            fh["vil"] = src["vil"][:1]
    assert read_input([tmp_path / "one.h5"]).frames.shape == (49, 12, 12)


def test_layout_option_and_ambiguous_shapes(tmp_path):
    x = _frames(6, 8, 8)
    hwt = np.ascontiguousarray(np.moveaxis(x, 0, -1))  # (8, 8, 6): square frames only with time last
    np.save(tmp_path / "hwt.npy", hwt)
    with pytest.raises(ValueError, match=r"hwt.npy has shape \(8, 8, 6\) and its time axis cannot be identified.*"
                                         r"--layout time-first or --layout time-last"):
        read_input([tmp_path / "hwt.npy"])
    np.testing.assert_allclose(read_input([tmp_path / "hwt.npy"], layout="time-last").frames, x)
    assert read_input([tmp_path / "hwt.npy"], layout="time-first").frames.shape == (8, 8, 6)
    np.save(tmp_path / "nhwt.npy", np.stack([hwt, 1 - hwt]))
    np.testing.assert_allclose(read_input([tmp_path / "nhwt.npy"], layout="time-last", sample_index=1).frames, 1 - x)
    with pytest.raises(ValueError, match="time axis cannot be identified"):
        read_input([tmp_path / "nhwt.npy"], sample_index=1)
    np.save(tmp_path / "five.npy", np.zeros((1, 2, 8, 8, 6), np.float32))
    with pytest.raises(ValueError, match="time-last reads"):
        read_input([tmp_path / "five.npy"], layout="time-last")
    with pytest.raises(ValueError, match="unknown layout"):
        read_input([tmp_path / "hwt.npy"], layout="sideways")
    # a float vil dataset is not SEVIR: the usual rule (and its ambiguity check) applies
    with h5py.File(tmp_path / "f.h5", "w") as fh:
        fh["vil"] = np.zeros((2, 8, 8, 6), np.float32)
    with pytest.raises(ValueError, match="time axis cannot be identified"):
        read_input([tmp_path / "f.h5"], sample_index=0)


def test_start_frame_on_time_first_input():
    t0 = dt.datetime(2020, 1, 1)
    times = [t0 + dt.timedelta(minutes=5 * i) for i in range(12)]
    raw = RawInput(_frames(12), "radar", [f"f{i}" for i in range(12)], meta=RADAR_DBZ_META, times=times, timestep_min=5.0)
    prep = prepare_input(raw, t_in=3, size=(8, 8), meta=RADAR_DBZ_META, start_frame=2, t_out=4)
    np.testing.assert_allclose(prep.x_in, raw.frames[2:5])
    np.testing.assert_allclose(prep.y_true, raw.frames[5:9])
    assert prep.analysis_time == times[4] and prep.sources == ["f2", "f3", "f4"]
    meta10 = dataclasses.replace(RADAR_DBZ_META, timestep_min=10.0)  # every 2nd frame, from frame 1
    prep = prepare_input(raw, t_in=3, size=(8, 8), meta=meta10, start_frame=1)
    np.testing.assert_allclose(prep.x_in, raw.frames[[1, 3, 5]])
    np.testing.assert_allclose(prep.y_true, raw.frames[[7, 9, 11]])
    with pytest.raises(ValueError, match=r"every 2th frame\) from frame 8, but the input has frames 0..11"):
        prepare_input(raw, t_in=3, size=(8, 8), meta=meta10, start_frame=8)
    assert prepare_input(raw, t_in=3, size=(8, 8), meta=RADAR_DBZ_META).y_true is None  # default: last frames


# ----------------------------------------------------------------------------- georeferencing follows the pixels
def test_projected_grid_follows_crop_and_resize():
    # frames whose values are the x (resp. y) of each pixel centre: area averaging keeps
    # a linear field exact, so after fitting every value must equal the fitted grid's coordinate
    geo = {"projection": "+proj=stere +lat_0=90 +lon_0=10 +lat_ts=60 +ellps=WGS84", "x1": 100e3, "x2": 132e3,
           "y1": -500e3, "y2": -452e3, "xpixelsize": 1000.0, "ypixelsize": 1000.0, "yorigin": "upper"}
    grid = ProjectedGrid.from_pysteps(geo, (48, 32))
    xx, yy = np.meshgrid(grid.x, grid.y)
    scale = lambda v, lo, hi: (v - lo) / (hi - lo)  # noqa: E731
    frames = np.stack([scale(xx, 100e3, 132e3), scale(yy, -500e3, -452e3)]).astype(np.float32)
    frames = np.concatenate([frames] * 3)  # 6 frames, alternating x and y fields
    raw = RawInput(frames, "radar", ["f"] * 6, meta=RADAR_DBZ_META, timestep_min=5.0, grid=grid)
    for size, crop in (((16, 16), "center"), ((12, 8), "none"), ((96, 64), "none")):
        prep = prepare_input(raw, t_in=2, size=size, meta=RADAR_DBZ_META, crop=crop)
        g = prep.grid
        assert g.shape == size
        gx, gy = np.meshgrid(g.x, g.y)
        inner = (slice(1, -1), slice(1, -1))  # bilinear upsampling clamps at the border pixels
        np.testing.assert_allclose(prep.x_in[0][inner], scale(gx, 100e3, 132e3)[inner], atol=1e-5)
        np.testing.assert_allclose(prep.x_in[1][inner], scale(gy, -500e3, -452e3)[inner], atol=1e-5)
    assert fit_projected_grid(grid, (48, 32)) is grid


# ----------------------------------------------------------------------------- radar: read only what is used
@pytest.fixture()
def knmi_writer(helper_module):
    return helper_module("unit/data/test_data_radar.py")._write_knmi


def _knmi_files(folder, writer, n, start=dt.datetime(2010, 8, 26, 0, 0), skip=(), acc=None):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        if i in skip:
            continue
        p = folder / f"RAD_NL25_RAP_NA_{start + dt.timedelta(minutes=5 * i):%Y%m%d%H%M}.h5"
        writer(p, np.full((8, 10), 10 * (i + 1)) if acc is None else acc(i))
        paths.append(p)
    return paths


@pytest.fixture()
def counted_reads(monkeypatch):
    """Names of the radar files decoded, in order (the importer is wrapped)."""
    from diffcast.data import radar

    calls: list[str] = []
    for name, fmt in list(radar.RADAR_FORMATS.items()):
        def wrapped(path, m, _imp=fmt.importer):
            calls.append(path.name)
            return _imp(path, m)
        monkeypatch.setitem(radar.RADAR_FORMATS, name, dataclasses.replace(fmt, importer=wrapped))
    return calls


def test_radar_folder_reads_only_the_frames_used(tmp_path, knmi_writer, counted_reads):
    """Issue 19 item 3: a 30-file folder whose first 25 files are corrupt nowcasts from the last 5."""
    paths = _knmi_files(tmp_path / "f", knmi_writer, 30)
    for p in paths[:25]:
        p.write_bytes(b"not HDF5")
    raw = read_input([tmp_path / "f"])
    assert raw.kind == "radar" and raw.frames.shape == (30, 8, 10) and raw.quantity == "mm/h"
    assert counted_reads == [paths[-1].name]  # one file for the grid and units
    prep = prepare_input(raw, t_in=5, size=(8, 10), meta=raw.meta)
    assert counted_reads == [p.name for p in paths[-1:] + paths[25:29]]  # each needed file once, none other
    assert [dt.datetime.strptime(n[-15:-3], "%Y%m%d%H%M") for n in map(str, prep.sources)] == prep.times
    np.testing.assert_allclose(prep.x_in[-1], raw.frames[29])
    # every 2nd frame for a 10-minute model: frames 21, 23, ..., 29
    counted_reads.clear()
    raw = read_input([tmp_path / "f"])
    meta10 = dataclasses.replace(raw.meta, timestep_min=10.0)
    prepare_input(raw, t_in=3, size=(8, 10), meta=meta10)
    assert sorted(counted_reads) == sorted({paths[i].name for i in (29, 25, 27)})
    # --start-frame: the window and the observed future up to t_out, nothing else
    good = _knmi_files(tmp_path / "g", knmi_writer, 30)
    for i, p in enumerate(good):
        if not 10 <= i < 17:
            p.write_bytes(b"not HDF5")
    counted_reads.clear()
    raw = read_input([tmp_path / "g"], start_frame=10)
    prep = prepare_input(raw, t_in=4, size=(8, 10), meta=raw.meta, start_frame=10, t_out=3)
    assert sorted(counted_reads) == [good[i].name for i in range(10, 17)] and prep.y_true.shape == (3, 8, 10)


def test_radar_gaps_matter_only_in_the_frames_used(tmp_path, knmi_writer):
    _knmi_files(tmp_path / "f", knmi_writer, 20, skip=(3, 16))  # gaps after frames 2 and 15
    raw = read_input([tmp_path / "f"])
    assert raw.timestep_min == 5.0
    prep = prepare_input(raw, t_in=3, size=(8, 10), meta=raw.meta)  # frames 17-19: no gap
    assert prep.analysis_time == dt.datetime(2010, 8, 26, 1, 35)
    with pytest.raises(ValueError, match=r"gap in the radar time series: 10 min between RAD_NL25_RAP_NA_201008260115.h5 "
                                         r"and RAD_NL25_RAP_NA_201008260125.h5 \(expected 5 min\).*--start-frame"):
        prepare_input(raw, t_in=5, size=(8, 10), meta=raw.meta)
    # the observed future stops at a gap
    prep = prepare_input(raw, t_in=3, size=(8, 10), meta=raw.meta, start_frame=10, t_out=6)
    assert prep.y_true.shape == (2, 8, 10) and any("stops at the gap" in n for n in prep.notes)  # 14, 15 | 17
    with pytest.raises(ValueError, match="not increasing"):
        read_input(sorted((tmp_path / "f").iterdir(), reverse=True))  # listed files keep their order


def test_radar_mask_follows_the_frames_to_the_model_grid(tmp_path, knmi_writer):
    def acc(i):
        a = np.full((8, 10), 50)
        a[:, :3 + (i == 4)] = 65535  # no data in the left columns; one more column in the last frame
        return a

    _knmi_files(tmp_path / "f", knmi_writer, 5, acc=acc)
    raw = read_input([tmp_path / "f"])
    prep = prepare_input(raw, t_in=5, size=(8, 10), meta=raw.meta)
    assert prep.mask.shape == (5, 8, 10)
    np.testing.assert_array_equal(prep.coverage, ~np.asarray(raw.mask[4]))
    assert prep.coverage[:, :4].sum() == 0 and prep.coverage[:, 4:].all()
    assert any("no radar data" in n for n in prep.notes)
    # resized: a pixel is covered when at least half its area is (columns 0-3 of 2x2 blocks: 2 blocks out)
    small = prepare_input(raw, t_in=5, size=(4, 5), meta=raw.meta)
    np.testing.assert_array_equal(small.coverage, np.repeat([[False, False, True, True, True]], 4, axis=0))
    np.testing.assert_array_equal(small.mask[0], np.repeat([[True, False, False, False, False]], 4, axis=0))
    # values are averaged over the pixels with data: the covered half-block keeps its value
    np.testing.assert_allclose(small.x_in[0, :, 1], raw.frames[0][0, 5])
    # inputs without a mask: no mask, all covered
    assert prepare_input(RawInput(_frames(5), "npy", ["x"]), t_in=5, size=(4, 4), meta=SEVIR_META).coverage is None


def test_fit_grid_masked_half_area_rule():
    from diffcast.pipeline.grid import fit_grid_masked

    x = np.full((1, 4, 4), 0.5, np.float32)
    nodata = np.zeros((1, 4, 4), bool)
    nodata[0, 0, :2] = True  # one 2x2 block half without data: still covered
    nodata[0, 2:, 2:] = True  # another block without any data
    nodata[0, 2, 0] = nodata[0, 3, 0] = nodata[0, 2, 1] = True  # 3/4 without data: not covered
    out, m, factor, _ = fit_grid_masked(np.where(nodata, 0, x), nodata, (2, 2))
    np.testing.assert_array_equal(m[0], [[False, False], [True, True]])
    np.testing.assert_allclose(out[0], [[0.5, 0.5], [0.0, 0.0]])
    assert factor == 2.0
    plain, none, _, _ = fit_grid_masked(x, None, (2, 2))
    assert none is None and np.allclose(plain, 0.5)


# ----------------------------------------------------------------------------- output units
def test_rain_rate_meta_round_trips_marshall_palmer():
    from diffcast.data.transforms import rainrate_to_dbz
    from diffcast.pipeline.units import (
        RAINRATE_THRESHOLDS,
        output_meta,
        rain_rate_meta,
        threshold_code,
    )

    rate = rain_rate_meta(RADAR_DBZ_META)
    r = np.array([0.0, 0.02, 0.05, 1.0, 12.0, 100.0])
    x = rainrate_to_dbz(r) / 90.0
    want = np.where(r >= (1 / 200) ** (1 / 1.6), r, 0.0)  # below 0 dBZ (0.036 mm/h): 0 mm/h
    np.testing.assert_allclose(rate.to_physical(x), want, rtol=1e-5)
    assert rate.physical_unit == "mm/h" and rate.physical_name == "rainfall_rate" and rate.unit == "dBZ"
    np.testing.assert_allclose(rate.to_physical(np.array(rate.thresholds) / 90.0), RAINRATE_THRESHOLDS, rtol=1e-5)
    assert threshold_code(1.0, rate) == pytest.approx(10 * np.log10(200), abs=1e-4)
    assert threshold_code(30.0, RADAR_DBZ_META) == 30.0
    assert output_meta(RADAR_DBZ_META, "mm/h") .physical_unit == "mm/h"
    assert output_meta(RADAR_DBZ_META, "mm/h", "dBZ") is RADAR_DBZ_META
    assert output_meta(RADAR_DBZ_META, None, "mm/h").physical_unit == "mm/h"
    assert output_meta(SEVIR_META, None) is SEVIR_META and output_meta(SEVIR_META, "mm/h") is SEVIR_META
    with pytest.raises(ValueError, match="--units mm/h applies to reflectivity"):
        output_meta(SEVIR_META, None, "mm/h")
    with pytest.raises(ValueError, match="unknown units"):
        output_meta(RADAR_DBZ_META, None, "inch/h")
