"""Step 3 of a nowcast: predict and write the files (:func:`run_nowcast`).

:func:`run_nowcast` predicts and writes ``forecast.nc`` (CF-1.8),
``forecast.gif``, ``panel.png``, ``forecast.html`` and ``run.json`` into a
temporary folder that is renamed to the output folder at the end
(:func:`diffcast.writers.staging.staged_output`), so a failure leaves no partial
output. Outputs are in the input's quantity (rain rate in mm/h for rain-rate
radar files, dBZ for reflectivity; ``units`` chooses) and NaN where the last
input frame has no data (outside radar coverage).

:func:`nowcast_to_files` is the whole road from files to files (the Python
``diffcast nowcast``); :func:`nowcast_raw` its second half, for callers that keep
one model for many inputs (``diffcast nowcast --watch``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..writers.staging import staged_output
from .inputs import read_input
from .model import make_nowcaster
from .prepare import PreparedInput, prepare_input
from .readers.base import RawInput
from .units import OUTPUT_UNITS, output_meta, threshold_code

log = logging.getLogger(__name__)

#: ``--format`` -> the forecast file it writes.
OUTPUT_FORMATS = {"netcdf": "forecast.nc", "zarr": "forecast.zarr"}


def software_versions() -> dict[str, str]:
    """Versions of the packages that shape a forecast."""
    from .. import __version__

    out = {"diffcast": __version__, "python": platform.python_version()}
    for mod in ("torch", "numpy", "xarray", "netCDF4", "pysteps", "h5py", "matplotlib", "PIL"):
        with contextlib.suppress(Exception):
            out[mod] = str(__import__(mod).__version__)
    return out


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_nowcast(
    nowcaster: Any,
    prepared: PreparedInput,
    out_dir: str | os.PathLike[str],
    *,
    members: int = 1,
    seed: int | None = None,
    prob_threshold: float | Sequence[float] | None = None,
    progress: bool = True,
    sample_kwargs: dict[str, Any] | None = None,
    spec: str | None = None,
    command: Sequence[str] | None = None,
    units: str = "auto",
    html: bool = True,
    output_format: str = "netcdf",
) -> dict[str, Any]:
    """Forecast and write ``forecast.nc``, ``forecast.gif``, ``panel.png``, ``forecast.html`` and ``run.json``.

    Outputs are in the input's quantity by default (``units="auto"``): rain rate
    (mm/h) for rain-rate and accumulation radar files, reflectivity (dBZ) for
    reflectivity files, the model's physical units for other inputs. Pixels where
    the last input frame has no data (outside radar coverage) are NaN in
    ``forecast.nc`` (with a ``coverage`` variable) and grey in the pictures.

    Parameters
    ----------
    nowcaster : Nowcaster
        The model.
    prepared : PreparedInput
        Input fitted to the model (:func:`prepare_input`).
    out_dir : path-like
        Output folder (created; existing files of the same names are replaced).
    members : int
        Ensemble size for probabilistic models (deterministic models give one).
    seed : int, optional
        Sampling seed (recorded; drawn at random when omitted).
    prob_threshold : float or sequence of float, optional
        Thresholds of the probability panels, in the output units (mm/h for rain
        rate, else threshold space, e.g. dBZ or VIL code); all are added to the
        thresholds of ``forecast.nc`` and get a panel in ``forecast.html``; the
        first is the one of ``forecast.gif`` and ``panel.png``. Default: 1 mm/h
        for rain rate, else the middle paper threshold.
    progress : bool
        Show a progress bar while sampling.
    sample_kwargs : dict, optional
        Diffusion sampling options; its key ``prob_matching`` (``"cdf"``, the
        default, or ``None``) is not a sampler option: ``"cdf"`` gives each member of
        a diffusion ensemble, lead by lead, the distribution of the last observed
        frame over the covered pixels (:func:`diffcast.models.backbones.pysteps_methods.match_cdf`);
        its key ``mask_method`` (``"incremental"``, the default, or ``None``) applies
        STEPS' incremental precipitation mask before the matching (radar models in dBZ:
        :class:`diffcast.models.backbones.pysteps_methods.IncrementalMask`).
        ``sampler``, ``steps``, ... passed to the diffusion sampler.
    spec : str, optional
        How the model was named (checkpoint path or baseline), for ``run.json``.
    command : sequence of str, optional
        Command line, for ``run.json``.
    units : {"auto", "mm/h", "dBZ"}
        Quantity of the outputs (:func:`output_meta`).
    html : bool
        Write ``forecast.html`` (:func:`diffcast.viz.forecast_page.write_forecast_page`).
    output_format : {"netcdf", "zarr"}
        ``forecast.nc`` (CF-1.8 NetCDF) or ``forecast.zarr`` (the same dataset as a
        Zarr store, :func:`diffcast.writers.zarr.write_forecast_zarr`).

    Returns
    -------
    dict
        The content of ``run.json``.
    """
    import torch

    from ..viz.animate import (
        default_prob_threshold,
        display_unit,
        is_rain_rate,
        save_forecast_gif,
        save_forecast_panel,
        threshold_value,
    )
    from ..writers.netcdf import write_forecast_netcdf
    from ..writers.zarr import write_forecast_zarr

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}; choose one of: {', '.join(OUTPUT_FORMATS)}")
    forecast_file, write_forecast = OUTPUT_FORMATS[output_format], (
        write_forecast_netcdf if output_format == "netcdf" else write_forecast_zarr
    )
    if members < 1:
        raise ValueError(f"--members must be >= 1, got {members}")
    meta = output_meta(prepared.meta, prepared.quantity, units)
    unit = display_unit(meta)
    if prob_threshold is None:
        thr_codes = [default_prob_threshold(meta)]
        thr_values = [threshold_value(thr_codes[0], meta)]
    else:
        thr_values = [float(prob_threshold)] if np.ndim(prob_threshold) == 0 else [float(v) for v in prob_threshold]
        if not thr_values:
            raise ValueError("--prob-threshold needs at least one value")
        thr_codes = [threshold_code(v, meta) for v in thr_values]
    for thr, thr_code in zip(thr_values, thr_codes):
        if not 0.0 < thr_code <= meta.scale:
            if is_rain_rate(meta):
                lo, hi = threshold_value(1e-6 * meta.scale, meta), threshold_value(meta.scale, meta)
                raise ValueError(
                    f"--prob-threshold {thr:g} mm/h is outside the rain rates the model's encoding holds "
                    f"({lo:.3g} to {hi:.3g} mm/h, 0 to {meta.scale:g} dBZ)"
                )
            raise ValueError(f"--prob-threshold {thr:g} is outside (0, {meta.scale:g}] ({meta.unit})")
    thr, thr_code = thr_values[0], thr_codes[0]  # the gif's and panel's
    coverage = prepared.coverage
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    if not nowcaster.is_probabilistic and members > 1:
        log.warning("%s is deterministic: writing one member instead of %d", nowcaster.name, members)
    start = time.perf_counter()
    x = torch.from_numpy(prepared.x_in)[None, :, None]
    h, w = prepared.x_in.shape[-2:]
    if (nowcaster.height, nowcaster.width) != (h, w) and nowcaster.height >= h and nowcaster.width >= w:
        # native-grid nowcast (make_nowcaster): zero padding = no rain outside the domain, cropped back below
        x = torch.nn.functional.pad(x, (0, nowcaster.width - w, 0, nowcaster.height - h))
    kwargs = dict(sample_kwargs or {}) if nowcaster.is_probabilistic else {}
    # probability matching is not a sampler option: "cdf" (default) or None, diffusion ensembles only
    prob_matching = kwargs.pop("prob_matching", "cdf")
    mask_method = kwargs.pop("mask_method", "incremental")
    from ..models.backbones.pysteps_methods import (
        check_mask_method,
        check_prob_matching,
        postprocess_members,
    )

    check_prob_matching(prob_matching)
    check_mask_method(mask_method)
    from ..memory import schedule_members

    # before any work: members in turns under the cap, or a clear error when even one at a time does not fit
    plan = schedule_members(nowcaster.model, members, kwargs, n_thresholds=len(meta.thresholds) + len(thr_codes))
    with staged_output(out_dir) as tmp:
        t_pred = time.perf_counter()
        result = nowcaster.predict(x, members=members, seed=seed, progress=progress, **kwargs)
        t_pred = time.perf_counter() - t_pred
        fc = result.forecast[:, 0, :, 0, :h, :w].float().cpu().numpy()  # (M, T_out, H, W)
        # the backbone's mean and the residual are not used below, and each is as large as the forecast:
        # let them go now rather than hold three forecast-sized arrays through the writing
        del result
        if not np.isfinite(fc).all():
            raise ValueError(f"{nowcaster.name} produced non-finite values; the model file may be corrupt")
        np.clip(fc, 0.0, 1.0, out=fc)
        from ..inference import inflow_of, is_diffusion_model

        # no rain invented at the inflow edges: NaN where the motion brings it from outside the domain/coverage
        unknown = inflow_of(nowcaster.model, x[0, :, 0].cpu().numpy(),
                            np.ones((h, w), bool) if coverage is None else coverage, fc.shape[1])
        if unknown is not None:
            fc[:, unknown] = np.nan

        ensemble = is_diffusion_model(nowcaster.model) and fc.shape[0] > 1
        matched = prob_matching == "cdf" and ensemble
        # the incremental mask of rain: radar models (values dBZ / scale), not e.g. VIL
        masked = mask_method == "incremental" and ensemble and nowcaster.meta.unit == "dBZ"
        if matched or masked:
            # ranks are kept, so matching the encoded values equals matching rain rates; the mask is applied to
            # the rain rate through the encoding (IncrementalMask.log_scale)
            ref = prepared.x_in[-1].astype(np.float64)
            if coverage is not None:
                ref = np.where(coverage, ref, np.nan)
            fc = postprocess_members(fc, ref, "cdf" if matched else None, "incremental" if masked else None,
                                     nowcaster.meta.timestep_min, nowcaster.meta.pixel_km,
                                     log_scale=float(nowcaster.meta.scale))  # float32, field by field
        m_out, t_out = fc.shape[:2]
        title = f"{nowcaster.name}: {m_out} member(s), analysis {_iso(prepared.analysis_time)}"
        history = "diffcast nowcast" + ("" if command is None else " " + " ".join(command))
        note = "times are relative to a nominal analysis time (input had no timestamps)" if prepared.time_nominal else None
        thresholds = tuple(sorted(set(meta.thresholds) | set(thr_codes)))
        extra = {"model": nowcaster.name, "model_spec": spec or nowcaster.name, "seed": int(seed),
                 "input_kind": prepared.kind, **prepared.input_attrs}
        if not prepared.time_nominal:
            extra["input_frame_times"] = " ".join(_iso(t) for t in prepared.times)
        write_forecast(
            tmp / forecast_file,
            fc,
            meta,
            prepared.analysis_time,
            x_in=prepared.x_in,
            thresholds=thresholds,
            title=f"DiffCast nowcast by {nowcaster.name}",
            source=f"diffcast {nowcaster.name} ({'probabilistic' if nowcaster.is_probabilistic else 'deterministic'})",
            history=history,
            extra_attrs=extra,
            time_note=note,
            grid=prepared.grid,
            coverage=coverage,
            latlon=prepared.latlon,
        )
        save_forecast_gif(
            tmp / "forecast.gif", prepared.x_in, fc, meta, prob_threshold=thr_code, y_true=prepared.y_true,
            title=nowcaster.name, coverage=coverage,
        )
        save_forecast_panel(
            tmp / "panel.png", prepared.x_in, fc, meta, prob_threshold=thr_code, y_true=prepared.y_true, title=title,
            coverage=coverage,
        )
        outputs = [forecast_file, "forecast.gif", "panel.png", "run.json"]
        if html:
            from ..viz.forecast_page import write_forecast_page

            write_forecast_page(
                tmp / "forecast.html", prepared.x_in, fc, meta, thresholds=sorted(set(thr_codes)),
                analysis_time=prepared.analysis_time, step_min=meta.timestep_min, coverage=coverage,
                grid=prepared.grid, y_true=prepared.y_true, input_mask=prepared.mask, title=title,
                notes=[note] if note else (),
            )
            outputs.insert(3, "forecast.html")
        step = meta.timestep_min
        info = {
            "model": {
                "name": nowcaster.name,
                "spec": spec or nowcaster.name,
                "probabilistic": bool(nowcaster.is_probabilistic),
                "t_in": nowcaster.t_in,
                "t_out": nowcaster.t_out,
                "grid": [nowcaster.height, nowcaster.width],
                "config": nowcaster.config.get("model"),
            },
            "prob_matching": "cdf" if matched else None,
            "mask_method": "incremental" if masked else None,
            "memory": None if plan is None else plan.describe(),
            "members_requested": int(members),
            "members": int(m_out),
            "seed": int(seed),
            "sample_kwargs": {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in kwargs.items()},
            "prob_threshold": thr,
            "prob_thresholds": thr_values,
            "prob_threshold_unit": unit,
            "output": {
                "units": meta.physical_unit,
                "standard_name": meta.physical_name,
                "thresholds": [threshold_value(c, meta) for c in thresholds],
                "threshold_unit": unit,
                "transform": meta.transform,
                "coverage_fraction": None if coverage is None else round(float(coverage.mean()), 6),
            },
            "input": {
                "kind": prepared.kind,
                "quantity": prepared.quantity,
                "files": prepared.sources,
                **({"attrs": prepared.input_attrs} if prepared.input_attrs else {}),
                "raw_shape": list(prepared.raw_shape),
                "x_in_shape": list(prepared.x_in.shape),
                "times": [_iso(t) for t in prepared.times],
                "times_nominal": prepared.time_nominal,
                "notes": prepared.notes,
                "georeferencing": prepared.grid.describe() if prepared.grid is not None else None,
            },
            "analysis_time": _iso(prepared.analysis_time),
            "valid_times": [_iso(prepared.analysis_time + dt.timedelta(minutes=step * (k + 1))) for k in range(t_out)],
            "forecast_shape": list(fc.shape),
            "meta": prepared.meta.as_dict(),
            "outputs": outputs,
            "software": software_versions(),
            "command": list(command) if command is not None else None,
            "elapsed_s": {"predict": round(t_pred, 3), "total": None},
        }
        info["elapsed_s"]["total"] = round(time.perf_counter() - start, 3)
        from ..utils.io import atomic_write_text

        atomic_write_text(tmp / "run.json", json.dumps(info, indent=2, default=str) + "\n")
    log.info("nowcast written to %s (%d member(s), %d lead(s), %.1f s)", out_dir, m_out, t_out, info["elapsed_s"]["total"])
    return info


def nowcast_to_files(
    spec: str,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    members: int = 1,
    seed: int | None = None,
    prob_threshold: float | Sequence[float] | None = None,
    input_kind: str | None = None,
    h5_key: str | None = None,
    sample_index: int | None = None,
    radar_format: str | None = None,
    radar_pattern: str | None = None,
    layout: str = "auto",
    start_frame: int | None = None,
    crop: str = "none",
    analysis_time: str | dt.datetime | None = None,
    size: tuple[int, int] | None = None,
    t_in: int | None = None,
    t_out: int | None = None,
    data_meta: str | None = None,
    sample_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    command: Sequence[str] | None = None,
    units: str = "auto",
    html: bool = True,
    standard_name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    output_format: str = "netcdf",
) -> dict[str, Any]:
    """Read ``inputs``, forecast with ``spec`` and write the nowcast files: the Python ``diffcast nowcast``.

    >>> info = nowcast_to_files("extrapolation", ["sevir_demo/demo_0"], "out")  # doctest: +SKIP
    >>> info = nowcast_to_files("runs/diffcast", ["frames.npy"], "out", members=8, seed=1)  # doctest: +SKIP

    Parameters are those of :func:`read_input`, :func:`make_nowcaster`,
    :func:`prepare_input` and :func:`run_nowcast`. Everything is checked before
    anything is written; returns the content of ``run.json``.
    """
    if units not in OUTPUT_UNITS:
        raise ValueError(f"unknown units {units!r}; choose one of: {', '.join(OUTPUT_UNITS)}")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}; choose one of: {', '.join(OUTPUT_FORMATS)}")
    raw = read_input(
        inputs, input_kind, h5_key=h5_key, sample_index=sample_index, radar_format=radar_format, layout=layout,
        radar_pattern=radar_pattern,
        start_frame=start_frame, standard_name=standard_name, storage_options=storage_options,
    )
    nc = make_nowcaster(spec, raw, t_in=t_in, t_out=t_out, size=size, data_meta=data_meta)
    return nowcast_raw(
        nc, raw, out_dir, crop=crop, analysis_time=analysis_time, start_frame=start_frame, members=members, seed=seed,
        prob_threshold=prob_threshold, progress=progress, sample_kwargs=sample_kwargs, spec=str(spec),
        command=command, units=units, html=html, output_format=output_format,
    )


def nowcast_raw(
    nowcaster: Any,
    raw: RawInput,
    out_dir: str | os.PathLike[str],
    *,
    crop: str = "none",
    analysis_time: str | dt.datetime | None = None,
    start_frame: int | None = None,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """Fit ``raw`` to ``nowcaster`` (:func:`prepare_input`) and forecast into ``out_dir`` (:func:`run_nowcast`).

    The second half of :func:`nowcast_to_files`, for callers that keep one model for
    many inputs (``diffcast nowcast --watch``). ``run_kwargs`` are those of
    :func:`run_nowcast`; returns the content of ``run.json``.
    """
    nc = nowcaster
    prepared = prepare_input(
        raw, t_in=nc.t_in, size=getattr(nc, "input_grid", (nc.height, nc.width)), meta=nc.meta, crop=crop,
        analysis_time=analysis_time,
        model_name=nc.name, start_frame=start_frame, t_out=nc.t_out,
    )
    return run_nowcast(nc, prepared, out_dir, **run_kwargs)
