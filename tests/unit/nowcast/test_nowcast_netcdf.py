"""CF-1.8 NetCDF writer: dimensions, units, times, derived fields."""

from __future__ import annotations

import datetime as dt

import netCDF4
import numpy as np
import pytest
import xarray as xr

from diffcast.data.transforms import RADAR_DBZ_META, SEVIR_META, vil_code_to_kgm2
from diffcast.io_netcdf import exceedance_probability, write_forecast_netcdf

T0 = dt.datetime(2021, 6, 1, 12, 30)


@pytest.fixture()
def ensemble() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((3, 4, 6, 8), dtype=np.float32)


def test_file_layout_units_and_times(tmp_path, ensemble):
    x_in = np.random.default_rng(1).random((5, 6, 8), dtype=np.float32)
    path = write_forecast_netcdf(tmp_path / "f.nc", ensemble, SEVIR_META, T0, x_in=x_in, timestep_min=5.0)
    assert [p.name for p in tmp_path.iterdir()] == ["f.nc"]  # no temp file left behind
    with xr.open_dataset(path) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        for key in ("title", "source", "history", "references"):
            assert ds.attrs[key]
        assert "DiffCast" in ds.attrs["references"]
        assert dict(ds["forecast"].sizes) == {"member": 3, "time": 4, "y": 6, "x": 8}
        assert dict(ds["ensemble_mean"].sizes) == {"time": 4, "y": 6, "x": 8}
        assert dict(ds["exceedance_probability"].sizes) == {"threshold": 6, "time": 4, "y": 6, "x": 8}
        assert ds["forecast"].attrs["units"] == "kg m-2"
        assert ds["threshold"].attrs["units"] == "kg m-2"
        np.testing.assert_allclose(ds["threshold_code"].values, SEVIR_META.thresholds)
        # valid times: analysis + 5, 10, 15, 20 minutes
        want = np.array([np.datetime64(T0 + dt.timedelta(minutes=5 * k)) for k in range(1, 5)], dtype="datetime64[ns]")
        np.testing.assert_array_equal(ds["time"].values, want)
        assert ds["forecast_reference_time"].values == np.datetime64(T0, "ns")
        np.testing.assert_allclose(ds["forecast_period"].values, [5, 10, 15, 20])
        assert ds["input_time"].values[-1] == np.datetime64(T0, "ns")
        # physical values: the SEVIR decoding of the codes, mean taken in physical units
        phys = vil_code_to_kgm2(ensemble * 255.0)
        np.testing.assert_allclose(ds["forecast"].values, phys, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds["ensemble_mean"].values, phys.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds["observation"].values, vil_code_to_kgm2(x_in * 255.0), rtol=1e-5, atol=1e-6)
    raw = netCDF4.Dataset(path)
    try:
        units = raw.variables["time"].units
        assert units.startswith("minutes since 2021-06-01") and units.endswith("12:30:00")
        np.testing.assert_allclose(raw.variables["time"][:], [5, 10, 15, 20])
        assert raw.variables["forecast_reference_time"].standard_name == "forecast_reference_time"
        assert raw.variables["member"].standard_name == "realization"
        assert "_FillValue" not in raw.variables["time"].ncattrs()
        assert raw.variables["ensemble_mean"].cell_methods == "realization: mean"
    finally:
        raw.close()


def test_exceedance_probability_counts_members():
    fc = np.zeros((4, 1, 1, 2), dtype=np.float32)
    fc[:, 0, 0, 0] = np.array([10, 30, 50, 70]) / 90.0  # dBZ values
    prob = exceedance_probability(fc, RADAR_DBZ_META, [20.0, 50.0, 80.0])
    np.testing.assert_allclose(prob[:, 0, 0, 0], [0.75, 0.5, 0.0])
    np.testing.assert_allclose(prob[:, 0, 0, 1], [0.0, 0.0, 0.0])


def test_dbz_units_and_single_member(tmp_path):
    fc = np.full((1, 2, 1, 4, 4), 0.5, dtype=np.float32)  # (M, T, C, H, W) accepted
    path = write_forecast_netcdf(tmp_path / "r.nc", fc, RADAR_DBZ_META, T0, thresholds=[30.0, 50.0], timestep_min=10)
    with xr.open_dataset(path) as ds:
        assert ds.sizes["member"] == 1
        assert ds["forecast"].attrs["units"] == "dBZ"
        assert ds["forecast"].attrs["standard_name"] == "equivalent_reflectivity_factor"
        np.testing.assert_allclose(ds["forecast"].values, 45.0, rtol=1e-6)
        np.testing.assert_allclose(ds["exceedance_probability"].values[:, 0, 0, 0], [1.0, 0.0])
        assert (ds["time"].values[1] - ds["time"].values[0]) == np.timedelta64(10, "m")


def test_bad_shapes_raise(tmp_path):
    with pytest.raises(ValueError, match=r"\(M, T, H, W\)"):
        write_forecast_netcdf(tmp_path / "x.nc", np.zeros((2, 3), np.float32), SEVIR_META, T0)
    with pytest.raises(ValueError, match="x_in"):
        write_forecast_netcdf(tmp_path / "x.nc", np.zeros((1, 2, 4, 4), np.float32), SEVIR_META, T0, x_in=np.zeros((3, 5, 5)))
    assert not list(tmp_path.iterdir())
