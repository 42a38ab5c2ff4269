"""The Numba kernels (:mod:`diffcast.metrics.fused`) against plain NumPy of the same rules."""

import numpy as np
import pytest

from diffcast.metrics import Evaluator, fused, kernels

pytest.importorskip("cv2")
pytestmark = pytest.mark.skipif(not fused.available(), reason="Numba kernels unavailable here")


def _frames(shape, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(shape, dtype=np.float32) ** 2).astype(np.float32)
    x = np.clip(y + 0.2 * rng.standard_normal(shape, dtype=np.float32), 0, 1).astype(np.float32)
    x[0, :3] = y[0, :3]  # ties: equal values on both sides of a level
    return y, x


def _ref_pool(x, k):
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)])
    return xp.reshape(*x.shape[:-2], (h + ph) // k, k, (w + pw) // k, k).max(axis=(-3, -1))


def _ref_ssim(x, y):
    """Float64 SSIM of [0, 1] frames, the published recipe (valid window positions)."""
    import cv2

    g = cv2.getGaussianKernel(11, 1.5)
    win = g @ g.T
    out = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        def f(z):
            return cv2.filter2D(z, -1, win)[5:-5, 5:-5]

        mx, my = f(a), f(b)
        sx, sy, sxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
        c1, c2 = 1e-4, 9e-4
        out.append((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sx + sy + c2))).mean())
    return np.array(out)


@pytest.mark.parametrize("shape,steps", [((5, 13, 29), (3,)), ((4, 32, 48), (4, 4)), ((3, 11, 11), (16,))])
def test_stats_match_numpy(shape, steps):
    y, x = _frames(shape, seed=1)
    x2 = np.clip(x[::-1] * 1.1, 0, 1).astype(np.float32)  # a second forecast
    # seven levels: two passes of six; levels that no value / every value reaches
    levels = np.array([-np.inf, 0.0, 0.05, 0.25, 0.5, 0.9, np.inf], np.float32)
    st = fused.stats(y, np.stack([x, x2]), levels, pool_steps=steps)
    for i, p in enumerate((x, x2)):
        for k, lv in enumerate(levels):
            np.testing.assert_array_equal(st["pred_yes"][i, :, k], (p >= lv).sum(axis=(1, 2)))
            np.testing.assert_array_equal(st["hits"][i, :, k], ((p >= lv) & (y >= lv)).sum(axis=(1, 2)))
        d = p.astype(np.float64) - y
        np.testing.assert_allclose(st["sq"][i], (d**2).sum(axis=(1, 2)), rtol=1e-13)
        np.testing.assert_allclose(st["ab"][i], np.abs(d).sum(axis=(1, 2)), rtol=1e-13)
        np.testing.assert_allclose(st["ssim"][i], _ref_ssim(p, y), atol=1e-6)  # float32 vs float64
        # the OpenCV kernels' float32 SSIM, to round-off
        np.testing.assert_allclose(st["ssim"][i], kernels.ssim_planes([p], y)[0], atol=1e-6)
        # pooled frames: pooled by steps[0], that by steps[1], ... (= pooled by the product)
        size = 1
        for s, step in enumerate(steps):
            size *= step
            po, pp = _ref_pool(y, size), _ref_pool(p, size)
            for k, lv in enumerate(levels):
                assert (st["pool_pred_yes"][i, :, s, k] == (pp >= lv).sum(axis=(1, 2))).all()
                assert (st["pool_hits"][i, :, s, k] == ((pp >= lv) & (po >= lv)).sum(axis=(1, 2))).all()
                assert (st["pool_obs_yes"][:, s, k] == (po >= lv).sum(axis=(1, 2))).all()
    for k, lv in enumerate(levels):
        np.testing.assert_array_equal(st["obs_yes"][:, k], (y >= lv).sum(axis=(1, 2)))


def test_pool_chain():
    assert fused.pool_chain((4, 16)) == (4, 4)
    assert fused.pool_chain((16, 2, 4)) == (2, 2, 4)
    assert fused.pool_chain(()) == ()
    for sizes in ((4, 6), (1, 4), (4, 4)):
        assert fused.pool_chain(sizes) is None


def test_identical_frames_give_ssim_one_and_zero_errors():
    y, _ = _frames((3, 20, 17), seed=2)
    st = fused.stats(y, y[None].copy(), np.array([0.5], np.float32))
    np.testing.assert_allclose(st["ssim"], 1.0, atol=1e-6)
    assert (st["sq"] == 0).all() and (st["ab"] == 0).all()
    np.testing.assert_array_equal(st["hits"][0], st["obs_yes"])


def test_counts_stay_exact_beyond_float32_integers():
    # 4097^2 = 16785409 > 2^24 points in one frame: a single float32 sum would round it
    n = 4097
    ones = np.ones((1, n, n), np.float32)
    st = fused.stats(ones, ones[None], np.array([0.5], np.float32), errors=False, ssim=False)
    assert int(st["pred_yes"][0, 0, 0]) == n * n == int(st["obs_yes"][0, 0]) == int(st["hits"][0, 0, 0])


def test_reading_the_inputs_directly_clips_and_checks():
    rng = np.random.default_rng(3)
    src_o = rng.normal(0.5, 0.5, (3, 4, 2, 16, 18))  # float64, outside [0, 1]
    src_p = rng.normal(0.5, 0.5, (3, 4, 2, 16, 18))
    levels = kernels.event_levels((16, 74, 133), 255.0)
    got = fused.stats_src(src_o, src_p, 1, 2, 1, 3, levels, pool_steps=(4,))
    # the same frames, clipped to float32, lead-major
    o = np.clip(src_o[1:3, 1:4], 0, 1).astype(np.float32).swapaxes(0, 1).reshape(-1, 16, 18)
    p = np.clip(src_p[1:3, 1:4], 0, 1).astype(np.float32).swapaxes(0, 1).reshape(-1, 16, 18)
    want = fused.stats(o, p[None], levels, pool_steps=(4,))
    for name, v in want.items():
        np.testing.assert_array_equal(got[name], v, err_msg=name)
    src_p[2, 3, 1, 5, 5] = np.nan
    with pytest.raises(ValueError, match="y_pred contains NaN or inf"):
        fused.stats_src(src_o, src_p, 1, 2, 1, 3, levels)
    fused.stats_src(src_o, src_p, 0, 1, 0, 3, levels)  # the NaN is outside these frames


def test_evaluator_falls_back_to_opencv_without_numba(monkeypatch, caplog):
    def broken():
        raise RuntimeError("no compiler")

    monkeypatch.setattr(fused, "_compile", broken)
    monkeypatch.setattr(fused, "_STATE", {})
    assert not fused.available()
    assert "no compiler" in caplog.text
    with pytest.raises(ValueError, match="Numba"):
        Evaluator((16.0,), backend="numba")
    y, x = _frames((2, 2, 1, 16, 16), seed=4)
    ev = Evaluator((16.0, 74.0))
    assert ev._cpu_kernel() == "opencv"
    ev.update(y, x)
    monkeypatch.setattr(fused, "_STATE", {"ok": True})
    ref = Evaluator((16.0, 74.0), backend="numba")
    ref.update(y, x)
    assert ev.compute()["events"] == ref.compute()["events"]


@pytest.mark.slow
def test_kernels_work_where_numba_cannot_cache():
    # a read-only install without a user cache folder: numba refuses cache=True at decoration
    code = (
        "import logging, numba.core.caching as c\n"
        "for cls in c.CacheImpl._locator_classes:\n"
        "    cls.from_function = classmethod(lambda cls, f, p: None)\n"
        "import diffcast.metrics.fused as f\n"
        "print('available', f.available(), 'uncached' in f._STATE)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "available True True" in out.stdout
    assert "compiled again in every process" in out.stderr
