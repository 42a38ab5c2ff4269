"""The mlcast spec store reader (diffcast.data.mlcast): quantities, orientation, times, gaps, splits."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("zarr")

from diffcast.data.mlcast import (  # noqa: E402
    SpecStore,
    SpecStoreError,
    is_zarr_store,
    parse_storage_options,
    parse_time_range,
    quantity_of,
    regular_runs,
    split_windows,
    window_starts,
    write_spec_store,
)
from diffcast.data.mlcast.synthetic import synthetic_rain  # noqa: E402
from diffcast.data.transforms import rainrate_to_dbz  # noqa: E402

SHAPE = (48, 40)


def _store(tmp_path, name="s.zarr", **kw):
    kw.setdefault("n_frames", 40)
    kw.setdefault("shape", SHAPE)
    return SpecStore(write_spec_store(tmp_path / name, **kw))


@pytest.mark.parametrize(
    "kw",
    [
        dict(kind="rate"),
        dict(kind="amount"),
        dict(kind="amount", step_min=10.0),
        dict(kind="rate", xy_units="km"),
        dict(kind="rate", y_increasing=True, zarr_format=3),
    ],
    ids=["rate", "amount-5min", "amount-10min", "km", "y-increasing-v3"],
)
def test_rain_comes_out_in_mm_per_hour_north_up(tmp_path, kw):
    s = _store(tmp_path, **kw)
    truth = synthetic_rain(40, SHAPE, 0)  # what write_spec_store stores, north-up, mm/h
    got = s.read(slice(10, 14))
    assert s.quantity == "mm/h"
    assert got.shape == (4, *SHAPE)
    ok = np.isfinite(got)
    assert ok.mean() > 0.9 and not np.isfinite(got[:, -SHAPE[0] // 4 :, : SHAPE[1] // 4]).any()
    np.testing.assert_allclose(got[ok], truth[10:14][ok], rtol=1e-5, atol=1e-5)


def test_reflectivity_stays_dbz_and_encodes_like_radar_files(tmp_path):
    s = _store(tmp_path, kind="reflectivity")
    truth = synthetic_rain(40, SHAPE, 0)[7]
    dbz = s.read(7)
    wet = np.isfinite(dbz) & (truth > 0)
    assert s.quantity == "dBZ"
    np.testing.assert_allclose(dbz[wet], rainrate_to_dbz(truth[wet]), rtol=1e-5)
    x, nodata, _ = s.frame(7)
    np.testing.assert_allclose(x[wet], np.clip(dbz[wet] / 90.0, 0, 1), rtol=1e-5)
    assert nodata.sum() == np.isnan(dbz).sum()


@pytest.mark.parametrize("kw", [dict(), dict(y_increasing=True), dict(xy_units="km", y_increasing=True)])
def test_grid_matches_the_store_lat_lon(tmp_path, kw):
    s = _store(tmp_path, **kw)
    lat, lon = s.latlon()
    glon, glat, _ = s.grid.lonlat()
    assert np.abs(glat - lat).max() < 1e-6 and np.abs(glon - lon).max() < 1e-6
    assert lat[0, 0] > lat[-1, 0]  # north-up
    assert s.grid.dy < 0 and abs(s.pixel_km - 1.0) < 1e-9


def test_opening_reads_no_pixels(tmp_path, monkeypatch):
    p = write_spec_store(tmp_path / "s.zarr", n_frames=30, shape=SHAPE)
    import zarr

    calls = []
    orig = zarr.Array.__getitem__

    def spy(self, key):
        if len(self.shape) == 3:
            calls.append(key)
        return orig(self, key)

    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    s = SpecStore(p)
    s.describe()
    assert calls == [] and s.reads == []


def test_missing_times_and_step_change_cut_the_runs(tmp_path):
    s = _store(tmp_path, kind="rate", steps_before=[(15, 6), (10, 6)], missing=[20, 30, 31])
    assert s.timestep_min == 5.0
    assert s.missing_times.size == 3 and s.times.size == 52 - 3
    runs = regular_runs(s.times, s.timestep_min, s.consistent_start)
    assert runs[0][0] == 12  # nothing before consistent_timestep_start
    step = np.timedelta64(5, "m")
    for a, b in runs:
        assert np.all(np.diff(s.times[a:b]) == step)
    starts = window_starts(runs, 6)
    for i in starts:
        w = s.times[i : i + 6]
        assert np.all(np.diff(w) == step) and w[0] >= s.consistent_start
        assert not np.isin(s.missing_times, w).any()
        assert not ((s.missing_times > w[0]) & (s.missing_times < w[-1])).any()
    d = s.describe()
    assert d["missing_frames"] == 3 and d["time_steps_min"] == {"5": 39, "10": 6, "15": 6}


def test_amounts_before_a_step_change_use_their_own_interval(tmp_path):
    s = _store(tmp_path, kind="amount", steps_before=[(15, 6)])
    truth = synthetic_rain(46, SHAPE, 0)
    for i in (2, 30):
        got = s.read(i)
        ok = np.isfinite(got)
        np.testing.assert_allclose(got[ok], truth[i][ok], rtol=1e-5, atol=1e-5)


def test_time_ranges_and_splits():
    assert parse_time_range("2020") == (np.datetime64("2020-01-01", "ns"), np.datetime64("2021-01-01", "ns"))
    assert parse_time_range("2021-2023")[1] == np.datetime64("2024-01-01", "ns")
    assert parse_time_range("2001-01-01/2019-12-31")[1] == np.datetime64("2020-01-01", "ns")
    assert parse_time_range("2020-06")[1] == np.datetime64("2020-07-01", "ns")
    for bad in ("2020-13", "last year", "2021/2020", "2020-01-01/"):
        with pytest.raises(ValueError):
            parse_time_range(bad)
    times = np.arange(np.datetime64("2019-12-31T22:00"), np.datetime64("2020-01-01T02:00"), np.timedelta64(5, "m"))
    starts = window_starts([(0, times.size)], 6)
    sp = split_windows(times, starts, 6, {"train": "2019", "val": "2020"})
    assert all(times[i + 5] < np.datetime64("2020-01-01") for i in sp["train"])
    assert all(times[i] >= np.datetime64("2020-01-01") for i in sp["val"])
    assert sp["train"].size + sp["val"].size == starts.size - 5  # the 5 windows across midnight belong to neither
    with pytest.raises(ValueError, match="overlap"):
        split_windows(times, starts, 6, {"train": "2019-2020", "test": "2020"})


def test_quantity_table():
    assert quantity_of("precipitation_flux", "mm h-1").factor == 1.0
    assert quantity_of("rainfall_flux", "kg m-2 s-1").factor == 3600.0
    assert quantity_of("rainfall_amount", "mm").kind == "amount"
    with pytest.raises(ValueError, match="units"):
        quantity_of("rainfall_flux", "inch/h")
    with pytest.raises(ValueError, match="standard_name"):
        quantity_of("air_temperature", "K")


def test_storage_options_and_detection(tmp_path):
    assert parse_storage_options(["anon=true", "client_kwargs.endpoint_url=http://x:9000", "n=3"]) == {
        "anon": True, "client_kwargs": {"endpoint_url": "http://x:9000"}, "n": 3}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_storage_options(["anon"])
    p = write_spec_store(tmp_path / "s.zarr", n_frames=5, shape=SHAPE)
    assert is_zarr_store(p) and is_zarr_store("s3://bucket/x.zarr") and not is_zarr_store(tmp_path)


def _edit(path, fn):
    import xarray as xr

    ds = xr.open_zarr(path).load()
    ds = fn(ds)
    for v in ds.variables.values():
        v.encoding = {}
    ds.to_zarr(str(path) + ".bad", mode="w", consolidated=True, zarr_format=2)
    return str(path) + ".bad"


def _drop_gm(ds):
    ds = ds.drop_vars("crs")
    del ds["rainfall_flux"].attrs["grid_mapping"]
    return ds


@pytest.mark.parametrize(
    "fn,match",
    [
        (lambda ds: ds.assign(rainfall_flux=ds.rainfall_flux.assign_attrs(standard_name="rain")), "no recognisable"),
        (lambda ds: ds.assign(rainfall_flux=ds.rainfall_flux.assign_attrs(units="furlongs")), "units"),
        (_drop_gm, "no CRS"),
        (lambda ds: ds.isel(time=np.r_[1, 0, 2:ds.time.size]), "not strictly increasing"),
        (lambda ds: ds.assign_coords(x=ds.x.assign_attrs(units="parsec")), "units"),
    ],
    ids=["variable", "units", "crs", "time-order", "xy-units"],
)
def test_bad_stores_get_one_clear_error(tmp_path, fn, match):
    p = write_spec_store(tmp_path / "s.zarr", n_frames=6, shape=SHAPE)
    bad = _edit(p, fn)
    with pytest.raises(SpecStoreError, match=match) as err:
        SpecStore(bad)
    assert bad in str(err.value)


def test_missing_optional_parts_are_warnings(tmp_path):
    p = write_spec_store(tmp_path / "s.zarr", n_frames=6, shape=SHAPE)
    def strip(ds):
        ds = ds.drop_vars("missing_times")
        ds.attrs = {}
        return ds

    bad = _edit(p, strip)
    s = SpecStore(bad)
    assert any("missing_times" in w for w in s.warnings) and any("license" in w for w in s.warnings)
    with pytest.raises(FileNotFoundError):
        SpecStore(tmp_path / "nope.zarr")


def test_several_variables_need_a_standard_name(tmp_path):
    p = write_spec_store(tmp_path / "s.zarr", n_frames=6, shape=SHAPE)
    two = _edit(p, lambda ds: ds.assign(dbz=(ds.rainfall_flux * 0 + 20).assign_attrs(
        standard_name="equivalent_reflectivity_factor", units="dBZ", grid_mapping="crs")))
    with pytest.raises(SpecStoreError, match="--standard-name"):
        SpecStore(two)
    assert SpecStore(two, standard_name="equivalent_reflectivity_factor").quantity == "dBZ"
    with pytest.raises(SpecStoreError, match="precipitation_amount"):
        SpecStore(two, standard_name="precipitation_amount")


def test_store_pickles_for_workers(tmp_path):
    import pickle

    s = _store(tmp_path)
    s.read(3)
    t = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(t.read(3), s.read(3))


@pytest.mark.parametrize("kw", [dict(kind="rate"), dict(kind="amount", xy_units="km", y_increasing=True),
                                dict(kind="reflectivity", zarr_format=3), dict(steps_before=[(10.0, 20)], missing=[50])])
def test_generated_stores_pass_the_spec_validator(tmp_path, kw):
    """The community's own validator (optional extra) finds nothing wrong with a generated store but what a
    test store cannot have: 256 x 256 pixels, three years of frames, and a creating tool from the
    mlcast-community GitHub organisation."""
    pytest.importorskip("mlcast_dataset_validator", reason="the mlcast extra (mlcast-dataset-validator) is not installed")
    import xarray as xr
    from mlcast_dataset_validator.specs.source_data import radar_precipitation as spec

    store = write_spec_store(tmp_path / "s.zarr", n_frames=60, **kw)
    with xr.open_zarr(store) as ds:
        report, _ = spec.validate_dataset(ds)
    fails = {(r.section, r.requirement) for r in report.results if r.status == "FAIL"}
    assert fails == {("3.2", "256×256 pixel support"), ("3.3", "Minimum 3-year coverage"),
                     ("5.4", "Global attribute 'mlcast_created_with'")}, fails
    assert any(r.section == "4.5" and r.status == "PASS" and "crs_wkt" in r.detail for r in report.results)
