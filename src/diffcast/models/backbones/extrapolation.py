"""Lagrangian extrapolation: pysteps Lucas-Kanade motion + semi-Lagrangian advection.

The motion field is estimated from the observed frames with
``pysteps.motion.get_method("LK")`` and the last frame is advected along it by
pysteps' semi-Lagrangian scheme (``pysteps.extrapolation.semilagrangian``, pySTEPS,
BSD-3-Clause; run block by block by :func:`.pysteps_methods.advect`, the same values).
Runs in numpy on the CPU, one (sample, channel) at a time.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from . import BACKBONES
from .base import Backbone
from .pysteps_methods import advect, motion_field

logger = logging.getLogger(__name__)


@BACKBONES.register("extrapolation")
class Extrapolation(Backbone):
    """Optical-flow extrapolation of the last observed frame.

    Parameters
    ----------
    t_in, t_out : int
        Observed and forecast frames; ``t_in >= 2`` (motion needs two frames).
    channels, height, width : int
        Frame layout.
    threshold : float, default 0.01
        Values below this (in the [0, 1] data scale) are treated as "no signal"
        when estimating motion; a frame pair with no signal gives zero motion.
    motion_frames : int or None, default None
        Number of most recent frames used by Lucas-Kanade (``None``: all ``t_in``,
        at most 4). Must be between 2 and ``t_in``.
    lk_kwargs : dict or None
        Extra keyword arguments for ``pysteps`` ``dense_lucaskanade``.

    Notes
    -----
    ``trainable`` is ``False``: no parameters, ``loss`` returns the MSE without a
    gradient. Non-finite outputs become 0 and the forecast is clipped to [0, 1].
    Motion is estimated on ``x * 255`` so pysteps' 8-bit feature detection sees
    the full dynamic range.

    ``domain = (h, w)`` (set by :meth:`diffcast.inference.Nowcaster.set_domain`) says
    that only the top-left ``h x w`` of a frame is data and the rest zero padding: the
    motion is then estimated on the domain alone and extended to the padding with its
    edge values. Lucas-Kanade on the padded frame can lose the motion entirely, since
    the static edge of the padding outvotes the moving features.
    """

    trainable = False
    PRESETS: dict[str, dict] = {}

    def __init__(
        self,
        t_in: int,
        t_out: int,
        channels: int = 1,
        height: int = 128,
        width: int = 128,
        threshold: float = 0.01,
        motion_frames: int | None = None,
        lk_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        if kwargs:
            raise ValueError(
                f"unknown extrapolation argument(s) {', '.join(sorted(kwargs))}; "
                "valid ones are: lk_kwargs, motion_frames, threshold"
            )
        super().__init__(t_in, t_out, channels, height, width)
        if t_in < 2:
            raise ValueError(f"extrapolation needs at least 2 observed frames to estimate motion, got t_in={t_in}")
        if motion_frames is None:
            motion_frames = min(t_in, 4)
        if not isinstance(motion_frames, int) or not 2 <= motion_frames <= t_in:
            raise ValueError(f"motion_frames must be an integer in [2, t_in={t_in}], got {motion_frames!r}")
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.motion_frames = motion_frames
        self.lk_kwargs = dict(lk_kwargs or {})
        self.domain: tuple[int, int] | None = None

    def motion(self, frames: np.ndarray) -> np.ndarray:
        """Lucas-Kanade motion field of a short sequence.

        Parameters
        ----------
        frames : ndarray, shape (T, H, W)
            Values in [0, 1].

        Returns
        -------
        ndarray, shape (2, H, W)
            Velocity (u, v) in pixels per time step; zeros where there is no signal.
            With :attr:`domain` set, estimated on the domain and edge-extended.
        """
        # one float64 copy of our own, cleaned and scaled in place (each temporary is frame-stack sized)
        frames = np.array(frames, dtype=np.float64, order="C", copy=True)
        np.nan_to_num(frames, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        full = frames.shape[1:]
        if self.domain is not None:
            h, w = min(int(self.domain[0]), full[0]), min(int(self.domain[1]), full[1])
            if (h, w) != full:
                uv = self.motion(frames[:, :h, :w])  # the domain's own shape: no further cut
                return np.pad(uv, ((0, 0), (0, full[0] - h), (0, full[1] - w)), mode="edge")
        # the last field is kept: a nowcast asks again for the same frames (inflow mask) after the forecast
        key = (frames.shape, hashlib.blake2b(frames.data, digest_size=16).digest())  # the bytes, without a copy
        memo = getattr(self, "_motion_memo", None)
        if memo is not None and memo[0] == key:
            return memo[1].copy()
        signal = frames >= self.threshold
        if signal.sum(axis=(1, 2)).min() < 4:
            uv = np.zeros((2,) + frames.shape[1:])
        else:
            frames[~signal] = 0.0
            frames *= 255.0
            uv = motion_field(frames, **self.lk_kwargs)
        self._motion_memo = (key, uv)
        return uv.copy()

    def extrapolate(self, frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Forecast ``t_out`` frames from one (T_in, H, W) sequence, values in [0, 1].

        pysteps' semi-Lagrangian scheme (:func:`~.pysteps_methods.advect`: the same
        values as ``pysteps.extrapolation.semilagrangian``, bit for bit, computed a block
        of rows at a time) writes straight into ``out`` (float32, ``(t_out, H, W)``;
        allocated when omitted). Peak memory is then the float32 forecast plus a few MB,
        not pysteps' float64 copies of it.
        """
        # only the frames the motion and the advection use, in float64 (one copy, cleaned in place)
        frames = np.array(np.asarray(frames)[-self.motion_frames :], dtype=np.float64, copy=True)
        np.nan_to_num(frames, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        last = frames[-1]
        if out is None:
            out = np.empty((self.t_out, *last.shape), np.float32)
        uv = self.motion(frames[-self.motion_frames :])
        if not np.any(uv) or not np.any(last):
            out[:] = last[None]
        else:
            advect(last, uv, self.t_out, outval=0.0, out=out,
                   transform=lambda a: np.nan_to_num(a, copy=False, nan=0.0, posinf=0.0, neginf=0.0))
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Extrapolate every sample and channel.

        Parameters
        ----------
        x_in : Tensor, shape (B, T_in, C, H, W), values in [0, 1]

        Returns
        -------
        Tensor, shape (B, T_out, C, H, W), values in [0, 1], same dtype/device as ``x_in``
        """
        self.check_input(x_in)
        t = x_in.detach().cpu()
        x = (t if t.dtype in (torch.float32, torch.float64) else t.double()).numpy()  # a view: extrapolate copies
        out = np.empty((x.shape[0], self.t_out) + x.shape[2:], dtype=np.float32)
        for b in range(x.shape[0]):
            for c in range(x.shape[2]):
                self.extrapolate(x[b, :, c], out=out[b, :, c])
        return torch.from_numpy(out).to(device=x_in.device, dtype=x_in.dtype)
