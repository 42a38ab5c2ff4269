"""Real radar archives read with the pysteps importers.

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

Values are mapped to ``[0, 1]`` through one declared transform
(:data:`~diffcast.data.transforms.RADAR_DBZ_META`): reflectivity ``x = dBZ / 90``
clipped to ``[0, 1]``; rain rates (``unit`` mm/h, or mm per ``accutime``
minutes converted to mm/h) become dBZ by Marshall-Palmer ``Z = 200 R^1.6``
first. pysteps' ``unit``/``transform`` metadata decide which applies, and the
record keeps what the files held (``quantity``: ``"mm/h"`` for rain rates and
accumulations, ``"dBZ"`` for reflectivity) so that outputs can be given back in
it. No-data pixels (NaN) are set to 0 and reported in a boolean ``mask``
(True = no data, the ``numpy.ma`` convention).

Frames are north-up (row 0 is the top of the grid): files whose pysteps metadata say
``yorigin="lower"`` are flipped on reading (and their metadata then say ``"upper"``).

Frames are cropped or regridded to a requested size: ``resample="area"`` takes
the largest centred square and averages it down to ``size`` (area
interpolation); ``resample="crop"`` takes a centred ``size`` x ``size`` window at
native resolution (zero-padded, masked, if the image is smaller).

Time series are never bridged across gaps: a sequence only contains frames
exactly one time step apart (the time step is the most common spacing).

:class:`RadarSeries` indexes files by time from their names (ODIM: the ``/what``
attributes) and decodes a frame only when it is used, so a nowcast from a long
folder reads just the frames it needs. :class:`RadarArchive` splits an archive
by event (runs of frames without a gap longer than an hour, labelled by the UTC
date of their first frame), never by frame.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from . import DATASETS
from .contract import DatasetMeta
from .transforms import RADAR_DBZ_META, rainrate_to_dbz

log = logging.getLogger(__name__)

#: dBZ mapped to 1.0.
DBZ_SCALE = 90.0


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


def to_unit_interval(data: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Map a pysteps field to ``[0, 1]`` (= dBZ / 90) and a validity map.

    Parameters
    ----------
    data : numpy.ndarray
        ``(H, W)`` field as returned by a pysteps importer (NaN = no data).
    meta : dict
        pysteps metadata: ``unit`` (``"dBZ"``, ``"mm/h"``, ``"mm"``), ``transform``
        (``None`` or ``"dB"``) and ``accutime`` (minutes, for ``"mm"``).

    Returns
    -------
    x : numpy.ndarray
        ``(H, W)`` float32 in ``[0, 1]``; no-data pixels are 0.
    valid : numpy.ndarray
        ``(H, W)`` bool, True where data are valid.
    """
    arr = np.asarray(data, dtype=np.float64)
    mask = np.isfinite(arr)
    vals = np.where(mask, arr, 0.0)
    unit = str(meta.get("unit", "")).strip()
    transform = meta.get("transform")
    if unit.lower() == "dbz":
        if transform not in (None, "dB"):
            raise ValueError(f"unsupported transform {transform!r} for reflectivity")
        dbz = vals
    elif unit in ("mm/h", "mm"):
        if transform == "dB":
            vals = np.where(mask, 10.0 ** (vals / 10.0), 0.0)
        elif transform is not None:
            raise ValueError(f"unsupported pysteps transform {transform!r} (expected None or 'dB')")
        if unit == "mm":
            acc = float(meta.get("accutime") or 0.0)
            if acc <= 0:
                raise ValueError(
                    "rain accumulation in mm without a positive 'accutime' in the metadata"
                )
            vals = vals * (60.0 / acc)  # mm per accutime -> mm/h
        dbz = rainrate_to_dbz(vals)  # Marshall-Palmer Z = 200 R^1.6
    else:
        raise ValueError(f"unsupported radar unit {unit!r} (expected dBZ, mm/h or mm)")
    x = np.clip(np.asarray(dbz, dtype=np.float64) / DBZ_SCALE, 0.0, 1.0).astype(np.float32)
    x[~mask] = 0.0
    return x, mask


def regrid(
    x: np.ndarray, mask: np.ndarray, size: tuple[int, int] | None, resample: str = "area"
) -> tuple[np.ndarray, np.ndarray]:
    """Crop or regrid a frame and its validity map (True = valid) to ``size`` (see module docstring)."""
    import cv2

    if size is None:
        return x, mask
    h, w = x.shape
    th, tw = size
    if resample == "crop":
        out = np.zeros((th, tw), np.float32)
        om = np.zeros((th, tw), bool)
        y0, x0 = (h - th) // 2, (w - tw) // 2
        sy, sx = max(y0, 0), max(x0, 0)
        dy, dx = max(-y0, 0), max(-x0, 0)
        ch, cw = min(th, h), min(tw, w)
        out[dy : dy + ch, dx : dx + cw] = x[sy : sy + ch, sx : sx + cw]
        om[dy : dy + ch, dx : dx + cw] = mask[sy : sy + ch, sx : sx + cw]
        return out, om
    if resample != "area":
        raise ValueError(f"unknown resample {resample!r}; choose 'area' or 'crop'")
    # largest centred region with the target aspect ratio, then area averaging
    ratio = tw / th
    ch, cw = (h, int(round(h * ratio))) if w / h >= ratio else (int(round(w / ratio)), w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    xs = x[y0 : y0 + ch, x0 : x0 + cw]
    ms = mask[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
    interp = cv2.INTER_AREA if ch >= th else cv2.INTER_LINEAR
    # average over valid pixels only; a target pixel is valid if at least half its area is
    out = cv2.resize(np.ascontiguousarray(xs * ms), (tw, th), interpolation=interp)
    frac = cv2.resize(np.ascontiguousarray(ms), (tw, th), interpolation=interp)
    om = frac >= 0.5
    out = np.where(om, out / np.maximum(frac, 1e-6), 0.0).astype(np.float32)
    return np.clip(out, 0.0, 1.0), om


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    s = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(s) != 2 or min(s) < 1:
        raise ValueError(f"size must be a positive int or (H, W), got {size}")
    return s  # type: ignore[return-value]


def read_frame(
    path: str | Path, fmt: str, size: int | tuple[int, int] | None = None, resample: str = "area"
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one radar file into ``([0,1] frame, validity map (True = valid), pysteps metadata)``.

    Raises
    ------
    FileNotFoundError
        Missing file.
    ValueError
        Unknown format, or a file the importer cannot read (message names the file).
    """
    path = Path(path)
    if fmt not in RADAR_FORMATS:
        raise ValueError(f"unknown radar format {fmt!r}; choose one of: {', '.join(RADAR_FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"radar file {path} not found")
    f = RADAR_FORMATS[fmt]
    try:
        data, meta = f.importer(path, f.match(path))
    except Exception as exc:  # importers raise OSError, KeyError, IndexError, ... on corrupt files
        detail = str(exc) if isinstance(exc, (FileNotFoundError, ValueError)) else f"{type(exc).__name__}: {exc}"
        # Some importer messages name the file already: name it once.
        where = "" if str(path) in detail else f" {path}"
        raise ValueError(f"cannot read {fmt} radar file{where}: {detail}") from exc
    if data is None or np.ndim(data) != 2:
        raise ValueError(
            f"{path}: expected a 2-D field, got {None if data is None else np.shape(data)}"
        )
    x, mask = to_unit_interval(data, meta)
    if str(meta.get("yorigin", "upper")).strip().lower() == "lower":
        # Row 0 is the bottom of the grid: flip to the north-up convention of every other
        # source (row 0 = top), so pictures, models and georeferencing agree.
        x, mask = np.ascontiguousarray(x[::-1]), np.ascontiguousarray(mask[::-1])
        meta = {**meta, "yorigin": "upper"}
    x, mask = regrid(x, mask, _as_size(size), resample)
    return x, mask, meta


@dataclass
class RadarFrames:
    """Consecutive radar frames mapped to the tensor contract.

    Attributes
    ----------
    data : numpy.ndarray
        ``(T, H, W)`` float32 in ``[0, 1]`` (dBZ / 90).
    times : list of datetime
        UTC valid time of each frame, strictly increasing, one ``timestep_min`` apart.
    timestep_min : float
        Minutes between frames.
    meta : DatasetMeta
        Dataset metadata (``RADAR_DBZ_META`` with this time step and pixel size).
    source : dict
        pysteps metadata of the first file plus ``format`` and ``files``.
    mask : numpy.ndarray
        ``(T, H, W)`` bool, True where there are NO data (``numpy.ma`` convention; such
        pixels are 0 in ``data``).
    quantity : str
        What the files hold (see :func:`radar_quantity`): ``"mm/h"`` (rain rate or
        accumulation) or ``"dBZ"`` (reflectivity). ``data`` is dBZ / 90 either way.
    """

    data: np.ndarray
    times: list[datetime]
    timestep_min: float
    meta: DatasetMeta
    source: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None
    quantity: str = "dBZ"

    @property
    def files(self) -> list[str]:
        """The files read, in time order."""
        return list(self.source.get("files", []))

    @property
    def pixel_km(self) -> float:
        """Pixel size of ``data`` in km."""
        return self.meta.pixel_km


def _check_order(times: Sequence[datetime], paths: Sequence[Path]) -> None:
    """Raise unless ``times`` increase strictly (files in time order, no duplicates)."""
    for i in range(1, len(times)):
        if times[i] == times[i - 1]:
            raise ValueError(
                f"two radar files share the time stamp {times[i]:%Y-%m-%d %H:%M}: {paths[i - 1].name} and {paths[i].name}; "
                "if the folder holds several products, pick one with --pattern GLOB (pattern= in Python)"
            )
        if times[i] < times[i - 1]:
            raise ValueError(
                f"radar time stamps are not increasing: {paths[i].name} ({times[i]:%Y-%m-%d %H:%M}) "
                f"follows {paths[i - 1].name} ({times[i - 1]:%Y-%m-%d %H:%M}); pass the files in time order without duplicates"
            )


def _time_step(times: Sequence[datetime], timestep_min: float | None) -> float:
    """The time step: ``timestep_min`` when given, else the shortest spacing (a gap is never shorter)."""
    if timestep_min:
        return float(timestep_min)
    if len(times) < 2:
        return 5.0
    return min((b - a).total_seconds() / 60.0 for a, b in zip(times[:-1], times[1:]))


def _check_times(
    times: Sequence[datetime], paths: Sequence[Path], timestep_min: float | None = None
) -> float:
    """Check strictly increasing, gap-free times; return the time step in minutes."""
    _check_order(times, paths)
    step = _time_step(times, timestep_min)
    for i in range(1, len(times)):
        d = (times[i] - times[i - 1]).total_seconds() / 60.0
        if abs(d - step) > 1e-6:
            raise ValueError(
                f"gap in the radar time series: {d:g} min between {paths[i - 1].name} and {paths[i].name} "
                f"(expected {step:g} min); sequences never span missing frames"
            )
    return step


class RadarSeries:
    """Radar files of one series, indexed by time; frames are decoded only when asked for.

    Building the index reads file names only (ODIM and OPERA files: their ``/what``
    date and time attributes), so a folder of hundreds of composites costs nothing
    until frames are used; :meth:`frame` decodes one file (once: frames are cached).

    Parameters
    ----------
    paths : list of path
        The files.
    fmt : str, optional
        One of :data:`RADAR_FORMATS`; detected from the file names when omitted.
    timestep_min : float, optional
        Time step; default: the shortest spacing between the files.
    sort : bool
        Sort the files by time (a folder's files); otherwise they must be given in
        time order.

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        Undetectable format, several series, time stamps out of order or duplicated.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        fmt: str | None = None,
        timestep_min: float | None = None,
        *,
        sort: bool = False,
    ) -> None:
        ps = [Path(p) for p in paths]
        if not ps:
            raise ValueError("no radar files given")
        for p in ps:
            if not p.is_file():
                raise FileNotFoundError(f"radar file {p} not found")
        fmt = fmt or detect_format(ps)
        if fmt not in RADAR_FORMATS:
            raise ValueError(f"unknown radar format {fmt!r}; choose one of: {', '.join(RADAR_FORMATS)}")
        kinds = sorted({RADAR_FORMATS[fmt].series(p) for p in ps})
        if len(kinds) > 1:
            raise ValueError(
                f"the radar files mix several series ({', '.join(kinds)}); pass files of one series"
            )
        times = [RADAR_FORMATS[fmt].timestamp(p) for p in ps]
        if sort:
            order = sorted(range(len(ps)), key=lambda i: (times[i], ps[i].name))
            ps, times = [ps[i] for i in order], [times[i] for i in order]
        _check_order(times, ps)
        self.fmt = fmt
        self.paths = ps
        self.times = times
        self.timestep_min = _time_step(times, timestep_min)
        self.reads: list[int] = []  # indices decoded, in order
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {}
        self._native: tuple[int, int] | None = None
        self._first: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Frame ``i`` on the native grid: ``(dBZ / 90, no-data mask (True = no data), pysteps metadata)``."""
        i = range(len(self.paths))[i]
        if i not in self._cache:
            x, valid, meta = read_frame(self.paths[i], self.fmt)
            if self._native is None:
                self._native, self._first = x.shape, i
            elif x.shape != self._native:
                raise ValueError(
                    f"{self.paths[i]}: grid {x.shape} differs from {self._native} of {self.paths[self._first].name}"
                )
            self._cache[i] = (x, ~valid, meta)
            self.reads.append(i)
        return self._cache[i]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the native grid (decodes the last frame when none was read yet)."""
        if self._native is None:
            self.frame(len(self.paths) - 1)
        return self._native  # type: ignore[return-value]

    @property
    def first_meta(self) -> dict[str, Any]:
        """pysteps metadata of the first frame decoded (georeferencing, units)."""
        self.grid_shape  # noqa: B018 - decodes one frame if needed
        return self._cache[self._first][2]  # type: ignore[index]

    @property
    def quantity(self) -> str:
        """``"mm/h"`` or ``"dBZ"``: what the files hold (:func:`radar_quantity`)."""
        return radar_quantity(self.first_meta)

    @property
    def meta(self) -> DatasetMeta:
        """Dataset metadata of the native frames (``RADAR_DBZ_META`` with this time step and pixel size)."""
        km = _pixel_km(self.first_meta, self.grid_shape, None, "area")
        return _radar_meta(self.timestep_min, km, self.fmt, "area", None)

    @property
    def source(self) -> dict[str, Any]:
        """The ``source`` record of :class:`RadarFrames` for these files (:func:`source_metadata`)."""
        return source_metadata(self.first_meta, self.fmt, self.paths, self.grid_shape)

    def lazy(self, what: str = "data") -> LazyFrames:
        """``(T, H, W)`` array-like of the frames (``"data"``) or no-data masks (``"mask"``), decoded on indexing."""
        return LazyFrames(self, what)


class LazyFrames:
    """``(T, H, W)`` frames of a :class:`RadarSeries` that decodes a file the first time its frame is indexed.

    Indexing (an int, a slice or an integer array along time) returns numpy arrays;
    ``numpy.asarray`` decodes every frame.
    """

    ndim = 3

    def __init__(self, series: RadarSeries, what: str = "data") -> None:
        if what not in ("data", "mask"):
            raise ValueError(f"what must be 'data' or 'mask', got {what!r}")
        self.series = series
        self.what = what
        self.dtype = np.dtype(np.float32 if what == "data" else bool)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.series), *self.series.grid_shape)

    def __len__(self) -> int:
        return len(self.series)

    def _one(self, i: int) -> np.ndarray:
        x, nodata, _ = self.series.frame(int(i))
        return x if self.what == "data" else nodata

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])]
        idx = np.arange(len(self.series))[key]
        if idx.ndim == 0:
            return self._one(int(idx))
        if idx.size == 0:
            return np.zeros((0, *self.series.grid_shape), self.dtype)
        return np.stack([self._one(int(i)) for i in idx])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def radar_quantity(meta: dict[str, Any]) -> str:
    """What a radar field holds, from its pysteps metadata: ``"mm/h"`` or ``"dBZ"``.

    Rain rates (``unit`` mm/h) and accumulations (mm per ``accutime``, read as mm/h)
    are ``"mm/h"``; reflectivity (``unit`` dBZ) is ``"dBZ"``.
    """
    unit = str(meta.get("unit", "")).strip()
    if unit.lower() == "dbz":
        return "dBZ"
    if unit in ("mm/h", "mm"):
        return "mm/h"
    raise ValueError(f"unsupported radar unit {unit!r} (expected dBZ, mm/h or mm)")


def _radar_meta(
    timestep_min: float,
    pixel_km: float | None,
    fmt: str,
    resample: str,
    size: tuple[int, int] | None,
) -> DatasetMeta:
    desc = RADAR_DBZ_META.transform + f"; source format {fmt}"
    if size is not None:
        desc += f"; {resample} to {size[0]}x{size[1]}"
    return dataclasses.replace(
        RADAR_DBZ_META,
        timestep_min=float(timestep_min),
        pixel_km=float(pixel_km) if pixel_km else RADAR_DBZ_META.pixel_km,
        transform=desc,
    )


def _pixel_km(
    meta: dict[str, Any], native: tuple[int, int], size: tuple[int, int] | None, resample: str
) -> float | None:
    px = meta.get("xpixelsize")
    if px is None:
        return None
    km = float(px) / 1000.0 if meta.get("cartesian_unit", "m") == "m" else float(px)
    if size is not None and resample == "area":
        km *= (
            native[0] / size[0]  # full height kept, width cropped
            if native[1] / native[0] >= size[1] / size[0]
            else native[1] / size[1]
        )
    return km


def read_radar_files(
    paths: Sequence[str | Path],
    fmt: str | None = None,
    size: int | tuple[int, int] | None = None,
    resample: str = "area",
    timestep_min: float | None = None,
) -> RadarFrames:
    """Read consecutive radar files (e.g. the inputs of ``diffcast nowcast``).

    Parameters
    ----------
    paths : list of path
        Files in time order.
    fmt : str, optional
        One of :data:`RADAR_FORMATS`; detected from the file names when omitted.
    size : int or (int, int), optional
        Output frame size; ``None`` keeps the native grid.
    resample : {"area", "crop"}
        How to reach ``size`` (see module docstring).
    timestep_min : float, optional
        Expected spacing; default: the shortest spacing between the files.

    Returns
    -------
    RadarFrames

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        Undetectable format, unreadable file, non-increasing time stamps, a gap,
        or frames of different sizes (all messages name the file).
    """
    series = RadarSeries(paths, fmt, timestep_min)
    step = _check_times(series.times, series.paths, timestep_min)
    sz = _as_size(size)
    frames, masks = [], []
    for i in range(len(series)):
        x, nodata, _ = series.frame(i)
        x, valid = regrid(x, ~nodata, sz, resample)
        frames.append(x)
        masks.append(~valid)
    first_meta = series.first_meta
    native = series.grid_shape
    return RadarFrames(
        data=np.stack(frames).astype(np.float32),
        times=series.times,
        timestep_min=step,
        meta=_radar_meta(step, _pixel_km(first_meta, native, sz, resample), series.fmt, resample, sz),
        source=source_metadata(first_meta, series.fmt, series.paths, native),
        mask=np.stack(masks),
        quantity=radar_quantity(first_meta),
    )


def source_metadata(
    meta: dict[str, Any], fmt: str, paths: Sequence[str | Path], native: Sequence[int]
) -> dict[str, Any]:
    """The ``source`` record of :class:`RadarFrames`: plain pysteps metadata plus format, files, grid."""
    # numpy scalars (BoM gives float32 extents) become Python scalars, so the georeferencing survives.
    src = {
        k: v.item() if isinstance(v, np.generic) else v
        for k, v in meta.items()
        if isinstance(v, (str, int, float, bool, type(None), np.generic))
    }
    src.update(format=fmt, files=[str(p) for p in paths], native_shape=list(native))
    return src


def select_files(files: Sequence[Path], pattern: str, where: str) -> list[Path]:
    """The ``files`` whose names match the shell ``pattern``; a clear error when none does."""
    import fnmatch

    sel = [p for p in files if fnmatch.fnmatch(p.name, pattern)]
    if not sel:
        names = ", ".join(sorted({p.name for p in files})[:5])
        raise ValueError(f"no file under {where} matches the pattern {pattern!r} (file names look like: {names or 'none'})")
    return sel


def _file_time(
    fobj: RadarFormat, path: Path, cache: dict[tuple[Path, int, int], datetime] | None
) -> datetime:
    """``fobj.timestamp(path)``; time stamps read from file contents are kept in ``cache`` by (path, size, mtime)."""
    if cache is None or fobj.time is not None:  # names are parsed, not cached
        return fobj.timestamp(path)
    st = path.stat()
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in cache:
        cache[key] = fobj.timestamp(path)
    return cache[key]


def list_radar_files(
    root: str | Path,
    fmt: str | None = None,
    series: str | None = None,
    pattern: str | None = None,
    *,
    skipped: list[tuple[Path, str]] | None = None,
    allow_empty: bool = False,
    time_cache: dict[tuple[Path, int, int], datetime] | None = None,
) -> tuple[str, list[tuple[datetime, Path]]]:
    """All radar files under ``root`` (recursively) as ``(format, [(time, path), ...])`` sorted by time.

    Parameters
    ----------
    root : path
        Folder searched recursively.
    fmt : str, optional
        Format name; detected when omitted (must be unique under ``root``).
    series : str, optional
        Product/station to keep when ``root`` holds several (e.g. ``"66/prcp-c10"``
        for BoM, ``"AQC"`` for MeteoSwiss); required in that case, since series
        differ in grid and time step.
    pattern : str, optional
        Shell pattern on the file names (``fnmatch``, e.g. ``"RAD_NL25_RAP_*"``) that
        picks one product out of a folder holding several.
    skipped : list, optional
        For a folder that is being filled (``diffcast nowcast --watch``): files whose
        time stamp cannot be read (an ODIM file still being written) are appended to
        it as ``(path, reason)`` and left out, instead of raising.
    allow_empty : bool
        A folder without matching files gives ``(fmt or "", [])`` instead of an error.
    time_cache : dict, optional
        Time stamps read from file contents (ODIM ``/what``) are kept in it by
        ``(path, size, mtime)``, so a folder listed again opens only new or changed files.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing folder, no matching files, several formats without ``fmt``,
        several series without ``series``, or duplicate time stamps.
    """
    import fnmatch

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"radar folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if pattern is not None:
        if allow_empty:
            files = [p for p in files if fnmatch.fnmatch(p.name, pattern)]
        else:
            files = select_files(files, pattern, str(root))
    if fmt is None:
        cand = [p for p in files if any(f.match(p) for f in RADAR_FORMATS.values())]
        if not cand:
            if allow_empty:
                return "", []
            raise ValueError(
                f"no radar files of a known format ({', '.join(RADAR_FORMATS)}) under {root}"
            )
        fmt = detect_format(cand)
    elif fmt not in RADAR_FORMATS:
        raise ValueError(f"unknown radar format {fmt!r}; choose one of: {', '.join(RADAR_FORMATS)}")
    fobj = RADAR_FORMATS[fmt]
    sel = [p for p in files if fobj.match(p)]
    if not sel:
        if allow_empty:
            return fmt, []
        raise ValueError(f"no {fmt} files ({fobj.description}) under {root}")
    by_series = Counter(fobj.series(p) for p in sel)
    if series is not None:
        if series not in by_series:
            raise ValueError(
                f"no {fmt} files of series {series!r} under {root}; found {', '.join(sorted(by_series))}"
            )
        sel = [p for p in sel if fobj.series(p) == series]
    elif len(by_series) > 1:
        found = ", ".join(f"{k!r} ({n} files)" for k, n in sorted(by_series.items()))
        raise ValueError(
            f"{root} holds several {fmt} series ({found}) with their own grids and time steps; "
            "pass series=NAME (or pattern=GLOB on the file names, --pattern on the command line) or use the folder of one series"
        )
    items = []
    for p in sel:
        try:
            items.append((_file_time(fobj, p, time_cache), p))
        except FileNotFoundError:
            if skipped is None:
                raise
            # removed since it was listed (a writer's rename): not an error
        except (ValueError, OSError) as exc:
            if skipped is None:
                raise
            skipped.append((p, str(exc)))
    items.sort()
    for (t1, p1), (t2, p2) in zip(items[:-1], items[1:]):
        if t1 == t2:
            raise ValueError(
                f"two radar files share the time stamp {t1:%Y-%m-%d %H:%M}: {p1} and {p2}; if they are two products, "
                "pick one with pattern=GLOB (--pattern on the command line)"
            )
    return fmt, items


def contiguous_runs(times: Sequence[datetime], timestep_min: float) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of gap-free runs of sorted ``times``."""
    runs, start = [], 0
    for i in range(1, len(times)):
        if abs((times[i] - times[i - 1]).total_seconds() / 60.0 - timestep_min) > 1e-6:
            runs.append((start, i))
            start = i
    if times:
        runs.append((start, len(times)))
    return runs


#: Frames more than this many minutes apart belong to different events.
EVENT_GAP_MIN = 60.0
#: Splits of a :class:`RadarArchive` (``"all"``: every event).
RADAR_SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class RadarEvent:
    """A maximal run of frames without a gap longer than :data:`EVENT_GAP_MIN`.

    Attributes
    ----------
    label : str
        UTC date (``YYYY-MM-DD``) of the first frame.
    start, stop : int
        ``[start, stop)`` indices of its frames in the time-sorted archive.
    first, last : datetime
        Valid times of its first and last frames.
    """

    label: str
    start: int
    stop: int
    first: datetime
    last: datetime

    @property
    def n_frames(self) -> int:
        return self.stop - self.start


def find_events(times: Sequence[datetime], gap_min: float = EVENT_GAP_MIN) -> list[RadarEvent]:
    """Cut sorted ``times`` into events at every spacing longer than ``gap_min`` minutes."""
    events: list[RadarEvent] = []
    start = 0
    for i in range(1, len(times) + 1):
        if i == len(times) or (times[i] - times[i - 1]).total_seconds() / 60.0 > gap_min:
            first = times[start]
            day = first.astimezone(timezone.utc) if first.tzinfo else first
            events.append(RadarEvent(f"{day:%Y-%m-%d}", start, i, times[start], times[i - 1]))
            start = i
    return events


def _date_range(text: Any) -> tuple[date, date]:
    """``"YYYY-MM-DD"`` or ``"YYYY-MM-DD/YYYY-MM-DD"`` (inclusive) as ``(first, last)``."""
    parts = str(text).strip().split("/")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        lo, hi = date.fromisoformat(parts[0].strip()), date.fromisoformat(parts[-1].strip())
    except ValueError:
        raise ValueError(
            f"split_events: {text!r} is not a date YYYY-MM-DD or a date range YYYY-MM-DD/YYYY-MM-DD"
        ) from None
    if hi < lo:
        raise ValueError(f"split_events: the range {text!r} ends before it starts")
    return lo, hi


def assign_events(
    events: Sequence[RadarEvent],
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    split_events: Mapping[str, Any] | None = None,
) -> list[str]:
    """The split (``"train"``, ``"val"`` or ``"test"``, or ``""``: unused) of each event.

    Without ``split_events``, in time order: with ``n`` events, ``test`` takes the
    last ``max(1, round(f_test n))``, ``val`` the ``max(1, round(f_val n))`` before
    them and ``train`` the rest, as long as ``train`` keeps at least one event
    (``test`` is served first); a zero fraction gives no event. Hence one event:
    train only; two: train and test; three: one each.

    With ``split_events`` (split -> date or list of dates ``"YYYY-MM-DD"`` and ranges
    ``"YYYY-MM-DD/YYYY-MM-DD"``, inclusive, matched against the event labels), the
    named events go to their splits; when ``train`` is not named it takes every
    event no split names, otherwise such events are unused. Dates that match no
    event are allowed (one mapping may serve several archives) and logged.

    Raises
    ------
    ValueError
        Unknown split names, malformed dates, or an event named for two splits.
    """
    n = len(events)
    if split_events is None:
        fr = np.asarray(split_fractions, dtype=float)
        fr = fr / fr.sum()

        def count(f: float) -> int:
            return 0 if f <= 0 else max(1, int(np.floor(f * n + 0.5)))

        n_test = min(count(fr[2]), max(n - 1, 0))
        n_val = min(count(fr[1]), max(n - 1 - n_test, 0))
        n_train = n - n_val - n_test
        return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    if not isinstance(split_events, Mapping):
        raise ValueError(
            f"split_events must map split names to dates, e.g. {{\"test\": [\"2016-07-11\"]}}, got {split_events!r}"
        )
    out = [""] * n
    for split, items in split_events.items():
        if split not in ("train", "val", "test"):
            raise ValueError(f"split_events: unknown split {split!r}; choose train, val or test")
        items = [items] if isinstance(items, (str, date)) else list(items or [])
        for item in items:
            lo, hi = _date_range(item)
            hits = [i for i, e in enumerate(events) if lo <= date.fromisoformat(e.label) <= hi]
            if not hits:
                log.info("split_events: no event on %s (events: %s)", item, ", ".join(e.label for e in events))
            for i in hits:
                if out[i] and out[i] != split:
                    raise ValueError(
                        f"split_events: the event of {events[i].label} is named for both {out[i]} and {split}"
                    )
                out[i] = split
    if "train" not in split_events:
        out = [s or "train" for s in out]
    return out


@DATASETS.register("radar")
class RadarArchive(Dataset):
    """Sequences from a folder of radar composites (any format in :data:`RADAR_FORMATS`).

    All files under ``root`` (recursively) of one format are sorted by time and cut
    into events (:func:`find_events`: runs of frames without a gap longer than
    ``event_gap_min`` minutes, labelled by the UTC date of their first frame).
    Whole events go to the splits, never single frames (:func:`assign_events`:
    by ``split_fractions`` of the events in time order, test last, or by
    ``split_events``); ``split="all"`` takes every event. Inside the events of a
    split, windows of ``seq_len`` frames start every ``stride`` frames and never
    cross a gap (spacing different from the time step).

    A split without a window is not an error here (``len`` is 0, and
    :attr:`empty_reason` says why and what to change); code that needs items
    raises :attr:`empty_reason` as a ``ValueError``.

    Parameters
    ----------
    root : path
        Folder with radar files (searched recursively).
    split : {"train", "val", "test", "all"}
    seq_len : int
        Frames per item.
    fmt : str, optional
        File format; detected when omitted (must be unique under ``root``).
    size : int or (int, int), optional
        Output size (default 128); ``None`` keeps the native grid.
    resample : {"area", "crop"}
    stride : int
        Frames between window starts (default: ``seq_len``, no overlap).
    split_fractions : (float, float, float)
        Shares of the events for train / val / test.
    timestep_min : float, optional
        Time step; default: the most common spacing.
    cache : bool
        Keep decoded frames in memory (per worker).
    series : str, optional
        Product/station to use when ``root`` holds several (see :func:`list_radar_files`).
    split_events : dict, optional
        Split -> event dates ``"YYYY-MM-DD"`` or ranges ``"YYYY-MM-DD/YYYY-MM-DD"``
        (see :func:`assign_events`); overrides ``split_fractions``.
    event_gap_min : float
        Minutes without frames that separate two events (default 60).
    units : {"dBZ", "mm/h"}
        Encoding of the items: ``"dBZ"`` (``x = dBZ / 90``, what radar models are
        trained on; :data:`~diffcast.data.transforms.RADAR_DBZ_META`) or ``"mm/h"``
        (``x = R / 200``, linear rain rate for scoring in mm/h;
        :data:`~diffcast.data.transforms.RADAR_RATE_META`). :attr:`model_meta` is
        the dBZ record either way.
    pattern : str, optional
        Shell pattern on the file names picking one product out of a folder that
        holds several (see :func:`list_radar_files`).

    Attributes
    ----------
    events : list of RadarEvent
        Every event of the archive, in time order.
    event_splits : list of str
        The split of each event (``""``: unused).
    quantity : str
        What the files hold: ``"mm/h"`` or ``"dBZ"`` (:func:`radar_quantity`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        seq_len: int = 25,
        fmt: str | None = None,
        size: int | tuple[int, int] | None = 128,
        resample: str = "area",
        stride: int | None = None,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        timestep_min: float | None = None,
        cache: bool = True,
        series: str | None = None,
        split_events: Mapping[str, Any] | None = None,
        event_gap_min: float = EVENT_GAP_MIN,
        units: str = "dBZ",
        pattern: str | None = None,
    ) -> None:
        if units not in ("dBZ", "mm/h"):
            raise ValueError(f"unknown units {units!r}; choose 'dBZ' or 'mm/h'")
        self.units = units
        if split not in RADAR_SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(RADAR_SPLITS)}")
        if resample not in ("area", "crop"):
            raise ValueError(f"unknown resample {resample!r}; choose 'area' or 'crop'")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        fr = np.asarray(split_fractions, dtype=float)
        if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
            raise ValueError(
                f"split_fractions must be three non-negative numbers, got {split_fractions}"
            )
        if not event_gap_min > 0:
            raise ValueError(f"event_gap_min must be positive, got {event_gap_min}")
        self.fmt, items = list_radar_files(root, fmt, series, pattern)
        self.root = Path(root)
        self.split = split
        self.seq_len = int(seq_len)
        self.stride = int(stride or seq_len)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.size = _as_size(size)
        self.resample = resample
        times = [t for t, _ in items]
        diffs = [(b - a).total_seconds() / 60.0 for a, b in zip(times[:-1], times[1:])]
        self.timestep_min = float(
            timestep_min or (Counter(diffs).most_common(1)[0][0] if diffs else 5.0)
        )
        self.events = find_events(times, float(event_gap_min))
        self.event_splits = assign_events(self.events, tuple(fr), split_events)
        chosen = [
            e for e, s in zip(self.events, self.event_splits) if split == "all" or s == split
        ]
        block = [items[i] for e in chosen for i in range(e.start, e.stop)]
        self.times = [t for t, _ in block]
        self.paths = [p for _, p in block]
        self.windows: list[int] = []
        runs = contiguous_runs(self.times, self.timestep_min)
        for a, b in runs:
            self.windows.extend(range(a, b - self.seq_len + 1, self.stride))
        self.why_empty: str | None = None
        self.empty_reason: str | None = None
        if not self.windows:
            self.why_empty, full = self._why_empty(chosen, runs)
            self.empty_reason = f"radar split {split!r} of {self.root} has no window of {self.seq_len} frames: {full}"
            log.info("%s", self.empty_reason)
        # pixel size and quantity from the first file's metadata (one read; the grid is the same for all)
        x0, _, meta0 = read_frame(items[0][1], self.fmt, None, resample)
        self.native_shape = x0.shape
        self.quantity = radar_quantity(meta0)
        pixel_km = _pixel_km(meta0, x0.shape, self.size, resample)
        self.model_meta = _radar_meta(self.timestep_min, pixel_km, self.fmt, resample, self.size)
        self.meta = self.model_meta
        if units == "mm/h":
            from .transforms import RADAR_RATE_META

            self.meta = dataclasses.replace(
                RADAR_RATE_META, timestep_min=self.model_meta.timestep_min, pixel_km=self.model_meta.pixel_km,
                transform=RADAR_RATE_META.transform + f"; source format {self.fmt}"
                + (f"; {resample} to {self.size[0]}x{self.size[1]}" if self.size is not None else ""),
            )
        self.cache = cache
        self._frames: dict[int, np.ndarray] = {}

    def _why_empty(self, chosen: list[RadarEvent], runs: list[tuple[int, int]]) -> tuple[str, str]:
        """``(short reason, one-line reason with the fix)`` of a split without a window."""
        n = len(self.events)
        events = f"{n} event{'s' if n != 1 else ''}"
        labels = ", ".join(e.label for e in self.events[:6]) + (", ..." if n > 6 else "")
        example = json.dumps({"test": [self.events[-1].label]})
        if not chosen:
            counts = Counter(s or "none" for s in self.event_splits)
            where = (
                f"all in {next(iter(counts))}"
                if len(counts) == 1
                else ", ".join(f"{c} in {s}" for s, c in counts.items())
            )
            short = f"{events} in the archive: {where}; pass split_events or a longer archive"
            full = (
                f"the archive holds {events} ({labels}), {where}; assign events to splits with the dataset "
                f"option split_events, e.g. split_events={example}, use split 'all', or add events to the archive"
            )
            return short, full
        longest = max((b - a for a, b in runs), default=0)
        k = len(chosen)
        mine = f"{k} event{'s' if k != 1 else ''} ({', '.join(e.label for e in chosen[:6])}{', ...' if k > 6 else ''})"
        short = (
            f"{mine}, at most {longest} consecutive frames {self.timestep_min:g} min apart; "
            "lower seq_len or pass split_events"
        )
        full = (
            f"its {mine} have at most {longest} consecutive frames {self.timestep_min:g} min apart; lower "
            f"seq_len (t_in + t_out) or give the split longer events with split_events (events: {labels})"
        )
        return short, full

    def describe_events(self) -> list[dict[str, Any]]:
        """Every event with its split and frame count (for ``diffcast data info``)."""
        return [
            {
                "event": e.label,
                "split": s or "unused",
                "frames": e.n_frames,
                "first": f"{e.first:%Y-%m-%dT%H:%MZ}",
                "last": f"{e.last:%Y-%m-%dT%H:%MZ}",
            }
            for e, s in zip(self.events, self.event_splits)
        ]


    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames"] = {}
        return state

    def __len__(self) -> int:
        return len(self.windows)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of this split as ``(H, W)`` float32 in ``[0, 1]``."""
        if i in self._frames:
            return self._frames[i]
        x, _, _ = read_frame(self.paths[i], self.fmt, self.size, self.resample)
        if self.cache:
            self._frames[i] = x
        return x

    def _start(self, idx: int) -> int:
        n = len(self.windows)
        if not -n <= idx < n:
            # IndexError (the sequence protocol), with the reason when the split is empty
            raise IndexError(
                self.empty_reason
                or f"window {idx} out of range: radar split {self.split!r} of {self.root} has {n} windows"
            )
        return self.windows[idx]

    def sequence(self, idx: int) -> np.ndarray:
        """Item ``idx`` as ``(seq_len, H, W)`` float32."""
        s = self._start(idx)
        frames = [self.frame(i) for i in range(s, s + self.seq_len)]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise ValueError(
                f"radar frames {self.paths[s]} .. {self.paths[s + self.seq_len - 1]} have different grids {shapes}; set size="
            )
        return np.stack(frames)

    def window_times(self, idx: int) -> list[datetime]:
        s = self._start(idx)
        return self.times[s : s + self.seq_len]

    def __getitem__(self, idx: int) -> torch.Tensor:
        seq = self.sequence(int(idx))
        if self.units != "dBZ":
            from .transforms import transcode

            seq = transcode(seq, self.model_meta, self.meta)
        return torch.from_numpy(seq)[:, None]
