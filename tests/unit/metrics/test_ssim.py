import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d

from diffcast.metrics import ssim_frames
from diffcast.metrics.ssim import gaussian_kernel_1d


def scipy_ssim(x, y, data_range, size=11, sigma=1.5):
    """Direct float64 SSIM with the same window: Gaussian filtering, valid part only."""
    r = size // 2
    g = np.exp(-((np.arange(size) - r) ** 2) / (2 * sigma**2))
    g /= g.sum()

    def filt(a):
        return correlate1d(correlate1d(a, g, axis=0, mode="constant"), g, axis=1, mode="constant")[r:-r, r:-r]

    x = x.astype(np.float64)
    y = y.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return m.mean()


def test_kernel_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    np.testing.assert_allclose(gaussian_kernel_1d().numpy(), cv2.getGaussianKernel(11, 1.5)[:, 0], rtol=1e-12)


@pytest.mark.parametrize("backend", ["cv2", "torch"])
@pytest.mark.parametrize("precision,tol", [("float64", 1e-10), ("float32", 1e-6)])
def test_ssim_matches_scipy_reference(backend, precision, tol):
    rng = np.random.default_rng(0)
    obs = (rng.random((2, 3, 24, 30)) ** 2 * 255).astype(np.float32)
    pred = np.clip(obs + rng.normal(0, 20, obs.shape), 0, 255).astype(np.float32)
    got = ssim_frames(torch.from_numpy(pred), torch.from_numpy(obs), 255.0, precision=precision, backend=backend)
    assert got.shape == (2, 3) and got.dtype == torch.float64
    ref = np.array([[scipy_ssim(pred[i, j], obs[i, j], 255.0) for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(got.numpy(), ref, atol=tol)


def test_ssim_identity_symmetry_and_errors():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)) * 90
    y = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2)) * 90
    np.testing.assert_allclose(ssim_frames(x, x, 90.0).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(ssim_frames(x, y, 90.0).numpy(), ssim_frames(y, x, 90.0).numpy(), atol=1e-7)
    assert (ssim_frames(x, y, 90.0) < 0.5).all()
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_frames(x[:, :10], y[:, :10], 90.0)
    with pytest.raises(ValueError, match="differ"):
        ssim_frames(x, y[:2], 90.0)
    with pytest.raises(ValueError, match="backend"):
        ssim_frames(x, y, 90.0, backend="skimage")
