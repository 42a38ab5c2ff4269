"""Inference speed of the paper-size DiffCast (issue 8): one JSON object per line.

Model: ``{type: diffcast, t_in: 5, t_out: 20, channels: 1, 128 x 128, backbone:
phydnet/paper, diffusion: paper}`` with random weights (timing only). Measured,
each against a float32 GEMM measured in the same run:

* ``gemm``: ``n^3`` float32 matrix multiply, the machine's practical limit;
* ``unet_flops``: FLOPs of one GTUNet call (``FlopCounterMode``, cross-checked
  by module hooks);
* ``unet_call``: one GTUNet evaluation (batch 1 and 8) and the achieved fraction
  of the GEMM throughput; variants (``variant`` key) ``channels_last_weights``,
  ``channels_last_all``, ``native_dilated_depthwise`` (oneDNN's dilated kernel
  instead of the library's phase-by-phase form, see :func:`native_dilated`),
  ``threads_1`` and ``bf16_autocast`` with
  their max abs difference from float32, timed interleaved with the float32 call;
* ``context_scan``, ``backbone``: the ConvGRU context encoder over 25 frames
  and PhyDNet (both run once per input, shared by all members); variants
  ``channels_last_weights`` and, for the scan, ``levelwise_prototype`` (batches
  the non-recurrent work over time, see :func:`context_levelwise`);
* ``sampler_step``: the sampler arithmetic alone (no network);
* ``forecast_estimate``: one 20-frame forecast per sampler / step count and
  member count, extrapolated from the parts above;
* ``forecast``: whole forecasts actually run (``ResidualDiffusion.sample``).

Every line carries ``load1`` (1-minute load average when measured), ``threads``
and ``peak_rss_mb`` (peak resident memory of this process during the
measurement, reset per measurement where Linux allows). Figures, not tests:
nothing here asserts a speed.

Usage: ``python benchmarks/bench_inference.py [--quick] [--full] [--out FILE]``;
``run(quick=False, full=False) -> list[dict]`` for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent

#: The published configuration (about 49 M parameters).
PAPER_CONFIG = {
    "type": "diffcast",
    "t_in": 5,
    "t_out": 20,
    "channels": 1,
    "height": 128,
    "width": 128,
    "backbone": {"name": "phydnet", "preset": "paper"},
    "diffusion": {"preset": "paper"},
}

#: (sampler, steps) pairs whose forecast time is extrapolated.
ESTIMATE = [("ddim", 250), ("ddim", 50), ("unipc", 20), ("dpmpp_2m", 10), ("unipc_3", 10), ("heun", 10)]
#: Whole forecasts run by default (fast samplers) ...
RUN_DEFAULT = [("unipc_3", 10), ("dpmpp_2m", 10)]
#: ... and in addition with ``--full`` (the published 250-step DDIM: ~1000 UNet calls).
RUN_FULL = [("dpmpp_2m", 25), ("ddim", 250)]
#: The quick run checks the extrapolation on one short real forecast.
RUN_QUICK = [("dpmpp_2m", 1)]


def _flops_module():
    name = "diffcast_bench_flops"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "flops.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---------------------------------------------------------------- measurement
def _load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timeit_many(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 0) -> dict[str, dict]:
    """Wall and CPU time of several functions, called round-robin ``repeats`` times.

    Interleaving makes the comparison of variants fair on a machine whose load
    changes while it runs. Per function: ``seconds`` (best wall time),
    ``seconds_median``, ``cpu_seconds`` (process CPU time of the best run: about
    ``threads * seconds`` on an idle machine; much less means the process waited
    for cores), ``load1`` (highest 1-minute load average seen) and
    ``peak_rss_mb`` (peak resident memory since the start of the group).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    reset = _reset_peak_rss()
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    loads = [_load1()]
    for _ in range(repeats):
        for key, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            walls[key].append(time.perf_counter() - t0)
            cpus[key].append(time.process_time() - c0)
            loads.append(_load1())
    peak = _peak_rss_mb()
    rows = {}
    for key in fns:
        best = min(range(repeats), key=walls[key].__getitem__)
        rows[key] = {
            "seconds": round(walls[key][best], 4),
            "seconds_median": round(statistics.median(walls[key]), 4),
            "cpu_seconds": round(cpus[key][best], 3),
            "repeats": repeats,
            "load1": max((v for v in loads if v is not None), default=None),
            "peak_rss_mb": peak,
            "peak_rss_scope": ("measurement" if len(fns) == 1 else "group") if reset else "process",
        }
    return rows


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 0) -> dict:
    """:func:`timeit_many` for one function."""
    return timeit_many({"fn": fn}, repeats, warmup)["fn"]


def _rate(row: dict, flops: int, gemm: dict) -> dict:
    """Add achieved FLOP rates and their fraction of the GEMM rate, by wall and by CPU time.

    ``fraction_of_gemm`` compares wall-clock rates (what a user waits for);
    ``fraction_of_gemm_cpu`` compares FLOPs per CPU-second, which is much less
    sensitive to other processes sharing the cores.
    """
    gflops = flops / row["seconds"] / 1e9
    row.update(flops=int(flops), gflops_per_s=round(gflops, 2), gemm_gflops=round(gemm["gemm_gflops"], 2),
               fraction_of_gemm=round(gflops / gemm["gemm_gflops"], 3))
    if row.get("cpu_seconds") and gemm.get("gemm_cpu_gflops"):
        cpu_rate = flops / row["cpu_seconds"] / 1e9
        row.update(gflops_per_cpu_s=round(cpu_rate, 2), gemm_gflops_per_cpu_s=round(gemm["gemm_cpu_gflops"], 2),
                   fraction_of_gemm_cpu=round(cpu_rate / gemm["gemm_cpu_gflops"], 3))
    return row


def _variant(row: dict, base: dict, diff: float | None = None) -> dict:
    row = {**row, "speedup_vs_fp32": round(base["seconds"] / row["seconds"], 2),
           "cpu_speedup_vs_fp32": round(base["cpu_seconds"] / max(row["cpu_seconds"], 1e-9), 2)}
    if diff is not None:
        row["max_abs_diff_vs_fp32"] = diff
    return row


# ---------------------------------------------------------------- prototypes
@torch.no_grad()
def context_levelwise(ctx_net, frames: torch.Tensor, local_index: int) -> tuple[list, list]:
    """Same result as ``ctx_net(frames, local_index)``, scanning level by level.

    Only the GRU's hidden-state convolutions are sequential in time. Everything
    else (init conv, ResnetBlocks, Downsample and the input half of both GRU
    convolutions, ``conv(cat(x, h), W) = conv(x, W_x) + conv(h, W_h)``) runs
    once on all ``T`` frames stacked in the batch. Same FLOPs, larger GEMMs.

    Parameters
    ----------
    ctx_net : diffcast.models.diffusion.context.ContextNet
    frames : Tensor
        ``(B, T, C, H, W)`` in ``[-1, 1]``.
    local_index : int

    Returns
    -------
    (global_ctx, local_ctx) : lists of ``(B, dims[i], H / 2**i, W / 2**i)``
    """
    b, n = frames.shape[:2]
    x = ctx_net.init_conv(frames.transpose(0, 1).reshape(n * b, *frames.shape[2:]))  # time-major
    global_ctx, local_ctx = [], []
    for mods in ctx_net.downs:
        x = mods[0](x)
        gru = mods[1]
        cin = x.shape[1]
        wg, wc = gru.conv_gates[0], gru.conv_cans[0]
        pad = wg.padding
        gx = F.conv2d(x, wg.weight[:, :cin], wg.bias, padding=pad)
        cx = F.conv2d(x, wc.weight[:, :cin], wc.bias, padding=pad)
        wgh, wch = wg.weight[:, cin:], wc.weight[:, cin:]
        h = x.new_zeros(b, gru.hidden_dim, *x.shape[2:])
        states = []
        for i in range(n):
            gates = torch.sigmoid(gx[i * b:(i + 1) * b] + F.conv2d(h, wgh, padding=pad))
            reset, update = torch.split(gates, gru.hidden_dim, dim=1)
            cand = torch.tanh(cx[i * b:(i + 1) * b] + F.conv2d(reset * h, wch, padding=pad))
            h = (1 - update) * h + update * cand
            states.append(h)
        global_ctx.append(h)
        local_ctx.append(states[local_index])
        x = torch.cat(states, dim=0)
        if len(mods) > 2:
            x = mods[2](x)
    return global_ctx, local_ctx


@contextlib.contextmanager
def native_dilated():
    """Run the temporal attention's dilated depthwise convolutions with the native kernel.

    The library computes them phase by phase
    (:func:`diffcast.models.diffusion.layers.dilated_depthwise_conv`); this switches
    back to ``conv_spatial(x)`` (oneDNN's dilated kernel) for comparison.
    """
    from diffcast.models.diffusion.layers import TemporalAttentionModule

    prev = TemporalAttentionModule.phase_dilated
    TemporalAttentionModule.phase_dilated = False
    try:
        yield
    finally:
        TemporalAttentionModule.phase_dilated = prev


def _max_diff(a, b) -> float:
    if isinstance(a, (list, tuple)):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float((a.float() - b.float()).abs().max())


# ---------------------------------------------------------------- the benchmark
def run(
    quick: bool = False,
    full: bool = False,
    members: tuple[int, ...] = (1, 8),
    threads: int | None = None,
    forecasts: list[tuple[str, int]] | None = None,
    variants: bool = True,
    emit: Callable[[dict], None] | None = None,
    config: dict | None = None,
    forecast_members: tuple[int, ...] | None = None,
) -> list[dict]:
    """Run the inference benchmark; returns the rows (also passed to ``emit`` as they come).

    Parameters
    ----------
    quick : bool
        Fewer repeats, one tiny real forecast (about 3 min on an idle 2-core machine).
    full : bool
        Also run the slow whole forecasts (:data:`RUN_FULL`, including DDIM 250).
    members : tuple of int
        Ensemble sizes for forecasts and UNet batch sizes.
    threads : int, optional
        ``torch.set_num_threads`` (default: torch's current setting).
    forecasts : list of (sampler, steps), optional
        Whole forecasts to run, replacing the defaults.
    variants : bool
        Also time the channels_last / bf16 / level-wise prototypes.
    emit : callable, optional
        Called with every row as soon as it is measured.
    config : dict, optional
        Model config for :func:`diffcast.models.build_model` (default
        :data:`PAPER_CONFIG`; a smaller one makes a smoke test).
    forecast_members : tuple of int, optional
        Ensemble sizes of the whole forecasts (default ``members``; 1 when quick).
    """
    from diffcast.models import build_model
    from diffcast.sampling import SAMPLERS  # noqa: F401  (registers samplers)

    fl = _flops_module()
    if threads:
        torch.set_num_threads(int(threads))
    nthreads = torch.get_num_threads()
    rows: list[dict] = []

    def out(row: dict) -> dict:
        row = {"benchmark": "inference", "threads": nthreads, **row}
        row.setdefault("load1", _load1())
        rows.append(row)
        if emit is not None:
            emit(row)
        return row

    rep_small = 2 if quick else 5  # fast calls (UNet batch 1)
    rep_big = 1 if quick else 3  # slow calls (context, backbone, UNet batch 8)
    gemm_n = 2048

    def gemm() -> dict:
        return fl.measure_gemm(gemm_n, repeats=2 if quick else 3)

    g0 = fl.measure_gemm(gemm_n, repeats=3)
    out({"what": "gemm", "seconds": round(g0["gemm_seconds"], 4), "cpu_seconds": round(g0["gemm_cpu_seconds"], 4),
         "flops": 2 * gemm_n**3, "gemm_gflops": round(g0["gemm_gflops"], 2),
         "gemm_gflops_median": round(g0["gemm_gflops_median"], 2),
         "gemm_gflops_per_cpu_s": round(g0["gemm_cpu_gflops"], 2),
         "n": gemm_n, "dtype": "float32", "cpu": _cpu_model(), "cores": os.cpu_count(),
         "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available(),
         "cpu_capability": torch.backends.cpu.get_cpu_capability()})

    if nthreads > 1:
        torch.set_num_threads(1)
        try:
            g1 = fl.measure_gemm(gemm_n, repeats=3)
        finally:
            torch.set_num_threads(nthreads)
        out({"what": "gemm", "variant": "threads_1", "threads": 1, "seconds": round(g1["gemm_seconds"], 4),
             "cpu_seconds": round(g1["gemm_cpu_seconds"], 4), "flops": 2 * gemm_n**3,
             "gemm_gflops": round(g1["gemm_gflops"], 2), "gemm_gflops_per_cpu_s": round(g1["gemm_cpu_gflops"], 2),
             "n": gemm_n, "dtype": "float32"})

    torch.manual_seed(0)
    cfg = copy.deepcopy(config or PAPER_CONFIG)
    model = build_model(cfg).eval()
    unet, ctx_net, bb = model.model, model.ctx_net, model.backbone_net
    out({"what": "parameters", "unet": sum(p.numel() for p in unet.parameters()),
         "context": sum(p.numel() for p in ctx_net.parameters()),
         "backbone": sum(p.numel() for p in bb.parameters()),
         "total": sum(p.numel() for p in model.parameters())})

    gen = torch.Generator().manual_seed(0)
    frame = (model.channels, model.height, model.width)
    seg_shape = (model.segment, *frame)
    x_in = torch.rand(1, model.t_in, *frame, generator=gen)
    times: dict[str, float] = {}

    def cl(module):
        return copy.deepcopy(module).to(memory_format=torch.channels_last)

    with torch.inference_mode():
        # -------------------------------------------------------- backbone
        cnt, mu = fl.count_flops(model._backbone_mu, x_in)  # also the warm-up
        bb_flops = cnt.total
        fns = {"fp32": lambda: model._backbone_mu(x_in)}
        if variants:
            bb_cl = cl(bb)
            diff_bb = _max_diff(bb_cl(x_in), mu)  # also the warm-up
            fns["cl"] = lambda: bb_cl(x_in)
        g = gemm()
        res = timeit_many(fns, rep_big)
        base = out(_rate({"what": "backbone", "batch": 1, **res["fp32"]}, bb_flops, g))
        times["backbone"] = base["seconds"]
        cpu_times = {"backbone": base["cpu_seconds"]}
        if variants:
            out(_variant(_rate({"what": "backbone", "batch": 1, "variant": "channels_last_weights", **res["cl"]},
                               bb_flops, g), base, diff_bb))
            del bb_cl

        # -------------------------------------------------------- context scan
        frames = torch.cat((x_in, mu), dim=1) * 2 - 1
        cnt, (gctx, lctx) = fl.count_flops(ctx_net, frames, model.local_index)
        ctx_flops = cnt.total
        fns = {"fp32": lambda: ctx_net(frames, model.local_index)}
        if variants:
            lw = context_levelwise(ctx_net, frames, model.local_index)
            diff_lw = _max_diff(list(lw[0]) + list(lw[1]), list(gctx) + list(lctx))
            ctx_cl = cl(ctx_net)
            res_cl = ctx_cl(frames, model.local_index)  # 5-D input stays NCHW: the weights decide
            diff_cl = _max_diff(list(res_cl[0]) + list(res_cl[1]), list(gctx) + list(lctx))
            fns["levelwise"] = lambda: context_levelwise(ctx_net, frames, model.local_index)
            fns["cl"] = lambda: ctx_cl(frames, model.local_index)
        g = gemm()
        res = timeit_many(fns, rep_big)
        base = out(_rate({"what": "context_scan", "batch": 1, "frames": frames.shape[1], **res["fp32"]},
                         ctx_flops, g))
        times["context"] = base["seconds"]
        cpu_times["context"] = base["cpu_seconds"]
        if variants:
            out(_variant(_rate({"what": "context_scan", "batch": 1, "variant": "levelwise_prototype",
                                **res["levelwise"]}, ctx_flops, g), base, diff_lw))
            out(_variant(_rate({"what": "context_scan", "batch": 1, "variant": "channels_last_weights",
                                **res["cl"]}, ctx_flops, g), base, diff_cl))
            del ctx_cl

        # -------------------------------------------------------- UNet call
        def unet_inputs(batch: int, channels_last: bool = False):
            gen_u = torch.Generator().manual_seed(1)
            r = torch.randn(batch, *seg_shape, generator=gen_u)
            cond = torch.randn(batch, *seg_shape, generator=gen_u)
            ctx = [c.expand(batch, *c.shape[1:]).contiguous() for c in gctx]
            if channels_last:
                ctx = [c.contiguous(memory_format=torch.channels_last) for c in ctx]
            t = torch.full((batch,), 500, dtype=torch.long)
            idx = torch.full((batch,), 1, dtype=torch.long)
            return r, t, cond, ctx, idx

        args1 = unet_inputs(1)
        cnt, ref1 = fl.count_flops(unet, *args1)
        unet_flops = cnt.total
        with fl.HookFlopCounter(unet) as hooks:
            unet(*args1)
        out({"what": "unet_flops", "batch": 1, "flops": unet_flops, "flops_by_op": cnt.by_key,
             "hook_flops_conv_linear": hooks.total,
             "flops_matmul_not_in_modules": unet_flops - hooks.total,
             "hooks_match_counter": hooks.total == cnt.by_key.get("aten.convolution", 0)
             + cnt.by_key.get("aten.addmm", 0) + cnt.by_key.get("aten.mm", 0)})
        out({"what": "flops_per_forecast_part", "unet_call": unet_flops, "context_scan": ctx_flops,
             "backbone": bb_flops})

        unet_s: dict[int, float] = {}
        unet_cl_s: dict[int, float] = {}
        unet_t1_s: dict[int, float] = {}
        unet_nat_s: dict[int, float] = {}
        unet_cl = cl(unet) if variants else None

        def unet_native(*a):
            with native_dilated():
                return unet(*a)
        for m in members:
            args, ref = args1, ref1
            if m != 1:
                args = unet_inputs(m)
                ref = None if quick else unet(*args)  # warm-up at this batch size (skipped when quick)
            fns = {"fp32": lambda a=args: unet(*a)}
            diffs = {}
            if variants and ref is not None:
                # only the weights are channels_last: the inputs are what ResidualDiffusion.sample makes
                diffs["cl"] = _max_diff(unet_cl(*args), ref)  # also the warm-up
                fns["cl"] = lambda a=args, u=unet_cl: u(*a)
                diffs["native"] = _max_diff(unet_native(*args), ref)  # also the warm-up
                fns["native"] = lambda a=args: unet_native(*a)
                if m == 1:
                    argsc = unet_inputs(1, channels_last=True)
                    diffs["cl_all"] = _max_diff(unet_cl(*argsc), ref1)
                    fns["cl_all"] = lambda a=argsc, u=unet_cl: u(*a)
                    if nthreads > 1:
                        # one thread, same call: on a machine shared with other processes the
                        # multi-threaded call can lose most of its time waiting for its threads
                        diffs["threads_1"] = 0.0

                        def one_thread(a=args):
                            torch.set_num_threads(1)
                            try:
                                unet(*a)
                            finally:
                                torch.set_num_threads(nthreads)

                        one_thread()  # warm-up
                        fns["threads_1"] = one_thread
            g = gemm()
            res = timeit_many(fns, rep_small if m == 1 else rep_big)
            row = _rate({"what": "unet_call", "batch": m, "members": m, **res["fp32"]}, unet_flops * m, g)
            if ref is None:
                row["includes_warmup"] = True
            base = out(row)
            unet_s[m] = base["seconds"]
            cpu_times[f"unet{m}"] = base["cpu_seconds"]
            names = {"cl": "channels_last_weights", "cl_all": "channels_last_all", "threads_1": "threads_1",
                     "native": "native_dilated_depthwise"}
            for key in fns:
                if key != "fp32":
                    extra = {"threads": 1} if key == "threads_1" else {}
                    out(_variant(_rate({"what": "unet_call", "batch": m, "members": m, "variant": names[key],
                                        **res[key], **extra}, unet_flops * m, g1 if extra else g),
                                 base, diffs[key]))
            if "cl" in res:
                unet_cl_s[m] = res["cl"]["seconds"]
            if "threads_1" in res:
                unet_t1_s[m] = res["threads_1"]["seconds"]
            if "native" in res:
                unet_nat_s[m] = res["native"]["seconds"]
        unet_cl = None  # free the copy
        if variants and not quick:
            # bf16 autocast: no native bf16 on AVX2-only CPUs, where it is many times slower
            # (minutes per call at paper size), hence not in the quick run
            # one call, timed and compared (its first-call overhead is small beside its cost)
            got = []
            with torch.autocast("cpu", dtype=torch.bfloat16):
                res = timeit(lambda: got.append(unet(*args1)), 1)
            o = got[0]
            row = _rate({"what": "unet_call", "batch": 1, "members": 1, "variant": "bf16_autocast", **res},
                        unet_flops, gemm())
            base = next(r for r in rows if r["what"] == "unet_call" and r["batch"] == 1 and "variant" not in r)
            out({**_variant(row, base, _max_diff(o, ref1)), "ref_max_abs": float(ref1.abs().max())})

        # -------------------------------------------------------- sampler arithmetic
        step_s: dict[tuple[str, int], tuple[int, float]] = {}
        for name, steps in ESTIMATE:
            smp = model.make_sampler(name)
            smp.set_timesteps(steps)
            n_evals = len(smp.timesteps)
            sample = torch.randn(1, *seg_shape, generator=gen)
            pred = torch.randn(1, *seg_shape, generator=gen).clamp(-1, 1)

            def loop(smp=smp, steps=steps, sample=sample, pred=pred):
                smp.set_timesteps(steps)
                s = sample
                for t in smp.timesteps:
                    s = smp.step(pred, t, s)

            row = out({"what": "sampler_step", "sampler": name, "steps": steps, "evals": n_evals,
                       **timeit(loop, 1)})
            step_s[(name, steps)] = (n_evals, row["seconds"] / n_evals)

        # -------------------------------------------------------- forecast estimates
        k = model.n_segments
        for name, steps in ESTIMATE:
            n_evals, per_step = step_s[(name, steps)]
            for m in members:
                est = times["backbone"] + times["context"] + k * n_evals * (unet_s[m] + per_step * m)
                row = {"what": "forecast_estimate", "sampler": name, "steps": steps, "members": m,
                       "unet_calls": k * n_evals, "seconds": round(est, 2), "estimated": True,
                       "formula": "backbone + context + segments * evals * (unet_call(M) + step(M))",
                       "cpu_seconds": round(cpu_times["backbone"] + cpu_times["context"]
                                            + k * n_evals * cpu_times[f"unet{m}"], 2)}
                if m in unet_cl_s:
                    row["seconds_channels_last_unet"] = round(
                        times["backbone"] + times["context"] + k * n_evals * (unet_cl_s[m] + per_step * m), 2)
                if m in unet_nat_s:
                    row["seconds_native_dilated_unet"] = round(
                        times["backbone"] + times["context"] + k * n_evals * (unet_nat_s[m] + per_step * m), 2)
                if m in unet_t1_s:
                    row["unet_calls_seconds_threads_1"] = round(k * n_evals * unet_t1_s[m], 2)
                out(row)

        # -------------------------------------------------------- whole forecasts
        todo = forecasts if forecasts is not None else (RUN_QUICK if quick else RUN_DEFAULT + (RUN_FULL if full else []))
        results: dict[tuple[str, int, int], object] = {}
        for name, steps in todo:
            for m in forecast_members or (members if not quick else (1,)):
                smp = model.make_sampler(name)
                smp.set_timesteps(steps)
                n_evals = len(smp.timesteps)
                per_step = step_s.get((name, steps), (n_evals, 0.0))[1]
                est = (times["backbone"] + times["context"] + k * n_evals * (unet_s[m] + per_step * m)
                       if m in unet_s else None)

                def forecast(name=name, steps=steps, m=m):
                    results[(name, steps, m)] = model.sample(x_in, members=m, sampler=name, steps=steps,
                                                             generator=torch.Generator().manual_seed(0))

                # best of 3 for forecasts of up to ~100 UNet calls: one run is at the mercy of
                # whatever else the machine does for those seconds
                row = timeit(forecast, 3 if k * n_evals * m <= 100 and not quick else 1)
                out({"what": "forecast", "sampler": name, "steps": steps, "members": m, "unet_calls": k * n_evals,
                     "frames": model.t_out, **row, "estimated_seconds": None if est is None else round(est, 2),
                     "seconds_per_member": round(row["seconds"] / m, 2)})
        if variants and todo:
            # end to end against the native dilated kernel (what the phase form replaced)
            name, steps = todo[0]
            ref = results[(name, steps, 1)] if (name, steps, 1) in results else model.sample(
                x_in, sampler=name, steps=steps, generator=torch.Generator().manual_seed(0))
            smp = model.make_sampler(name)
            smp.set_timesteps(steps)
            got = []

            def forecast_native(name=name, steps=steps):
                with native_dilated():
                    got.append(model.sample(x_in, sampler=name, steps=steps,
                                            generator=torch.Generator().manual_seed(0)))

            row = {"what": "forecast", "variant": "native_dilated_depthwise", "sampler": name, "steps": steps,
                   "members": 1, "unet_calls": k * len(smp.timesteps), "frames": model.t_out,
                   **timeit(forecast_native, 1)}
            fp32_row = next((r for r in rows if r["what"] == "forecast" and r["sampler"] == name
                             and r["steps"] == steps and r["members"] == 1 and "variant" not in r), None)
            diff = _max_diff(got[0].forecast, ref.forecast)
            out(_variant(row, fp32_row, diff) if fp32_row else {**row, "max_abs_diff_vs_fp32": diff})
    return rows


def _parse_pairs(text: str) -> list[tuple[str, int]]:
    pairs = []
    for item in text.split(","):
        name, _, steps = item.partition(":")
        if not steps.isdigit():
            raise argparse.ArgumentTypeError(f"expected sampler:steps, e.g. dpmpp_2m:10, got {item!r}")
        pairs.append((name.strip(), int(steps)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, one tiny real forecast")
    parser.add_argument("--full", action="store_true", help="also run DDIM 250 and dpmpp_2m 25 forecasts (slow)")
    parser.add_argument("--members", default="1,8", help="ensemble sizes, comma separated (default 1,8)")
    parser.add_argument("--forecast-members", default=None,
                        help="ensemble sizes of the whole forecasts (default: --members; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--forecasts", type=_parse_pairs, default=None,
                        help="whole forecasts to run, e.g. dpmpp_2m:10,heun:10 (replaces the defaults)")
    parser.add_argument("--no-variants", action="store_true", help="skip channels_last / bf16 / level-wise")
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)

    def emit(row: dict) -> None:
        line = json.dumps(row, sort_keys=True)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")

    members = tuple(int(m) for m in args.members.split(","))
    f_members = tuple(int(m) for m in args.forecast_members.split(",")) if args.forecast_members else None
    run(quick=args.quick, full=args.full, members=members, threads=args.threads, forecasts=args.forecasts,
        variants=not args.no_variants, emit=emit, forecast_members=f_members)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
