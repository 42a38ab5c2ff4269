"""Units: input values into the model's encoding, and the quantity outputs are written in.

:func:`convert_units` re-scales input frames between metadata with the same
threshold-space unit; :func:`output_meta` (with :func:`rain_rate_meta`) picks the
physical quantity of the outputs (rain rate in mm/h or reflectivity in dBZ for
radar input, the model's own units otherwise); :func:`threshold_code` maps a
threshold given in output units into threshold space.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..data.contract import DatasetMeta

#: Units of the outputs (``units`` of :func:`run_nowcast`, ``--units``): ``auto`` = the input's quantity.
OUTPUT_UNITS = ("auto", "mm/h", "dBZ")


#: Default exceedance thresholds of rain-rate outputs (mm/h); the probability pictures use the second.
RAINRATE_THRESHOLDS = (0.5, 1.0, 5.0, 10.0)


def convert_units(frames: np.ndarray, src: DatasetMeta | None, dst: DatasetMeta, model: str = "the model") -> np.ndarray:
    """Map ``[0, 1]`` values encoded by ``src`` metadata to ``dst``'s encoding.

    Values pass through the threshold space (``x * scale``); this is defined only
    when both metadata records use the same threshold-space unit (e.g. dBZ to
    dBZ with different scales). ``src=None`` means the values already use
    ``dst``'s encoding.

    Raises
    ------
    ValueError
        If the units differ (e.g. reflectivity input for a VIL model).
    """
    if src is None or (src.unit == dst.unit and src.scale == dst.scale):
        return frames
    if src.unit != dst.unit:
        raise ValueError(
            f"{model} works in {dst.unit} ({dst.name} data) but the input is {src.unit} ({src.name}); "
            "there is no conversion rule between them: use a model trained on this quantity or a baseline"
        )
    return np.clip(frames * (src.scale / dst.scale), 0.0, 1.0).astype(np.float32)


def rain_rate_meta(meta: DatasetMeta) -> DatasetMeta:
    """``meta`` (reflectivity, ``x * scale`` in dBZ) with rain rate in mm/h as its physical quantity.

    The model-space encoding is unchanged; ``to_physical`` gives
    ``R = (10^(dBZ/10) / 200)^(1/1.6)`` (Marshall-Palmer ``Z = 200 R^1.6``, as
    rain-rate files are read), 0 mm/h at the encoding's floor (0 dBZ = 0.036 mm/h),
    and the default thresholds are :data:`RAINRATE_THRESHOLDS` (stored as dBZ).

    Raises
    ------
    ValueError
        If ``meta``'s threshold space is not dBZ.
    """
    from ..data.transforms import encoded_rainrate, rainrate_to_dbz

    if meta.unit != "dBZ":
        raise ValueError(f"rain rate is derived from reflectivity (dBZ); {meta.name} data are in {meta.unit}")
    if meta.physical_unit == "mm/h":
        return meta
    return dataclasses.replace(
        meta,
        physical_unit="mm/h",
        physical_name="rainfall_rate",
        thresholds=tuple(float(rainrate_to_dbz(np.array([r], np.float64))[0]) for r in RAINRATE_THRESHOLDS),
        transform=f"{meta.transform}; rain rate R = (10^(dBZ/10) / 200)^(1/1.6) mm/h (Marshall-Palmer Z = 200 R^1.6), "
        "0 mm/h at and below 0 dBZ (0.036 mm/h)",
        to_physical_fn=encoded_rainrate,
    )


def output_meta(meta: DatasetMeta, quantity: str | None, units: str = "auto") -> DatasetMeta:
    """The metadata outputs are written with: ``meta`` in the quantity ``units`` asks for.

    Parameters
    ----------
    meta : DatasetMeta
        The model's metadata (its encoding of the frames).
    quantity : str or None
        The input's quantity (``"mm/h"``, ``"dBZ"``; ``None`` when the input does not say).
    units : {"auto", "mm/h", "dBZ"}
        ``"auto"``: the input's quantity (``meta``'s own physical unit when it has
        none); ``"mm/h"``/``"dBZ"``: rain rate or reflectivity (reflectivity models only).

    Raises
    ------
    ValueError
        Unknown ``units``, or mm/h / dBZ asked for data that are not reflectivity.
    """
    if units not in OUTPUT_UNITS:
        raise ValueError(f"unknown units {units!r}; choose one of: {', '.join(OUTPUT_UNITS)}")
    want = quantity if units == "auto" else units
    if want is None or (units == "auto" and meta.unit != "dBZ"):
        return meta
    if meta.unit != "dBZ":
        raise ValueError(
            f"--units {units} applies to reflectivity and rain-rate data; the model's {meta.name} data are "
            f"{meta.unit}: use --units auto"
        )
    if want == "mm/h":
        return rain_rate_meta(meta)
    if meta.physical_unit == "mm/h":  # back to reflectivity
        from ..data.transforms import get_meta

        base = get_meta("radar")
        return dataclasses.replace(
            meta, physical_unit=base.physical_unit, physical_name=base.physical_name, thresholds=base.thresholds,
            to_physical_fn=None,
        )
    return meta


def threshold_code(value: float, meta: DatasetMeta) -> float:
    """A threshold in output units (mm/h for rain rate, else threshold space) in threshold space."""
    from ..viz.animate import is_rain_rate

    if not is_rain_rate(meta):
        return float(value)
    from ..data.transforms import rainrate_to_dbz

    return float(rainrate_to_dbz(np.array([value], np.float64))[0]) if value > 0 else 0.0
