"""Radar file formats: file-name patterns, time stamps and the pysteps importer of each.

Supported formats (``fmt``), each with a file-name pattern that gives the time stamp:

============  ===============================================  ===========================
``mch``       MeteoSwiss GIF, ``AQC161932100V_00005.801.gif``  ``yyDDDHHMM`` (day of year)
``fmi``       FMI PGM(.gz),                                    ``YYYYmmddHHMM``
              ``201609281600_fmi.radar.composite...pgm.gz``
``bom``       BoM Rainfields NetCDF, ``66_20201031_000000...nc``  ``YYYYmmdd_HHMMSS``
``odim``      ODIM HDF5 composites (any name)                   ``/what`` date + time attrs
``knmi``      KNMI HDF5, ``RAD_NL25_RAP_NA_201008260000.h5``   ``YYYYmmddHHMM``
``opera``     OPERA ODIM HDF5 composites (pysteps'             ``/what`` date + time attrs
              ``import_opera_hdf5``; chosen explicitly)
============  ===============================================  ===========================

ODIM files may store ``quantity`` per field (``datasetN/dataM/what``) or per
dataset (``datasetN/what``, as OPERA composites do); both are read, as pysteps'
``import_odim_hdf5`` does. Of DBZH, RATE and ACRR the first present is used.

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


#: ODIM quantities read, in order of preference.
ODIM_QUANTITIES = ("DBZH", "RATE", "ACRR")


def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, np.bytes_)) else str(value)


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

    ``knmi`` wins over the generic ``odim`` pattern for ``RAD_NL*.h5`` files.

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
