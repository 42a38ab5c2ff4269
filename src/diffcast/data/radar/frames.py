"""One radar file as a frame: values mapped to ``[0, 1]``, north-up, cropped or regridded.


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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import DatasetMeta
from ..transforms import RADAR_DBZ_META, rainrate_to_dbz
from .formats import RADAR_FORMATS

#: dBZ mapped to 1.0.
DBZ_SCALE = 90.0


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
        Unknown format, a file the importer cannot read (message names the file), or
        the optional library of the format (GDAL, pygrib, metranet) is not installed.
    """
    path = Path(path)
    if fmt not in RADAR_FORMATS:
        raise ValueError(f"unknown radar format {fmt!r}; choose one of: {', '.join(RADAR_FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"radar file {path} not found")
    f = RADAR_FORMATS[fmt]
    f.require()  # a missing optional library (GDAL, pygrib, metranet): one error naming it, not a file error
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


#: Units of the ODIM quantities as pysteps' importers give them.
_ODIM_UNITS = {"DBZH": "dBZ", "RATE": "mm/h", "ACRR": "mm"}


def _odim_header(path: Path) -> tuple[tuple[int, int], dict[str, Any]]:
    """Grid shape, unit and pixel size of an ODIM/OPERA HDF5 file from its attributes (no pixels read),
    for the quantity :func:`read_frame` would read (the first of ``ODIM_QUANTITIES`` present)."""
    import h5py

    from .formats import ODIM_QUANTITIES, odim_quantities

    with h5py.File(path, "r") as fh:
        qtys = odim_quantities(fh)
        qty = next(q for q in ODIM_QUANTITIES if q in qtys)
        shape = next(tuple(g["data"].shape) for name in sorted(fh) if name.startswith("dataset")
                     for gname, g in sorted(fh[name].items()) if gname.startswith("data") and "data" in g)
        xscale = float(fh["where"].attrs["xscale"])
    if len(shape) != 2:
        raise ValueError(f"{path}: expected a 2-D field, got {shape}")
    return (int(shape[0]), int(shape[1])), {"unit": _ODIM_UNITS[qty], "xpixelsize": xscale, "cartesian_unit": "m"}


def frame_header(path: str | Path, fmt: str) -> tuple[tuple[int, int], dict[str, Any]]:
    """``(native (H, W), metadata)`` of a radar file with at least ``unit``, ``xpixelsize`` and
    ``cartesian_unit``: from the attributes alone for ODIM and OPERA HDF5 (a continental composite
    is not decoded to learn its size), else from :func:`read_frame` (small files)."""
    if fmt in ("odim", "opera"):
        try:
            return _odim_header(Path(path))
        except Exception:  # anything unusual: the full read, whose errors name the problem
            pass
    x, _, meta = read_frame(path, fmt)
    return x.shape, meta


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
