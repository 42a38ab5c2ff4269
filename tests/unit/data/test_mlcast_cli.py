"""mlcast spec Zarr stores on the command line (issue 21): data info|preview|check, nowcast in, NetCDF/Zarr out, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("zarr")

from diffcast.cli import main  # noqa: E402
from diffcast.data.mlcast import SpecStore, write_spec_store  # noqa: E402
from diffcast.data.mlcast.synthetic import synthetic_rain  # noqa: E402
from diffcast.data.transforms import rainrate_to_dbz  # noqa: E402

SHAPE = (96, 80)
N = 30
#: persistence: no motion field, the cheapest model; 3 frames in, 2 leads out.
NOWCAST = ["nowcast", "--baseline", "persistence", "--t-in", "3", "--t-out", "2", "--no-html", "--seed", "0"]


def _write(tmp_path, name="s.zarr", **kw):
    kw.setdefault("n_frames", N)
    kw.setdefault("shape", SHAPE)
    return write_spec_store(tmp_path / name, **kw)


def _truth(kind):
    """What the synthetic store holds north-up, in diffcast's quantity (mm/h; dBZ, -10 where it does not rain)."""
    r = synthetic_rain(N, SHAPE, 0)
    return np.where(r > 0, rainrate_to_dbz(r), -10.0).astype(np.float32) if kind == "reflectivity" else r


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- data info / preview / check
def test_info_prints_the_store_without_reading_pixels(tmp_path, monkeypatch, capsys):
    import zarr

    p = _write(tmp_path, missing=[10, 11], steps_before=[(10, 4)])
    calls = []
    orig = zarr.Array.__getitem__

    def spy(self, key):
        if len(self.shape) == 3:
            calls.append(key)
        return orig(self, key)

    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    monkeypatch.setattr(SpecStore, "read", lambda *a, **k: pytest.fail("data info read pixels"))
    assert main(["data", "info", p, "--seq-len", "6"]) == 0
    out = capsys.readouterr().out
    for text in ("variable: rainfall_flux", "units kg m-2 h-1", "rain rate (mm/h)", "grid: 96 x 80 at 1 km",
                 "EPSG:3035", "time: 2020-06-01T00:00:00 ..", "32 frame(s)", "5 min x", "10 min x 4",
                 "from consistent_timestep_start 2020-06-01T00:40:00", "missing frames: 2", "windows of 6 frames:",
                 "dataset: XX-DIFFCAST-rate 0.1.0"):
        assert text in out, text
    assert main(["data", "info", p, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variable"] == "rainfall_flux" and info["units"] == "kg m-2 h-1" and info["quantity"] == "mm/h"
    assert info["crs_code"] == "EPSG:3035" and info["shape"] == [32, *SHAPE] and info["missing_frames"] == 2
    assert info["time_range"] == ["2020-06-01T00:00:00", "2020-06-01T03:05:00"]
    assert info["missing_times"] == ["2020-06-01T01:10:00", "2020-06-01T01:15:00"]
    assert calls == []


def test_preview_draws_gap_free_windows(tmp_path, capsys):
    p = _write(tmp_path, kind="reflectivity", y_increasing=True)
    out = tmp_path / "p.png"
    assert main(["data", "preview", p, "--out", str(out), "--n", "2", "--frames", "3"]) == 0
    assert out.stat().st_size > 1000
    assert "2 window(s) of 3 frames" in capsys.readouterr().out
    assert main(["data", "preview", p, "--out", str(out), "--split", "all", "--n", "1", "--frames", "3"]) == 0
    # a store has no named splits (train/evaluate take time ranges): said, not silently ignored
    assert main(["data", "preview", p, "--out", str(tmp_path / "q.png"), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "--split test does not apply to a Zarr store" in err and not (tmp_path / "q.png").exists()


def test_check_without_the_validator_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys

    for name in [m for m in sys.modules if m.startswith("mlcast_dataset_validator.")]:  # imported by another test
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlcast_dataset_validator", None)  # import fails as if absent
    assert main(["data", "check", _write(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'diffcast[mlcast]'" in err[0]


def test_check_runs_the_validator_and_prints_its_report(tmp_path, monkeypatch, capsys):
    """The validator's API (0.4.0: validate_dataset(ds) -> (report, spec_text)) faked, its package not installed."""
    import sys
    import types

    seen = {}

    class Report:
        def __init__(self, fail):
            self.fail = fail

        def console_print(self):
            print(f"Validation Report ... Summary: {self.fail} fail(s)")

        def has_fails(self):
            return bool(self.fail)

    def validate_dataset(ds):
        seen["vars"] = set(ds.data_vars)
        return Report(seen.get("fail", 0)), "spec text"

    spec = types.ModuleType("radar_precipitation")
    spec.validate_dataset, spec.VERSION = validate_dataset, "0.3.0"
    pkgs = {"mlcast_dataset_validator": types.ModuleType("m"), "mlcast_dataset_validator.specs": types.ModuleType("s"),
            "mlcast_dataset_validator.specs.source_data": types.ModuleType("sd"),
            "mlcast_dataset_validator.specs.source_data.radar_precipitation": spec}
    pkgs["mlcast_dataset_validator.specs.source_data"].radar_precipitation = spec
    for k, v in pkgs.items():
        monkeypatch.setitem(sys.modules, k, v)
    p = _write(tmp_path)
    assert main(["data", "check", p]) == 0
    out = capsys.readouterr().out
    assert "Summary: 0 fail(s)" in out and "follows the mlcast radar_precipitation spec 0.3.0" in out
    assert "rainfall_flux" in seen["vars"]
    seen["fail"] = 2
    assert main(["data", "check", p]) == 1
    assert "does not follow" in capsys.readouterr().out


# ---------------------------------------------------------------- nowcast from a store
@pytest.mark.parametrize(
    "kw",
    [
        dict(kind="rate"),
        dict(kind="amount", xy_units="km", y_increasing=True),
        dict(kind="reflectivity", zarr_format=3),
        dict(kind="rate", xy_units="km", missing=[5]),
        dict(kind="amount", y_increasing=True, step_min=10.0),
    ],
    ids=["rate-m-ydec", "amount-km-yinc", "dbz-v3", "rate-km-gap", "amount-10min-yinc"],
)
def test_nowcast_from_a_store_keeps_quantity_grid_and_provenance(tmp_path, kw, capsys):
    import xarray as xr
    from pyproj import CRS, Transformer

    p = _write(tmp_path, **kw)
    store = SpecStore(p)
    truth = np.delete(_truth(kw["kind"]), kw.get("missing", []), axis=0)
    got = store.read(slice(None))
    ok = np.isfinite(got) & np.isfinite(truth)
    assert ok.mean() > 0.5
    np.testing.assert_allclose(got[ok], truth[ok], rtol=1e-5, atol=1e-4)  # the quantity the store promises

    out = tmp_path / "out"
    assert main([*NOWCAST, "--input", p, "--out", str(out)]) == 0
    ds = xr.open_dataset(out / "forecast.nc")
    quantity = "dBZ" if kw["kind"] == "reflectivity" else "mm h-1"
    assert ds.forecast.attrs["units"] == quantity and ds.forecast.dims == ("member", "time", "y", "x")
    # the observed frames in forecast.nc are the store's last 3 frames, in its quantity
    obs, want = ds.observation.values, truth[-3:]
    ok = np.isfinite(obs) & np.isfinite(want) & (np.nan_to_num(want) > 0)
    np.testing.assert_allclose(obs[ok], want[ok], rtol=1e-4)
    assert np.isnan(ds.forecast.values[0, 0, -SHAPE[0] // 4 :, : SHAPE[1] // 4]).all()  # no coverage there
    # CRS and lat/lon: those of the input store
    lat, lon = store.latlon()
    assert np.abs(ds.lat.values - lat).max() < 1e-6 and np.abs(ds.lon.values - lon).max() < 1e-6
    src = xr.open_zarr(p, consolidated=kw.get("zarr_format", 2) == 2)
    slat = src.lat.sortby("y", ascending=False).values
    assert np.abs(ds.lat.values - slat).max() < 1e-6
    crs = CRS.from_wkt(ds.crs.attrs["crs_wkt"])
    assert crs.equals(CRS(src.crs.attrs["crs_wkt"])) and ds.forecast.attrs["grid_mapping"] == "crs"
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    plon, plat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(xx, yy)
    assert np.abs(plat - lat).max() < 1e-6 and np.abs(plon - lon).max() < 1e-6
    # x/y in the store's unit, which is its CRS's (the spec's validator reads crs_wkt so), and labelled so
    np.testing.assert_allclose(np.sort(ds.y.values), np.sort(src.y.values))
    assert ds.x.attrs["units"] == ds.y.attrs["units"] == kw.get("xy_units", "m")
    # provenance: store, variable, dataset and the input frame times
    a = ds.attrs
    assert a["input_store"] == p and a["input_variable"] == store.name and a["model"] == "persistence"
    assert a["input_dataset_identifier"] == f"XX-DIFFCAST-{kw['kind']}" and a["input_dataset_version"] == "0.1.0"
    times = [str(t.astype("datetime64[s]")) + "Z" for t in store.times[-3:]]
    assert a["input_frame_times"].split() == times
    run = json.loads((out / "run.json").read_text())
    assert run["input"]["kind"] == "zarr" and run["input"]["attrs"]["input_store"] == p
    ds.close()


def test_checkpoint_nowcast_runs_on_the_store_grid(tmp_path, one_thread):
    """A fully convolutional DiffCast (tiny, untrained) forecasts the store's own 96 x 80 grid, not its 32 x 32."""
    import xarray as xr

    from diffcast.models import build_model
    from diffcast.training.model_io import save_model_file

    mcfg = {"type": "diffcast", "t_in": 3, "t_out": 2, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "extrapolation"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4,
                          "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 7, "sampling_steps": 2}}
    meta = {"name": "radar", "unit": "dBZ", "scale": 90.0, "thresholds": [20, 30, 35, 40], "timestep_min": 5.0,
            "pixel_km": 1.0, "physical_unit": "dBZ", "physical_name": "equivalent_reflectivity_factor", "transform": "x"}
    model = save_model_file(tmp_path / "m.safetensors", build_model(mcfg).state_dict(),
                            {"model": mcfg, "data": {"name": "radar_windows"}}, meta=meta)
    p = _write(tmp_path, kind="amount", xy_units="km", y_increasing=True, n_frames=8)
    out = tmp_path / "out"
    assert main(["nowcast", "--checkpoint", str(model), "--input", p, "--members", "2", "--seed", "0", "--no-html",
                 "--out", str(out), "--format", "zarr"]) == 0
    ds = xr.open_zarr(out / "forecast.zarr")
    assert dict(ds.forecast.sizes) == {"member": 2, "time": 2, "y": SHAPE[0], "x": SHAPE[1]}
    assert ds.forecast.attrs["units"] == "mm h-1" and ds.attrs["model_spec"] == str(model)
    lat, lon = SpecStore(p).latlon()
    assert np.abs(ds.lat.values - lat).max() < 1e-6 and np.abs(ds.lon.values - lon).max() < 1e-6


def test_nowcast_reads_only_the_frames_it_uses(tmp_path):
    from diffcast.pipeline import prepare_input, read_input
    from diffcast.pipeline.model import make_nowcaster

    raw = read_input([_write(tmp_path, n_frames=60)])
    assert raw.kind == "zarr" and raw.frames.shape == (60, *SHAPE)
    store = raw.frames.series
    assert store.reads == []
    nc = make_nowcaster("persistence", raw, t_in=4, t_out=2)
    prepared = prepare_input(raw, t_in=4, size=(nc.height, nc.width), meta=nc.meta)
    assert sorted(set(store.reads)) == [56, 57, 58, 59]
    assert prepared.analysis_time.isoformat() == "2020-06-01T04:55:00" and prepared.latlon is not None
    raw = read_input([_write(tmp_path, "b.zarr", n_frames=60)])
    prepare_input(raw, t_in=4, size=(nc.height, nc.width), meta=nc.meta, start_frame=10, t_out=2)
    assert sorted(set(raw.frames.series.reads)) == [10, 11, 12, 13, 14, 15]  # 4 in, 2 observed future


def test_nowcast_window_across_a_gap_is_refused(tmp_path, capsys):
    p = _write(tmp_path, missing=[N - 2])
    out = tmp_path / "out"
    assert main([*NOWCAST, "--input", p, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gap in the radar time series: 10 min" in err and not out.exists()
    assert main([*NOWCAST, "--input", p, "--out", str(out), "--start-frame", "20"]) == 0


def test_storage_options_and_standard_name_reach_the_store(tmp_path, monkeypatch):
    import diffcast.data.mlcast.store as store_mod

    seen = {}
    orig = store_mod._open

    def spy(url, options):
        seen["options"] = options
        return orig(url, None)

    monkeypatch.setattr(store_mod, "_open", spy)
    p = _write(tmp_path, kind="reflectivity")
    out = tmp_path / "out"
    assert main([*NOWCAST, "--input", p, "--out", str(out), "--standard-name", "equivalent_reflectivity_factor",
                 "--storage-option", "anon=true", "--storage-option", "client_kwargs.endpoint_url=http://x"]) == 0
    assert seen["options"] == {"anon": True, "client_kwargs": {"endpoint_url": "http://x"}}
    assert main([*NOWCAST, "--input", p, "--out", str(tmp_path / "o2"), "--standard-name", "rainfall_flux"]) == 2
    assert not (tmp_path / "o2").exists()


def test_a_store_at_a_url(tmp_path, capsys):
    """A URL goes to fsspec (memory:// here; s3:// the same way with --storage-option)."""
    import fsspec

    url = write_spec_store("memory://diffcast-test/s.zarr", n_frames=12, shape=SHAPE)
    try:
        assert main(["data", "info", url]) == 0
        assert f"store: {url}" in capsys.readouterr().out
        out = tmp_path / "out"
        assert main([*NOWCAST, "--input", url, "--out", str(out)]) == 0
        import xarray as xr

        with xr.open_dataset(out / "forecast.nc") as ds:
            assert ds.attrs["input_store"] == url and ds.sizes["time"] == 2
    finally:
        fsspec.filesystem("memory").rm("/diffcast-test", recursive=True)


def test_a_store_on_s3_with_storage_options(tmp_path, capsys, local_s3):
    """s3:// through s3fs with --storage-option key=value (nested: client_kwargs.endpoint_url), against a local
    moto S3 server: data info and nowcast read it as they read the same store on disk."""
    import s3fs
    import xarray as xr

    endpoint, make_bucket = local_s3
    fs = s3fs.S3FileSystem(key="testing", secret="testing",
                           client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    local = _write(tmp_path)
    make_bucket("radar-test")
    fs.put(local + "/", "radar-test/archive.zarr/", recursive=True)
    url = "s3://radar-test/archive.zarr"
    opts = [a for kv in ("key=testing", "secret=testing", f"client_kwargs.endpoint_url={endpoint}",
                         "client_kwargs.region_name=us-east-1") for a in ("--storage-option", kv)]
    assert main(["data", "info", url, *opts]) == 0
    assert f"store: {url}" in capsys.readouterr().out
    assert main([*NOWCAST, "--input", url, *opts, "--out", str(tmp_path / "s3")]) == 0
    assert main([*NOWCAST, "--input", local, "--out", str(tmp_path / "disk")]) == 0
    with xr.open_dataset(tmp_path / "s3" / "forecast.nc") as a, xr.open_dataset(tmp_path / "disk" / "forecast.nc") as b:
        assert a.attrs["input_store"] == url
        np.testing.assert_array_equal(a.forecast.values, b.forecast.values)
    assert main([*NOWCAST, "--input", url, "--out", str(tmp_path / "noauth"), "--storage-option",
                 f"client_kwargs.endpoint_url={endpoint}", "--storage-option", "anon=true"]) != 0
    err = capsys.readouterr().err
    assert not (tmp_path / "noauth").exists() and url in err and "Traceback" not in err


def test_store_options_on_other_inputs_are_refused(tmp_path, capsys):
    inp = tmp_path / "x.npy"
    np.save(inp, np.zeros((4, 16, 16), np.float32))
    assert main([*NOWCAST, "--input", str(inp), "--out", str(tmp_path / "o"), "--storage-option", "anon=true"]) == 2
    assert "--storage-option applies to Zarr stores only" in capsys.readouterr().err


# ---------------------------------------------------------------- Zarr output
def test_format_zarr_writes_the_netcdf_content_as_a_store(tmp_path):
    import xarray as xr
    from pyproj import CRS

    p = _write(tmp_path, kind="rate", xy_units="km", y_increasing=True)
    assert main([*NOWCAST, "--input", p, "--out", str(tmp_path / "nc")]) == 0
    out = tmp_path / "z"
    assert main([*NOWCAST, "--input", p, "--out", str(out), "--format", "zarr"]) == 0
    assert not (out / "forecast.nc").exists()
    nc = xr.open_dataset(tmp_path / "nc" / "forecast.nc")
    z = xr.open_zarr(out / "forecast.zarr")
    assert set(z.variables) == set(nc.variables)
    for name in ("forecast", "ensemble_mean", "exceedance_probability", "observation", "lat", "lon", "x", "y"):
        assert z[name].dims == nc[name].dims
        np.testing.assert_array_equal(z[name].values, nc[name].values)
    np.testing.assert_array_equal(z.time.values, nc.time.values)
    assert z.forecast.attrs["grid_mapping"] == "crs" and z.forecast.encoding["chunks"] == (1, 1, *SHAPE)
    assert CRS(z.crs.attrs["crs_wkt"]).equals(CRS(nc.crs.attrs["crs_wkt"]))
    assert z.attrs["input_store"] == p and z.attrs["input_frame_times"] == nc.attrs["input_frame_times"]
    lat, _ = SpecStore(p).latlon()
    assert np.abs(z.lat.values - lat).max() < 1e-6
    # a second run replaces the store in place
    assert main([*NOWCAST, "--input", p, "--out", str(out), "--format", "zarr", "--t-out", "3"]) == 0
    assert xr.open_zarr(out / "forecast.zarr").sizes["time"] == 3 and _leftovers(tmp_path) == []
    nc.close()


def test_failed_zarr_write_leaves_nothing(tmp_path, monkeypatch, capsys):
    import xarray as xr

    p = _write(tmp_path)
    orig = xr.Dataset.to_zarr

    def half(self, store, *a, **k):
        orig(self, store, *a, **k)  # the store is written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", half)
    out = tmp_path / "out"
    assert main([*NOWCAST, "--input", p, "--out", str(out), "--format", "zarr"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_netcdf_opens_with_rioxarray_with_the_store_crs(tmp_path):
    pytest.importorskip("rioxarray")
    import xarray as xr
    from pyproj import CRS

    p = _write(tmp_path, xy_units="km", y_increasing=True)
    out = tmp_path / "out"
    assert main([*NOWCAST, "--input", p, "--out", str(out)]) == 0
    ds = xr.open_dataset(out / "forecast.nc", decode_coords="all")
    crs = ds.forecast.rio.crs
    store_crs = CRS(xr.open_zarr(p).crs.attrs["crs_wkt"])  # EPSG:3035 with its axes in km, as x/y are
    assert crs is not None and CRS(crs.to_wkt()).equals(store_crs)
    assert store_crs.axis_info[0].unit_conversion_factor == 1000.0
    assert ds.forecast.rio.resolution() == pytest.approx((1.0, -1.0))
    ds.close()


# ---------------------------------------------------------------- bad input
def _edit(path, fn):
    """Edit a written store in place with zarr (then re-consolidate its metadata)."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    fn(g)
    zarr.consolidate_metadata(str(path))
    return str(path)


def _unrecognised(g):
    g["rainfall_flux"].attrs["standard_name"] = "rain_stuff"


def _bad_units(g):
    g["rainfall_flux"].attrs["units"] = "furlongs per fortnight"


def _no_time(g):
    del g["time"]


def _no_crs(g):
    del g["rainfall_flux"].attrs["grid_mapping"]
    del g["crs"]


def _time_back(g):
    t = g["time"][:]
    t[7] = t[3]
    g["time"][:] = t


@pytest.mark.parametrize(
    "edit, words",
    [
        (_unrecognised, ["no recognisable radar variable", "set the variable's standard_name"]),
        (_bad_units, ["units 'furlongs per fortnight'", "expected one of"]),
        (_no_time, ["no time coordinate", "add a CF time variable"]),
        (_no_crs, ["no CRS", "add one naming a variable with crs_wkt"]),
        (_time_back, ["time is not strictly increasing", "sort the store by time"]),
    ],
    ids=["no-variable", "unknown-units", "no-time", "no-crs", "time-not-increasing"],
)
def test_bad_store_is_one_line_exit_2_nothing_written(tmp_path, capsys, edit, words):
    p = _edit(_write(tmp_path, n_frames=12), edit)
    for argv in (["data", "info", p], [*NOWCAST, "--input", p, "--out", str(tmp_path / "out")],
                 [*NOWCAST, "--input", p, "--out", str(tmp_path / "out"), "--format", "zarr"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and p in err[0], err
        for w in words:
            assert w in err[0], (w, err[0])
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_missing_optional_parts_are_warnings_only(tmp_path, capsys):
    def strip(g):
        del g["missing_times"]
        for k in [k for k in g.attrs if k.startswith("mlcast_")]:
            del g.attrs[k]

    p = _edit(_write(tmp_path, n_frames=12), strip)
    assert main(["data", "info", p]) == 0
    out = capsys.readouterr().out
    assert "warning: no missing_times variable" in out and "warning: no global attribute 'mlcast_dataset_identifier'" in out
    out_dir = tmp_path / "out"
    assert main([*NOWCAST, "--input", p, "--out", str(out_dir)]) == 0
    assert (out_dir / "forecast.nc").exists()
