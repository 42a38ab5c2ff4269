"""The model of a nowcast: a baseline by name or a checkpoint (:func:`make_nowcaster`).

Motion, backbone and residual sampling run inside the returned
:class:`~diffcast.inference.Nowcaster`; this module only picks it and its grid
(the radar input's own grid when a fully convolutional model can run there).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..data.transforms import get_meta
from .readers.base import RawInput

log = logging.getLogger(__name__)


def make_nowcaster(
    spec: str,
    raw: RawInput | None = None,
    *,
    t_in: int | None = None,
    t_out: int | None = None,
    size: tuple[int, int] | None = None,
    data_meta: str | None = None,
) -> Any:
    """A :class:`~diffcast.inference.Nowcaster` for a baseline name or a checkpoint path.

    Baselines take their grid from ``size`` (default: the input's own grid),
    ``t_in``/``t_out`` (default 5 and 20), and their metadata from the input
    (radar and SEVIR files), else ``data_meta`` (default ``"sevir"``), with the input's time
    step when the files give it. For checkpoints these are fixed by the model;
    asking for other values is an error.
    """
    from ..inference import BASELINES, Nowcaster

    if spec in BASELINES:
        if raw is not None and raw.meta is not None:
            meta = raw.meta
            if data_meta is not None and data_meta != meta.name:
                log.warning("%s input declares its own units (%s); --data-meta %s ignored", raw.kind, meta.name, data_meta)
        else:
            meta = get_meta(data_meta or "sevir")
        if raw is not None and raw.timestep_min is not None:
            meta = dataclasses.replace(meta, timestep_min=float(raw.timestep_min))
        if size is None:
            size = tuple(raw.frames.shape[-2:]) if raw is not None else (128, 128)
        return Nowcaster.from_baseline(
            spec, t_in=t_in or 5, t_out=t_out or 20, channels=1, height=int(size[0]), width=int(size[1]), meta=meta
        )
    nc = Nowcaster.from_checkpoint(spec)
    nc = _native_grid(nc, spec, raw) if size is None else nc
    for key, given, have in (("t_in", t_in, nc.t_in), ("t_out", t_out, nc.t_out)):
        if given is not None and given != have:
            raise ValueError(f"{key}={given} was asked for but the checkpoint {spec} was trained with {key}={have}")
    if size is not None and tuple(size) != (nc.height, nc.width):
        raise ValueError(
            f"--size {size[0]} {size[1]} was asked for but the checkpoint works on {nc.height}x{nc.width}; "
            "inputs are resized to the model grid automatically"
        )
    if data_meta is not None and data_meta != nc.meta.name:
        raise ValueError(f"the checkpoint was trained on {nc.meta.name} data; --data-meta {data_meta} does not apply")
    if nc.channels != 1:
        raise ValueError(f"nowcast files hold one channel; the checkpoint has {nc.channels}")
    return nc


def _native_grid(nc: Any, spec: str, raw: RawInput | None) -> Any:
    """``nc`` rebuilt for the radar input's own grid (zero-padded) when it can run there.

    A fully convolutional model (DiffCast over a parameter-free backbone) trained at
    the input's pixel size forecasts the whole domain at native resolution instead of
    an area average on its training grid; the forecast is cropped back in
    :func:`run_nowcast` (``nc.input_grid``). Other models are returned unchanged.
    """
    from ..inference import PIXEL_TOL, GridMismatchError, Nowcaster, padded_grid

    if raw is None or raw.kind not in ("radar", "zarr") or raw.pixel_km is None:
        return nc
    h, w = (int(v) for v in raw.frames.shape[-2:])
    if (h, w) == (nc.height, nc.width) or abs(float(raw.pixel_km) / float(nc.meta.pixel_km) - 1.0) > PIXEL_TOL:
        return nc
    hp, wp = padded_grid(h, w)
    try:
        native = Nowcaster.from_checkpoint(spec, grid=(hp, wp))
    except GridMismatchError as exc:
        log.info("%s: forecasting on its own %dx%d grid (%s)", nc.name, nc.height, nc.width, exc)
        return nc
    native.set_domain(h, w)
    log.info("%s runs on the native %dx%d radar grid (padded to %dx%d)", nc.name, h, w, hp, wp)
    return native
