"""Test helpers for the backbone tests: a steadily advected blob sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def moving_blobs(
    batch: int = 2,
    t: int = 10,
    size: int = 32,
    velocity: tuple[float, float] = (1.0, 0.5),
    n_blobs: int = 3,
    sigma: float = 3.0,
    seed: int = 0,
    channels: int = 1,
) -> torch.Tensor:
    """Gaussian blobs translating at a constant ``velocity`` (pixels/frame, (x, y)).

    Returns
    -------
    Tensor, shape (batch, t, channels, size, size), float32 in [0, 1]
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out = np.zeros((batch, t, channels, size, size))
    for b in range(batch):
        centres = rng.uniform(0.2 * size, 0.6 * size, size=(n_blobs, 2))
        amps = rng.uniform(0.5, 1.0, size=n_blobs)
        for k in range(t):
            for (cx, cy), a in zip(centres, amps):
                x0, y0 = cx + velocity[0] * k, cy + velocity[1] * k
                out[b, k, :] += a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return torch.from_numpy(np.clip(out, 0.0, 1.0).astype(np.float32))


@pytest.fixture(autouse=True)
def single_thread():
    """Run each test with one torch thread: tiny models are far faster without
    thread hand-offs, especially on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
