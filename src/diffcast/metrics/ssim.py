"""Structural similarity (SSIM, Wang et al. 2004) of each frame, vectorised over frames.

Same recipe as the published DiffCast evaluator (``cv2.filter2D`` then cropping 5 pixels):
an 11 x 11 Gaussian window with sigma 1.5, only the positions where the window lies fully
inside the frame ("valid"), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L`` the data range,
biased (window-weighted) variances, and the mean of the SSIM map.

Values are divided by ``L`` first (SSIM is invariant to scaling ``x``, ``y`` and ``L``
together), so the variance cancellation happens on numbers <= 1 and float32 arithmetic
agrees with a float64 reference to ~1e-8. The separable Gaussian runs, for CPU tensors, as one
OpenCV ``sepFilter2D`` call on all frames stacked into one tall image (rows near a frame
boundary mix neighbouring frames but are exactly the rows the "valid" crop drops), else as
11 shifted, weighted adds per axis in torch (GPU, or ``backend="torch"``).
"""

from __future__ import annotations

from typing import Any

import torch

WINDOW = 11
SIGMA = 1.5


def gaussian_kernel_1d(size: int = WINDOW, sigma: float = SIGMA, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian (equals ``cv2.getGaussianKernel(size, sigma)`` for sigma > 0)."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _has_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _valid_filter(x: torch.Tensor, weights: list[float], dim: int) -> torch.Tensor:
    """Correlate along ``dim`` with ``weights`` keeping only the fully covered positions."""
    n = len(weights)
    size = x.shape[dim] - n + 1
    out = x.narrow(dim, 0, size) * weights[0]
    for i in range(1, n):
        out.add_(x.narrow(dim, i, size), alpha=weights[i])
    return out


def _ssim_cv2(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """SSIM of ``(S, H, W)`` CPU frames (already divided by ``L``) with OpenCV filtering."""
    import numpy as np

    num = _ssim_map_cv2(x, y, g)
    return torch.from_numpy(num.reshape(num.shape[0], -1).mean(axis=1, dtype=np.float64))


def _ssim_map_cv2(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> Any:
    """SSIM map (NumPy, input precision) of ``(S, H, W)`` CPU frames already divided by ``L``."""
    import cv2
    import numpy as np

    xs = x.numpy()
    ys = y.numpy()
    s, h, w = xs.shape
    n = g.numel()
    r = (n - 1) // 2
    k = g.numpy().astype(xs.dtype).reshape(-1, 1)
    rows, cols = slice(r, h - (n - 1 - r)), slice(r, w - (n - 1 - r))

    def filt(a: np.ndarray) -> np.ndarray:
        out = cv2.sepFilter2D(np.ascontiguousarray(a).reshape(s * h, w), -1, k, k, borderType=cv2.BORDER_REFLECT_101)
        return out.reshape(s, h, w)[:, rows, cols]

    mu_x, mu_y = filt(xs), filt(ys)
    var_x = filt(xs * xs)
    var_y = filt(ys * ys)
    cov = filt(xs * ys)
    mu_xy = mu_x * mu_y
    mu_x *= mu_x  # mu_x^2 from here on
    mu_y *= mu_y
    var_x -= mu_x
    var_y -= mu_y
    cov -= mu_xy
    c1, c2 = 0.01**2, 0.03**2
    num = (2.0 * mu_xy + c1) * (2.0 * cov + c2)
    den = (mu_x + mu_y + c1) * (var_x + var_y + c2)
    num /= den
    return num


def ssim_frames(
    pred: torch.Tensor,
    obs: torch.Tensor,
    data_range: float,
    window: int = WINDOW,
    sigma: float = SIGMA,
    precision: str = "float32",
    backend: str = "auto",
) -> torch.Tensor:
    """SSIM of each frame.

    Parameters
    ----------
    pred, obs : Tensor
        ``(..., H, W)`` frames in the same units (threshold space in the Evaluator).
    data_range : float
        Dynamic range ``L`` of the values (SEVIR VIL codes: 255).
    window, sigma : int, float
        Gaussian window size (pixels) and standard deviation (pixels).
    precision : {"float32", "float64"}
        Arithmetic precision.
    backend : {"auto", "cv2", "torch"}
        Filtering backend; ``"auto"`` uses OpenCV for CPU tensors when it is installed.

    Returns
    -------
    Tensor
        float64 SSIM, shape ``pred.shape[:-2]``; the mean over the valid SSIM map.

    Raises
    ------
    ValueError
        If a frame is smaller than the window or the shapes differ.
    """
    if pred.shape != obs.shape:
        raise ValueError(f"pred and obs shapes differ: {tuple(pred.shape)} vs {tuple(obs.shape)}")
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    h, w = pred.shape[-2:]
    if h < window or w < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got {h}x{w}")
    if backend not in ("auto", "cv2", "torch"):
        raise ValueError(f"backend must be 'auto', 'cv2' or 'torch', got {backend!r}")
    if backend == "auto":
        backend = "cv2" if pred.device.type == "cpu" and _has_cv2() else "torch"
    dtype = torch.float64 if precision == "float64" else torch.float32
    lead_shape = pred.shape[:-2]
    # SSIM is invariant to scaling x, y and L together: work on x / L so C1, C2 are 1e-4, 9e-4.
    x = pred.reshape(-1, h, w).to(dtype) / data_range
    y = obs.reshape(-1, h, w).to(dtype) / data_range
    g = gaussian_kernel_1d(window, sigma)
    if backend == "cv2":
        return _ssim_cv2(x.cpu(), y.cpu(), g).to(pred.device).reshape(lead_shape)
    return _ssim_map_torch(x, y, g).to(torch.float64).mean(dim=(1, 2)).reshape(lead_shape)


def _ssim_map_torch(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """SSIM map of ``(S, H, W)`` frames already divided by ``L``: ``(S, H - n + 1, W - n + 1)``."""
    n = x.shape[0]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=0)
    gl = g.tolist()
    filt = _valid_filter(_valid_filter(stack, gl, 1), gl, 2)
    mu_x, mu_y, e_xx, e_yy, e_xy = filt.split(n, dim=0)
    c1 = 0.01**2
    c2 = 0.03**2
    mu_xy = mu_x * mu_y
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    num = (2.0 * mu_xy + c1) * (2.0 * (e_xy - mu_xy) + c2)
    den = (mu_xx + mu_yy + c1) * ((e_xx - mu_xx) + (e_yy - mu_yy) + c2)
    return num / den


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, window: int = WINDOW, sigma: float = SIGMA, backend: str = "auto"
) -> torch.Tensor:
    """SSIM map of ``(S, H, W)`` frames already divided by their data range (input precision).

    Entry ``[s, i, j]`` is the SSIM of the window with top-left pixel ``(i, j)`` (centre
    ``(i + window // 2, j + window // 2)``); only windows fully inside the frame, as in
    :func:`ssim_frames`, which averages this map. ``backend`` as there.

    Returns
    -------
    Tensor
        ``(S, H - window + 1, W - window + 1)``, dtype of ``x``.
    """
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"expected two (S, H, W) stacks of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got {x.shape[-2]}x{x.shape[-1]}")
    if backend not in ("auto", "cv2", "torch"):
        raise ValueError(f"backend must be 'auto', 'cv2' or 'torch', got {backend!r}")
    if backend == "auto":
        backend = "cv2" if x.device.type == "cpu" and _has_cv2() else "torch"
    g = gaussian_kernel_1d(window, sigma)
    if backend == "cv2":
        return torch.from_numpy(_ssim_map_cv2(x.cpu(), y.cpu(), g)).to(x.device)
    return _ssim_map_torch(x, y, g)
