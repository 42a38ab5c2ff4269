"""The one tensor contract and the metadata record that travels with a dataset.

Sequences are ``(B, T, C, H, W)`` float32 in ``[0, 1]`` (a single sequence from a
dataset is ``(T, C, H, W)``). Every public entry point checks its inputs with
:func:`validate_sequence`, so a wrong rank, NaN/inf, values outside ``[0, 1]`` or
a wrong length fail early with a ``ValueError`` that names the problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # numpy.ndarray | torch.Tensor

#: Tolerance for values slightly outside [0, 1] caused by float round-off.
RANGE_TOL = 1e-5

#: Values per call of a metadata's ``to_physical_fn`` (bounds its float64 temporaries).
_PHYSICAL_BLOCK = 1 << 20


@dataclass(frozen=True)
class DatasetMeta:
    """What a dataset's ``[0, 1]`` values mean (cf. pysteps' metadata dict).

    Attributes
    ----------
    name : str
        Dataset name as registered (``"sevir"``, ``"synthetic"``, ...).
    unit : str
        Unit of the *threshold space*, the values obtained by ``x * scale``
        (e.g. ``"VIL code (0-255)"`` for SEVIR, ``"dBZ"`` for CIKM).
    scale : float
        Factor mapping ``[0, 1]`` to the threshold space used by the paper's
        metrics (SEVIR: 255; CIKM/Shanghai/MeteoNet: 90 dBZ).
    thresholds : tuple of float
        Default CSI thresholds in the threshold space.
    timestep_min : float
        Time between frames in minutes.
    pixel_km : float
        Pixel size in km.
    physical_unit : str
        Unit returned by :meth:`to_physical` (e.g. ``"kg m-2"`` for VIL).
    physical_name : str
        CF-style variable name of the physical quantity.
    transform : str
        Human-readable description of how ``[0, 1]`` maps to physical values.
    to_physical_fn : callable, optional
        Maps threshold-space values (``x * scale``) to physical values; identity
        when omitted.
    """

    name: str
    unit: str
    scale: float
    thresholds: tuple[float, ...]
    timestep_min: float
    pixel_km: float
    physical_unit: str = ""
    physical_name: str = "precipitation_intensity"
    transform: str = "linear: physical = x * scale"
    to_physical_fn: Callable[[np.ndarray], np.ndarray] | None = field(
        default=None, compare=False, repr=False
    )

    def to_code(self, x: ArrayLike) -> ArrayLike:
        """Map ``[0, 1]`` values to the threshold space (``clip(x) * scale``)."""
        if isinstance(x, torch.Tensor):
            return x.clamp(0.0, 1.0) * self.scale
        return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * self.scale

    def to_physical(self, x: ArrayLike) -> np.ndarray:
        """Map ``[0, 1]`` values to physical units (:attr:`physical_unit`)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        code = np.asarray(np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0), dtype=np.float32)
        code *= np.float32(self.scale)
        if self.to_physical_fn is None:
            return code
        if code.ndim == 0 or not code.flags.c_contiguous:
            return np.asarray(self.to_physical_fn(code), dtype=np.float32)
        # element-wise transforms, applied in blocks: their float64 temporaries stay small
        flat = code.reshape(-1)
        for a in range(0, flat.size, _PHYSICAL_BLOCK):
            flat[a : a + _PHYSICAL_BLOCK] = self.to_physical_fn(flat[a : a + _PHYSICAL_BLOCK])
        return code

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the transform callable)."""
        return {
            "name": self.name,
            "unit": self.unit,
            "scale": self.scale,
            "thresholds": list(self.thresholds),
            "timestep_min": self.timestep_min,
            "pixel_km": self.pixel_km,
            "physical_unit": self.physical_unit,
            "physical_name": self.physical_name,
            "transform": self.transform,
        }


def _describe_shape(x: ArrayLike) -> str:
    return "x".join(str(s) for s in x.shape) if len(x.shape) else "scalar"


def validate_sequence(
    x: ArrayLike,
    name: str = "x",
    *,
    ndim: int | Sequence[int] = 5,
    length: int | None = None,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    check_range: bool = True,
    time_axis: int | None = None,
) -> None:
    """Check a sequence against the tensor contract.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Sequence, by default ``(B, T, C, H, W)``.
    name : str
        Name used in error messages (``"x_in"``, ``"y_true"``, ...).
    ndim : int or sequence of int
        Allowed ranks (5 for ``(B, T, C, H, W)``, 4 for ``(T, C, H, W)``,
        6 for ``(M, B, T, C, H, W)``).
    length : int, optional
        Required number of frames along the time axis.
    channels : int, optional
        Required number of channels.
    size : (int, int), optional
        Required ``(H, W)``.
    check_range : bool
        Check that values are finite and inside ``[0, 1]``.
    time_axis : int, optional
        Index of the time axis; defaults to ``-4`` (``(..., T, C, H, W)``).

    Raises
    ------
    ValueError
        Naming the first problem found.
    """
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim not in allowed:
        layouts = {4: "(T, C, H, W)", 5: "(B, T, C, H, W)", 6: "(M, B, T, C, H, W)"}
        want = " or ".join(layouts.get(n, f"{n}-d") for n in allowed)
        raise ValueError(f"{name} must have shape {want}, got {x.ndim}-d array of shape {_describe_shape(x)}")
    t_axis = -4 if time_axis is None else time_axis
    if length is not None and x.shape[t_axis] != length:
        raise ValueError(f"{name} must have {length} frames, got {x.shape[t_axis]} (shape {_describe_shape(x)})")
    if channels is not None and x.shape[-3] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got {x.shape[-3]}")
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(f"{name} must be {size[0]}x{size[1]} pixels, got {x.shape[-2]}x{x.shape[-1]}")
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} is empty (shape {_describe_shape(x)})")
    if not check_range:
        return
    if isinstance(x, torch.Tensor):
        if not torch.is_floating_point(x):
            raise ValueError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}")
        finite = bool(torch.isfinite(x).all())
        lo, hi = (float(x.min()), float(x.max())) if finite else (0.0, 0.0)
    else:
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}")
        finite = bool(np.isfinite(x).all())
        lo, hi = (float(x.min()), float(x.max())) if finite else (0.0, 0.0)
    if not finite:
        raise ValueError(f"{name} contains NaN or inf values")
    if lo < -RANGE_TOL or hi > 1.0 + RANGE_TOL:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def as_tensor(x: ArrayLike, name: str = "x", **checks: Any) -> torch.Tensor:
    """Validate ``x`` (see :func:`validate_sequence`) and return a float32 tensor."""
    validate_sequence(x, name, **checks)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.to(torch.float32)


def split_sequence(seq: torch.Tensor, t_in: int, t_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(..., T, C, H, W)`` into ``x_in`` (first ``t_in``) and ``y_true`` (next ``t_out``).

    Raises
    ------
    ValueError
        If the sequence is shorter than ``t_in + t_out``.
    """
    total = seq.shape[-4]
    t_out = total - t_in if t_out is None else t_out
    if t_in <= 0 or t_out <= 0 or t_in + t_out > total:
        raise ValueError(f"sequence has {total} frames; cannot split into {t_in} inputs + {t_out} targets")
    return seq[..., :t_in, :, :, :], seq[..., t_in : t_in + t_out, :, :, :]
