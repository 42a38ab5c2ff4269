"""forecast.nc written lead by lead (issue 18 item 4): the streamed file equals the one xarray writes from the
whole dataset (values bit for bit, dtypes, dimensions, attributes, compression, chunks), its numbers equal an
independent whole-array computation, it holds one lead in memory, and a failure half-way leaves no file."""

from __future__ import annotations

import datetime as dt
import errno

import netCDF4
import numpy as np
import pytest

import diffcast.writers.netcdf as netcdf
from diffcast.data.transforms import RADAR_DBZ_META, SEVIR_META
from diffcast.geo import ProjectedGrid
from diffcast.pipeline.units import rain_rate_meta
from diffcast.writers.netcdf import (
    build_forecast_dataset,
    exceedance_probability,
    write_forecast_netcdf,
)

T0 = dt.datetime(2021, 6, 1, 12, 30)
H, W = 12, 10
ALBERS = "+proj=aea  +lon_0=153.240 +lat_0=-27.718 +lat_1=-26.200 +lat_2=-29.300"
RAIN = rain_rate_meta(RADAR_DBZ_META)


def _albers(h: int = H, w: int = W) -> ProjectedGrid:
    return ProjectedGrid.from_pysteps(
        {"projection": ALBERS, "x1": -w * 500.0, "y1": -h * 500.0, "x2": w * 500.0, "y2": h * 500.0,
         "xpixelsize": 1000.0, "ypixelsize": 1000.0, "cartesian_unit": "m", "yorigin": "upper"}, (h, w))


def _lonlat_grid() -> ProjectedGrid:
    return ProjectedGrid.from_pysteps(
        {"projection": "+proj=longlat +datum=WGS84", "x1": 5.0, "x2": 9.0, "y1": 45.0, "y2": 48.0,
         "xpixelsize": 0.5, "ypixelsize": 0.5, "cartesian_unit": "degrees", "yorigin": "upper"}, (6, 8))


def _members(m: int, t: int, h: int = H, w: int = W, nan: bool = False, seed: int = 0) -> np.ndarray:
    fc = np.random.default_rng(seed).random((m, t, h, w), dtype=np.float32)
    if nan:  # inflow: unknown in every member at the upwind edge, and in one member at one pixel
        fc[:, 1:, :2, :3] = np.nan
        fc[0, 0, -1, -1] = np.nan
    return fc


def _coverage(h: int = H, w: int = W) -> np.ndarray:
    cov = np.ones((h, w), bool)
    cov[:3, :4] = False
    return cov


def _x_in(t: int, h: int = H, w: int = W, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((t, h, w), dtype=np.float32)


CASES = {
    "one member, no grid, no mask": lambda: (_members(1, 3), SEVIR_META, {}),
    "coverage, NaN members, 3 members, observation, projected grid with lat/lon, rain rate": lambda: (
        _members(3, 4, nan=True), RAIN, {"x_in": _x_in(4), "coverage": _coverage(), "grid": _albers()}),
    "NaN members without a mask": lambda: (_members(2, 3, nan=True), RADAR_DBZ_META, {"thresholds": [20.0, 35.0]}),
    "coverage, one member, (T, 1, H, W) observation": lambda: (
        _members(1, 2), RADAR_DBZ_META, {"coverage": _coverage(), "x_in": _x_in(3)[:, None]}),
    "longitude/latitude grid, time note, extra attributes": lambda: (
        _members(2, 2, 6, 8), RADAR_DBZ_META,
        {"grid": _lonlat_grid(), "time_note": "nominal", "extra_attrs": {"seed": 3, "model": "x"}}),
    "the input's own lat/lon": lambda: (
        _members(2, 2), RADAR_DBZ_META,
        {"grid": _albers(), "x_in": _x_in(2),
         "latlon": (np.random.default_rng(2).random((H, W)) + 40, np.random.default_rng(3).random((H, W)) + 5)}),
    "11 members (pairwise sums), NaN, coverage, observation": lambda: (
        _members(11, 2, nan=True), RAIN, {"coverage": _coverage(), "x_in": _x_in(2)}),
    "(M, T, 1, H, W) forecast": lambda: (_members(2, 3)[:, :, None], SEVIR_META, {"pixel_km": 2.0}),
}


def _same(a, b) -> bool:
    """Equal values of the same type; arrays equal byte for byte (NaN included)."""
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


def _describe(path) -> dict:
    """Everything netCDF4 reports about a file, raw (no masking, no scaling); the history time stamp left out."""
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        out = {
            "format": nc.data_model,
            "dimensions": [(name, len(d), d.isunlimited()) for name, d in nc.dimensions.items()],
            "global": {k: nc.getncattr(k) for k in nc.ncattrs() if k != "history"},
            "history": nc.getncattr("history").split(": ", 1)[1],
            "variables": {},
        }
        for name, v in nc.variables.items():
            out["variables"][name] = {
                "dtype": v.dtype, "dimensions": v.dimensions, "attrs": {k: v.getncattr(k) for k in v.ncattrs()},
                "filters": v.filters(), "chunking": v.chunking(), "endian": v.endian(), "data": v[...],
            }
        return out


def _assert_same_file(streamed, reference) -> None:
    a, b = _describe(streamed), _describe(reference)
    assert (a["format"], a["dimensions"], a["history"]) == (b["format"], b["dimensions"], b["history"])
    assert a["global"].keys() == b["global"].keys()
    for key in a["global"]:
        assert _same(a["global"][key], b["global"][key]), key
    assert a["variables"].keys() == b["variables"].keys()
    for name, va in a["variables"].items():
        vb = b["variables"][name]
        for field in ("dtype", "dimensions", "filters", "chunking", "endian"):
            assert va[field] == vb[field], (name, field, va[field], vb[field])
        assert va["attrs"].keys() == vb["attrs"].keys(), (name, va["attrs"], vb["attrs"])
        for key in va["attrs"]:
            assert _same(va["attrs"][key], vb["attrs"][key]), (name, key, va["attrs"][key], vb["attrs"][key])
        assert _same(va["data"], vb["data"]), name


@pytest.mark.parametrize("case", list(CASES))
def test_streamed_file_equals_the_whole_dataset_written_by_xarray(tmp_path, case):
    forecast, meta, kwargs = CASES[case]()
    streamed = write_forecast_netcdf(tmp_path / "streamed.nc", forecast, meta, T0, **kwargs)
    build_forecast_dataset(forecast, meta, T0, **kwargs).to_netcdf(
        tmp_path / "whole.nc", format="NETCDF4", engine="netcdf4")
    _assert_same_file(streamed, tmp_path / "whole.nc")
    with netCDF4.Dataset(streamed) as nc:  # the gridded variables: compressed, one (y, x) frame per chunk
        for name in ("forecast", "ensemble_mean", "exceedance_probability", "observation"):
            if name in nc.variables:
                v = nc.variables[name]
                assert v.filters()["zlib"] and v.filters()["complevel"] == 4 and v.filters()["shuffle"], name
                assert v.chunking() == [1] * (v.ndim - 2) + list(v.shape[-2:]), name
        assert "coordinates" not in nc.ncattrs()  # every coordinate is named by a variable
        if "grid" in kwargs:
            assert nc.variables["forecast"].grid_mapping == "crs"


def test_the_comparison_sees_a_difference(tmp_path):
    """The check above fails on one changed value, one changed attribute or another compression level."""
    forecast, meta, kwargs = CASES["coverage, NaN members, 3 members, observation, projected grid with lat/lon, rain rate"]()
    write_forecast_netcdf(tmp_path / "a.nc", forecast, meta, T0, **kwargs)
    ds = build_forecast_dataset(forecast, meta, T0, **kwargs)
    variants = {
        "value": lambda d: d["ensemble_mean"].values.__setitem__((0, 5, 5), 1.0),
        "attribute": lambda d: d["exceedance_probability"].attrs.__setitem__("units", "%"),
        "compression": lambda d: d["forecast"].encoding.__setitem__("complevel", 5),
    }
    for name, change in variants.items():
        changed = ds.copy(deep=True)
        change(changed)
        changed.to_netcdf(tmp_path / f"{name}.nc", format="NETCDF4", engine="netcdf4")
        with pytest.raises(AssertionError):
            _assert_same_file(tmp_path / "a.nc", tmp_path / f"{name}.nc")


def test_values_equal_a_whole_array_reference(tmp_path):
    """Members, mean and probabilities against numpy on the whole ensemble, with the NaN rules."""
    fc = _members(3, 4, nan=True)
    x_in = _x_in(3)
    cov = _coverage()
    meta = RAIN
    codes = [20.0, 30.0, 40.0]  # dBZ
    path = write_forecast_netcdf(tmp_path / "f.nc", fc, meta, T0, x_in=x_in, coverage=cov, thresholds=codes)
    phys = meta.to_physical(fc)
    unknown = np.isnan(fc).any(axis=0)
    mean = phys.mean(axis=0, dtype=np.float64).astype(np.float32)
    mean[unknown] = np.nan
    prob = exceedance_probability(fc, meta, codes)
    prob[:, unknown] = np.nan
    obs = meta.to_physical(x_in)
    for arr in (phys, mean, prob, obs):
        arr[..., ~cov] = np.nan
    assert np.isnan(mean).any() and np.isfinite(mean).any()
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        np.testing.assert_array_equal(nc["forecast"][:], phys)
        np.testing.assert_array_equal(nc["ensemble_mean"][:], mean)
        np.testing.assert_array_equal(nc["exceedance_probability"][:], prob)
        np.testing.assert_array_equal(nc["observation"][:], obs)
        # probabilities by hand at one covered pixel with every member known
        members = fc[:, 0, 6, 6] * np.float32(meta.scale)
        want = [np.mean(members >= c * (1 - 1e-6)) for c in codes]
        np.testing.assert_allclose(nc["exceedance_probability"][:, 0, 6, 6], want, atol=1e-7)


def test_streaming_holds_one_lead_in_memory(tmp_path):
    """Peak numpy memory of the write is a few leads, far below the dataset (M + 1 + K forecast-sized arrays)."""
    import tracemalloc

    m, t, h, w = 2, 12, 160, 150
    fc = _members(m, t, h, w)
    thresholds = [10.0, 20.0, 30.0, 35.0, 40.0, 50.0]
    dataset_bytes = (m + 1 + len(thresholds)) * t * h * w * 4
    lead_bytes = dataset_bytes // t
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        write_forecast_netcdf(tmp_path / "f.nc", fc, RADAR_DBZ_META, T0, thresholds=thresholds,
                              coverage=_coverage(h, w))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 4 * lead_bytes < dataset_bytes / 2, (peak, lead_bytes, dataset_bytes)


@pytest.mark.parametrize("fails_at", [0, 2])
def test_failure_half_way_leaves_no_file(tmp_path, monkeypatch, fails_at):
    forecast, meta, kwargs = _members(2, 4), RADAR_DBZ_META, {"coverage": _coverage(), "x_in": _x_in(2)}
    path = write_forecast_netcdf(tmp_path / "f.nc", forecast, meta, T0, **kwargs)
    before = path.read_bytes()
    lead_fields, calls = netcdf._lead_fields, []

    def full_disk(*args, **kw):
        calls.append(1)
        if len(calls) > fails_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return lead_fields(*args, **kw)

    monkeypatch.setattr(netcdf, "_lead_fields", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_forecast_netcdf(path, forecast, meta, T0, **kwargs)
    assert len(calls) == fails_at + 1
    assert [p.name for p in tmp_path.iterdir()] == ["f.nc"] and path.read_bytes() == before
    with pytest.raises(OSError, match="No space left"):
        write_forecast_netcdf(tmp_path / "g.nc", forecast, meta, T0, **kwargs)
    assert [p.name for p in tmp_path.iterdir()] == ["f.nc"]
