"""Step 2 of a nowcast: fit the frames to a model (:func:`prepare_input`).

The last ``t_in`` frames (more are dropped, and this is logged; ``start_frame``
picks another window and makes the frames after it the observed future), the
model's time step (frames are subsampled when the model step is a multiple of
the input step), the model's units (:func:`~diffcast.pipeline.units.convert_units`,
only between metadata with the same threshold-space unit) and grid
(:mod:`diffcast.pipeline.grid`). Only the frames used must be gap-free. What
cannot be fitted is a :class:`ValueError` naming the mismatch and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.contract import DatasetMeta
from ..geo import ProjectedGrid
from .grid import fit_grid_masked, fit_projected_grid
from .readers.base import RawInput
from .units import convert_units

log = logging.getLogger(__name__)


#: Analysis time used when the input carries no timestamps (stated in the outputs).
NOMINAL_ANALYSIS_TIME = dt.datetime(2000, 1, 1, 0, 0, 0)


@dataclass
class PreparedInput:
    """Frames fitted to a model's grid, units and time step.

    Attributes
    ----------
    x_in : ndarray
        ``(T_in, H, W)`` float32 in ``[0, 1]`` model space.
    meta : DatasetMeta
        The model's metadata with ``timestep_min`` and ``pixel_km`` of these frames.
    analysis_time : datetime
        Valid time of the last frame (nominal when :attr:`time_nominal`).
    times : list of datetime
        Valid times of the ``T_in`` frames.
    time_nominal : bool
        True when the input carried no timestamps.
    kind : str
        Input kind (see :data:`INPUT_KINDS`).
    sources : list of str
        Files of the frames used (all files read for array inputs).
    y_true : ndarray or None
        ``(T, H, W)`` observed future on the model grid, when known.
    raw_shape : tuple of int
        ``(T, H, W)`` of the frames as read.
    notes : list of str
        What was done to fit the frames (cropping, resizing, frames dropped).
    grid : ProjectedGrid or None
        Map projection of the model grid (the input's, after cropping and resizing).
    mask : ndarray or None
        ``(T_in, H, W)`` bool on the model grid, True where a frame has no data (a
        resized pixel has data when at least half its area has); ``None``: all covered.
    quantity : str or None
        The input's quantity (:attr:`RawInput.quantity`).
    latlon : (ndarray, ndarray) or None
        The input's own ``(lat, lon)`` (:attr:`RawInput.latlon`) when the model grid
        is the input's grid (no crop, no resize); ``None`` otherwise.
    input_attrs : dict
        What the outputs record about the input (:attr:`RawInput.attrs`).
    """

    x_in: np.ndarray
    meta: DatasetMeta
    analysis_time: dt.datetime
    times: list[dt.datetime]
    time_nominal: bool
    kind: str
    sources: list[str]
    raw_shape: tuple[int, ...]
    y_true: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    grid: ProjectedGrid | None = None
    mask: np.ndarray | None = None
    quantity: str | None = None
    latlon: tuple[np.ndarray, np.ndarray] | None = None
    input_attrs: dict = field(default_factory=dict)

    @property
    def coverage(self) -> np.ndarray | None:
        """``(H, W)`` bool, True where the last input frame has data; ``None`` when the input has no mask."""
        return None if self.mask is None else ~np.asarray(self.mask[-1], dtype=bool)


def _parse_time(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"analysis time {value!r} is not an ISO date-time like 2024-05-01T12:00") from exc
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def prepare_input(
    raw: RawInput,
    *,
    t_in: int,
    size: tuple[int, int],
    meta: DatasetMeta,
    crop: str = "none",
    analysis_time: str | dt.datetime | None = None,
    model_name: str = "the model",
    start_frame: int | None = None,
    t_out: int | None = None,
) -> PreparedInput:
    """Fit raw frames to a model: frames, time step, units and grid.

    Parameters
    ----------
    raw : RawInput
        From :func:`read_input`.
    t_in : int
        Frames the model observes; the last ``t_in`` frames are used unless
        ``start_frame`` (or the input's :attr:`RawInput.start_frame`) says otherwise.
    size : (int, int)
        Model grid ``(H, W)``.
    meta : DatasetMeta
        The model's metadata (units, ``timestep_min``, ``pixel_km``).
    crop : str
        ``"none"`` or ``"center"`` (see :func:`fit_grid`).
    analysis_time : str or datetime, optional
        Valid time of the last frame for inputs without timestamps (ISO string).
    model_name : str
        Used in error messages.
    start_frame : int, optional
        Index (0-based, in the input's own frames) of the first input frame: the
        ``t_in`` frames from it (every ``k``-th when the model step is ``k`` input
        steps) are the input, and the frames after them (up to ``t_out``) the
        observed future (``y_true``). Default: ``raw.start_frame``, else the last frames.
    t_out : int, optional
        Forecast length; limits the observed future taken from the input frames.

    Raises
    ------
    ValueError
        On a mismatch the model cannot handle (too few frames, incompatible time
        step or units, grid without a resampling rule, a window outside the frames).
    """
    frames = raw.frames
    n_all = frames.shape[0]
    times = list(raw.times) if raw.times else None
    # One source file per frame (images, radar): keep the list aligned with the frames used.
    sources = list(raw.sources) if len(raw.sources) == n_all else None
    notes = list(raw.notes)
    step_model = float(meta.timestep_min)
    step_in = raw.timestep_min
    k = 1
    if step_in is not None and abs(step_in - step_model) > 1e-6:
        ratio = step_model / step_in
        k = int(round(ratio))
        if k < 1 or abs(ratio - k) > 1e-6:
            raise ValueError(
                f"input frames are {step_in:g} min apart but {model_name} expects {step_model:g} min "
                f"(meta.timestep_min of {meta.name}); frames can only be subsampled when the model step "
                "is a whole multiple of the input step"
            )
        notes.append(f"took every {k}th frame ({step_in:g} -> {step_model:g} min)")
        log.info("input step %g min, model step %g min: using every %dth frame", step_in, step_model, k)
    start = raw.start_frame if start_frame is None else int(start_frame)
    future: np.ndarray | None = None
    if start is None:
        idx = np.arange(n_all - 1, -1, -k)[::-1]
        n = idx.size
        if n < t_in:
            raise ValueError(
                f"{model_name} needs {t_in} input frames {step_model:g} min apart, got {n}"
                + (f" (after subsampling {n_all} frames)" if n != n_all else "")
            )
        if n > t_in:
            log.info("input has %d frames; using the last %d", n, t_in)
            notes.append(f"used the last {t_in} of {n} frames")
            idx = idx[-t_in:]
    else:
        last = start + k * (t_in - 1)
        if start < 0 or last >= n_all:
            latest = n_all - 1 - k * (t_in - 1)
            raise ValueError(
                f"--start-frame {start}: {model_name} needs {t_in} input frames {step_model:g} min apart"
                + (f" (every {k}th frame)" if k > 1 else "")
                + f" from frame {start}, but the input has frames 0..{n_all - 1}"
                + (f"; choose a start frame from 0 to {latest}" if latest >= 0 else "")
            )
        idx = start + k * np.arange(t_in)
        future = np.arange(last + k, n_all, k)[: t_out if t_out is not None else None]
        notes.append(
            f"used frames {start}..{last} of {n_all} as input"
            + (f" and {future.size} later frame(s) as observed future" if future.size else "")
        )
    all_times = times
    if all_times:
        # Only the frames used must be gap-free: a gap elsewhere in a long folder does not matter.
        all_sources = sources

        def name(i: int) -> str:
            return Path(all_sources[i]).name if all_sources else f"frame {i}"

        j = _spacing_break(all_times, idx, step_model)
        if j is not None:
            a, b = int(idx[j - 1]), int(idx[j])
            d = (all_times[b] - all_times[a]).total_seconds() / 60.0
            raise ValueError(
                f"gap in the radar time series: {d:g} min between {name(a)} and {name(b)} (expected "
                f"{step_model:g} min); sequences never span missing frames: choose a window without a gap "
                "with --start-frame, or leave out the files before the gap"
            )
        if future is not None and future.size:
            j = _spacing_break(all_times, np.concatenate([idx[-1:], future]), step_model)
            if j is not None:
                after = int(future[j - 2]) if j > 1 else int(idx[-1])
                notes.append(f"observed future stops at the gap after {name(after)} ({j - 1} frame(s))")
                future = future[: j - 1]
    frames = np.asarray(frames[idx], dtype=np.float32)
    nodata = None if raw.mask is None else np.asarray(raw.mask[idx], dtype=bool)
    times = [all_times[i] for i in idx] if all_times else None
    sources = [sources[i] for i in idx] if sources else None
    frames = convert_units(frames, raw.meta, meta, model_name)
    frames, nodata, factor, grid_notes = fit_grid_masked(frames, nodata, size, crop)
    notes.extend(grid_notes)
    if nodata is not None and nodata[-1].any():
        notes.append(f"{nodata[-1].mean():.1%} of the last input frame has no radar data (NaN in forecast.nc)")
    # The observed future: frames after the window, else the input's own (demo folders' targets/).
    y_src, y_nodata = None, None
    if future is not None and future.size:
        y_src = np.asarray(raw.frames[future], dtype=np.float32)
        y_nodata = None if raw.mask is None else np.asarray(raw.mask[future], dtype=bool)
    elif idx[-1] == n_all - 1:
        y_src = raw.y_true
    y_true = None
    if y_src is not None:
        with contextlib.suppress(ValueError):
            y_true = fit_grid_masked(convert_units(y_src, raw.meta, meta, model_name), y_nodata, size, crop)[0]
    grid = None
    if raw.grid is not None:
        if tuple(raw.grid.shape) == tuple(raw.frames.shape[-2:]):
            grid = fit_projected_grid(raw.grid, size, crop)
        else:  # pragma: no cover - readers build the grid from the frames they return
            notes.append(f"georeferencing dropped: grid {raw.grid.shape} does not match frames {raw.frames.shape[-2:]}")
    pixel_in = raw.pixel_km if raw.pixel_km is not None else meta.pixel_km
    out_meta = dataclasses.replace(meta, timestep_min=step_model, pixel_km=float(pixel_in) * factor)
    given = _parse_time(analysis_time)
    if times:
        t0 = times[-1]
        t0 = t0.astimezone(dt.timezone.utc).replace(tzinfo=None) if t0.tzinfo else t0
        if given is not None and given != t0:
            notes.append(f"analysis time from the files ({t0.isoformat()}) used instead of the one given")
        nominal = False
    else:
        t0 = given or NOMINAL_ANALYSIS_TIME
        nominal = given is None
        times = [t0 - dt.timedelta(minutes=step_model * (t_in - 1 - i)) for i in range(t_in)]
        if nominal:
            notes.append(f"input has no timestamps; times are relative to a nominal analysis time {t0.isoformat()}")
    return PreparedInput(
        x_in=np.ascontiguousarray(frames, dtype=np.float32),
        meta=out_meta,
        analysis_time=t0,
        times=[t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t for t in times],
        time_nominal=nominal,
        kind=raw.kind,
        sources=sources if sources is not None else list(raw.sources),
        raw_shape=tuple(raw.frames.shape),
        y_true=y_true,
        notes=notes,
        grid=grid,
        mask=nodata,
        quantity=raw.quantity,
        latlon=raw.latlon if raw.latlon is not None and grid is not None and grid == raw.grid else None,
        input_attrs=dict(raw.attrs),
    )


def _spacing_break(times: Sequence[dt.datetime], indices: Sequence[int], step_min: float) -> int | None:
    """Position ``j`` of the first pair ``indices[j-1], indices[j]`` whose times are not ``step_min`` apart."""
    for j in range(1, len(indices)):
        d = (times[int(indices[j])] - times[int(indices[j - 1])]).total_seconds() / 60.0
        if abs(d - step_min) > 1e-6:
            return j
    return None
