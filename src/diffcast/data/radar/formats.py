"""Radar file formats: file-name patterns, time stamps and the pysteps importer of each.

Supported formats (``fmt``), one per pysteps importer, each with a file-name pattern
that gives the time stamp:

================  =================================================  ===========================
``mch``           MeteoSwiss GIF, ``AQC161932100V_00005.801.gif``    ``yyDDDHHMM`` (day of year)
``mch_hdf5``      MeteoSwiss HDF5, ``RZC241231200VL.801.h5``         ``yyDDDHHMM``
``mch_metranet``  MeteoSwiss METRANET, ``RZC161932100VL.801``        ``yyDDDHHMM``
                  (needs MeteoSwiss' Py-ART or ``metranet``)
``fmi``           FMI PGM(.gz),                                      ``YYYYmmddHHMM``
                  ``201609281600_fmi.radar.composite...pgm.gz``
``fmi_geotiff``   FMI GeoTIFF, ``201609281600_FINUTM.tif``           ``YYYYmmddHHMM``
                  (needs GDAL: ``osgeo``, or rasterio's)
``bom``           BoM Rainfields NetCDF, ``66_20201031_000000...nc``  ``YYYYmmdd_HHMMSS``
``knmi``          KNMI HDF5, ``RAD_NL25_RAP_NA_201008260000.h5``     ``YYYYmmddHHMM``
``dwd_hdf5``      DWD ODIM HDF5, ``20250604_1700_RY.h5``             ``YYYYmmdd_HHMM``
``dwd_radolan``   DWD RADOLAN binary (RX, WX, WN, RW, RY, YW),       ``yymmddHHMM``
                  ``raa01-rw_10000-2301010050-dwd---bin``
``saf_crri``      NWC SAF CRR NetCDF,                                ``YYYYmmddTHHMMSS``
                  ``S_NWC_CRR_MSG4_Europe-VISIR_20180601T070000Z.nc``
``mrms_grib``     NOAA MRMS GRIB2 (needs ``pygrib``),                ``YYYYmmdd-HHMMSS``
                  ``PrecipRate_00.00_20190610-000000.grib2``
``odim``          ODIM HDF5 composites (any name)                     ``/what`` date + time attrs
``opera``         OPERA ODIM HDF5 composites (pysteps'               ``/what`` date + time attrs
                  ``import_opera_hdf5``; chosen explicitly)
================  =================================================  ===========================

ODIM files may store ``quantity`` per field (``datasetN/dataM/what``) or per
dataset (``datasetN/what``, as OPERA composites do); both are read, as pysteps'
``import_odim_hdf5`` does. Of DBZH, RATE and ACRR the first present is used.
A format whose optional library is missing gives one error naming it
(:func:`~diffcast.data.radar.importers.require_library`).

One importer per format lives here; every reader (:mod:`.frames`, the nowcast's
:mod:`diffcast.pipeline.readers.radar`) goes through :data:`RADAR_FORMATS`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import importers as imp
from .importers import ODIM_QUANTITIES, _attr_text, require_library


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def _time_mch(m: re.Match[str]) -> datetime:
    yy, doy, hh, mm = int(m["yy"]), int(m["doy"]), int(m["hh"]), int(m["mm"])
    return _utc(2000 + yy, 1, 1) + timedelta(days=doy - 1, hours=hh, minutes=mm)


def _time_compact(m: re.Match[str]) -> datetime:
    s = m["ts"]
    return datetime.strptime(s, "%Y%m%d%H%M%S" if len(s) == 14 else "%Y%m%d%H%M").replace(
        tzinfo=timezone.utc
    )


def _time_bom(m: re.Match[str]) -> datetime:
    return datetime.strptime(m["d"] + m["t"], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


def _strptime(fmt: str) -> Callable[[re.Match[str]], datetime]:
    """Time parser of the ``ts`` group of a file name in the ``strptime`` format ``fmt`` (UTC)."""

    def parse(m: re.Match[str]) -> datetime:
        return datetime.strptime(m["ts"], fmt).replace(tzinfo=timezone.utc)

    return parse


def _import_mch(path: Path, m: re.Match[str]) -> tuple[np.ndarray, dict[str, Any]]:
    from pysteps.io.importers import import_mch_gif

    data, _, meta = import_mch_gif(str(path), product=m["product"], unit="mm/h", accutime=5.0)
    return data, meta


def _import_fmi(path: Path, m: re.Match[str]) -> tuple[np.ndarray, dict[str, Any]]:
    from pysteps.io.importers import import_fmi_pgm

    data, _, meta = import_fmi_pgm(str(path), gzipped=path.suffix == ".gz")
    return data, meta


def _import_bom(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    from pysteps.io.importers import import_bom_rf3

    data, _, meta = import_bom_rf3(str(path))
    return data, meta


def odim_quantities(fh: Any) -> set[str]:
    """Quantities of the ``datasetN/dataM`` fields of an open ODIM HDF5 file.

    A field's quantity is that of its own ``what`` group, else that of its
    ``datasetN/what`` group (ODIM allows either; OPERA composites use the dataset
    level). This is the rule of pysteps' ``import_odim_hdf5``, including its
    reading of a field ``what`` group without ``quantity`` as ``QIND``.
    """
    found: set[str] = set()
    for name, ds in fh.items():
        if not name.startswith("dataset") or not hasattr(ds, "items"):
            continue
        ds_qty = None
        if "what" in ds and "quantity" in ds["what"].attrs:
            ds_qty = _attr_text(ds["what"].attrs["quantity"])
        for gname, g in ds.items():
            if not gname.startswith("data") or not hasattr(g, "keys"):
                continue
            if "what" in g:
                attrs = g["what"].attrs
                found.add(_attr_text(attrs["quantity"]) if "quantity" in attrs else "QIND")
            elif ds_qty is not None:
                found.add(ds_qty)
    return found


def _import_odim_like(path: Path, importer: Callable[..., Any]) -> tuple[np.ndarray, dict[str, Any]]:
    import h5py

    # Messages name no file: read_frame adds the path once.
    with h5py.File(path, "r") as fh:
        qtys = odim_quantities(fh)
    for qty in ODIM_QUANTITIES:
        if qty in qtys:
            data, _, meta = importer(str(path), qty=qty)
            return data, meta
    raise ValueError(
        f"ODIM file holds none of the quantities {', '.join(ODIM_QUANTITIES)} (found {sorted(qtys)}) "
        "in datasetN/dataM/what or datasetN/what"
    )


def _import_odim(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    from pysteps.io.importers import import_odim_hdf5

    return _import_odim_like(path, import_odim_hdf5)


def _import_opera(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    from pysteps.io.importers import import_opera_hdf5

    return _import_odim_like(path, import_opera_hdf5)


def _import_knmi(path: Path, m: re.Match[str] | None) -> tuple[np.ndarray, dict[str, Any]]:
    import h5py
    from pysteps.io.importers import import_knmi_hdf5

    # KNMI stores 5-min accumulations as uint16 hundredths of mm (ACRR) and reflectivity
    # composites as uint8 (DBZH); the stored type tells which product a file is.
    with h5py.File(path, "r") as fh:
        if "image1" not in fh or "image_data" not in fh["image1"]:
            raise ValueError("not a KNMI HDF5 file: no image1/image_data")
        qty = "DBZH" if fh["image1"]["image_data"].dtype == np.uint8 else "ACRR"
    data, _, meta = import_knmi_hdf5(str(path), qty=qty, accutime=5.0)
    return data, meta


def _odim_time(path: Path) -> datetime:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            what = fh["what"].attrs
            d, t = what["date"], what["time"]
    except (OSError, KeyError) as exc:
        raise ValueError(
            f"{path}: not an ODIM HDF5 file with /what date and time attributes ({exc})"
        ) from exc
    d = d.decode() if isinstance(d, bytes) else str(d)
    t = t.decode() if isinstance(t, bytes) else str(t)
    return datetime.strptime(d + t[:6].ljust(6, "0"), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RadarFormat:
    """A radar file format: file-name pattern, time parser and pysteps importer."""

    name: str
    pattern: re.Pattern[str]
    time: Callable[[re.Match[str]], datetime] | None
    importer: Callable[[Path, Any], tuple[np.ndarray, dict[str, Any]]]
    description: str = ""

    def match(self, path: Path) -> re.Match[str] | None:
        return self.pattern.match(path.name)

    def require(self) -> None:
        """Raise one ``ValueError`` naming the optional library this format needs, when it is missing."""
        require_library(self.name)

    def series(self, path: Path) -> str:
        """Which radar product/station a file belongs to (files of one series share a grid)."""
        m = self.match(path)
        if m is None:
            return ""
        groups = m.groupdict()
        return "/".join(groups[k] for k in ("station", "kind", "product") if groups.get(k))

    def timestamp(self, path: Path) -> datetime:
        m = self.match(path)
        if m is None:
            raise ValueError(
                f"{path.name} does not look like a {self.name} file ({self.description})"
            )
        if self.time is None:  # time stamp stored inside the file
            return _odim_time(path)
        try:
            return self.time(m)
        except ValueError as exc:
            raise ValueError(f"cannot parse the time stamp of {path}: {exc}") from exc


RADAR_FORMATS: dict[str, RadarFormat] = {
    f.name: f
    for f in (
        RadarFormat(
            "mch",
            re.compile(
                r"^(?P<product>[A-Z]{3})(?P<yy>\d{2})(?P<doy>\d{3})(?P<hh>\d{2})(?P<mm>\d{2})\w?_\d+\.\d+\.gif$"
            ),
            _time_mch,
            _import_mch,
            "MeteoSwiss GIF, e.g. AQC161932100V_00005.801.gif (yyDDDHHMM)",
        ),
        RadarFormat(
            "mch_hdf5",
            re.compile(r"^(?P<product>[A-Z]{3})(?P<yy>\d{2})(?P<doy>\d{3})(?P<hh>\d{2})(?P<mm>\d{2})\w{0,2}(?:_(?P<acc>\d{5}))?\.\d{3}\.h5$"),
            _time_mch,
            imp.import_mch_hdf5,
            "MeteoSwiss HDF5, e.g. RZC241231200VL.801.h5 (yyDDDHHMM)",
        ),
        RadarFormat(
            "mch_metranet",
            re.compile(r"^(?P<product>[A-Z]{3})(?P<yy>\d{2})(?P<doy>\d{3})(?P<hh>\d{2})(?P<mm>\d{2})\w{0,2}(?:_(?P<acc>\d{5}))?\.\d{3}$"),
            _time_mch,
            imp.import_mch_metranet,
            "MeteoSwiss METRANET binary, e.g. RZC161932100VL.801 (yyDDDHHMM; needs MeteoSwiss' Py-ART: the metranet extra)",
        ),
        RadarFormat(
            "fmi_geotiff",
            re.compile(r"^(?P<ts>\d{12})_(?P<product>FIN\w*)\.tiff?$"),
            _time_compact,
            imp.import_fmi_geotiff,
            "FMI GeoTIFF, e.g. 201609281600_FINUTM.tif (YYYYmmddHHMM; needs GDAL)",
        ),
        RadarFormat(
            "fmi",
            re.compile(r"^(?P<ts>\d{12})_fmi\.radar\.composite.*\.pgm(\.gz)?$"),
            _time_compact,
            _import_fmi,
            "FMI PGM, e.g. 201609281600_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz",
        ),
        RadarFormat(
            "bom",
            re.compile(r"^(?P<station>\d+)_(?P<d>\d{8})_(?P<t>\d{6})\.(?P<kind>prcp-\w+)\.nc$"),
            _time_bom,
            _import_bom,
            "BoM Rainfields NetCDF, e.g. 66_20201031_000000.prcp-c10.nc",
        ),
        RadarFormat(
            "knmi",
            re.compile(r"^RAD_NL\d+_\w+?_(?P<ts>\d{12})\.h5$"),
            _time_compact,
            _import_knmi,
            "KNMI HDF5, e.g. RAD_NL25_RAP_NA_201008260000.h5",
        ),
        RadarFormat(
            "dwd_hdf5",
            re.compile(r"^(?P<ts>\d{8}_\d{4})_(?P<product>[A-Z]{2})\.h5$"),
            _strptime("%Y%m%d_%H%M"),
            imp.import_dwd_hdf5,
            "DWD ODIM HDF5, e.g. 20250604_1700_RY.h5 (YYYYmmdd_HHMM)",
        ),
        RadarFormat(
            "dwd_radolan",
            re.compile(r"^raa0\d-(?P<product>[a-z]{2})[\w.]*?_(?P<station>\d{5})-(?P<ts>\d{10})-dwd---bin(?:\.bin)?$"),
            _strptime("%y%m%d%H%M"),
            imp.import_dwd_radolan,
            "DWD RADOLAN binary, e.g. raa01-rw_10000-2301010050-dwd---bin (yymmddHHMM; uncompressed)",
        ),
        RadarFormat(
            "saf_crri",
            re.compile(r"^S_NWC_(?P<product>CRR)_(?P<station>\w+?)_(?P<kind>[\w-]+)_(?P<ts>\d{8}T\d{6})Z\.nc$"),
            _strptime("%Y%m%dT%H%M%S"),
            imp.import_saf_crri,
            "NWC SAF CRR NetCDF, e.g. S_NWC_CRR_MSG4_Europe-VISIR_20180601T070000Z.nc",
        ),
        RadarFormat(
            "mrms_grib",
            re.compile(r"^(?:MRMS_)?(?P<product>PrecipRate)_(?P<kind>\d{2}\.\d{2})_(?P<ts>\d{8}-\d{6})\.grib2$"),
            _strptime("%Y%m%d-%H%M%S"),
            imp.import_mrms_grib,
            "NOAA MRMS GRIB2, e.g. PrecipRate_00.00_20190610-000000.grib2 (needs pygrib; uncompressed)",
        ),
        RadarFormat(
            "odim",
            re.compile(r"^.*\.(h5|hdf5|hdf)$", re.IGNORECASE),
            None,
            _import_odim,
            "ODIM HDF5 composite (.h5/.hdf5/.hdf) with /what date and time",
        ),
        RadarFormat(  # never detected (odim matches the same files first): chosen with fmt="opera"
            "opera",
            re.compile(r"^.*\.(h5|hdf5|hdf)$", re.IGNORECASE),
            None,
            _import_opera,
            "OPERA ODIM HDF5 composite (.h5/.hdf5/.hdf) read by pysteps' import_opera_hdf5",
        ),
    )
}


def detect_format(paths: Sequence[Path]) -> str:
    """Name of the format whose file-name pattern matches all ``paths``.

    The specific patterns come first: ``knmi`` (``RAD_NL*.h5``), ``dwd_hdf5`` and
    ``mch_hdf5`` win over the generic ``odim`` pattern of any ``.h5`` file.

    Raises
    ------
    ValueError
        No paths, or not all files match one format.
    """
    if not paths:
        raise ValueError("no radar files given")
    for name, fmt in RADAR_FORMATS.items():  # specific formats first, odim last
        if all(fmt.match(Path(p)) for p in paths):
            return name
    counts = Counter(
        next((n for n, f in RADAR_FORMATS.items() if f.match(Path(p))), "unknown") for p in paths
    )
    raise ValueError(
        "cannot detect a single radar format for the files "
        f"({', '.join(f'{n}: {c}' for n, c in counts.items())}); pass fmt= one of {', '.join(RADAR_FORMATS)}"
    )
