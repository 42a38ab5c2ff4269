"""The pysteps importers behind the formats added for issue 18 (DWD, MeteoSwiss HDF5 and METRANET,
NWC SAF CRR, FMI GeoTIFF, NOAA MRMS), and the optional libraries some of them need.

Each wrapper takes ``(path, file-name match)`` and returns ``(field, pysteps metadata)``
exactly as the pysteps importer gives them, with only what the importer leaves out
added to the metadata (the unit and accumulation time of RADOLAN products) so that
:func:`~diffcast.data.radar.frames.to_unit_interval` can map the field. No values
are changed: a file reads the same in diffcast as in pysteps. One metadata value is
corrected: RADOLAN rows run from the south, which pysteps' ``yorigin`` misstates
(:func:`import_dwd_radolan`).

``fmi_geotiff`` needs GDAL: its Python bindings (``osgeo``), or else the GDAL that
rasterio's wheel bundles (:func:`_gdal_through_rasterio` hands pysteps' importer the few
GDAL calls it makes, so the importer's own code computes the values); ``mrms_grib`` needs
``pygrib`` (the ``grib`` extra); ``mch_metranet`` needs MeteoSwiss' ``metranet``, or else
MeteoSwiss' Py-ART (``pyart-mch``, the ``metranet`` extra), whose pure-Python METRANET reader
stands in for it (:func:`_metranet_through_pyart`); none is a dependency of diffcast.
:func:`require_library` names the one to install before a file is opened.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

#: ODIM quantities read, in order of preference.
ODIM_QUANTITIES = ("DBZH", "RATE", "ACRR")


def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, np.bytes_)) else str(value)


#: Optional library of a format: (importable modules, any one will do; what to install).
OPTIONAL_LIBRARIES: dict[str, tuple[tuple[str, ...], str]] = {
    "fmi_geotiff": (("osgeo", "rasterio"), "GDAL: rasterio (`pip install diffcast[geo]`, a wheel with GDAL inside) "
                                           "or GDAL's Python bindings (the 'osgeo' module)"),
    "mrms_grib": (("pygrib",), "pygrib (`pip install diffcast[grib]` or `pip install pygrib`)"),
    "mch_metranet": (("metranet", "pyart"), "MeteoSwiss' Py-ART, whose pure-Python METRANET reader is used "
                                           "(`pip install diffcast[metranet]`, the pyart-mch wheel), or "
                                           "MeteoSwiss' 'metranet' package"),
}


def require_library(fmt: str) -> None:
    """Raise one clear error when the optional library that format ``fmt`` needs is not installed.

    Raises
    ------
    ValueError
        The library is missing; the message names it and how to install it.
    """
    if fmt not in OPTIONAL_LIBRARIES:
        return
    modules, install = OPTIONAL_LIBRARIES[fmt]
    if not any(_has_module(n) for n in modules):
        which = " nor ".join(repr(n) for n in modules)
        raise ValueError(
            f"reading {fmt} radar files needs {install}, which is not installed "
            f"(the module {which} cannot be imported); install it or convert the files to another format"
        )


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------- DWD
def import_dwd_hdf5(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """A DWD ODIM HDF5 composite (``20250604_1700_RY.h5``) by pysteps' ``import_dwd_hdf5``.

    pysteps reads ``dataset1/data1`` only, with the quantity of the first ``what``
    group holding ``gain`` on the way root -> ``dataset1`` -> ``data1``; that quantity
    is the one read (DWD files hold one).
    """
    import h5py
    from pysteps.io.importers import import_dwd_hdf5 as importer

    with h5py.File(path, "r") as fh:
        group: Any = fh
        qty = None
        while True:  # the walk of pysteps' _get_whatgrp
            if "what" in group and "gain" in group["what"].attrs:
                qty = _attr_text(group["what"].attrs.get("quantity", b""))
                break
            children = [k for k in group if "data" in k and hasattr(group[k], "keys")]
            if not children:
                break
            group = group[children[0]]
    if qty not in ODIM_QUANTITIES:
        raise ValueError(
            f"DWD HDF5 file holds {qty or 'no quantity'} in dataset1/data1 (with gain); "
            f"pysteps reads {', '.join(ODIM_QUANTITIES)}"
        )
    data, _, meta = importer(str(path), qty=qty)
    return data, meta


#: RADOLAN products pysteps' ``import_dwd_radolan`` decodes and georeferences:
#: (unit, default accumulation time in minutes) of each.
RADOLAN_PRODUCTS: dict[str, tuple[str, float]] = {
    "RX": ("dBZ", 5.0),  # reflectivity, 8 bit
    "WX": ("dBZ", 5.0),
    "WN": ("dBZ", 5.0),  # reflectivity nowcast composite
    "RW": ("mm", 60.0),  # hourly accumulation
    "RY": ("mm", 5.0),  # 5-min accumulation
    "YW": ("mm", 5.0),
}


def radolan_header(path: Path) -> str:
    """The text header of a RADOLAN binary file (up to the ETX byte)."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    end = head.find(b"\x03")
    if end < 0 or not head[:2].isalpha():
        raise ValueError("not a RADOLAN binary file (no product code and header ending in ETX)")
    return head[:end].decode("ascii", "replace")


def import_dwd_radolan(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """A RADOLAN binary composite (``raa01-rw_10000-2301010050-dwd---bin``) by pysteps' ``import_dwd_radolan``.

    The product is the header's first two letters; pysteps' metadata give no unit,
    so reflectivity products (RX, WX, WN) are dBZ and accumulations (RW, RY, YW) mm
    per the header's ``INT`` minutes (default 60 for RW, else 5).

    RADOLAN composites store their rows from the south edge up (DWD's
    RADOLAN/RADVOR-OP Kompositformat; wradlib pairs row 0 with the grid's lower-left
    corner, ``get_radolan_grid()[0, 0]``). pysteps (1.21) returns the rows in file
    order but says ``yorigin="upper"``, which puts the rain upside down on its own
    extent (rain over Berlin lands in Bavaria, 350 km south). The metadata are corrected to
    ``yorigin="lower"``; the values are pysteps', and readers flip them north-up.
    """
    from pysteps.io.importers import import_dwd_radolan as importer

    header = radolan_header(path)
    product = header[:2]
    if product not in RADOLAN_PRODUCTS:
        raise ValueError(
            f"RADOLAN product {product!r} is not one pysteps reads ({', '.join(RADOLAN_PRODUCTS)})"
        )
    if "E-" not in header or "INT" not in header or "GP" not in header:
        raise ValueError(f"RADOLAN header without precision (E-), interval (INT) or grid (GP): {header[:80]!r}")
    data, _, meta = importer(str(path), product)
    unit, acc = RADOLAN_PRODUCTS[product]
    found = re.search(r"INT\s*(\d+)", header)
    meta = {**meta, "unit": unit, "transform": None, "accutime": float(found[1]) if found else acc,
            "institution": "DWD", "product": product, "yorigin": "lower"}
    return data, meta


# ----------------------------------------------------------------------------- MeteoSwiss
def mch_hdf5_quantities(fh: Any) -> set[str]:
    """Quantities pysteps' ``import_mch_hdf5`` finds in an open MeteoSwiss HDF5 file.

    A field's quantity is that of its own ``what`` group, else that of its dataset's
    ``what`` group; a ``what`` group without ``quantity`` means RATE (pysteps' rule
    for MeteoSwiss files, unlike ODIM's QIND).
    """
    found: set[str] = set()
    for name, ds in fh.items():
        if not name.startswith("dataset") or not hasattr(ds, "items"):
            continue
        ds_qty = _attr_text(ds["what"].attrs.get("quantity", "RATE")) if "what" in ds else None
        for gname, g in ds.items():
            if gname[:4] != "data" or not hasattr(g, "keys"):
                continue
            if "what" in g:
                found.add(_attr_text(g["what"].attrs.get("quantity", "RATE")))
            elif ds_qty is not None:
                found.add(ds_qty)
    return found


def import_mch_hdf5(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """A MeteoSwiss HDF5 composite (``RZC241231200VL.801.h5``) by pysteps' ``import_mch_hdf5``.

    The first of :data:`ODIM_QUANTITIES` present is read.
    pysteps gives ``undetect`` pixels as NaN in these files (no data, unlike its ODIM
    importer, which gives them as no echo); diffcast keeps that.
    """
    import h5py
    from pysteps.io.importers import import_mch_hdf5 as importer

    with h5py.File(path, "r") as fh:
        qtys = mch_hdf5_quantities(fh)
    qty = next((q for q in ODIM_QUANTITIES if q in qtys), None)
    if qty is None:
        raise ValueError(
            f"MeteoSwiss HDF5 file holds none of the quantities {', '.join(ODIM_QUANTITIES)} (found {sorted(qtys)})"
        )
    data, _, meta = importer(str(path), qty=qty)
    return data, meta


def _mch_unit(m: re.Match[str] | None) -> tuple[str, float]:
    """Unit and accumulation time of a MeteoSwiss product from its file name: ``_NNNNN`` minutes
    mark an accumulation (CPC ..._00060: mm in 60 min), else a rain rate (mm/h, 5-min product)
    as diffcast reads the MeteoSwiss GIF files."""
    minutes = m["acc"] if m is not None and m.groupdict().get("acc") else None
    product = m["product"] if m is not None else ""
    if minutes and product in ("CPC", "AZC"):
        return "mm", float(int(minutes))
    return "mm/h", 5.0


def import_mch_metranet(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """A MeteoSwiss METRANET binary composite (``RZC161932100VL.801``) by pysteps' ``import_mch_metranet``
    (needs MeteoSwiss' ``metranet`` package)."""
    require_library("mch_metranet")
    from pysteps.io.importers import import_mch_metranet as importer

    if m is None:
        raise ValueError("the product of a METRANET file comes from its name, e.g. RZC161932100VL.801")
    unit, acc = _mch_unit(m)
    with contextlib.nullcontext() if _has_module("metranet") else _metranet_through_pyart():
        data, _, meta = importer(str(path), product=m["product"], unit=unit, accutime=acc)
    return data, meta


@functools.cache
def _pyart_metranet() -> Any:
    """Py-ART's pure-Python METRANET reader module (imported quietly, once: Py-ART prints a banner)."""
    import io
    import os

    os.environ.setdefault("PYART_QUIET", "1")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from pyart.aux_io import metranet_python
        except ImportError as exc:
            raise ValueError(
                f"reading mch_metranet radar files needs MeteoSwiss' Py-ART with its METRANET reader "
                f"(`pip install diffcast[metranet]`, the pyart-mch wheel): {exc}"
            ) from None
    return metranet_python


def _read_metranet_with_pyart(filename: str, physic_value: bool = True, verbose: bool = False) -> Any:
    """``metranet.read_file`` as pysteps calls it, answered by Py-ART's reader (``.data``: the field)."""
    reader = _pyart_metranet()
    ret = reader.read_file(str(filename), physic_value=physic_value, verbose=verbose)
    data = getattr(ret, "data", None)
    if data is None or np.ndim(data) != 2:
        raise ValueError(f"cannot read {filename} as a METRANET Cartesian product (Py-ART's reader found none)")
    return ret


@contextlib.contextmanager
def _metranet_through_pyart() -> Iterator[None]:
    """Run pysteps' ``import_mch_metranet`` on Py-ART's pure-Python METRANET reader.

    pysteps calls ``metranet.read_file(filename, physic_value=True, verbose=False).data``;
    for the duration its module sees a ``metranet`` whose ``read_file`` is Py-ART's
    (MeteoSwiss' Py-ART, the same decoding as their C library), and pysteps' own code adds
    the CCS4 grid. Restored afterwards; one caller at a time.
    """
    with _patched_pysteps_importers(metranet=SimpleNamespace(read_file=_read_metranet_with_pyart),
                                    METRANET_IMPORTED=True):
        yield


# ----------------------------------------------------------------------------- others
def import_saf_crri(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """An NWC SAF Convective Rainfall Rate NetCDF (``S_NWC_CRR_MSG4_Europe-VISIR_20180601T070000Z.nc``)
    by pysteps' ``import_saf_crri`` (``crr_intensity`` in its ``units``, mm/h)."""
    from pysteps.io.importers import import_saf_crri as importer

    data, _, meta = importer(str(path))
    if data is None:
        raise ValueError("NetCDF file without the variable crr_intensity (not an NWC SAF CRR file)")
    return data, meta


def import_fmi_geotiff(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """An FMI reflectivity GeoTIFF (``201609281600_FINUTM.tif``) by pysteps' ``import_fmi_geotiff``
    (needs GDAL: ``osgeo``, or rasterio's through :func:`_gdal_through_rasterio`)."""
    require_library("fmi_geotiff")
    from pysteps.io.importers import import_fmi_geotiff as importer

    if _has_module("osgeo"):
        data, _, meta = importer(str(path))
        return data, meta
    with _gdal_through_rasterio():
        data, _, meta = importer(str(path))
    return data, meta


_SHIM_LOCK = threading.Lock()


class _RasterioDataset:
    """The part of ``osgeo.gdal.Dataset`` that pysteps' ``import_fmi_geotiff`` uses, read with rasterio."""

    def __init__(self, path: str) -> None:
        import rasterio

        try:
            with rasterio.open(path) as src:
                self._band1 = src.read(1)
                self._wkt = src.crs.to_wkt() if src.crs is not None else ""
                self._gt = tuple(src.transform.to_gdal())
                self.RasterXSize, self.RasterYSize = int(src.width), int(src.height)
        except rasterio.errors.RasterioIOError as exc:
            raise ValueError(f"cannot read {path} as a GeoTIFF: {str(exc).splitlines()[0]}") from None

    def GetRasterBand(self, index: int) -> SimpleNamespace:  # noqa: N802 - GDAL's names
        if index != 1:
            raise ValueError(f"band {index} requested; only band 1 is read")
        return SimpleNamespace(ReadAsArray=lambda: self._band1)

    def GetProjection(self) -> str:  # noqa: N802
        return self._wkt

    def GetGeoTransform(self) -> tuple[float, ...]:  # noqa: N802
        return self._gt


class _RasterioSpatialReference:
    """``osgeo.osr.SpatialReference`` as pysteps uses it: WKT in, PROJ string out (GDAL's own export)."""

    def __init__(self) -> None:
        self._crs: Any = None

    def ImportFromWkt(self, wkt: str) -> int:  # noqa: N802
        from rasterio.crs import CRS

        self._crs = CRS.from_wkt(wkt) if wkt else None
        return 0

    def ExportToProj4(self) -> str:  # noqa: N802
        if self._crs is None:
            return ""
        # rasterio writes GDAL's flag parameters as "+no_defs=True"; GDAL's export writes "+no_defs"
        return " ".join(t[: -len("=True")] if t.endswith("=True") else t for t in self._crs.to_proj4().split())


@contextlib.contextmanager
def _gdal_through_rasterio() -> Iterator[None]:
    """Run pysteps' GDAL-based importer on the GDAL inside rasterio's wheel.

    pysteps' ``import_fmi_geotiff`` calls ``gdal.Open``, ``GetRasterBand(1).ReadAsArray``,
    ``GetProjection``, ``GetGeoTransform``, ``RasterXSize``/``RasterYSize`` and
    ``osr.SpatialReference().ImportFromWkt / ExportToProj4``; for the duration, its module sees
    objects that answer those calls from rasterio (the same GDAL library underneath), and its
    own code turns them into values and metadata. Restored afterwards; one caller at a time.
    """
    with _patched_pysteps_importers(
        gdal=SimpleNamespace(Open=lambda filename, mode=None: _RasterioDataset(filename)),
        gdalconst=SimpleNamespace(GA_ReadOnly=0),
        osr=SimpleNamespace(SpatialReference=_RasterioSpatialReference),
        GDAL_IMPORTED=True,
    ):
        yield


@contextlib.contextmanager
def _patched_pysteps_importers(**names: Any) -> Iterator[None]:
    """Set module globals of ``pysteps.io.importers`` for the duration, then restore (or remove) them."""
    import pysteps.io.importers as ps

    with _SHIM_LOCK:
        saved = {n: ps.__dict__[n] for n in names if n in ps.__dict__}
        for n, v in names.items():
            setattr(ps, n, v)
        try:
            yield
        finally:
            for n in names:
                if n in saved:
                    setattr(ps, n, saved[n])
                else:
                    ps.__dict__.pop(n, None)


def import_mrms_grib(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """A NOAA MRMS rain-rate GRIB2 (``PrecipRate_00.00_20190610-000000.grib2``) by pysteps'
    ``import_mrms_grib`` with its defaults (block means of 4 x 4 pixels, about 4 km; needs pygrib)."""
    require_library("mrms_grib")
    from pysteps.io.importers import import_mrms_grib as importer

    data, _, meta = importer(str(path))
    return data, meta
