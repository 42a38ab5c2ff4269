"""``diffcast.nowcast`` on an ``xarray.DataArray``: labelled forecasts from mlcast spec stores (issue 21, item 4)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import diffcast
from diffcast.data.mlcast import SpecStore, write_spec_store
from diffcast.models import build_model
from diffcast.training.model_io import save_model_file

xr = pytest.importorskip("xarray")
pytest.importorskip("pysteps")
pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (48, 40)


def _store(tmp_path, name="s.zarr", **kw):
    kw = {"n_frames": 8, "shape": SHAPE, "xy_units": "km", **kw}
    return write_spec_store(tmp_path / name, **kw)


def _input(path, n=4, decode_coords="all"):
    ds = xr.open_zarr(path, decode_coords=decode_coords)
    name = next(n for n, v in ds.data_vars.items() if v.ndim == 3)
    return ds[name].isel(time=slice(-n, None))


@pytest.mark.parametrize("y_increasing, xy_units", [(False, "km"), (True, "km"), (True, "m")])
def test_labelled_forecast_equals_the_numpy_one(tmp_path, monkeypatch, y_increasing, xy_units):
    import diffcast.api as api

    path = _store(tmp_path, y_increasing=y_increasing, xy_units=xy_units)
    da = _input(path)
    seen = {}
    forecast = api._forecast

    def spy(r, *args, **kwargs):
        seen["r"], seen["pixel_size"] = r, args[5]
        return forecast(r, *args, **kwargs)

    monkeypatch.setattr(api, "_forecast", spy)
    fc = diffcast.nowcast(da, n_leadtimes=3, model="extrapolation")
    # the model saw north-up frames (as the store reader gives them) on 1 km pixels, whichever way y runs
    np.testing.assert_array_equal(seen["r"], SpecStore(path).read(slice(-4, None)))
    assert seen["pixel_size"] == pytest.approx(1.0)

    assert isinstance(fc, xr.DataArray)
    assert fc.dims == ("ens_number", "lead_time", "y", "x")
    assert fc.shape == (1, 3, *SHAPE)
    # the same numbers as the numpy call on the store's north-up frames, in the input's row order
    store = SpecStore(path)
    ref = diffcast.nowcast(store.read(slice(-4, None)), timestep=5, n_leadtimes=3, model="extrapolation")
    if y_increasing:
        ref = ref[..., ::-1, :]
    np.testing.assert_array_equal(fc.values, ref)
    assert np.nanmax(fc.values) > 1.0
    # the grid of the input, exactly
    for name in ("x", "y", "lat", "lon"):
        np.testing.assert_array_equal(fc[name].values, da[name].values)
        assert fc[name].dims == da[name].dims and fc[name].attrs == da[name].attrs
    assert (np.diff(fc.y.values) > 0).all() == y_increasing
    # times
    t_last = da.time.values[-1]
    assert fc.forecast_reference_time.values == t_last
    lead = np.array([5, 10, 15], "timedelta64[m]").astype("timedelta64[ns]")
    np.testing.assert_array_equal(fc.lead_time.values, lead)
    np.testing.assert_array_equal(fc.valid_time.values, t_last + lead)
    assert fc.valid_time.dims == ("lead_time",)
    # labels and the grid mapping
    assert fc.attrs["standard_name"] == "rainfall_flux" and fc.attrs["units"] == "kg m-2 h-1"
    assert fc.attrs["grid_mapping"] == "crs"
    assert fc.crs.attrs == da.crs.attrs and fc.crs.ndim == 0
    # NaN where the input had no coverage (the stores' no-data corner, south-west whichever way y runs)
    nodata = np.isnan(da.isel(time=-1).values)
    south_west = (da.lat < da.lat.quantile(0.1)) & (da.lon < da.lon.quantile(0.1))
    assert nodata.any() and nodata[south_west.values].all()
    assert np.isnan(fc.values[..., nodata]).all()


def test_netcdf_round_trip_keeps_crs_grid_and_times(tmp_path):
    from pyproj import CRS

    path = _store(tmp_path, y_increasing=True)
    da = _input(path)
    fc = diffcast.nowcast(da, n_leadtimes=2, model="persistence")
    out = tmp_path / "fc.nc"
    fc.to_netcdf(out)
    with xr.open_dataset(out, decode_coords="all") as ds:
        back = ds[fc.name]
        gm = back.encoding.get("grid_mapping") or back.attrs.get("grid_mapping")
        assert gm == "crs"
        crs_in = CRS.from_wkt(xr.open_zarr(path)["crs"].attrs["crs_wkt"])
        assert CRS.from_wkt(ds[gm].attrs["crs_wkt"]) == crs_in
        assert CRS.from_cf(ds[gm].attrs) == crs_in
        for name in ("x", "y", "lat", "lon"):
            np.testing.assert_array_equal(back[name].values, da[name].values)
        np.testing.assert_array_equal(back.valid_time.values, fc.valid_time.values)
        np.testing.assert_array_equal(back.lead_time.values, fc.lead_time.values)
        assert back.forecast_reference_time.values == fc.forecast_reference_time.values
        np.testing.assert_array_equal(back.values, fc.values)
        assert back.attrs["units"] == "kg m-2 h-1"


def test_amounts_and_reflectivity_are_converted(tmp_path):
    rate = diffcast.nowcast(_input(_store(tmp_path, "r.zarr")), n_leadtimes=1, model="persistence")
    amount_da = _input(_store(tmp_path, "a.zarr", kind="amount"))
    assert amount_da.attrs["units"] == "kg m-2"
    amount = diffcast.nowcast(amount_da, n_leadtimes=1, model="persistence")
    # kg m-2 over 5 minutes -> mm/h: 12 times the stored value
    np.testing.assert_allclose(amount.values[0, 0], amount_da.values[-1] * 12, rtol=1e-6)
    np.testing.assert_allclose(amount.values, rate.values, rtol=1e-5, atol=1e-6)
    assert amount.attrs["standard_name"] == "precipitation_flux"

    dbz_da = _input(_store(tmp_path, "z.zarr", kind="reflectivity"))
    dbz = diffcast.nowcast(dbz_da, n_leadtimes=1, model="persistence")
    assert dbz.attrs["standard_name"] == "rainfall_flux" and dbz.attrs["units"] == "kg m-2 h-1"
    wet = rate.values > 0.1  # Marshall-Palmer back to the stored rain (0 dBZ floor below 0.036 mm/h)
    np.testing.assert_allclose(dbz.values[wet], rate.values[wet], rtol=1e-4)
    np.testing.assert_array_equal(np.isnan(dbz.values), np.isnan(rate.values))


def test_time_step_and_pixel_size_come_from_the_coordinates(tmp_path):
    da = _input(_store(tmp_path, step_min=10.0, pixel_m=2000.0), n=3)
    fc = diffcast.nowcast(da, n_leadtimes=2, model="persistence")
    np.testing.assert_array_equal(fc.lead_time.values, np.array([10, 20], "timedelta64[m]").astype("timedelta64[ns]"))
    assert diffcast.nowcast(da, timestep=10, pixel_size=2.0, n_leadtimes=1, model="persistence").shape == (1, 1, *SHAPE)
    with pytest.raises(ValueError, match="timestep=5 but precip's frames are 10 min apart"):
        diffcast.nowcast(da, timestep=5, model="persistence")
    with pytest.raises(ValueError, match="pixel_size=1.0 km but .* give 2 km"):
        diffcast.nowcast(da, pixel_size=1.0, model="persistence")


@pytest.mark.filterwarnings("ignore:Times can't be serialized")  # 2.5 min in the test store's int64 minutes
def test_trained_model_leads_are_the_models_steps(tmp_path):
    """Input 2.5 min apart, model step 5 min: every second frame is used and the leads are 5 min apart."""
    mcfg = {"type": "backbone", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "persistence"}}
    model = save_model_file(tmp_path / "radar.safetensors", build_model(mcfg).state_dict(),
                            {"model": mcfg, "data": {"name": "radar"}})
    da = _input(_store(tmp_path, step_min=2.5), n=6)
    fc = diffcast.nowcast(da, n_leadtimes=2, model=str(model))
    np.testing.assert_array_equal(fc.lead_time.values, np.array([5, 10], "timedelta64[m]").astype("timedelta64[ns]"))
    np.testing.assert_array_equal(fc.valid_time.values, da.time.values[-1] + fc.lead_time.values)


def test_shipped_model_gives_a_labelled_ensemble(tmp_path):
    from diffcast.shipped import shipped_models

    if "radar_diffcast_extrapolation" not in shipped_models():
        pytest.skip("the shipped radar model is not installed")
    da = _input(_store(tmp_path, y_increasing=True, shape=(32, 32)))
    fc = diffcast.nowcast(da, n_leadtimes=2, n_ens_members=2, seed=0, model="radar_diffcast_extrapolation")
    assert fc.dims == ("ens_number", "lead_time", "y", "x") and fc.shape == (2, 2, 32, 32)
    np.testing.assert_array_equal(fc.ens_number.values, [0, 1])
    np.testing.assert_array_equal(fc.lat.values, da.lat.values)
    assert np.isnan(fc.values[..., np.isnan(da.isel(time=-1).values)]).all()
    assert np.nanmax(fc.values) > 1.0 and "radar_diffcast_extrapolation" in fc.attrs["source"]


def test_dataset_and_plain_open_zarr(tmp_path, caplog):
    path = _store(tmp_path)
    ds = xr.open_zarr(path).isel(time=slice(-3, None))
    fc = diffcast.nowcast(ds, n_leadtimes=1, model="persistence")  # the one radar variable, its grid mapping attached
    assert fc.attrs["grid_mapping"] == "crs" and "crs_wkt" in fc.crs.attrs
    # xr.open_zarr(...)[name] leaves the grid-mapping variable in the Dataset: a warning, no CRS
    with caplog.at_level(logging.WARNING, logger="diffcast.api_xarray"):
        plain = diffcast.nowcast(_input(path, decode_coords=True), n_leadtimes=1, model="persistence")
    assert "grid_mapping" not in plain.attrs and "crs" not in plain.coords
    assert "decode_coords='all'" in caplog.text
    np.testing.assert_array_equal(plain.values, fc.values)


def test_numpy_in_keeps_numpy_out(tmp_path):
    da = _input(_store(tmp_path))
    out = diffcast.nowcast(da.values, n_leadtimes=1, model="persistence")
    assert type(out) is np.ndarray and out.shape == (1, 1, *SHAPE)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda da: da.isel(time=[0, 1, 3]), "not evenly spaced"),
        (lambda da: da.isel(time=0), "time dimension"),
        (lambda da: da.isel(time=[2, 1, 0]), "not strictly increasing"),
        (lambda da: da.drop_attrs(), "no units"),
        (lambda da: da.assign_attrs(units="furlongs"), "not understood"),
        (lambda da: da.isel(time=[-1]), "single time"),
        (lambda da: da.isel(x=slice(0, None, 2)), "square pixels"),
    ],
)
def test_bad_dataarrays(tmp_path, change, match):
    da = _input(_store(tmp_path))
    with pytest.raises(ValueError, match=match):
        diffcast.nowcast(change(da), n_leadtimes=1, model="persistence")
