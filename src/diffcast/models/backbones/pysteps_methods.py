"""pysteps nowcasting methods as diffcast baselines: extrapolation, S-PROG and STEPS.

Two layers:

1. Functions in rain rate (mm/h, NaN = no radar coverage) that call pysteps the
   way its documented examples do for 1 km / 5 min composites
   (``examples/plot_steps_nowcast.py``, ``plot_extrapolation_nowcast.py``; pySTEPS,
   BSD-3-Clause): rain rate to dBR with :func:`pysteps.utils.transformation.dB_transform`
   (threshold 0.1 mm/h, ``zerovalue`` -15 dBR, no-data pixels set to the
   ``zerovalue``), Lucas-Kanade motion (:func:`motion_field`, shared with the
   model-space ``extrapolation`` backbone), the nowcast in dBR (``precip_thr`` -10
   dBR, 6 cascade levels, AR(2)), and back to mm/h (values below -10 dBR = 0.1 mm/h
   become 0). STEPS adds pysteps' nonparametric noise, ``bps`` motion
   perturbations and the ``incremental`` precipitation mask, seeded. These are what
   :func:`diffcast.nowcast` runs for ``model="extrapolation" | "sprog" | "steps"``.

2. Model-space wrappers (``(B, T, C, H, W)`` in ``[0, 1]``) registered as the
   backbones ``sprog`` and ``steps``, so ``diffcast evaluate -m steps`` and
   ``diffcast nowcast --checkpoint steps`` use them like ``persistence``. They map
   ``[0, 1]`` values to an intensity through the dataset's metadata (``intensity``):
   ``"rainrate"`` for reflectivity data (``dBZ = x * scale``, Marshall-Palmer
   ``Z = 200 R^1.6``, as the radar readers encode rain rates), ``"vil"`` for SEVIR VIL
   codes (kg m-2 by the SEVIR decoding), ``"linear"`` otherwise (``x * scale``); run
   the functions of layer 1 and map the result back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ...data.transforms import encoded_rainrate, kgm2_to_vil_code, rainrate_to_dbz, vil_code_to_kgm2
from . import BACKBONES
from .base import Backbone

log = logging.getLogger(__name__)

#: pysteps' documented settings for 1 km / 5 min composites (its STEPS, S-PROG and
#: extrapolation examples). ``threshold`` is in the input's intensity unit (mm/h).
PYSTEPS_SETTINGS: dict[str, Any] = {
    "threshold": 0.1,  # mm/h: rain / no rain of the dB transform
    "zerovalue": -15.0,  # dBR given to no rain and no data
    "precip_thr": -10.0,  # dBR: precipitation threshold of the cascade methods
    "n_cascade_levels": 6,
    "ar_order": 2,
    "noise_method": "nonparametric",
    "vel_pert_method": "bps",
    "mask_method": "incremental",
}

#: Intensity mappings of the model-space wrappers (see the module docstring).
INTENSITIES = ("rainrate", "vil", "linear")


# ----------------------------------------------------------------------------- rain rate
def check_precip(precip: Any, min_frames: int, name: str = "precip") -> np.ndarray:
    """Validate a ``(t, y, x)`` rain-rate array; return it as float64.

    Raises
    ------
    ValueError
        Wrong rank, too few frames, a non-numeric dtype, negative or infinite values.
    """
    arr = np.asarray(precip)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a (t, y, x) array of rain rates, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers (mm/h), got dtype {arr.dtype}")
    if arr.shape[0] < min_frames:
        raise ValueError(f"{name} has {arr.shape[0]} frame(s); this method needs at least {min_frames}")
    arr = arr.astype(np.float64)
    if np.isinf(arr).any():
        raise ValueError(f"{name} holds infinite values; use NaN for pixels without radar coverage")
    finite = arr[np.isfinite(arr)]
    if finite.size and finite.min() < 0:
        raise ValueError(f"{name} holds negative rain rates (min {finite.min():.3g}); expected mm/h >= 0, NaN = no data")
    return arr


def to_dbr(precip: np.ndarray, threshold: float = 0.1, zerovalue: float = -15.0) -> np.ndarray:
    """Rain rate (mm/h) to dBR as in pysteps' examples; no-data pixels get ``zerovalue``."""
    from pysteps.utils import transformation

    dbr, _ = transformation.dB_transform(np.asarray(precip, dtype=np.float64), threshold=threshold, zerovalue=zerovalue)
    dbr[~np.isfinite(dbr)] = zerovalue
    return dbr


def from_dbr(dbr: np.ndarray, threshold: float = -10.0) -> np.ndarray:
    """dBR back to rain rate (mm/h); values below ``threshold`` dBR become 0 (pysteps' inverse)."""
    from pysteps.utils import transformation

    return transformation.dB_transform(np.asarray(dbr, dtype=np.float64), threshold=threshold, inverse=True)[0]


#: Target pixels per chunk of the motion vectors' interpolation onto the grid (2^13: the
#: same field as one call, bit for bit, 15-20 % faster than 2^17 on 765 x 700 and 2200 x 1900
#: grids, and LK's own peak 43 instead of 104 MB at 765 x 700).
INTERP_CHUNK_PIXELS = 1 << 13


def motion_field(fields: np.ndarray, **lk_kwargs: Any) -> np.ndarray:
    """Lucas-Kanade motion (pysteps ``dense_lucaskanade``) of ``(T, H, W)`` finite fields.

    Returns
    -------
    ndarray
        ``(2, H, W)`` velocity (u, v) in pixels per time step; zeros when pysteps finds
        no features to track (e.g. a field without rain) or fails on a degenerate field.
    """
    from pysteps import motion

    fields = np.asarray(fields, dtype=np.float64)
    lk_kwargs = dict(lk_kwargs)
    interp = dict(lk_kwargs.pop("interp_kwargs", None) or {})
    # pysteps' IDW interpolation holds about 1 kB per target pixel of a chunk (k = 20 neighbours:
    # distances, indices, weights, gathered vectors); in chunks of about INTERP_CHUNK_PIXELS
    # (per-pixel arithmetic: the same field) its memory stays bounded
    pixels = fields.shape[-2] * fields.shape[-1]
    interp.setdefault("nchunks", max(4, int(np.ceil(np.sqrt(pixels / INTERP_CHUNK_PIXELS))) ** 2))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uv = motion.get_method("LK")(fields, verbose=False, interp_kwargs=interp, **lk_kwargs)
    except Exception as err:  # pysteps / OpenCV fail on fields without trackable features
        log.debug("Lucas-Kanade failed (%s); using zero motion", err)
        return np.zeros((2,) + fields.shape[1:])
    return np.nan_to_num(np.asarray(uv, dtype=np.float64))


#: Target pixels per block of :func:`advect` (2^16: a few MB of float64 coordinates per block).
ADVECT_BLOCK_PIXELS = 1 << 16


def advect(
    field: np.ndarray,
    uv: np.ndarray,
    n_leadtimes: int,
    *,
    outval: float = np.nan,
    out: np.ndarray | None = None,
    region: tuple[int, int, int, int] | None = None,
    transform: Any = None,
    block_pixels: int | None = None,
) -> np.ndarray:
    """pysteps' semi-Lagrangian extrapolation of ``field`` along ``uv``, one block of rows at a time.

    The same scheme as ``pysteps.extrapolation.semilagrangian.extrapolate(field, uv,
    n_leadtimes, outval=outval)`` with its defaults (one inner iteration of the
    backward trajectory, bilinear interpolation, ``mode="nearest"`` for the velocity
    and ``"constant"`` for the field; integer lead times of one velocity step).
    Each pixel's back-trajectory depends only on the whole velocity field and on its
    own position, so a block of rows carried through every lead gets, bit for bit,
    what one call on the whole grid gives (the same float64 operations in the same
    order: ``tests/unit/models/test_advect.py``). Only the block's coordinates,
    displacements and increments are held (a few MB), instead of pysteps' whole-grid
    float64 arrays and its list and stack of all forecast frames (three float64
    copies of the forecast at the peak).

    Parameters
    ----------
    field : ndarray ``(H, W)``
        What is advected (finite values; ``outval`` comes in from outside the grid).
    uv : ndarray ``(2, H, W)``
        Motion (u, v) in pixels per lead, finite.
    n_leadtimes : int
    outval : float
        Value of points advected from outside the grid.
    out : ndarray ``(n_leadtimes, h, w)``, optional
        Receives the forecast of ``region`` (any dtype the values, or ``transform``'s
        output, cast to); float64 and allocated when omitted.
    region : (r0, r1, c0, c1), optional
        Rows ``r0:r1`` and columns ``c0:c1`` of the grid to forecast (default all);
        trajectories still see the whole ``field`` and ``uv``.
    transform : callable, optional
        Applied to each float64 block ``(rows, w)`` before it is stored in ``out``.
    block_pixels : int, optional
        Target pixels per block (default :data:`ADVECT_BLOCK_PIXELS`, read at call time).
    """
    from scipy.ndimage import map_coordinates

    field = np.ascontiguousarray(field, dtype=np.float64)
    uv = np.ascontiguousarray(uv, dtype=np.float64)
    if field.ndim != 2 or uv.shape != (2,) + field.shape:
        raise ValueError(f"advect needs field (H, W) and uv (2, H, W), got {field.shape} and {uv.shape}")
    if not np.isfinite(uv).all():
        raise ValueError("advect: the motion field has non-finite values")
    n = int(n_leadtimes)
    r0, r1, c0, c1 = region if region is not None else (0, field.shape[0], 0, field.shape[1])
    if not (0 <= r0 <= r1 <= field.shape[0] and 0 <= c0 <= c1 <= field.shape[1]):
        raise ValueError(f"advect: region {region} is not inside the grid {field.shape}")
    if out is None:
        out = np.empty((n, r1 - r0, c1 - c0), np.float64)
    if out.shape != (n, r1 - r0, c1 - c0):
        raise ValueError(f"advect: out has shape {out.shape}, expected {(n, r1 - r0, c1 - c0)}")
    u, v = uv[0], uv[1]

    def velocity_at(disp: np.ndarray, inc: np.ndarray) -> None:  # pysteps' interpolate_motion
        warped = xy + disp
        inc[0] = map_coordinates(u, [warped[1], warped[0]], mode="nearest", order=1, prefilter=False)
        inc[1] = map_coordinates(v, [warped[1], warped[0]], mode="nearest", order=1, prefilter=False)

    rows = max(1, int(ADVECT_BLOCK_PIXELS if block_pixels is None else block_pixels) // max(c1 - c0, 1))
    for a in range(r0, r1, rows):
        b = min(r1, a + rows)
        xs, ys = np.meshgrid(np.arange(c0, c1), np.arange(a, b), copy=False)
        xy = np.stack([xs, ys])  # integer pixel positions, as pysteps' xy_coords
        disp = np.zeros((2, b - a, c1 - c0))
        inc = uv[:, a:b, c0:c1].copy()  # pysteps: velocity * 1 / 1.0, the same values
        for t in range(n):
            velocity_at(disp - inc / 2.0, inc)  # the midpoint of the back-trajectory
            disp -= inc
            velocity_at(disp, inc)
            warped = xy + disp
            val = map_coordinates(field, [warped[1], warped[0]], mode="constant", cval=outval, order=1, prefilter=False)
            out[t, a - r0 : b - r0] = val if transform is None else transform(val)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pysteps' progress prints (it writes to stdout) and its RuntimeWarnings."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _dbr_and_motion(
    precip: Any, min_frames: int | None, settings: dict[str, Any] | None, velocity: np.ndarray | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """``(settings, rain rate, dBR, motion)``: the steps every method shares (pysteps' example recipe).

    ``min_frames=None``: the AR order + 1 frames the cascade methods need. ``velocity``: the
    motion already computed from these frames (skips Lucas-Kanade).
    """
    s = {**PYSTEPS_SETTINGS, **(settings or {})}
    r = check_precip(precip, s["ar_order"] + 1 if min_frames is None else min_frames)
    dbr = to_dbr(r, s["threshold"], s["zerovalue"])
    return s, r, dbr, motion_field(dbr) if velocity is None else velocity


def _coverage_nan(forecast: np.ndarray, last: np.ndarray) -> np.ndarray:
    forecast = np.asarray(forecast, dtype=np.float64)
    forecast[..., ~np.isfinite(last)] = np.nan
    return forecast


def extrapolation_nowcast(precip: Any, n_leadtimes: int, settings: dict[str, Any] | None = None) -> np.ndarray:
    """Lagrangian persistence in rain rate, as pysteps' extrapolation example.

    Parameters
    ----------
    precip : array_like
        ``(t, y, x)`` rain rate in mm/h, last frame = analysis time, NaN = no data; ``t >= 2``.
    n_leadtimes : int
        Forecast steps.
    settings : dict, optional
        Overrides of :data:`PYSTEPS_SETTINGS` (``threshold``, ``zerovalue``, ``precip_thr``).

    Returns
    -------
    ndarray
        ``(n_leadtimes, y, x)`` mm/h; NaN where the last input frame had no data and
        where pysteps' advection brings in values from outside the domain.
    """
    from pysteps import nowcasts

    s, r, dbr, uv = _dbr_and_motion(precip, 2, settings)
    with _quiet():
        out = nowcasts.get_method("extrapolation")(dbr[-1], uv, int(n_leadtimes))
    return _coverage_nan(from_dbr(out, s["precip_thr"]), r[-1])


def sprog_nowcast(
    precip: Any, n_leadtimes: int, settings: dict[str, Any] | None = None, velocity: np.ndarray | None = None
) -> np.ndarray:
    """S-PROG (Seed 2003) in rain rate with pysteps' documented settings.

    Parameters
    ----------
    precip : array_like
        ``(t, y, x)`` rain rate in mm/h, NaN = no data; ``t >= ar_order + 1`` (3).
    n_leadtimes : int
        Forecast steps.
    settings : dict, optional
        Overrides of :data:`PYSTEPS_SETTINGS`.
    velocity : ndarray, optional
        ``(2, y, x)`` Lucas-Kanade motion of the dBR of ``precip`` when already computed.

    Returns
    -------
    ndarray
        ``(n_leadtimes, y, x)`` mm/h, NaN where the last input frame had no data.
    """
    from pysteps import nowcasts

    s, r, dbr, uv = _dbr_and_motion(precip, None, settings, velocity)
    try:
        with _quiet():
            out = nowcasts.get_method("sprog")(
                dbr[-(s["ar_order"] + 1) :], uv, int(n_leadtimes), precip_thr=s["precip_thr"],
                n_cascade_levels=s["n_cascade_levels"], ar_order=s["ar_order"],
            )
    except np.linalg.LinAlgError:
        # every cascade level perfectly correlated in time (e.g. repeated frames of a stalled feed): the
        # AR(2) Yule-Walker system is singular; S-PROG with correlations of one is the advected last frame
        log.warning("S-PROG: the input frames are perfectly correlated in time (repeated frames?); "
                    "using the advection of the last frame, S-PROG's limit for correlations of one")
        with _quiet():
            out = nowcasts.get_method("extrapolation")(dbr[-1], uv, int(n_leadtimes))
    return _coverage_nan(from_dbr(out, s["precip_thr"]), r[-1])


def steps_nowcast(
    precip: Any,
    n_leadtimes: int,
    n_ens_members: int,
    seed: int | None,
    timestep: float = 5.0,
    pixel_size: float = 1.0,
    settings: dict[str, Any] | None = None,
) -> np.ndarray:
    """STEPS (Bowler et al. 2006, Seed et al. 2013) ensemble in rain rate, pysteps' example settings.

    Parameters
    ----------
    precip : array_like
        ``(t, y, x)`` rain rate in mm/h, NaN = no data; ``t >= ar_order + 1`` (3).
    n_leadtimes, n_ens_members : int
        Forecast steps and ensemble members.
    seed : int or None
        Seed of pysteps' noise and motion perturbations (same seed, same ensemble).
    timestep : float
        Minutes between frames (sets the motion-perturbation statistics).
    pixel_size : float
        Grid spacing in km (``kmperpixel``).
    settings : dict, optional
        Overrides of :data:`PYSTEPS_SETTINGS`.

    Returns
    -------
    ndarray
        ``(n_ens_members, n_leadtimes, y, x)`` mm/h, NaN where the last input frame had no data.
    """
    from pysteps import nowcasts

    s, r, dbr, uv = _dbr_and_motion(precip, None, settings)
    try:
        with _quiet():
            out = nowcasts.get_method("steps")(
                dbr[-(s["ar_order"] + 1) :], uv, int(n_leadtimes), int(n_ens_members),
                n_cascade_levels=s["n_cascade_levels"], precip_thr=s["precip_thr"], kmperpixel=float(pixel_size),
                timestep=float(timestep), ar_order=s["ar_order"], noise_method=s["noise_method"],
                vel_pert_method=s["vel_pert_method"], mask_method=s["mask_method"], seed=seed,
            )
    except np.linalg.LinAlgError:
        raise ValueError(
            "STEPS: the input frames are perfectly correlated in time (repeated frames of a stalled feed?), so "
            "pysteps' AR(2) estimate is singular and STEPS has no noise to scale; check the input times, or use "
            "extrapolation or sprog"
        ) from None
    return _coverage_nan(from_dbr(out, s["precip_thr"]), r[-1])


# ----------------------------------------------------------------------------- model space
def intensity_of(unit: str, physical_unit: str = "") -> str:
    """The intensity mapping for a dataset's threshold-space ``unit`` (see :data:`INTENSITIES`)."""
    if unit.strip().lower() == "dbz":
        return "rainrate"
    if unit.upper().startswith("VIL") or physical_unit == "kg m-2":
        return "vil"
    return "linear"


def to_intensity(x: np.ndarray, intensity: str, scale: float) -> np.ndarray:
    """``[0, 1]`` model values to an intensity (mm/h, kg m-2 or ``x * scale``); 0 stays 0."""
    code = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * scale
    if intensity == "rainrate":
        return encoded_rainrate(code).astype(np.float64)
    if intensity == "vil":
        return np.asarray(vil_code_to_kgm2(code), dtype=np.float64)
    return code


def from_intensity(r: np.ndarray, intensity: str, scale: float) -> np.ndarray:
    """Inverse of :func:`to_intensity` (NaN -> 0), clipped to ``[0, 1]``."""
    r = np.nan_to_num(np.asarray(r, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if intensity == "rainrate":
        code = rainrate_to_dbz(r)
    elif intensity == "vil":
        code = np.asarray(kgm2_to_vil_code(r), dtype=np.float64)
    else:
        code = r
    return np.clip(code / scale, 0.0, 1.0)


class _PystepsBaseline(Backbone):
    """Shared set-up of the model-space pysteps wrappers (no parameters)."""

    trainable = False
    PRESETS: dict[str, dict] = {}

    def __init__(
        self,
        t_in: int,
        t_out: int,
        channels: int = 1,
        height: int = 128,
        width: int = 128,
        intensity: str = "rainrate",
        scale: float = 90.0,
        timestep: float = 5.0,
        pixel_size: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise ValueError(
                f"unknown {type(self).__name__} argument(s) {', '.join(sorted(kwargs))}; valid ones are: "
                "intensity, pixel_size, scale, timestep"
            )
        super().__init__(t_in, t_out, channels, height, width)
        if t_in < PYSTEPS_SETTINGS["ar_order"] + 1:
            raise ValueError(f"{type(self).__name__} needs t_in >= {PYSTEPS_SETTINGS['ar_order'] + 1} (AR(2)), got {t_in}")
        if intensity not in INTENSITIES:
            raise ValueError(f"unknown intensity {intensity!r}; choose one of: {', '.join(INTENSITIES)}")
        for key, val in (("scale", scale), ("timestep", timestep), ("pixel_size", pixel_size)):
            if not float(val) > 0:
                raise ValueError(f"{key} must be positive, got {val!r}")
        self.intensity = intensity
        self.scale = float(scale)
        self.timestep = float(timestep)
        self.pixel_size = float(pixel_size)
        #: ``(h, w)``: inputs hold data only in their top-left ``h x w`` (the rest zero padding
        #: up to a grid the network needs); pysteps then runs on that domain and the padding
        #: stays zero, so the result equals pysteps on the domain (as ``Extrapolation.domain``).
        self.domain: tuple[int, int] | None = None

    def _cut(self, full: tuple[int, int]) -> tuple[int, int]:
        if self.domain is None:
            return full
        return min(int(self.domain[0]), full[0]), min(int(self.domain[1]), full[1])

    def motion(self, frames: np.ndarray) -> np.ndarray:
        """``(2, H, W)`` Lucas-Kanade motion (pixels per step) that the pysteps methods use for
        the ``(T, H, W)`` frames in ``[0, 1]``: dBR of the intensity, as :func:`sprog_nowcast`
        computes it; with :attr:`domain` set, estimated on the domain and edge-extended."""
        frames = np.ascontiguousarray(frames, dtype=np.float64)
        full = frames.shape[1:]
        h, w = self._cut(full)
        # the last field is kept: a nowcast asks again for the same frames (inflow mask) after the forecast
        key = (frames.shape, (h, w), hashlib.blake2b(frames.data, digest_size=16).digest())
        memo = getattr(self, "_motion_memo", None)
        if memo is None or memo[0] != key:
            r = np.nan_to_num(self._field(frames[:, :h, :w]), nan=0.0)
            memo = self._motion_memo = (key, _dbr_and_motion(r, 2, None)[3])
        return np.pad(memo[1], ((0, 0), (0, full[0] - h), (0, full[1] - w)), mode="edge")

    def _field(self, x: np.ndarray) -> np.ndarray:
        return to_intensity(x, self.intensity, self.scale)

    def _back(self, r: np.ndarray) -> np.ndarray:
        return from_intensity(r, self.intensity, self.scale).astype(np.float32)

    def _each_series(self, x_in: torch.Tensor, members: int, fn: Any) -> torch.Tensor:
        """``(members, B, T_out, C, H, W)`` from ``fn(intensity (T_in, H, W), index) -> (members, T_out, H, W)``
        applied to every (sample, channel) series; ``index = b * C + c``."""
        self.check_input(x_in)
        x = x_in.detach().to("cpu", torch.float64).numpy()
        h, w = self._cut(x.shape[-2:])
        out = np.zeros((members, x.shape[0], self.t_out) + x.shape[2:], dtype=np.float32)
        for b in range(x.shape[0]):
            for c in range(x.shape[2]):
                out[:, b, :, c, :h, :w] = self._back(fn(self._field(x[b, :, c, :h, :w]), b * x.shape[2] + c))
        return torch.from_numpy(out).to(device=x_in.device, dtype=x_in.dtype)


@BACKBONES.register("sprog")
class SProg(_PystepsBaseline):
    """S-PROG on model-space sequences (deterministic; see :func:`sprog_nowcast`).

    Parameters
    ----------
    t_in, t_out, channels, height, width : int
        Frame layout; ``t_in >= 3``.
    intensity : {"rainrate", "vil", "linear"}
        How ``[0, 1]`` values map to the intensity pysteps works on (module docstring).
    scale : float
        Threshold-space scale of the data (``x * scale``: dBZ, VIL code).
    timestep, pixel_size : float
        Minutes between frames, km per pixel (recorded; S-PROG does not use them).
    """

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        frames = x_in.detach().to("cpu", torch.float64).numpy()

        def run(r: np.ndarray, k: int) -> np.ndarray:
            # the motion through :meth:`motion` (kept), so the inflow mask does not run Lucas-Kanade again
            uv = self.motion(frames[k // frames.shape[2], :, k % frames.shape[2]])[:, : r.shape[-2], : r.shape[-1]]
            return sprog_nowcast(r, self.t_out, velocity=uv)[None]

        return self._each_series(x_in, 1, run)[0]


@BACKBONES.register("steps")
class Steps(_PystepsBaseline):
    """STEPS ensembles on model-space sequences (see :func:`steps_nowcast`).

    An ensemble baseline: :class:`~diffcast.inference.Nowcaster` calls
    :meth:`sample_ensemble`. Used as a plain backbone (``forward``) it returns one
    member drawn with seed 0.

    Parameters
    ----------
    t_in, t_out, channels, height, width : int
        Frame layout; ``t_in >= 3``.
    intensity : {"rainrate", "vil", "linear"}
        How ``[0, 1]`` values map to the intensity pysteps works on (module docstring).
    scale : float
        Threshold-space scale of the data (``x * scale``: dBZ, VIL code).
    timestep, pixel_size : float
        Minutes between frames and km per pixel, passed to pysteps (motion perturbations).
    """

    ensemble = True

    def sample_ensemble(self, x_in: torch.Tensor, members: int, seed: int | None) -> torch.Tensor:
        """``(M, B, T_out, C, H, W)`` members; series ``b * C + c`` of the batch uses seed ``seed + b * C + c``."""

        def run(r: np.ndarray, k: int) -> np.ndarray:
            s = None if seed is None else (int(seed) + k) % (2**32)
            return steps_nowcast(r, self.t_out, members, s, timestep=self.timestep, pixel_size=self.pixel_size)

        return self._each_series(x_in, members, run)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        return self.sample_ensemble(x_in, 1, 0)[0]


#: Accepted ``prob_matching`` values of the trained-model nowcasts: STEPS-like CDF matching or none.
PROB_MATCHING = ("cdf", None)
#: Accepted ``mask_method`` values of the trained-model nowcasts: STEPS' incremental mask or none.
MASK_METHODS = ("incremental", None)
#: pysteps' STEPS defaults of its incremental mask (``mask_kwargs``), and its rain threshold in mm/h
#: (``precip_thr`` -10 dBR of :data:`PYSTEPS_SETTINGS`).
INCREMENTAL_MASK = {"mask_rim": 10, "mask_f": 1.0, "threshold": 0.1}


def check_prob_matching(value: object) -> None:
    """``ValueError`` unless ``value`` is one of :data:`PROB_MATCHING`."""
    if value not in PROB_MATCHING:
        raise ValueError(f"prob_matching must be 'cdf' or None, got {value!r}")


def check_mask_method(value: object) -> None:
    """``ValueError`` unless ``value`` is one of :data:`MASK_METHODS`."""
    if value not in MASK_METHODS:
        raise ValueError(f"mask_method must be 'incremental' or None, got {value!r}")


@dataclasses.dataclass(frozen=True)
class IncrementalMask:
    """pysteps' STEPS ``mask_method="incremental"`` for an ensemble of any origin.

    Lead by lead, each member's rain rate is multiplied by a mask grown from where it (at
    the first lead: the last observation) had rain: the wet pixels (``>= threshold`` mm/h)
    dilated by a diamond of ``kernel`` pixels (pysteps: ``mask_f x timestep / km per
    pixel``), then a grey rim of ``rim`` one-pixel dilations, normalised to ``[0, 1]``
    (:func:`pysteps.nowcasts.utils.compute_dilated_mask`). Rain far from the previous
    lead's rain is removed and rain at its edge tapered, so no member grows rain out of a
    dry area faster than the kernel allows. (pysteps multiplies in its dB space above the
    minimum, a gentler taper; the rain-rate one was the one scored.)

    ``log_scale`` ``None``: the forecast holds rain rates. With ``log_scale`` ``s`` it holds
    diffcast's reflectivity encoding ``dBZ / s`` (Marshall-Palmer ``Z = 200 R^1.6``, 0 at and
    below 0 dBZ): each field is decoded to rain rate in float64, masked (and matched) there
    and encoded back, so both give the same members.
    """

    kernel: int = 5
    rim: int = INCREMENTAL_MASK["mask_rim"]
    threshold: float = INCREMENTAL_MASK["threshold"]
    log_scale: float | None = None

    @classmethod
    def for_grid(cls, timestep_min: float, pixel_km: float, log_scale: float | None = None) -> IncrementalMask:
        """pysteps' defaults for a grid: kernel ``mask_f x timestep / km`` (at least 1 pixel)."""
        kernel = int(INCREMENTAL_MASK["mask_f"] * float(timestep_min) / float(pixel_km))
        return cls(kernel=max(kernel, 1), log_scale=None if log_scale is None else float(log_scale))

    def make(self, rate: np.ndarray) -> np.ndarray:
        """The mask ``(y, x)`` in ``[0, 1]`` grown from where ``rate`` (mm/h, NaN = dry) is rain."""
        from pysteps.nowcasts.utils import compute_dilated_mask
        from scipy.ndimage import generate_binary_structure, iterate_structure

        wet = np.nan_to_num(rate, nan=-np.inf) >= self.threshold
        if not wet.any():
            return np.zeros(wet.shape, np.float64)
        struct = iterate_structure(generate_binary_structure(2, 1), int((self.kernel - 1) / 2.0))
        return compute_dilated_mask(wet, struct, self.rim)

    def to_rate(self, values: np.ndarray) -> np.ndarray:
        """The forecast's values as rain rate (float64; NaN stays NaN; ``values`` itself when already float64 rates)."""
        x = np.asarray(values, dtype=np.float64)
        if self.log_scale is None:
            return x
        with np.errstate(over="ignore", invalid="ignore"):
            r = (10.0 ** (x * self.log_scale / 10.0) / 200.0) ** (1.0 / 1.6)
        return np.where(x > 0, r, np.where(np.isnan(x), np.nan, 0.0))

    def from_rate(self, rate: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_rate` (below 0 dBZ: 0)."""
        if self.log_scale is None:
            return rate
        with np.errstate(divide="ignore", invalid="ignore"):
            dbz = 10.0 * np.log10(200.0 * rate**1.6)
        return np.where(np.isnan(rate), np.nan, np.maximum(np.nan_to_num(dbz, nan=0.0, neginf=0.0), 0.0)
                        / self.log_scale)


def match_cdf(
    forecast: np.ndarray,
    reference: np.ndarray,
    *,
    inplace: bool = False,
    mask: IncrementalMask | None = None,
    match: bool = True,
) -> np.ndarray:
    """Each ``(member, lead)`` field of ``forecast`` ``(M, T, y, x)`` given the empirical
    distribution of ``reference`` ``(y, x)``, rank for rank, on the pixels where the
    reference and every member at that lead are finite (pysteps'
    ``nonparam_match_empirical_cdf``); NaN stays NaN.

    With ``mask`` (:class:`IncrementalMask`), each member's rain rate is first multiplied,
    lead by lead, by STEPS' incremental mask grown from its previous lead (the first
    lead: from the reference), as pysteps' STEPS does before its CDF matching (the fields
    are then matched as rain rates); ``match=False`` applies the mask alone.

    Returns a float64 copy, or with ``inplace=True`` writes into ``forecast`` (a
    floating-point array, e.g. float32) and returns it: each field is matched in float64
    and then stored in ``forecast``'s dtype, so a float32 result equals
    ``match_cdf(forecast, reference).astype(np.float32)`` bit for bit without the two
    forecast-sized copies (a float64 one, then the float32 cast).
    """
    from pysteps.postprocessing.probmatching import nonparam_match_empirical_cdf

    if inplace:
        if not isinstance(forecast, np.ndarray) or forecast.dtype.kind != "f" or not forecast.flags.writeable:
            raise ValueError("match_cdf(inplace=True) needs a writeable floating-point numpy array")
        out = forecast
    else:
        out = np.array(forecast, dtype=np.float64, copy=True)
    covered = np.isfinite(reference)
    if mask is None:
        for t in range(out.shape[1]):
            ok = covered & np.all(np.isfinite(out[:, t]), axis=0)  # per lead: inflow NaN grows with lead time
            if not match or ok.sum() < 2:
                continue
            ref = reference[ok]
            for m in range(out.shape[0]):
                field = out[m, t]
                field[ok] = nonparam_match_empirical_cdf(field[ok].astype(np.float64), ref)
        return out
    ref_rate = mask.to_rate(np.where(covered, reference, np.nan))
    masks = [mask.make(ref_rate)] * out.shape[0]
    for t in range(out.shape[1]):
        fields = [mask.to_rate(out[m, t]) * masks[m] for m in range(out.shape[0])]
        ok = covered & np.all([np.isfinite(f) for f in fields], axis=0)
        if match and ok.sum() >= 2:
            ref = ref_rate[ok]
            for f in fields:
                f[ok] = nonparam_match_empirical_cdf(f[ok], ref)
        masks = [mask.make(f) for f in fields]
        for m, f in enumerate(fields):
            out[m, t] = mask.from_rate(f)
    return out


def postprocess_members(
    forecast: np.ndarray,
    reference: np.ndarray,
    prob_matching: str | None,
    mask_method: str | None,
    timestep_min: float,
    pixel_km: float,
    log_scale: float | None = None,
) -> np.ndarray:
    """STEPS' post-processing of an ensemble ``(M, T, y, x)``, in place: the incremental mask
    (``mask_method="incremental"``, :class:`IncrementalMask` for the grid) and the CDF matching
    to ``reference`` (``prob_matching="cdf"``) of :func:`match_cdf`; a single member, or both
    off, is returned as it is."""
    if forecast.shape[0] < 2 or (prob_matching != "cdf" and mask_method is None):
        return forecast
    mask = IncrementalMask.for_grid(timestep_min, pixel_km, log_scale) if mask_method == "incremental" else None
    return match_cdf(forecast, reference, inplace=True, mask=mask, match=prob_matching == "cdf")


def inflow_mask(coverage: np.ndarray, uv: np.ndarray, n_leadtimes: int) -> np.ndarray:
    """Where advection brings values from outside the domain or the radar coverage.

    The coverage ``(y, x)`` (True = observed) is advected by pysteps' semi-Lagrangian
    scheme (:func:`advect`, block by block: the mask is built without a float64 copy of
    the forecast) with the motion ``uv`` ``(2, y, x)`` (pixels per step) and ``outval=NaN``
    outside the domain, as pysteps' extrapolation nowcast does with rain; a pixel whose
    back-trajectory leaves the domain by more than one pixel, or whose interpolated
    coverage is below one half, has no observed origin. (The one-pixel margin, an
    edge-replicated border, keeps the sub-pixel motion of an edge row from blanking the
    whole row, which pysteps' own ``outval`` does.)

    Returns
    -------
    ndarray of bool
        ``(n_leadtimes, y, x)``, True where the forecast has no observed origin.
    """
    cov = np.asarray(coverage, dtype=bool)
    uv = np.asarray(uv, dtype=np.float64)
    if uv.shape != (2,) + cov.shape:
        raise ValueError(f"uv must have shape {(2,) + cov.shape}, got {uv.shape}")
    h, w = cov.shape
    field = np.pad(cov.astype(np.float64), 1, mode="edge")
    vel = np.pad(uv, ((0, 0), (1, 1), (1, 1)), mode="edge")
    out = np.empty((int(n_leadtimes), h, w), dtype=bool)
    # only the inner pixels, straight into a boolean mask (NaN from outside is not >= 0.5)
    return advect(field, vel, int(n_leadtimes), outval=np.nan, out=out, region=(1, h + 1, 1, w + 1),
                  transform=lambda a: ~(a >= 0.5))
