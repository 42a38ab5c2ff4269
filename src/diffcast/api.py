"""``diffcast.nowcast``: the call a pysteps user expects (arrays in mm/h in, arrays out).

>>> import diffcast
>>> fc = diffcast.nowcast(precip, timestep=5, n_leadtimes=12, n_ens_members=8, seed=0, model="steps")
>>> fc.shape                                  # (8, 12, y, x), mm/h, NaN outside coverage

An ``xarray.DataArray`` ``(time, y, x)`` in gives a labelled ``DataArray``
``(ens_number, lead_time, y, x)`` out (:mod:`diffcast.api_xarray`): units converted
by its ``standard_name``/``units``, the time step from its ``time``, the grid,
``lat``/``lon`` and CRS carried over.

Baselines (``extrapolation``, ``sprog``, ``steps``, ``persistence``) run in rain rate
on the native grid with pysteps' documented settings
(:mod:`diffcast.models.backbones.pysteps_methods`), so their numbers equal pysteps
called directly with the same settings and seed. Trained models (a model file,
checkpoint folder or run folder) see the rain rates through their own encoding
(reflectivity models: ``dBZ = 10 log10(200 R^1.6)`` scaled to ``[0, 1]``) and
their forecasts are converted back to mm/h.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .api_xarray import is_xarray

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """``diffcast.api.match_cdf``, imported on first use (it lives beside the pysteps methods)."""
    if name == "match_cdf":
        from .models.backbones.pysteps_methods import match_cdf

        return match_cdf
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Model used when ``model=None`` and no shipped model is installed.
FALLBACK_MODEL = "steps"
#: Names :func:`nowcast` accepts besides model files.
NOWCAST_BASELINES = ("persistence", "extrapolation", "sprog", "steps")


def _positive(name: str, value: Any, integer: bool = False) -> float:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok or not value > 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def nowcast(
    precip: Any,
    timestep: float | None = None,
    n_leadtimes: int = 12,
    n_ens_members: int = 8,
    seed: int | None = None,
    model: str | os.PathLike[str] | None = None,
    pixel_size: float | None = None,
    prob_matching: str | None = "cdf",
    max_memory: str | int | None = None,
    mask_method: str | None = "incremental",
    **sample_kwargs: Any,
) -> Any:
    """Nowcast rain rate from the latest radar frames.

    Parameters
    ----------
    precip : array_like or xarray.DataArray
        ``(t, y, x)`` rain rate in mm/h, oldest frame first, the last frame at the
        analysis time, ``timestep`` minutes apart; NaN where there is no radar
        coverage. Or an ``xarray.DataArray`` with a ``time`` dimension (``(time, y, x)``,
        e.g. ``xr.open_zarr(store, decode_coords="all")[name]`` of an mlcast spec store,
        or a variable of a CF file; an ``xarray.Dataset`` holding one radar variable
        also works): its values are converted by ``standard_name`` and ``units`` as the
        spec store reader does (rates to mm/h, accumulations divided by the time step in
        hours, reflectivity in dBZ to rain rate by Marshall-Palmer ``Z = 200 R^1.6``,
        0 at and below 0 dBZ), ``y`` may run either way, and its frames must be evenly
        spaced in time. Baselines take any ``y, x`` (tested from 64 to 1024);
        ``extrapolation`` needs ``t >= 2`` frames, ``sprog`` and ``steps`` ``t >= 3``;
        a trained model needs its ``t_in`` frames; fully convolutional models (DiffCast
        on a parameter-free backbone) run on any grid, zero-padded to a multiple of
        :data:`diffcast.inference.GRID_MULTIPLE` (no rain outside the domain) and cropped back.
    timestep : float, optional
        Minutes between frames (STEPS uses it for its motion perturbations; a
        trained model takes every ``k``-th frame when its step is ``k`` times this).
        Default: 5 for arrays, the spacing of ``time`` for a DataArray (a different
        value is a ``ValueError``).
    n_leadtimes : int
        Number of forecast steps (a trained model: at most its ``t_out``).
    n_ens_members : int
        Ensemble size for probabilistic models (``steps`` and DiffCast models);
        deterministic models return one member.
    seed : int, optional
        Seed of the ensemble (same seed, same result); ``None`` draws one.
    model : str or path, optional
        A baseline name (``persistence``, ``extrapolation``, ``sprog``, ``steps``), the
        name of a shipped model (``diffcast models`` lists them) or a model file /
        checkpoint folder / run folder. Default: the shipped radar model
        (:data:`diffcast.shipped.DEFAULT_SHIPPED`), or :data:`FALLBACK_MODEL` when it
        is not installed.
    pixel_size : float, optional
        Grid spacing in km (STEPS' ``kmperpixel``; checked against a trained model's).
        Default: 1 for arrays; for a DataArray the spacing of its ``x``/``y``
        coordinates when their units are m or km (a different value is a ``ValueError``), else 1.
    prob_matching : {"cdf", None}
        Trained probabilistic models only: ``"cdf"`` (default) matches each member's
        rain-rate distribution, lead by lead, to that of the last observed frame
        (over the covered pixels), as pysteps' STEPS does (``probmatching_method="cdf"``,
        :func:`pysteps.postprocessing.probmatching.nonparam_match_empirical_cdf`): the
        diffusion model places the rain, the observation sets how much falls. It was
        chosen on the shipped model's validation event (MeteoSwiss 2015-05-15), where
        it lowered the CRPS from 0.049 to 0.027 mm/h (3 windows); ``None`` returns the model's rain rates as they are.
    mask_method : {"incremental", None}
        Trained probabilistic models only: ``"incremental"`` (default) applies pysteps'
        STEPS incremental precipitation mask before the matching, lead by lead: each
        member is multiplied by its previous lead's rain area (the first lead: the last
        observed frame's, >= 0.1 mm/h), dilated by ``timestep / pixel`` pixels and given a
        10-pixel grey rim (:class:`diffcast.models.backbones.pysteps_methods.IncrementalMask`),
        so no member grows rain out of a dry area. Chosen on the default model's
        validation event (MeteoSwiss 2015-05-15, 3 windows, pysteps' default settings,
        not tuned), where it lowered the CRPS from 0.02281 to 0.02225 mm/h on the pixels
        STEPS also covers (0.0249 to 0.0237 on all); ``None`` turns it off.
    max_memory : str or int, optional
        Trained diffusion models: memory cap (bytes, or ``"4G"``, ``"800M"``) under which
        members are sampled in turns (:mod:`diffcast.memory`; same seed, same numbers);
        :class:`diffcast.memory.MemoryCapError` (a ``ValueError``) before any work when
        even one member at a time does not fit. Default: 90 % of the available memory,
        checked only for large forecasts.
    **sample_kwargs
        Diffusion sampling options for trained models (``sampler``, ``steps``,
        ``member_chunk``, ``autocast_dtype="bf16"``: the denoiser under bfloat16
        autocast, faster on CPUs with AMX / AVX512-BF16, far slower without, as
        ``diffcast nowcast --precision bf16``; ...).

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        ``(n_ens_members, n_leadtimes, y, x)`` float64 rain rate in mm/h on the input
        grid (deterministic models: ``n_ens_members = 1``); NaN where the last input
        frame had no coverage and, for the pysteps methods and models over the
        ``extrapolation`` backbone (the shipped one), where advection brings in values
        from outside the domain or the coverage (nothing observed to forecast from).
        For a DataArray input, a DataArray with dims ``(ens_number, lead_time, y, x)``
        (the input's names for ``y`` and ``x``, in the input's order), coordinates
        ``forecast_reference_time`` (the last input time), ``lead_time`` (timedelta,
        the model's step apart), ``valid_time`` (along ``lead_time``), the input's
        ``x``, ``y``, ``lat``, ``lon`` and its grid-mapping variable (a scalar coordinate,
        named by the ``grid_mapping`` attribute, so ``to_netcdf`` keeps the CRS), and
        attributes ``standard_name`` (``rainfall_flux``, or ``precipitation_flux`` for
        precipitation input), ``units`` ``kg m-2 h-1`` (= mm/h; reflectivity input also
        comes back as rain rate) and ``grid_mapping``.

    Raises
    ------
    ValueError
        Bad shapes or values, an unknown model, or a model that cannot take this
        input (time step, pixel size, grid, units or number of frames).
    FileNotFoundError
        A model path that does not exist.
    """
    from .models.backbones import pysteps_methods as pm

    labels = None
    if is_xarray(precip):
        from .api_xarray import from_xarray

        labels = from_xarray(precip, timestep, pixel_size)
        precip, timestep = labels.precip, labels.timestep
        pixel_size = labels.pixel_size if labels.pixel_size is not None else pixel_size
    timestep = 5 if timestep is None else timestep
    pixel_size = 1.0 if pixel_size is None else pixel_size
    _positive("timestep", timestep)
    _positive("pixel_size", pixel_size)
    _positive("n_leadtimes", n_leadtimes, integer=True)
    _positive("n_ens_members", n_ens_members, integer=True)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    from .shipped import default_model

    spec = default_model(FALLBACK_MODEL) if model is None else model
    r = pm.check_precip(precip, 1)
    if min(r.shape[1:]) < 8:
        raise ValueError(f"precip frames are {r.shape[1]}x{r.shape[2]} pixels; at least 8x8 are needed")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    n_lead, n_mem = int(n_leadtimes), int(n_ens_members)
    pm.check_prob_matching(prob_matching)
    pm.check_mask_method(mask_method)
    out, lead_min = _forecast(r, spec, float(timestep), n_lead, n_mem, int(seed), float(pixel_size), prob_matching,
                              max_memory, sample_kwargs, mask_method)
    if labels is None:
        return out
    return labels.to_dataarray(out, lead_min, os.fspath(spec))


def _forecast(
    r: np.ndarray,
    spec: str | os.PathLike[str],
    timestep: float,
    n_lead: int,
    n_mem: int,
    seed: int,
    pixel_size: float,
    prob_matching: str | None,
    max_memory: str | int | None,
    sample_kwargs: dict[str, Any],
    mask_method: str | None = "incremental",
) -> tuple[np.ndarray, float]:
    """The forecast of :func:`nowcast` (checked arguments) and the minutes between its leads."""
    from .models.backbones import pysteps_methods as pm

    if isinstance(spec, str) and spec in NOWCAST_BASELINES:
        if sample_kwargs:
            raise ValueError(f"options {', '.join(sorted(sample_kwargs))} apply to diffusion models, not to {spec}")
        if spec == "persistence":
            out = np.repeat(r[-1][None, None], n_lead, axis=1)
        elif spec == "extrapolation":
            out = pm.extrapolation_nowcast(r, n_lead)[None]
        elif spec == "sprog":
            out = pm.sprog_nowcast(r, n_lead)[None]
        else:
            out = pm.steps_nowcast(r, n_lead, n_mem, int(seed), timestep=float(timestep), pixel_size=float(pixel_size))
        return out, timestep
    if max_memory is not None:
        sample_kwargs = {**sample_kwargs, "max_memory": max_memory}
    out, lead_min = _nowcast_model(r, spec, timestep, n_lead, n_mem, seed, pixel_size, sample_kwargs)
    # baselines returned above (STEPS does both by itself); run_model returns a fresh float64 array
    return pm.postprocess_members(out, r[-1], prob_matching, mask_method, lead_min, pixel_size), lead_min


def _nowcast_model(
    r: np.ndarray,
    spec: str | os.PathLike[str],
    timestep: float,
    n_lead: int,
    n_mem: int,
    seed: int,
    pixel_size: float,
    sample_kwargs: dict[str, Any],
) -> tuple[np.ndarray, float]:
    """A trained model on rain rates: encode, predict, decode (see :func:`nowcast`); also the model's step (min)."""
    nc = load_model(spec, r.shape[1], r.shape[2])
    return run_model(nc, spec, r, timestep, n_lead, n_mem, seed, pixel_size, sample_kwargs)


def load_model(spec: str | os.PathLike[str], height: int | None = None, width: int | None = None) -> Any:
    """The :class:`~diffcast.inference.Nowcaster` of a model name or path for ``height x width`` frames.

    Fully convolutional models are rebuilt for the grid zero-padded to
    :func:`~diffcast.inference.padded_grid`, with motion estimated on the domain only;
    no size: the model as trained. Shared by :func:`nowcast` and
    :mod:`diffcast.integrations.mlcast`.
    """
    from .inference import Nowcaster, padded_grid
    from .shipped import shipped_file, shipped_models

    if not os.path.exists(os.fspath(spec)) and shipped_file(os.fspath(spec)) is None:
        raise ValueError(
            f"unknown model {os.fspath(spec)!r}: not a baseline ({', '.join(NOWCAST_BASELINES)}), not a shipped model "
            f"({', '.join(shipped_models()) or 'none installed'}) and no such model file or folder"
        )
    nc = Nowcaster.from_checkpoint(spec)
    if height is not None and width is not None and (height, width) != (nc.height, nc.width):
        # Fully convolutional models run on the input's grid, zero-padded (padded_grid).
        nc = Nowcaster.from_checkpoint(spec, grid=padded_grid(height, width))
        nc.set_domain(height, width)  # motion on the domain, not on its zero padding
    return nc


def run_model(
    nc: Any,
    spec: str | os.PathLike[str],
    r: np.ndarray,
    timestep: float,
    n_lead: int,
    n_mem: int,
    seed: int,
    pixel_size: float,
    sample_kwargs: dict[str, Any],
    mark_inflow: bool = True,
) -> tuple[np.ndarray, float]:
    """Forecast ``(members, n_lead, y, x)`` mm/h from rain rates ``r`` ``(t, y, x)`` with a loaded model.

    Checks the model against the input (quantity, time step, pixel size, leads,
    frames), encodes, predicts and decodes; NaN where ``r[-1]`` has no data and,
    with ``mark_inflow``, where the motion brings rain in from outside. Also returns
    the model's step in minutes (the spacing of the leads).
    """
    import torch

    from .inference import PIXEL_TOL, inflow_of
    from .models.backbones import pysteps_methods as pm

    h, w = r.shape[1:]
    meta = nc.meta
    label = f"model {nc.name} ({os.fspath(spec)})"
    if pm.intensity_of(meta.unit, meta.physical_unit) != "rainrate":
        raise ValueError(
            f"{label} works in {meta.unit} ({meta.name} data); diffcast.nowcast takes rain rate in mm/h, which "
            "converts only to reflectivity models: use a radar model or a baseline"
        )
    ratio = float(meta.timestep_min) / timestep
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-6:
        raise ValueError(
            f"{label} forecasts in steps of {meta.timestep_min:g} min; frames {timestep:g} min apart can only be "
            "used when the model step is a whole multiple of theirs"
        )
    if abs(pixel_size / float(meta.pixel_km) - 1.0) > PIXEL_TOL:
        raise ValueError(
            f"{label} was trained on {meta.pixel_km:g} km pixels, the input has {pixel_size:g} km; resample the "
            "input to the model's grid spacing (or use a baseline, which takes any)"
        )
    if n_lead > nc.t_out:
        raise ValueError(f"{label} forecasts {nc.t_out} steps; n_leadtimes={n_lead} asks for more")
    frames = r[::-1][::k][::-1]
    if frames.shape[0] < nc.t_in:
        raise ValueError(
            f"{label} needs {nc.t_in} frames {meta.timestep_min:g} min apart; precip gives {frames.shape[0]}"
        )
    frames = frames[-nc.t_in :]
    from .memory import schedule_members

    sample_kwargs = dict(sample_kwargs)
    schedule_members(nc.model, n_mem, sample_kwargs, n_thresholds=0)
    x = np.zeros((nc.t_in, nc.height, nc.width), np.float32)  # zero padding = no rain outside the domain
    x[:, :h, :w] = pm.from_intensity(frames, "rainrate", float(meta.scale))
    with torch.inference_mode():
        res = nc.predict(torch.from_numpy(x)[None, :, None], members=n_mem, seed=seed, **sample_kwargs)
    fc = res.forecast[:, 0, :n_lead, 0, :h, :w].float().cpu().numpy()
    out = pm.to_intensity(fc, "rainrate", float(meta.scale))
    out[..., ~np.isfinite(r[-1])] = np.nan
    unknown = inflow_of(nc.model, x, np.isfinite(r[-1]), n_lead) if mark_inflow else None
    if unknown is not None:
        out[:, unknown] = np.nan
    return out, float(meta.timestep_min)
