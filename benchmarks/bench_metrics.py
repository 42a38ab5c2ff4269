"""Speed of :class:`diffcast.metrics.Evaluator` against a per-frame NumPy/OpenCV loop.

The loop (:func:`reference_protocol`) is a straightforward transcription of the DiffCast
verification protocol, frame by frame and threshold by threshold, in the style of the
published ``utils/metrics.py``; the unit tests also use it as an independent reference for
the Evaluator's numbers. Prints JSON lines; ``run() -> list[dict]`` for ``run_all.py``.
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import torch

SEVIR_THRESHOLDS = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)


def _ref_max_pool(frame: np.ndarray, k: int) -> np.ndarray:
    h, w = frame.shape
    ph, pw = (-h) % k, (-w) % k
    padded = np.pad(frame, ((0, ph), (0, pw)))
    return padded.reshape((h + ph) // k, k, (w + pw) // k, k).max(axis=(1, 3))


def _ref_ssim(pred: np.ndarray, true: np.ndarray, data_range: float) -> float:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    img1 = pred.astype(np.float64)
    img2 = true.astype(np.float64)
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img1, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    s1 = cv2.filter2D(img1**2, -1, window)[5:-5, 5:-5] - mu1**2
    s2 = cv2.filter2D(img2**2, -1, window)[5:-5, 5:-5] - mu2**2
    s12 = cv2.filter2D(img1 * img2, -1, window)[5:-5, 5:-5] - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(a / b)  # the published code's convention: undefined -> 0


def reference_protocol(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    thresholds=SEVIR_THRESHOLDS,
    scale: float = 255.0,
    pool_sizes=(4, 16),
) -> dict:
    """The DiffCast protocol, one frame and one threshold at a time (NumPy + OpenCV).

    ``y_true``, ``y_pred``: ``(B, T, 1, H, W)`` in ``[0, 1]``. Returns csi/pod/far/hss per
    threshold, csi_m/hss_m, csi_pool{k}(_m), and mse/mae/rmse/psnr/ssim (+ ``*_by_lead``).
    """
    obs = np.clip(y_true, 0, 1).astype(np.float32) * np.float32(scale)
    pred = np.clip(y_pred, 0, 1).astype(np.float32) * np.float32(scale)
    n, lead = obs.shape[:2]
    nk = len(thresholds)
    counts = np.zeros((n, lead, nk, 4))
    pooled = {k: np.zeros((n, lead, nk, 4)) for k in pool_sizes}
    frame = {key: np.zeros((n, lead)) for key in ("mse", "mae", "rmse", "psnr", "ssim")}
    for b in range(n):
        for t in range(lead):
            o = obs[b, t, 0]
            p = pred[b, t, 0]
            for i, thr in enumerate(thresholds):
                oe, pe = o >= thr, p >= thr
                counts[b, t, i] = [np.sum(oe & pe), np.sum(oe & ~pe), np.sum(~oe & pe), np.sum(~oe & ~pe)]
            for k in pool_sizes:
                op, pp = _ref_max_pool(o, k), _ref_max_pool(p, k)
                for i, thr in enumerate(thresholds):
                    oe, pe = op >= thr, pp >= thr
                    pooled[k][b, t, i] = [np.sum(oe & pe), np.sum(oe & ~pe), np.sum(~oe & pe), np.sum(~oe & ~pe)]
            d = p.astype(np.float64) - o.astype(np.float64)
            mse = float(np.mean(d**2))
            frame["mse"][b, t] = mse
            frame["mae"][b, t] = float(np.mean(np.abs(d)))
            frame["rmse"][b, t] = np.sqrt(mse)
            frame["psnr"][b, t] = min(100.0, 20 * np.log10(scale / np.sqrt(mse))) if mse > 0 else 100.0
            frame["ssim"][b, t] = _ref_ssim(p, o, scale)
    keys = [f"{t:g}" for t in thresholds]
    out: dict = {}
    h, m, f, cn = (counts.mean(axis=0)[..., j] for j in range(4))  # (lead, K) sample-averaged
    scores = {
        "csi": _div(h, h + m + f),
        "pod": _div(h, h + m),
        "far": _div(f, h + f),
        "hss": _div(2 * (h * cn - m * f), (h + m) * (m + cn) + (h + f) * (f + cn)),
    }
    for name, val in scores.items():
        out[name] = {k: float(val[:, i].mean()) for i, k in enumerate(keys)}
        out[f"{name}_by_lead"] = {k: val[:, i].tolist() for i, k in enumerate(keys)}
        out[f"{name}_m"] = float(np.mean([out[name][k] for k in keys]))
    for k in pool_sizes:
        tot = pooled[k].sum(axis=(0, 1))
        csi = _div(tot[:, 0], tot[:, 0] + tot[:, 1] + tot[:, 2])
        out[f"csi_pool{k}"] = {key: float(csi[i]) for i, key in enumerate(keys)}
        out[f"csi_pool{k}_m"] = float(csi.mean())
    for key, val in frame.items():
        per_lead = val.mean(axis=0)
        out[key] = float(per_lead.mean())
        out[f"{key}_by_lead"] = per_lead.tolist()
    return out


def _fields(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(shape, dtype=np.float32) ** 2
    p = np.clip(y + 0.1 * rng.standard_normal(shape, dtype=np.float32), 0, 1)
    return y, p


def _times(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _time(fn, repeats: int) -> float:
    return min(_times(fn, repeats))


def _set_threads(n: int) -> None:
    # the Evaluator's CPU path runs on torch.get_num_threads() workers; OpenCV's own pool
    # is set alike so that a "1 thread" row uses one core throughout
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def run(quick: bool = False, threads: tuple[int, ...] | None = None, repeats: int | None = None) -> list[dict]:
    """Time Evaluator.update+compute vs the reference loop; returns JSON-able rows.

    One row per thread count (default: 1 and torch's default) and CPU backend (``numba``,
    the default, and ``opencv``), with both torch and OpenCV set to that thread count, and,
    when CUDA is present, one with the tensors on the GPU. ``speedup`` = loop time /
    Evaluator time on the same data, both the best of their repeats (``*_median_s``: the
    medians, for noisy machines); the loop is timed before the rows, with the process's
    default settings. Then the ensemble rows (4 members, without and with FSS) per thread
    count.
    """
    from diffcast.metrics import Evaluator, fused

    shape = (2, 20, 1, 128, 128) if quick else (8, 20, 1, 128, 128)
    if repeats is None:
        repeats = 1 if quick else 20
    y, p = _fields(shape)
    yt, pt = torch.from_numpy(y), torch.from_numpy(p)

    def fast(device: str = "cpu", backend: str = "auto") -> dict:
        ev = Evaluator(SEVIR_THRESHOLDS, scale=255.0, pool_sizes=(4, 16), backend=backend)
        ev.update(yt.to(device), pt.to(device))
        return ev.compute()

    loop = _times(lambda: reference_protocol(y, p), 1 if quick else 5)
    t_ref = min(loop)
    ref = reference_protocol(y, p)
    keys = ("csi_m", "hss_m", "csi_pool4_m", "csi_pool16_m", "mse", "ssim")
    default_threads, default_cv2 = torch.get_num_threads(), cv2.getNumThreads()
    if threads is None:
        threads = (1, default_threads) if default_threads > 1 else (1,)
    backends = (["numba"] if fused.available() else []) + ["opencv"]
    settings = [(n, "cpu", b) for b in backends for n in threads]
    if torch.cuda.is_available():
        settings.append((default_threads, "cuda", "torch"))
    rows = []
    try:
        for n, device, backend in settings:
            _set_threads(n)
            got = fast(device, backend)
            if device == "cuda":
                torch.cuda.synchronize()
            times = _times(lambda d=device, b=backend: fast(d, b), repeats)
            t_fast = min(times)
            rows.append(
                {
                    "name": "evaluator_vs_loop",
                    "shape": list(shape),
                    "device": device,
                    "backend": backend,
                    "threads": n,
                    "loop_s": round(t_ref, 4),
                    "loop_median_s": round(float(np.median(loop)), 4),
                    "evaluator_s": round(t_fast, 4),
                    "evaluator_median_s": round(float(np.median(times)), 4),
                    "speedup": round(t_ref / t_fast, 2),
                    "max_abs_diff": max(abs(ref[k] - got[k]) for k in keys),
                }
            )
    finally:
        torch.set_num_threads(default_threads)
        cv2.setNumThreads(default_cv2)
    ens = np.clip(y[None] + 0.1 * np.random.default_rng(1).standard_normal((4, *shape), dtype=np.float32), 0, 1)
    et = torch.from_numpy(ens)

    def ensemble(fss_scales: tuple[int, ...]) -> None:
        ev = Evaluator(SEVIR_THRESHOLDS, scale=255.0, fss_scales=fss_scales)
        ev.update(yt, et)
        ev.compute()

    try:
        for n in threads:
            _set_threads(n)
            for fss_scales in ((), (4, 16)):
                rows.append(
                    {
                        "name": "evaluator_ensemble",
                        "shape": [4, *shape],
                        "threads": n,
                        "fss_scales": list(fss_scales),
                        "evaluator_s": round(_time(lambda f=fss_scales: ensemble(f), 1 if quick else 3), 4),
                    }
                )
    finally:
        torch.set_num_threads(default_threads)
        cv2.setNumThreads(default_cv2)
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch, one repeat")
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts to time (default: 1 and torch's default)")
    parser.add_argument("--repeats", type=int, help="timed Evaluator runs per row (default 20; the loop: 5)")
    args = parser.parse_args()
    for row in run(quick=args.quick, threads=None if args.threads is None else tuple(args.threads), repeats=args.repeats):
        print(json.dumps(row))
