"""Issue 18 item 1: every radar file a pysteps importer reads, diffcast reads with the same values and grid.

For each pysteps importer a small synthetic file is written in its layout, read with
the pysteps importer (called here with its own arguments) and with diffcast
(:func:`read_frame` and :class:`RadarSeries`), and compared: the pysteps field mapped
through :func:`to_unit_interval` (and flipped north-up where pysteps says
``yorigin="lower"``) equals diffcast's frame and validity map, and the outer corners
of ``ProjectedGrid.from_pysteps(pysteps metadata)`` equal those of diffcast's grid in
lon/lat. Formats whose library is absent (GDAL, pygrib, metranet) are checked for
their one clear error; their value tests skip naming the library.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import struct
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from diffcast.data.radar import (
    ODIM_QUANTITIES,
    RADAR_FORMATS,
    RadarSeries,
    detect_format,
    read_frame,
    to_unit_interval,
)
from diffcast.geo import ProjectedGrid

pyproj = pytest.importorskip("pyproj")

T0 = datetime(2023, 1, 1, 0, 50, tzinfo=timezone.utc)
STERE = "+proj=stere +lat_0=90 +lon_0=10 +lat_ts=60 +a=6378137 +b=6356752 +x_0=0 +y_0=0 +units=m"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- writers
def _b(s: str) -> np.bytes_:
    return np.bytes_(s)


def _set(group: h5py.Group, **attrs: Any) -> h5py.Group:
    for k, v in attrs.items():
        group.attrs[k] = _b(v) if isinstance(v, str) else v
    return group


def _corners(proj: str, x1: float, y1: float, x2: float, y2: float) -> dict[str, float]:
    """ODIM corner attributes (lon/lat) of a projected extent."""
    p = pyproj.Proj(proj)
    out = {}
    for name, (x, y) in {"LL": (x1, y1), "UR": (x2, y2), "UL": (x1, y2), "LR": (x2, y1)}.items():
        lon, lat = p(x, y, inverse=True)
        out[f"{name}_lon"], out[f"{name}_lat"] = float(lon), float(lat)
    return out


def write_odim(path: Path, t: datetime, fields: list[tuple[str, str, np.ndarray, dict[str, float]]],
               shape=(16, 20), scale_at: str = "root", how: bool = True) -> None:
    """An ODIM HDF5 composite.

    ``fields``: ``(location, quantity, codes, scaling)`` with location ``"datasetN/dataM"``
    (quantity and scaling in the field's ``what``) or ``"datasetN"`` (in the dataset's ``what``,
    the field is ``datasetN/data1``). ``scale_at``: ``xscale`` in the root or the dataset ``where``.
    """
    h, w = shape
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = _b("ODIM_H5/V2_2")
        _set(f.create_group("what"), date=t.strftime("%Y%m%d"), time=t.strftime("%H%M%S"),
             object="COMP", source="ORG:247", version="H5rad 2.2")
        where = {"projdef": STERE, "xsize": w, "ysize": h, **_corners(STERE, 0.0, -4.0e6, w * 1000.0, -4.0e6 + h * 1000.0)}
        if scale_at == "root":
            where.update(xscale=1000.0, yscale=1000.0)
        _set(f.create_group("where"), **where)
        if how:
            _set(f.create_group("how"), software="synthetic", simulated="True")
        for loc, qty, codes, scaling in fields:
            ds_name = loc.split("/")[0]
            ds = f.require_group(ds_name)
            if "what" not in ds:
                _set(ds.create_group("what"), product="COMP", startdate=t.strftime("%Y%m%d"),
                     starttime=(t - timedelta(minutes=5)).strftime("%H%M%S"), enddate=t.strftime("%Y%m%d"),
                     endtime=t.strftime("%H%M%S"))
                if scale_at == "dataset":
                    _set(ds.create_group("where"), xscale=1000.0, yscale=1000.0)
                if how:
                    _set(ds.create_group("how"), task="synthetic")
            g = f.require_group(loc) if "/" in loc else ds.require_group("data1")
            g.create_dataset("data", data=codes)
            _set((g if "/" in loc else ds).require_group("what"), quantity=qty, **scaling)
            if how and "/" in loc:
                _set(g.create_group("how"), note="field how")


def write_dwd_hdf5(path: Path, t: datetime, level: str = "data") -> np.ndarray:
    """A DWD RY composite: RATE in dataset1/data1 (``level="data"``) or dataset1 (``"dataset"``)."""
    h, w = 24, 22
    codes = np.arange(h * w, dtype=np.uint16).reshape(h, w) % 4000
    codes[0, :3] = 65535  # nodata
    codes[1, :3] = 0  # undetect
    with h5py.File(path, "w") as f:
        _set(f.create_group("what"), date=t.strftime("%Y%m%d"), time=t.strftime("%H%M%S"), object="COMP",
             source="ORG:78,CTY:616,CMT:Deutscher Wetterdienst radolan@dwd.de", version="H5rad 2.1")
        _set(f.create_group("where"), projdef=STERE, xsize=w, ysize=h, xscale=1000.0, yscale=1000.0,
             **_corners(STERE, -500.0, -4.0e6, w * 1000.0 - 500.0, -4.0e6 + h * 1000.0))
        _set(f.create_group("how"), software="RADOLAN")
        times = dict(product="RY", startdate=t.strftime("%Y%m%d"), starttime=(t - timedelta(minutes=5)).strftime("%H%M%S"),
                     enddate=t.strftime("%Y%m%d"), endtime=t.strftime("%H%M%S"))
        scaling = dict(quantity="RATE", gain=0.01, offset=0.0, nodata=65535.0, undetect=0.0)
        ds = f.create_group("dataset1")
        _set(ds.create_group("what"), **times, **(scaling if level == "dataset" else {}))
        d = ds.create_group("data1")
        d.create_dataset("data", data=codes)
        if level == "data":
            _set(d.create_group("what"), **scaling)
    return codes


def write_mch_hdf5(path: Path, t: datetime, level: str = "data", extra_dbzh: bool = False) -> np.ndarray:
    """A MeteoSwiss CCS4 HDF5 composite (640 x 710, the grid pysteps hard-codes)."""
    codes = (np.arange(640 * 710) % 200).astype(np.uint8).reshape(640, 710)
    codes[0, :5] = 255  # nodata
    codes[1, :5] = 0  # undetect
    scaling = dict(quantity="RATE", gain=0.05, offset=0.0, nodata=255.0, undetect=0.0)
    with h5py.File(path, "w") as f:
        _set(f.create_group("what"), date=t.strftime("%Y%m%d"), time=t.strftime("%H%M%S"), source="CMT:RZC")
        _set(f.create_group("where"), xscale=1.0, yscale=1.0, xsize=710, ysize=640)
        ds = f.create_group("dataset1")
        if level == "dataset":
            _set(ds.create_group("what"), **scaling)
        d = ds.create_group("data1")
        d.create_dataset("data", data=codes)
        if level == "data":
            _set(d.create_group("what"), **scaling)
        if extra_dbzh:  # a second dataset with reflectivity: preferred (ODIM_QUANTITIES order)
            d2 = f.create_group("dataset2/data1")
            d2.create_dataset("data", data=(np.arange(640 * 710) % 90 + 60).astype(np.uint8).reshape(640, 710))
            _set(d2.create_group("what"), quantity="DBZH", gain=0.5, offset=-32.0, nodata=255.0, undetect=0.0)
    return codes


def radolan_bytes(t: datetime, codes: np.ndarray, product: str = "RW", precision: str = "E-01",
                  interval: int = 60) -> bytes:
    """A RADOLAN binary composite: text header ending in ETX, then little-endian uint16 rows."""
    h, w = codes.shape
    data = codes.astype("<u2").tobytes()
    head = (f"{product}{t:%d%H%M}10000{t:%m%y}BY{len(data) + 80:7d}VS 3SW   2.28.1PR {precision}"
            f"INT{interval:4d}GP{h:4d}x{w:4d}MF 00000009MS 10<boo,ros>")
    return head.encode("ascii") + b"\x03" + data


def write_radolan(path: Path, t: datetime) -> np.ndarray:
    codes = (np.arange(900 * 900) % 3000).astype(np.uint16).reshape(900, 900)
    codes[0, :4] = 0x29C4  # RADOLAN no data (bit 14 + 2500)
    codes[1, :4] |= 0x8000  # clutter flag: 0
    codes[2, :4] = 0x1000 + 37  # secondary-data flag on 3.7 mm
    path.write_bytes(radolan_bytes(t, codes))
    return codes


def write_saf(path: Path, t: datetime) -> np.ndarray:
    import netCDF4

    h, w = 12, 18
    rate = np.linspace(0.0, 30.0, h * w, dtype=np.float32).reshape(h, w)
    rate[0, :4] = 65535
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("ny", h)
        ds.createDimension("nx", w)
        x_ul, y_ul, dx = -1.5e6, 5.0e6, 3000.0
        ds.setncatts({
            "gdal_projection": "+proj=geos +a=6378137.000000 +b=6356752.300000 +lon_0=0.000000 +h=35785863.000000 +sweep=y",
            "gdal_xgeo_up_left": x_ul, "gdal_ygeo_up_left": y_ul, "gdal_xgeo_low_right": x_ul + w * dx,
            "gdal_ygeo_low_right": y_ul - h * dx, "institution": "Synthetic NWC SAF",
            "nominal_product_time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        ds.setncattr("gdal_geotransform_table", np.array([x_ul, dx, 0.0, y_ul, 0.0, -dx]))
        v = ds.createVariable("crr_intensity", "f4", ("ny", "nx"), fill_value=False)
        v.units = "mm/h"
        v[:] = rate
        q = ds.createVariable("crr_quality", "u1", ("ny", "nx"), fill_value=False)
        q[:] = 8
    return rate


def write_mch_gif(path: Path, t: datetime) -> np.ndarray:
    from PIL import Image

    codes = (np.arange(640 * 710) % 256).astype(np.uint8).reshape(640, 710)
    img = Image.fromarray(codes, mode="P")
    img.putpalette([v for i in range(256) for v in (i, i, i)])
    img.save(path, optimize=False)
    return codes


def write_fmi_pgm(path: Path, t: datetime) -> np.ndarray:
    h, w = 30, 24
    codes = (np.arange(h * w) % 250).astype(np.uint8).reshape(h, w)
    codes[0, :3] = 255  # missing (pysteps: the maxval line)
    head = ("P5\n# type stereographic\n# centrallongitude 25\n# centrallatitude 90\n# truelatitude 60\n"
            "# bottomleft 18.6 57.93\n# topright 34.903 69.005\n# metersperpixel_x 999.674053\n"
            f"# metersperpixel_y 999.62859\n{w} {h}\n255\n")
    with gzip.open(path, "wb") as fh:
        fh.write(head.encode() + codes.tobytes())
    return codes


def write_bom(path: Path, t: datetime) -> np.ndarray:
    import netCDF4

    h, w = 10, 14
    acc = np.linspace(0.0, 5.0, h * w).reshape(h, w)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", w)
        ds.createDimension("y", h)
        proj = ds.createVariable("proj", "i4")
        proj.setncatts({"grid_mapping_name": "albers_conical_equal_area", "longitude_of_central_meridian": 153.0,
                        "latitude_of_projection_origin": -27.5, "standard_parallel": np.array([-26.5, -28.5])})
        x = ds.createVariable("x", "f4", ("x",))
        x.units = "km"
        x[:] = np.arange(w) * 1.0 - 7.0
        y = ds.createVariable("y", "f4", ("y",))
        y.units = "km"
        y[:] = 5.0 - np.arange(h) * 1.0
        p = ds.createVariable("precipitation", "f4", ("y", "x"), fill_value=-1.0)
        p.units = "mm"
        p[:] = np.ma.masked_array(acc, mask=np.eye(h, w, dtype=bool))
        for name, when in (("valid_time", t), ("start_time", t - timedelta(minutes=6))):
            v = ds.createVariable(name, "i8")
            v.units = "seconds since 1970-01-01 00:00:00"
            v.assignValue(int(when.timestamp()))
    return acc


def write_knmi(path: Path, t: datetime) -> np.ndarray:
    acc = (np.arange(10 * 12) % 300).reshape(10, 12).astype(np.uint16)
    acc[0, 0] = 65535
    with h5py.File(path, "w") as f:
        f.create_dataset("image1/image_data", data=acc)
        g = f.create_group("geographic")
        for k, v in (("geo_column_offset", 0.0), ("geo_row_offset", 3650.0), ("geo_pixel_size_x", 1.0),
                     ("geo_pixel_size_y", -1.0), ("geo_number_columns", 12.0), ("geo_number_rows", 10.0)):
            g.attrs[k] = np.array([v], dtype=np.float32)
        g.attrs["geo_dim_pixel"] = _b("KM,KM")
        _set(g.create_group("map_projection"), projection_proj4_params="+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752")
    return acc


def _grib_int(v: int, n: int) -> bytes:
    """GRIB2 signed integer: sign in the top bit, magnitude in the rest."""
    return ((1 << (8 * n - 1)) | -v).to_bytes(n, "big") if v < 0 else v.to_bytes(n, "big")


def grib2_latlon(t: datetime, values: np.ndarray, lat1: float, lon1: float, step: float) -> bytes:
    """One GRIB2 message on a regular lat/lon grid (north to south), simple packing, 16 bit, D = 1."""
    nj, ni = values.shape
    deg = lambda v: _grib_int(int(round(v * 1e6)), 4)  # noqa: E731
    sec1 = struct.pack(">IBHHBBBHBBBBBBB", 21, 1, 161, 0, 2, 1, 0, t.year, t.month, t.day, t.hour, t.minute, t.second, 0, 0)
    tmpl3 = (bytes([6, 0]) + _grib_int(0, 4) + bytes([0]) + _grib_int(0, 4) + bytes([0]) + _grib_int(0, 4)
             + struct.pack(">II", ni, nj) + struct.pack(">I", 0) + struct.pack(">I", 0xFFFFFFFF)
             + deg(lat1) + deg(lon1) + bytes([48]) + deg(lat1 - (nj - 1) * step) + deg(lon1 + (ni - 1) * step)
             + deg(step) + deg(step) + bytes([0]))
    sec3 = struct.pack(">IBBIBBH", 14 + len(tmpl3), 3, 0, ni * nj, 0, 0, 0) + tmpl3
    tmpl4 = bytes([1, 7, 0, 0, 0]) + struct.pack(">HB", 0, 0) + bytes([1]) + _grib_int(0, 4) + bytes([1, 0]) + _grib_int(0, 4) + bytes([255, 0]) + _grib_int(0, 4)
    sec4 = struct.pack(">IBHH", 9 + len(tmpl4), 4, 0, 0) + tmpl4
    ref = -30.0  # tenths: -3.0 (MRMS no coverage)
    packed = np.round(values * 10.0 - ref).astype(">u2")
    sec5 = struct.pack(">IBIH", 21, 5, ni * nj, 0) + struct.pack(">f", ref) + _grib_int(0, 2) + _grib_int(1, 2) + bytes([16, 0])
    sec6 = struct.pack(">IBB", 6, 6, 255)
    sec7 = struct.pack(">IB", 5 + packed.nbytes, 7) + packed.tobytes()
    body = sec1 + sec3 + sec4 + sec5 + sec6 + sec7 + b"7777"
    return b"GRIB" + bytes([0, 0, 0, 2]) + struct.pack(">Q", 16 + len(body)) + body


def write_mrms(path: Path, t: datetime) -> np.ndarray:
    rate = np.round(np.linspace(0.0, 40.0, 16 * 24).reshape(16, 24), 1)
    rate[:4, :4] = -3.0  # no coverage: one 4 x 4 block
    rate[5, 9] = -3.0  # one pixel of a block
    path.write_bytes(grib2_latlon(t, rate, 54.995, 230.005, 0.01))
    return rate


def _odim_simple(path: Path, t: datetime) -> None:
    codes = (np.arange(16 * 20) % 250).astype(np.uint8).reshape(16, 20)
    codes[0, 0], codes[1, 1] = 255, 0
    write_odim(path, t, [("dataset1/data1", "DBZH", codes, dict(gain=0.5, offset=-32.0, nodata=255.0, undetect=0.0))])


# fmt: (file name at time t, writer, pysteps reference reader, metadata pysteps leaves out or misstates:
# RADOLAN's unit, and its row order, south first, which pysteps calls "upper")
CASES: dict[str, tuple[Callable[[datetime], str], Callable[[Path, datetime], Any], Callable[[str], Any], dict]] = {
    "mch": (lambda t: f"AQC{t:%y%j%H%M}V_00005.801.gif", write_mch_gif,
            lambda p: _ps("import_mch_gif", p, product="AQC", unit="mm/h", accutime=5.0), {}),
    "fmi": (lambda t: f"{t:%Y%m%d%H%M}_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz", write_fmi_pgm,
            lambda p: _ps("import_fmi_pgm", p, gzipped=True), {}),
    "bom": (lambda t: f"2_{t:%Y%m%d_%H%M%S}.prcp-cscn.nc", write_bom, lambda p: _ps("import_bom_rf3", p), {}),
    "knmi": (lambda t: f"RAD_NL25_RAP_5min_{t:%Y%m%d%H%M}.h5", write_knmi,
             lambda p: _ps("import_knmi_hdf5", p, qty="ACRR", accutime=5.0), {}),
    "odim": (lambda t: f"{t:%Y%m%d%H%M}00.rad.best.comp.rate.qpe.hdf", _odim_simple,
             lambda p: _ps("import_odim_hdf5", p, qty="DBZH"), {}),
    "opera": (lambda t: f"T_PAAH21_C_EUOC_{t:%Y%m%d%H%M%S}.hdf", _odim_simple,
              lambda p: _ps("import_opera_hdf5", p, qty="DBZH"), {}),
    "dwd_hdf5": (lambda t: f"{t:%Y%m%d_%H%M}_RY.h5", write_dwd_hdf5, lambda p: _ps("import_dwd_hdf5", p, qty="RATE"), {}),
    "dwd_radolan": (lambda t: f"raa01-rw_10000-{t:%y%m%d%H%M}-dwd---bin", write_radolan,
                    lambda p: _ps("import_dwd_radolan", p, "RW"),
                    {"unit": "mm", "accutime": 60.0, "transform": None, "yorigin": "lower"}),
    "mch_hdf5": (lambda t: f"RZC{t:%y%j%H%M}VL.801.h5", write_mch_hdf5, lambda p: _ps("import_mch_hdf5", p, qty="RATE"), {}),
    "saf_crri": (lambda t: f"S_NWC_CRR_MSG4_Europe-VISIR_{t:%Y%m%dT%H%M%S}Z.nc", write_saf,
                 lambda p: _ps("import_saf_crri", p), {}),
    "mrms_grib": (lambda t: f"PrecipRate_00.00_{t:%Y%m%d-%H%M%S}.grib2", write_mrms, lambda p: _ps("import_mrms_grib", p), {}),
}
#: Formats whose pysteps importer needs a library that is not a dependency: (module, name).
OPTIONAL = {"fmi_geotiff": (("osgeo", "rasterio"), "GDAL"), "mrms_grib": (("pygrib",), "pygrib"),
            "mch_metranet": (("metranet", "pyart"), "Py-ART")}
SAMPLE_NAMES = {**{k: v[0](T0) for k, v in CASES.items()}, "fmi_geotiff": f"{T0:%Y%m%d%H%M}_FINUTM.tif",
                "mch_metranet": f"RZC{T0:%y%j%H%M}VL.801"}


def _ps(name: str, path: str, *args: Any, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
    import pysteps.io.importers as importers

    data, _, meta = getattr(importers, name)(str(path), *args, **kwargs)
    return np.ma.getdata(data), dict(meta)  # BoM: a masked array whose masked values pysteps set to NaN


# ----------------------------------------------------------------------------- comparisons
def _edges_lonlat(grid: ProjectedGrid) -> np.ndarray:
    """Lon/lat of the top-left and bottom-right outer corners, whatever the row order."""
    h, w = grid.shape
    ys = sorted((grid.y0, grid.y0 + h * grid.dy))
    xs = sorted((grid.x0, grid.x0 + w * grid.dx))
    to = pyproj.Transformer.from_crs(grid.crs, grid.crs.geodetic_crs, always_xy=True)
    pts = [(xs[0], ys[1]), (xs[1], ys[0]), ((xs[0] + xs[1]) / 2, (ys[0] + ys[1]) / 2)]
    return np.array([to.transform(x, y) for x, y in pts])


def assert_same_as_pysteps(path: Path, fmt: str, ref: np.ndarray, ref_meta: dict[str, Any], units: dict | None = None):
    """diffcast's frame, mask and grid of ``path`` equal pysteps' ``ref`` field and metadata (``units``: the
    metadata pysteps leaves out or misstates)."""
    ref_meta = {**ref_meta, **(units or {})}
    expect, valid = to_unit_interval(ref, ref_meta)
    if str(ref_meta.get("yorigin", "upper")).lower() == "lower":
        expect, valid = expect[::-1], valid[::-1]
    x, got_valid, meta = read_frame(path, fmt)
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_allclose(x, expect, atol=1e-6)
    assert meta["unit"] == ref_meta["unit"]
    series = RadarSeries([path], fmt)
    sx, nodata, _ = series.frame(0)
    np.testing.assert_array_equal(sx, x)
    np.testing.assert_array_equal(nodata, ~valid)
    ours = ProjectedGrid.from_pysteps(series.source, series.grid_shape)
    theirs = ProjectedGrid.from_pysteps(ref_meta, ref.shape)
    assert ours.dy < 0  # north-up
    assert ours.crs == theirs.crs
    np.testing.assert_allclose(_edges_lonlat(ours), _edges_lonlat(theirs), atol=1e-9)


# ----------------------------------------------------------------------------- every importer
def test_every_pysteps_importer_has_a_format():
    from pysteps.io.interface import _importer_methods

    names = set(_importer_methods)
    alias = {"mch_gif": "mch", "fmi_pgm": "fmi", "bom_rf3": "bom", "knmi_hdf5": "knmi", "odim_hdf5": "odim",
             "opera_hdf5": "opera"}
    assert {alias.get(n, n) for n in names} <= set(RADAR_FORMATS)


@pytest.mark.parametrize("fmt", sorted(SAMPLE_NAMES))
def test_file_names_detected_and_time_stamped(fmt):
    name = SAMPLE_NAMES[fmt]
    assert detect_format([Path(name)]) == ("odim" if fmt == "opera" else fmt)  # opera: chosen explicitly
    if RADAR_FORMATS[fmt].time is not None:  # ODIM / OPERA: from the file
        assert RADAR_FORMATS[fmt].timestamp(Path(name)) == T0


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_same_values_and_grid_as_pysteps(tmp_path, fmt):
    module = OPTIONAL.get(fmt)
    if module and not any(_has(m) for m in module[0]):
        pytest.skip(f"{module[1]} not installed: pysteps' importer of {fmt} needs it")
    name, write, reference, units = CASES[fmt]
    paths = []
    for k in range(2):
        t = T0 + timedelta(minutes=5 * k)
        paths.append(tmp_path / name(t))
        write(paths[-1], t)
    for p in paths:
        ref, meta = reference(p)
        assert np.isfinite(ref).any() and (~np.isfinite(ref)).any()  # the fixture has data and no data
        assert_same_as_pysteps(p, fmt, ref, meta, units)
    series = RadarSeries(paths, fmt)
    assert series.times == [T0, T0 + timedelta(minutes=5)] and series.timestep_min == 5.0
    assert detect_format(paths) == ("odim" if fmt == "opera" else fmt)


# ----------------------------------------------------------------------------- values, decoded by hand
def test_radolan_values_decoded_like_dwd(tmp_path):
    path = tmp_path / f"raa01-rw_10000-{T0:%y%m%d%H%M}-dwd---bin"
    codes = write_radolan(path, T0)
    ref, _ = _ps("import_dwd_radolan", path, "RW")
    assert np.isnan(ref[0, :4]).all()  # no data
    np.testing.assert_allclose(ref[1, :4], -0.01)  # clutter: no echo
    np.testing.assert_allclose(ref[2, :4], 3.69)  # secondary flag removed, 0.1 mm - 0.01
    np.testing.assert_allclose(ref[5, 7], codes[5, 7] * 0.1 - 0.01)
    _, _, meta = read_frame(path, "dwd_radolan")
    assert (meta["unit"], meta["accutime"], meta["product"]) == ("mm", 60.0, "RW")
    bad = tmp_path / f"raa01-ab_10000-{T0:%y%m%d%H%M}-dwd---bin"
    bad.write_bytes(radolan_bytes(T0, codes[:10, :10], product="AB"))
    with pytest.raises(ValueError, match="RADOLAN product 'AB'"):
        read_frame(bad, "dwd_radolan")


#: RADOLAN's polar stereographic projection as pysteps gives it (WGS 84 ellipsoid variant).
RADOLAN_PROJ = "+a=6378137.0 +b=6356752.0 +proj=stere +lat_ts=60.0 +lat_0=90.0 +lon_0=10.0 +x_0=0 +y_0=0"
BERLIN = (13.40, 52.52)


def radolan_rain_at(lon: float, lat: float, size: int = 5) -> np.ndarray:
    """RW codes (0.1 mm) of the 900 x 900 national grid, in file order (rows from the south edge up, DWD's
    format description), raining 10 mm in a ``size`` x ``size`` block centred on ``(lon, lat)``."""
    x1, y1 = pyproj.Proj(RADOLAN_PROJ)(3.604382995, 46.95361536)  # pysteps' lower-left corner of RW
    x, y = pyproj.Proj(RADOLAN_PROJ)(lon, lat)
    col, row_from_south = int((x - x1) // 1000), int((y - y1) // 1000)
    codes = np.zeros((900, 900), np.uint16)
    r = size // 2
    codes[row_from_south - r: row_from_south + r + 1, col - r: col + r + 1] = 100
    return codes


def test_radolan_rain_lands_where_it_fell(tmp_path):
    """RADOLAN rows run from the south; pysteps' metadata say yorigin="upper" for its rows in file order,
    which would put rain over Berlin 350 km south, in Bavaria. diffcast corrects the row order."""
    path = tmp_path / f"raa01-rw_10000-{T0:%y%m%d%H%M}-dwd---bin"
    path.write_bytes(radolan_bytes(T0, radolan_rain_at(*BERLIN)))
    x, valid, meta = read_frame(path, "dwd_radolan")
    assert meta["yorigin"] == "upper"  # north-up after the flip
    series = RadarSeries([path], "dwd_radolan")
    grid = ProjectedGrid.from_pysteps(series.source, series.grid_shape)
    lon, lat, _ = grid.lonlat()
    ys, xs = np.nonzero(x > 0)
    assert np.ptp(ys) == np.ptp(xs) == 4  # the 5 x 5 block, whole
    i, j = int(ys.mean()), int(xs.mean())  # its centre pixel
    km = pyproj.Geod(ellps="WGS84").inv(lon[i, j], lat[i, j], *BERLIN)[2] / 1000.0
    assert km < 1.0, f"rain read at {lon[i, j]:.2f} E {lat[i, j]:.2f} N, {km:.0f} km from Berlin"
    assert lat[0, 0] > lat[-1, 0] + 7  # row 0 is the north edge (54.6 N; the south edge is 47 N)


def test_mrms_block_means_and_no_coverage(tmp_path):
    if not _has("pygrib"):
        pytest.skip("pygrib not installed: pysteps' MRMS importer needs it")
    path = tmp_path / "PrecipRate_00.00_20230101-005000.grib2"
    rate = write_mrms(path, T0)
    ref, meta = _ps("import_mrms_grib", path)
    assert ref.shape == (4, 6) and np.isnan(ref[0, 0]) and np.isnan(ref[1, 2])
    np.testing.assert_allclose(ref[2, 3], rate[8:12, 12:16].mean(), atol=1e-4)
    assert meta["cartesian_unit"] == "degrees"
    grid = RadarSeries([path], "mrms_grib")
    g = ProjectedGrid.from_pysteps(grid.source, grid.grid_shape)
    # 230 E, the first grid point less half a 4-pixel block, given by pyproj as -130
    assert g.crs.is_geographic and (g.x0 + 180) % 360 - 180 == pytest.approx(-130.0) and g.y0 == pytest.approx(55.0)


# ----------------------------------------------------------------------------- ODIM layouts
SCALE8 = dict(gain=0.5, offset=-32.0, nodata=255.0, undetect=0.0)
SCALE16 = dict(gain=0.01, offset=0.0, nodata=65535.0, undetect=0.0)


def _codes8(seed: int = 0) -> np.ndarray:
    c = (np.arange(16 * 20) * (seed + 3) % 250).astype(np.uint8).reshape(16, 20)
    c[0, :2], c[1, :2] = 255, 0
    return c


def _codes16() -> np.ndarray:
    c = (np.arange(16 * 20) * 7 % 3000).astype(np.uint16).reshape(16, 20)
    c[0, :2], c[1, :2] = 65535, 0
    return c


ODIM_LAYOUTS = {
    # name: (fields, quantity diffcast must pick)
    "quantity in data what": ([("dataset1/data1", "DBZH", _codes8(), SCALE8)], "DBZH"),
    "quantity in dataset what": ([("dataset1", "RATE", _codes16(), SCALE16)], "RATE"),
    "DBZH in dataset2, RATE in dataset1": (
        [("dataset1/data1", "RATE", _codes16(), SCALE16), ("dataset2/data1", "DBZH", _codes8(1), SCALE8)], "DBZH"),
    "RATE and ACRR, quality field": (
        [("dataset1/data1", "ACRR", _codes16(), SCALE16), ("dataset1/data2", "QIND", _codes8(), dict(gain=1.0, offset=0.0, nodata=255.0, undetect=0.0)),
         ("dataset2", "RATE", _codes16(), SCALE16)], "RATE"),
    "other gain, offset and nodata": ([("dataset1/data1", "DBZH", np.where(_codes8(2) == 255, 7, _codes8(2)).astype(np.uint8),
                                        dict(gain=0.4, offset=-30.0, nodata=7.0, undetect=0.0))], "DBZH"),
}


@pytest.mark.parametrize("layout", sorted(ODIM_LAYOUTS))
@pytest.mark.parametrize("scale_at", ["root", "dataset"])
@pytest.mark.parametrize("fmt", ["odim", "opera"])
def test_odim_layouts_read_like_pysteps(tmp_path, layout, scale_at, fmt):
    fields, qty = ODIM_LAYOUTS[layout]
    path = tmp_path / "T_PAAH21_C_EUOC_20230101005000.hdf"
    write_odim(path, T0, fields, scale_at=scale_at, how=scale_at == "dataset")
    assert ODIM_QUANTITIES.index(qty) == min(ODIM_QUANTITIES.index(q) for _, q, _, _ in fields if q in ODIM_QUANTITIES)
    ref, meta = _ps("import_odim_hdf5", path, qty=qty)
    assert meta["xpixelsize"] == 1000.0
    assert_same_as_pysteps(path, fmt, ref, meta)
    # gain, offset, nodata, undetect as ODIM defines them, checked by hand on the chosen field
    loc, _, codes, s = next(f for f in fields if f[1] == qty)
    x, valid, _ = read_frame(path, fmt)
    assert not valid[codes == s["nodata"]].any()
    assert valid[codes == s["undetect"]].all() and (x[codes == s["undetect"]] == 0).all()
    phys = codes.astype(float) * s["gain"] + s["offset"]
    ok = (codes != s["nodata"]) & (codes != s["undetect"])
    np.testing.assert_allclose(ref[ok], phys[ok], rtol=1e-6)
    assert RadarSeries([path], fmt).times == [T0]


def test_odim_geometry_from_four_corners_and_dataset_where(tmp_path):
    path = tmp_path / "comp.h5"
    write_odim(path, T0, [("dataset1", "RATE", _codes16(), SCALE16)], scale_at="dataset")
    with h5py.File(path, "a") as f:  # only LL/UR: pysteps takes the extent from those
        for k in ("UL_lon", "UL_lat", "LR_lon", "LR_lat"):
            del f["where"].attrs[k]
    ref, meta = _ps("import_odim_hdf5", path, qty="RATE")
    assert_same_as_pysteps(path, "odim", ref, meta)


# ----------------------------------------------------------------------------- DWD, MeteoSwiss HDF5
@pytest.mark.parametrize("level", ["data", "dataset"])
def test_dwd_hdf5_quantity_at_either_level(tmp_path, level):
    path = tmp_path / "20230101_0050_RY.h5"
    codes = write_dwd_hdf5(path, T0, level)
    ref, meta = _ps("import_dwd_hdf5", path, qty="RATE")
    assert np.isnan(ref[0, :3]).all() and (ref[1, :3] == 0).all()  # nodata, undetect = offset
    np.testing.assert_allclose(ref[5], codes[5] * 0.01)
    assert meta["accutime"] == 5.0 and meta["unit"] == "mm/h"
    assert_same_as_pysteps(path, "dwd_hdf5", ref, meta)


@pytest.mark.parametrize("level", ["data", "dataset"])
def test_mch_hdf5_quantity_at_either_level(tmp_path, level):
    path = tmp_path / "RZC230010050VL.801.h5"
    codes = write_mch_hdf5(path, T0, level)
    ref, meta = _ps("import_mch_hdf5", path, qty="RATE")
    ok = (codes != 0) & (codes != 255)
    np.testing.assert_allclose(ref[ok], codes[ok] * 0.05, rtol=1e-6)
    assert np.isnan(ref[0, :5]).all() and np.isnan(ref[1, :5]).all()  # pysteps: undetect is no data here
    assert_same_as_pysteps(path, "mch_hdf5", ref, meta)


def test_mch_hdf5_several_datasets_pick_reflectivity(tmp_path):
    path = tmp_path / "RZC230010050VL.801.h5"
    write_mch_hdf5(path, T0, "data", extra_dbzh=True)
    ref, meta = _ps("import_mch_hdf5", path, qty="DBZH")
    assert meta["unit"] == "dBZ"
    assert_same_as_pysteps(path, "mch_hdf5", ref, meta)


def test_explicit_format_wins_over_detection(tmp_path):
    path = tmp_path / "20230101_0050_RY.h5"
    write_dwd_hdf5(path, T0)
    assert detect_format([path]) == "dwd_hdf5"
    x_dwd, v_dwd, _ = read_frame(path, "dwd_hdf5")
    x_odim, v_odim, _ = read_frame(path, "odim")  # the same file as a plain ODIM composite
    np.testing.assert_array_equal(v_dwd, v_odim)
    np.testing.assert_allclose(x_dwd, x_odim, atol=1e-6)
    assert RadarSeries([path], "odim").times == RadarSeries([path]).times == [T0]


# ----------------------------------------------------------------------------- optional libraries
@pytest.mark.parametrize("fmt", sorted(OPTIONAL))
def test_missing_library_is_one_clear_error(tmp_path, fmt, monkeypatch):
    import diffcast.data.radar.importers as imp

    module, label = OPTIONAL[fmt]
    path = tmp_path / SAMPLE_NAMES[fmt]
    path.write_bytes(b"not read")
    real = importlib.util.find_spec
    monkeypatch.setattr(imp.importlib.util, "find_spec", lambda n, *a: None if n in module else real(n, *a))
    for call in (lambda: read_frame(path, fmt), lambda: RadarSeries([path], fmt), lambda: RadarSeries([path])):
        with pytest.raises(ValueError, match=label) as exc:
            call()
        msg = str(exc.value)
        assert f"reading {fmt} radar files needs" in msg and "not installed" in msg and "\n" not in msg


def write_fmi_geotiff(path: Path, t: datetime | None = None) -> np.ndarray:
    """An FMI-like GeoTIFF (EPSG:3067, 1 km, north-up, byte codes, 255 = no data) through GDAL's
    Python bindings when present, else through rasterio's GDAL; returns the codes."""
    codes = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    gt = (100000.0, 1000.0, 0.0, 7000000.0, 0.0, -1000.0)
    if _has("osgeo"):
        from osgeo import gdal, osr

        ds = gdal.GetDriverByName("GTiff").Create(str(path), 30, 20, 1, gdal.GDT_Byte)
        ds.SetGeoTransform(gt)
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(3067)
        ds.SetProjection(srs.ExportToWkt())
        ds.GetRasterBand(1).WriteArray(codes)
        ds = None
    else:
        import rasterio
        from rasterio.transform import Affine

        with rasterio.open(path, "w", driver="GTiff", width=30, height=20, count=1, dtype="uint8", crs="EPSG:3067",
                           transform=Affine.from_gdal(*gt)) as dst:
            dst.write(codes, 1)
    return codes


def test_fmi_geotiff_values_and_grid(tmp_path):
    """Against the file's own definition (independent of pysteps): dBZ = (code - 64) / 2, code 255 no data,
    EPSG:3067 (ETRS-TM35FIN) 1 km pixels from (100 km, 7000 km) at the top-left corner, north-up; and, where
    GDAL's bindings are present, equal to pysteps' importer called directly. Without them diffcast reads
    through rasterio's GDAL (this machine)."""
    if not (_has("osgeo") or _has("rasterio")):
        pytest.skip("neither GDAL's Python bindings nor rasterio installed: no GeoTIFF written or read")
    path = tmp_path / SAMPLE_NAMES["fmi_geotiff"]
    codes = write_fmi_geotiff(path)
    from diffcast.data.radar.importers import import_fmi_geotiff

    data, meta = import_fmi_geotiff(path, None)
    expect = np.where(codes == 255, np.nan, (codes.astype(float) - 64.0) / 2.0)
    np.testing.assert_array_equal(data, expect)
    assert (meta["x1"], meta["x2"], meta["y1"], meta["y2"]) == (100000.0, 130000.0, 6980000.0, 7000000.0)
    assert meta["yorigin"] == "upper" and meta["unit"] == "dBZ" and meta["transform"] == "dB"
    # the outer corners (100 / 130 km E, 7000 / 6980 km N in TM35FIN) where pyproj puts them with EPSG:3067
    corners = [(100000.0, 7000000.0), (130000.0, 6980000.0)]
    want = [pyproj.Transformer.from_crs(3067, 4326, always_xy=True).transform(*c) for c in corners]
    grid = RadarSeries([path], "fmi_geotiff")
    g = ProjectedGrid.from_pysteps(grid.source, grid.grid_shape)
    to = pyproj.Transformer.from_crs(g.crs, 4326, always_xy=True)
    got = [to.transform(g.x0, g.y0), to.transform(g.x0 + 30 * g.dx, g.y0 + 20 * g.dy)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert g.dy < 0
    if _has("osgeo"):
        ref, ref_meta = _ps("import_fmi_geotiff", path)
    else:
        ref, ref_meta = expect, meta
    assert_same_as_pysteps(path, "fmi_geotiff", ref, ref_meta)


def test_fmi_geotiff_through_rasterio_leaves_pysteps_as_it_was(tmp_path):
    """The rasterio stand-in is in pysteps' module only while a file is read."""
    pytest.importorskip("rasterio")
    import pysteps.io.importers as ps

    from diffcast.data.radar.importers import _gdal_through_rasterio

    before = {n: ps.__dict__.get(n, "absent") for n in ("gdal", "gdalconst", "osr", "GDAL_IMPORTED")}
    path = tmp_path / SAMPLE_NAMES["fmi_geotiff"]
    write_fmi_geotiff(path)
    with _gdal_through_rasterio():
        data, _, _ = ps.import_fmi_geotiff(str(path))
    assert data.shape == (20, 30)
    assert {n: ps.__dict__.get(n, "absent") for n in before} == before
    bad = tmp_path / "201609281605_FINUTM.tif"
    bad.write_bytes(b"II*\x00 truncated")
    with pytest.raises(ValueError, match="cannot read .* as a GeoTIFF"):
        read_frame(bad, "fmi_geotiff")
    assert {n: ps.__dict__.get(n, "absent") for n in before} == before


def metranet_example_source() -> Path | None:
    """MeteoSwiss' METRANET example file in their Py-ART (the metranet extra), found without importing Py-ART."""
    spec = importlib.util.find_spec("pyart")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(list(spec.submodule_search_locations)[0]) / "testing" / "data" / "RZC_example_metranet_grid.001"
    return src if src.is_file() else None


def metranet_example(folder: Path) -> Path:
    """MeteoSwiss' METRANET example (a real RZC rain-rate composite of 2024-02-22 07:40 UTC on the CCS4
    grid, shipped with their Py-ART: the metranet extra) copied under its METRANET name."""
    src = metranet_example_source()
    if src is None:
        pytest.skip("MeteoSwiss' Py-ART (pyart-mch, the metranet extra) not installed: no METRANET file to read "
                    "(none can be written without MeteoSwiss' tools)")
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "RZC240530740VL.801"
    shutil.copyfile(src, dst)
    return dst


def test_metranet_values_grid_and_pysteps_left_as_it_was(tmp_path):
    """A real METRANET file: the values Py-ART's reader decodes, unchanged, on pysteps' CCS4 grid (640 x 710
    at 1 km, the size the file's header states); pysteps' module is restored afterwards; a damaged file is
    one error."""
    import pysteps.io.importers as ps

    path = metranet_example(tmp_path)
    names = ("metranet", "METRANET_IMPORTED")
    before = {n: ps.__dict__.get(n, "absent") for n in names}
    from diffcast.data.radar.importers import _pyart_metranet

    ret = _pyart_metranet().read_file(str(path), physic_value=True, verbose=False)
    assert (int(ret.header["row"]), int(ret.header["column"])) == (640, 710) and ret.header["data_unit"] == "mm/h"
    expect, valid = to_unit_interval(ret.data, {"unit": "mm/h", "transform": None})
    x, got_valid, meta = read_frame(path, "mch_metranet")
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_allclose(x, expect, atol=1e-6)
    assert 0.1 < (~valid).mean() < 0.5 and (x > 0).any()  # outside the radars' reach, and rain inside
    assert (meta["x1"], meta["x2"], meta["y1"], meta["y2"]) == (255000.0, 965000.0, -160000.0, 480000.0)
    assert meta["unit"] == "mm/h" and meta["projection"].split()[0] == "+proj=somerc"
    series = RadarSeries([path])  # detected by its name, time from it
    assert series.fmt == "mch_metranet" and series.times == [datetime(2024, 2, 22, 7, 40, tzinfo=timezone.utc)]
    assert {n: ps.__dict__.get(n, "absent") for n in names} == before
    bad = tmp_path / "RZC240530745VL.801"
    bad.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read mch_metranet radar file"):
        read_frame(bad, "mch_metranet")
    assert {n: ps.__dict__.get(n, "absent") for n in names} == before


def test_metranet_rows_run_north_first(tmp_path):
    """Orientation against an independent source: the CCS4 no-data area of the METRANET example (2024's five
    radars) lies inside that of the MeteoSwiss GIF composites of 2015-2017 (four radars) in ../shared (all
    but 0.3 % of its pixels), and not when flipped (10 % and 26 % outside)."""
    gifs = sorted((Path(__file__).resolve().parents[3].parent / "shared" / "data" / "radar" / "mch").glob("*/*.gif"))
    if not gifs:
        pytest.skip("../shared/data/radar/mch absent: no GIF composite to compare the METRANET orientation with")
    _, valid, _ = read_frame(metranet_example(tmp_path), "mch_metranet")
    _, gif_valid, _ = read_frame(gifs[0], "mch")
    nodata, gif_nodata = ~valid, ~gif_valid
    assert nodata.sum() > 50000
    assert gif_nodata[nodata].mean() > 0.99  # 0.997 to 0.9997 on the three days
    assert gif_nodata[nodata[::-1]].mean() < 0.95 and gif_nodata[nodata[:, ::-1]].mean() < 0.95  # 0.90, 0.74
