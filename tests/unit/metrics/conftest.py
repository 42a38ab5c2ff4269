"""Helpers for the metrics tests: the benchmark's per-frame loop is the independent reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_metrics.py"


@pytest.fixture(scope="session")
def bench():
    """The module benchmarks/bench_metrics.py (holds ``reference_protocol``)."""
    spec = importlib.util.spec_from_file_location("diffcast_bench_metrics", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["diffcast_bench_metrics"] = module
    spec.loader.exec_module(module)
    return module


def _radar_like(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    y = (rng.random(shape, dtype=np.float32) ** 2).astype(np.float32)
    p = np.clip(y + noise * rng.standard_normal(shape).astype(np.float32), 0, 1).astype(np.float32)
    return y, p


@pytest.fixture(scope="session")
def radar_like():
    """``radar_like(shape, seed, noise) -> (y, p)``: skewed [0, 1] fields and a noisy forecast."""
    return _radar_like
