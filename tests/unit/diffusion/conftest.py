"""Fixtures of the diffusion tests."""

from __future__ import annotations

import pytest
import torch
from diffusion_stubs import tiny_model

from diffcast.models.diffusion.residual import ResidualDiffusion


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions run 10-40x faster single-threaded on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def model() -> ResidualDiffusion:
    return tiny_model()
