"""FLOP counting and a matrix-multiply reference for the benchmarks.

Convention (the one of :class:`torch.utils.flop_counter.FlopCounterMode`): one
multiply-add is 2 FLOPs; biases, normalisations and pointwise ops are not
counted. A convolution with input channels ``C_in``, ``groups`` groups, output
channels ``C_out``, kernel ``k_1 x ... x k_d`` and output size ``o_1 x ... x o_d``
costs ``2 * B * C_out * (C_in / groups) * prod(k) * prod(o)``; a linear layer
``2 * rows * in_features * out_features``; ``(m, k) @ (k, n)`` costs ``2 m k n``.

Two counters:

* :func:`count_flops` wraps ``FlopCounterMode`` (sees every aten matmul /
  convolution, including ``einsum`` / ``bmm`` inside attention);
* :class:`HookFlopCounter` uses forward hooks on ``nn.Conv*d`` and ``nn.Linear``
  modules only (an independent implementation of the formulas above, used to
  cross-check ``FlopCounterMode``; it cannot see functional matmuls).

:func:`measure_gemm` measures the machine's float32 matrix-multiply throughput,
the reference "limit" the benchmarks compare against.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def conv_flops(
    batch: int, c_in: int, c_out: int, kernel: Sequence[int], out_size: Sequence[int], groups: int = 1
) -> int:
    """FLOPs (2 per multiply-add, no bias) of one N-d convolution.

    Parameters
    ----------
    batch : int
        Batch size ``B``.
    c_in, c_out : int
        Input and output channels (``c_in`` divisible by ``groups``).
    kernel : sequence of int
        Kernel size per spatial dimension.
    out_size : sequence of int
        Output size per spatial dimension (after stride, padding, dilation).
    groups : int
        Convolution groups.

    Returns
    -------
    int
    """
    if c_in % groups or c_out % groups:
        raise ValueError(f"channels ({c_in} -> {c_out}) must be divisible by groups ({groups})")
    return 2 * batch * c_out * (c_in // groups) * math.prod(kernel) * math.prod(out_size)


def linear_flops(rows: int, in_features: int, out_features: int) -> int:
    """FLOPs (2 per multiply-add, no bias) of a linear layer applied to ``rows`` vectors."""
    return 2 * rows * in_features * out_features


def matmul_flops(m: int, k: int, n: int, batch: int = 1) -> int:
    """FLOPs of ``batch`` products ``(m, k) @ (k, n)``."""
    return 2 * batch * m * k * n


@dataclass
class FlopCount:
    """Result of a FLOP count.

    Attributes
    ----------
    total : int
        All counted FLOPs.
    by_key : dict of str to int
        FLOPs per aten operator (:func:`count_flops`) or per module name
        (:class:`HookFlopCounter`).
    """

    total: int
    by_key: dict[str, int] = field(default_factory=dict)


def count_flops(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[FlopCount, object]:
    """Run ``fn(*args, **kwargs)`` under ``FlopCounterMode``.

    Returns
    -------
    (FlopCount, result)
        The count (per aten operator) and whatever ``fn`` returned, so the
        counted call can double as a warm-up run.
    """
    mode = FlopCounterMode(display=False)
    with mode:
        out = fn(*args, **kwargs)
    by_op = {str(op): int(n) for op, n in mode.get_flop_counts().get("Global", {}).items()}
    return FlopCount(int(mode.get_total_flops()), by_op), out


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class HookFlopCounter:
    """Count convolution and linear FLOPs of a module with forward hooks.

    Use as a context manager around one or more forward calls::

        with HookFlopCounter(model) as counter:
            model(x)
        counter.total, counter.by_module

    Only ``nn.Conv1d/2d/3d`` and ``nn.Linear`` are counted (transposed
    convolutions, functional convolutions and matmuls are not).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.by_module: dict[str, int] = defaultdict(int)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def total(self) -> int:
        return int(sum(self.by_module.values()))

    def result(self) -> FlopCount:
        return FlopCount(self.total, dict(self.by_module))

    def _hook(self, name: str) -> Callable:
        def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(mod, _CONV_TYPES):
                x = inputs[0]
                batch = x.shape[0] if x.ndim == mod.weight.ndim else 1  # unbatched input
                flops = conv_flops(
                    batch, mod.in_channels, mod.out_channels, mod.kernel_size, output.shape[-len(mod.kernel_size):],
                    mod.groups,
                )
            else:  # nn.Linear
                rows = output.numel() // mod.out_features
                flops = linear_flops(rows, mod.in_features, mod.out_features)
            self.by_module[name] += flops

        return hook

    def __enter__(self) -> HookFlopCounter:
        for name, mod in self.module.named_modules():
            if isinstance(mod, (*_CONV_TYPES, nn.Linear)):
                self._handles.append(mod.register_forward_hook(self._hook(name or type(mod).__name__)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def measure_gemm(n: int = 2048, repeats: int = 3, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Best-of-``repeats`` throughput of an ``n x n x n`` matrix multiply.

    Returns
    -------
    dict
        ``gemm_gflops`` (best, 1e9 FLOP/s), ``gemm_gflops_median``,
        ``gemm_seconds`` (best time of one product), ``gemm_cpu_seconds``
        (least process CPU time of one product, all threads),
        ``gemm_cpu_gflops`` (FLOPs per CPU-second, i.e. the rate per busy
        core; little affected by other load) and ``gemm_n``.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be positive, got n={n}, repeats={repeats}")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    flops = matmul_flops(n, n, n)
    best = min(range(repeats), key=times.__getitem__)
    cpu_best = min(cpu)
    return {
        "gemm_gflops": flops / times[best] / 1e9,
        "gemm_gflops_median": flops / sorted(times)[len(times) // 2] / 1e9,
        "gemm_seconds": times[best],
        "gemm_cpu_seconds": cpu_best,
        "gemm_cpu_gflops": flops / cpu_best / 1e9 if cpu_best > 0 else None,
        "gemm_n": n,
    }
