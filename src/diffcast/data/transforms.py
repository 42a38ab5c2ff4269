"""Conversions between ``[0, 1]`` model space and physical units, in one place.

Each dataset declares its transform in a :class:`~diffcast.data.contract.DatasetMeta`;
the functions here implement the documented mappings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .contract import DatasetMeta

#: SEVIR VIL colour-map boundaries in VIL code units (0-255).
SEVIR_VIL_BOUNDS = (0, 16, 31, 59, 74, 100, 133, 160, 181, 219, 255)
#: Paper thresholds for SEVIR VIL (code units).
SEVIR_THRESHOLDS = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)


def vil_code_to_kgm2(code: np.ndarray) -> np.ndarray:
    """Decode SEVIR VIL codes (0-255) to vertically integrated liquid in kg m-2.

    The piecewise mapping published with SEVIR: 0 below code 5, linear
    ``(x - 2) / 90.66`` up to 18, ``exp((x - 83.9) / 38.9)`` above.
    """
    x = np.asarray(code, dtype=np.float64)
    out = np.zeros_like(x)
    lin = (x > 5) & (x <= 18)
    out[lin] = (x[lin] - 2.0) / 90.66
    hi = x > 18
    out[hi] = np.exp((x[hi] - 83.9) / 38.9)
    return out.astype(np.float32)


def kgm2_to_vil_code(vil: np.ndarray) -> np.ndarray:
    """Inverse of :func:`vil_code_to_kgm2` on its monotone branches (returns float codes)."""
    v = np.asarray(vil, dtype=np.float64)
    out = np.zeros_like(v)
    # The decoding jumps at code 18 (linear branch ends at 16/90.66, the exponential
    # one starts above it); values inside that gap are never produced and map to 18.
    top_lin = 16.0 / 90.66 * (1 + 1e-6)
    lin = (v > 3.0 / 90.66) & (v <= top_lin)
    out[lin] = v[lin] * 90.66 + 2.0
    hi = v > top_lin
    out[hi] = np.maximum(83.9 + 38.9 * np.log(v[hi]), 18.0)
    return np.clip(out, 0, 255).astype(np.float32)


def rainrate_to_dbz(rate: np.ndarray, a: float = 200.0, b: float = 1.6) -> np.ndarray:
    """Marshall-Palmer Z-R: ``dBZ = 10 log10(a R^b)``; zero rain maps to -inf-safe 0 dBZ floor."""
    r = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dbz = 10.0 * np.log10(a * np.power(np.maximum(r, 0.0), b))
    dbz[~np.isfinite(dbz)] = 0.0
    return np.maximum(dbz, 0.0).astype(np.float32)


def dbz_to_rainrate(dbz: np.ndarray, a: float = 200.0, b: float = 1.6) -> np.ndarray:
    """Inverse Marshall-Palmer: ``R = (10^(dBZ/10) / a)^(1/b)`` in mm/h."""
    z = np.power(10.0, np.asarray(dbz, dtype=np.float64) / 10.0)
    return np.power(z / a, 1.0 / b).astype(np.float32)


def encoded_rainrate(dbz: np.ndarray) -> np.ndarray:
    """Rain rate (mm/h, float32) of reflectivity values in the radar encoding: Marshall-Palmer,
    and 0 mm/h at and below 0 dBZ, the encoding's floor (0 dBZ = 0.036 mm/h stands for no rain)."""
    d = np.asarray(dbz, dtype=np.float64)
    return np.where(d > 0, dbz_to_rainrate(d), 0.0).astype(np.float32)


SEVIR_META = DatasetMeta(
    name="sevir",
    unit="VIL code (0-255)",
    scale=255.0,
    thresholds=SEVIR_THRESHOLDS,
    timestep_min=5.0,
    pixel_km=3.0,  # 384 px at 1 km resized to 128 px
    physical_unit="kg m-2",
    physical_name="atmosphere_mass_content_of_cloud_liquid_water",
    transform="VIL code = 255 x; kg m-2 by the SEVIR piecewise decoding",
    to_physical_fn=vil_code_to_kgm2,
)

SYNTHETIC_META = DatasetMeta(
    name="synthetic",
    unit="VIL code (0-255)",
    scale=255.0,
    thresholds=SEVIR_THRESHOLDS,
    timestep_min=5.0,
    pixel_km=3.0,
    physical_unit="kg m-2",
    physical_name="atmosphere_mass_content_of_cloud_liquid_water",
    transform="synthetic VIL code = 255 x; kg m-2 by the SEVIR piecewise decoding",
    to_physical_fn=vil_code_to_kgm2,
)

CIKM_META = DatasetMeta(
    name="cikm",
    unit="dBZ",
    scale=90.0,
    thresholds=(20.0, 30.0, 35.0, 40.0),
    timestep_min=6.0,
    pixel_km=1.0,
    physical_unit="dBZ",
    physical_name="equivalent_reflectivity_factor",
    transform="dBZ = 90 x (x = uint8 / 255)",
)

SHANGHAI_META = DatasetMeta(
    name="shanghai",
    unit="dBZ",
    scale=90.0,
    thresholds=(20.0, 30.0, 35.0, 40.0),
    timestep_min=6.0,
    pixel_km=4.0,  # 501 km domain resized from 501 px to 128 px
    physical_unit="dBZ",
    physical_name="equivalent_reflectivity_factor",
    transform="dBZ = 90 x (x = uint8 / 255)",
)

METEONET_META = DatasetMeta(
    name="meteonet",
    unit="dBZ",
    scale=90.0,
    thresholds=(12.0, 18.0, 24.0, 32.0),
    timestep_min=5.0,
    pixel_km=2.0,
    physical_unit="dBZ",
    physical_name="equivalent_reflectivity_factor",
    transform="dBZ = 90 x (x = uint8 / 90); 255 = invalid -> 0",
)

RADAR_DBZ_META = DatasetMeta(
    name="radar",
    unit="dBZ",
    scale=90.0,
    thresholds=(20.0, 30.0, 35.0, 40.0),
    timestep_min=5.0,
    pixel_km=1.0,
    physical_unit="dBZ",
    physical_name="equivalent_reflectivity_factor",
    transform="dBZ = 90 x; rain rates converted by Marshall-Palmer Z = 200 R^1.6",
)

#: Rain rate in mm/h, linear: ``R = 200 x`` (radar archives evaluated in rain rate,
#: ``RadarArchive(units="mm/h")``); values above 200 mm/h are clipped.
RADAR_RATE_META = DatasetMeta(
    name="radar_rate",
    unit="mm/h",
    scale=200.0,
    thresholds=(0.5, 1.0, 5.0, 10.0),
    timestep_min=5.0,
    pixel_km=1.0,
    physical_unit="mm/h",
    physical_name="rainfall_rate",
    transform="R = 200 x mm/h; from reflectivity by Marshall-Palmer Z = 200 R^1.6 (0 mm/h at and below 0 dBZ)",
)

IMAGES_META = DatasetMeta(
    name="images",
    unit="VIL code (0-255)",
    scale=255.0,
    thresholds=SEVIR_THRESHOLDS,
    timestep_min=5.0,
    pixel_km=3.0,
    physical_unit="kg m-2",
    physical_name="atmosphere_mass_content_of_cloud_liquid_water",
    transform="grey value = VIL code = 255 x; kg m-2 by the SEVIR piecewise decoding",
    to_physical_fn=vil_code_to_kgm2,
)

METAS: dict[str, DatasetMeta] = {
    m.name: m
    for m in (
        SEVIR_META, SYNTHETIC_META, CIKM_META, SHANGHAI_META, METEONET_META, RADAR_DBZ_META, RADAR_RATE_META, IMAGES_META
    )
}


def get_meta(name: str) -> DatasetMeta:
    """Metadata record of a dataset by name."""
    try:
        return METAS[name]
    except KeyError:
        raise ValueError(f"no metadata for dataset {name!r}; known: {', '.join(sorted(METAS))}") from None


def transcode(x: Any, src: DatasetMeta, dst: DatasetMeta) -> Any:
    """Re-encode ``[0, 1]`` values of ``src``'s encoding in ``dst``'s (numpy array or torch tensor).

    Same threshold-space unit: a change of scale. Between reflectivity (``dBZ``)
    and rain rate (``mm/h``): Marshall-Palmer ``Z = 200 R^1.6``, 0 mm/h at and below
    0 dBZ. Results are clipped to ``[0, 1]``.

    Raises
    ------
    ValueError
        For units without a conversion rule (e.g. VIL and dBZ).
    """
    import torch

    if src.unit == dst.unit and src.scale == dst.scale:
        return x
    is_t = isinstance(x, torch.Tensor)
    arr = x.detach().cpu().numpy() if is_t else np.asarray(x)
    v = np.clip(arr.astype(np.float64), 0.0, 1.0) * src.scale
    if src.unit == dst.unit:
        out = v
    elif (src.unit, dst.unit) == ("dBZ", "mm/h"):
        out = encoded_rainrate(v).astype(np.float64)
    elif (src.unit, dst.unit) == ("mm/h", "dBZ"):
        out = rainrate_to_dbz(v).astype(np.float64)  # 0 mm/h (and anything below 0 dBZ) -> 0 dBZ
    else:
        raise ValueError(f"no conversion from {src.unit} ({src.name}) to {dst.unit} ({dst.name})")
    res = np.clip(out / dst.scale, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(res).to(device=x.device) if is_t else res


#: Relative tolerance of :func:`exceeds` (float32 round-off of a value read exactly at a threshold).
THRESHOLD_RTOL = 4e-6


def exceeds(x: np.ndarray, code: float, meta: DatasetMeta) -> np.ndarray:
    """``x * scale >= code`` for ``[0, 1]`` values ``x``, up to float32 round-off.

    A value read from a file exactly at a threshold (MeteoSwiss rain rates are
    classes such as 1.0 mm/h) passes through float32 dBZ / 90 and back; values
    within ``THRESHOLD_RTOL`` (relative) below ``code`` count as reaching it.
    """
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * meta.scale >= float(code) * (1.0 - THRESHOLD_RTOL)
