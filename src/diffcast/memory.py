"""Memory of a nowcast: estimate before any work, and a cap kept by sampling members in turns.

A DiffCast nowcast's memory is dominated by the denoiser's activations, which grow
with the grid area times the number of members sampled at once (``member_chunk``),
and by the ensemble itself (members x leads x pixels, a few copies while it is
decoded, matched and written). :func:`plan_members` measures the first on a small
probe grid, scales it by area (the network is convolutional and its attention works
on windows of fixed size on large grids, so its memory is linear in the area), adds
the second and the process's present resident memory, and picks the largest member
chunk that keeps the estimate under the cap; when even one member at a time does
not fit, :class:`MemoryCapError` says so before anything is computed. Chunking
changes the schedule, not the numbers: each member's noise has its own generator
(:meth:`diffcast.models.diffusion.residual.ResidualDiffusion.sample`).

The probe counts the bytes of live tensor storages while the sampler runs
(:class:`LiveTensorBytes`, a ``TorchDispatchMode``), which is exact for tensors and
blind to the allocator's slack and to the numpy work of the optical flow (motion,
advection, inflow mask); that work is a term per pixel and lead calibrated on the
largest benchmark grid (:data:`BACKBONE_BYTES_PER_PIXEL_LEAD`), the ensemble term is
written generously (float64 copies), and ``benchmarks/bench_cycle.py`` reports the
estimate beside the measured peak.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Side of the probe grid (pixels) on which the denoiser's memory is measured.
PROBE_SIZE = 64
#: Share of the available memory used as the default cap.
DEFAULT_FRACTION = 0.9
_UNITS = {"": None, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


class MemoryCapError(ValueError):
    """A nowcast that cannot stay under the memory cap, even one member at a time."""


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"4G"``, ``"3.5GiB"``, ``"800M"``, ``"2GB"`` (K/M/G/T binary, KB/MB/GB/TB decimal).

    Numbers (int/float) are bytes; a string needs its unit.
    """
    if isinstance(text, bool):
        raise ValueError(f"a memory size must be a number of bytes or a string like '4G', got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"cannot read the memory size {text!r}: give a number and a unit, e.g. 4G, 3.5GiB, 800M")
        if _UNITS[unit] is None:
            raise ValueError(f"memory size {text!r} has no unit: write e.g. {text}G or {text}M")
        value = float(m.group(1)) * _UNITS[unit]
    if not value > 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return int(value)


def format_size(n: float) -> str:
    """``1.5 GiB``, ``800 MiB``."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _cgroup_free() -> int | None:
    """Room left under a cgroup (v2 or v1) memory limit, if one is set."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                raw = fh.read().strip()
            if raw == "max":
                return None
            limit = int(raw)
            if limit >= 2**60:  # v1's "no limit"
                return None
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
            return max(limit - usage, 0)
        except (OSError, ValueError):
            continue
    return None


def available_memory() -> int:
    """Bytes a new allocation can get now: ``MemAvailable`` (Linux), or the cgroup's room if less.

    Falls back to psutil, then to the physical memory (``os.sysconf``).
    """
    avail: int | None = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except Exception:  # noqa: BLE001 (optional dependency, any failure means: not known)
            avail = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    room = _cgroup_free()
    return min(avail, room) if room is not None else avail


def resident_memory() -> int:
    """The process's resident memory now (bytes; 0 when not known)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:  # noqa: BLE001
            return 0


def default_cap() -> int:
    """:data:`DEFAULT_FRACTION` of :func:`available_memory` plus what this process holds already."""
    return int(DEFAULT_FRACTION * available_memory()) + resident_memory()


class LiveTensorBytes:
    """Peak bytes of live tensor storages created while it is active (``with LiveTensorBytes() as m``).

    Every op's outputs are seen through a ``TorchDispatchMode``; a storage counts from
    the op that creates it until the last tensor holding it is freed. Tensors that
    existed before (parameters, inputs) are not counted.
    """

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}
        self._mode: Any = None

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.current -= entry[0]
            del self._live[key]

    def _seen(self, t: Any) -> None:
        import torch

        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def __enter__(self) -> LiveTensorBytes:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    tracker._seen(t)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`plan_members` decided."""

    member_chunk: int
    estimate: int  # bytes, peak of the whole process
    cap: int
    baseline: int  # resident memory before the nowcast
    per_chunk_member: int  # denoiser activations per member sampled at once
    ensemble: int  # the ensemble's arrays and the numpy work of motion/advection

    def describe(self) -> dict[str, Any]:
        return {"member_chunk": self.member_chunk, "estimate_bytes": self.estimate, "cap_bytes": self.cap,
                "estimate": format_size(self.estimate), "cap": format_size(self.cap)}


def _probe_grid(model: Any, height: int, width: int) -> tuple[int, int]:
    """The grid the denoiser's memory is measured on: the forecast grid when it is small,
    else a square that holds a whole attention window of the model (so that the memory per
    pixel is that of the large grid) and at least :data:`PROBE_SIZE` pixels."""
    from .inference import GRID_MULTIPLE
    from .models.diffusion.layers import Attention

    side = PROBE_SIZE
    unet = getattr(model, "model", None)
    f_mid = int(getattr(unet, "downsample_factor", 1)) * int(getattr(model, "patch", 1))
    for m in model.modules():
        if isinstance(m, Attention) and m.window is not None:
            side = max(side, max(m.window) * f_mid)
    side = -(-side // GRID_MULTIPLE) * GRID_MULTIPLE
    if height * width <= side * side:
        return int(height), int(width)
    return side, side


#: Probe results per model object and grid: a watch loop measures once, not every cycle.
_PROBES: weakref.WeakKeyDictionary[Any, dict[tuple[int, int, int], tuple[float, float, float]]] = (
    weakref.WeakKeyDictionary())


def probe_sample_bytes(model: Any, height: int, width: int, steps: int = 1) -> tuple[float, float, float]:
    """Live tensor bytes of ``model.sample`` for a ``height`` x ``width`` grid: ``(fixed, per chunk member, per member)``.

    Measured by two short runs on the probe grid (:func:`_probe_grid`; 1 member, then 2
    at once; one sampler step, the backbone once), which separate the memory that does
    not depend on the members (context encoder, ``mu``) from the denoiser's activations
    per member sampled at once; what is kept per member (its residual) is counted from
    its size. Scaled by area to the forecast grid. The tracking costs Python time per
    tensor op: a probe takes about as long as a forecast of a few members on the probe grid.
    """
    import copy

    import torch

    key = (int(height), int(width), int(steps))
    try:
        cached = _PROBES.get(model, {}).get(key)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None:
        return cached
    ph, pw = _probe_grid(model, height, width)
    small = copy.deepcopy(model)
    # the same network on the probe grid: a convolutional model's weights do not depend on it
    small.height, small.width = ph, pw
    bb = getattr(small, "backbone_net", None)
    if bb is not None:
        bb.height, bb.width = ph, pw
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, small.t_in, small.channels, ph, pw, generator=gen) * 0.5
    peaks = {}
    with torch.inference_mode():
        # the backbone (optical flow: numpy, not tensors) once; each run gets its own copy of mu, as a forecast has
        mu = small._backbone_mu(x)
        small._backbone_mu = lambda _x: mu.clone()
        for m in (1, 2):
            with LiveTensorBytes() as meter:
                small.sample(x, members=m, member_chunk=m, steps=steps, generator=torch.Generator().manual_seed(0))
            peaks[m] = meter.peak
    # kept per member until the end: its residual, twice while the segments are joined
    per_member = 2.0 * small.t_out * small.channels * ph * pw * 4
    per_chunk = max(peaks[2] - peaks[1] - per_member, 0)
    fixed = max(peaks[1] - per_chunk - per_member, 0)
    scale = (height * width) / float(ph * pw)
    result = (fixed * scale, per_chunk * scale, per_member * scale)
    try:
        _PROBES.setdefault(model, {})[key] = result
    except TypeError:
        pass
    return result


def ensemble_bytes(members: int, t_out: int, height: int, width: int, n_thresholds: int = 4) -> int:
    """The ensemble's arrays after sampling, written generously: the forecast as float32
    tensor and array, a float64 copy (decoding, probability matching), the float32 values
    written, the ensemble mean and the exceedance probabilities at each threshold."""
    field = t_out * height * width
    return int(field * (members * (4 + 4 + 8 + 4) + 4 + 4 * n_thresholds))


#: Bytes per pixel and lead of the numpy work around the network (optical flow, advection
#: of the last frame, the inflow mask: float64 fields and displacement grids), calibrated on
#: ``benchmarks/bench_cycle.py`` at 2000 x 2000 with one member, where it is most of the
#: peak (6.8 GB measured against 3.9 GB estimated without it).
BACKBONE_BYTES_PER_PIXEL_LEAD = 64


def backbone_bytes(t_out: int, height: int, width: int) -> int:
    """The numpy work of motion, advection and inflow mask (:data:`BACKBONE_BYTES_PER_PIXEL_LEAD`)."""
    return int(BACKBONE_BYTES_PER_PIXEL_LEAD * t_out * height * width)


def plan_members(
    model: Any,
    height: int,
    width: int,
    members: int,
    *,
    cap: int | None = None,
    member_chunk: int | None = None,
    n_thresholds: int = 4,
    probe: tuple[float, float, float] | None = None,
    baseline: int | None = None,
) -> MemoryPlan:
    """The largest member chunk whose estimated peak stays under ``cap`` (default :func:`default_cap`).

    ``member_chunk`` given: that chunk, checked against the cap. ``baseline``: the
    process's memory before the nowcast (default: its resident memory now). Raises
    :class:`MemoryCapError` (before any forecast work) when it does not fit, or when
    even one member at a time does not.
    """
    if cap is None:
        cap = default_cap()
    members = int(members)
    fixed, per_chunk, per_member = probe if probe is not None else probe_sample_bytes(model, height, width)
    base = resident_memory() if baseline is None else int(baseline)
    ens = ensemble_bytes(members, int(model.t_out), height, width, n_thresholds) + backbone_bytes(
        int(model.t_out), height, width)

    def estimate(k: int) -> int:
        return int(base + fixed + per_chunk * k + per_member * members + ens)

    if member_chunk is not None:
        k = min(int(member_chunk), members)
        if estimate(k) > cap:
            fit = [j for j in range(1, k) if estimate(j) <= cap]
            hint = f"--member-chunk {fit[-1]} fits" if fit else "fewer members or a smaller domain"
            raise MemoryCapError(
                f"{members} member(s) on {height}x{width} with member chunk {k} need about {format_size(estimate(k))}, "
                f"over the memory cap of {format_size(cap)}: {hint} (or raise --max-memory)"
            )
    else:
        fit = [j for j in range(1, members + 1) if estimate(j) <= cap]
        if not fit:
            raise MemoryCapError(
                f"{members} member(s) on {height}x{width} need about {format_size(estimate(1))} even one member at a "
                f"time (process {format_size(base)}, ensemble arrays and optical flow {format_size(ens)}, denoiser "
                f"{format_size(fixed + per_chunk + per_member * members)}), over the memory cap of {format_size(cap)}: "
                "ask for fewer members or a smaller domain, or raise --max-memory"
            )
        k = fit[-1]
    plan = MemoryPlan(member_chunk=k, estimate=estimate(k), cap=int(cap), baseline=base,
                      per_chunk_member=int(per_chunk), ensemble=ens)
    log.info("memory: about %s at member chunk %d of %d (cap %s)", format_size(plan.estimate), k, members,
             format_size(cap))
    return plan


#: Forecasts of fewer pixels x members than this are not probed unless a cap is given
#: (256 x 256 x 16 members: about 1 GB with the shipped model, seconds of probing saved).
PLAN_ABOVE = 2**20


def member_schedule(
    model: Any,
    height: int,
    width: int,
    members: int,
    *,
    max_memory: str | int | float | None = None,
    member_chunk: int | None = None,
    n_thresholds: int = 4,
) -> MemoryPlan | None:
    """The member chunk of a DiffCast nowcast under the memory cap, or ``None`` when no plan is needed.

    ``max_memory`` (bytes or ``"4G"``) is the cap; ``None``: :func:`default_cap`, and small
    forecasts (under :data:`PLAN_ABOVE` pixels x members) are not probed at all.
    """
    explicit = max_memory is not None
    cap = parse_size(max_memory) if explicit else None
    if not explicit and int(height) * int(width) * int(members) < PLAN_ABOVE:
        return None
    return plan_members(model, int(height), int(width), int(members), cap=cap, member_chunk=member_chunk,
                        n_thresholds=n_thresholds)


def schedule_members(model: Any, members: int, sample_kwargs: dict[str, Any], n_thresholds: int = 4) -> MemoryPlan | None:
    """:func:`member_schedule` for a nowcast's sampling options, before any work.

    Pops ``max_memory`` from ``sample_kwargs`` (it is not a sampler option) and, for a
    diffusion model whose forecast needs a plan, sets ``sample_kwargs["member_chunk"]``;
    returns the plan (``None`` for other models and small forecasts).
    """
    from .inference import is_diffusion_model

    max_memory = sample_kwargs.pop("max_memory", None)
    if not is_diffusion_model(model):
        return None
    plan = member_schedule(model, model.height, model.width, members, max_memory=max_memory,
                           member_chunk=sample_kwargs.get("member_chunk"), n_thresholds=n_thresholds)
    if plan is not None:
        sample_kwargs["member_chunk"] = plan.member_chunk
    return plan
