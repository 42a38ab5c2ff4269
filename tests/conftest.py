"""Shared fixtures. Tests never depend on the working directory or the network."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project root; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (tests using real data are skipped)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sevir_demo(shared_data: Path) -> Path:
    path = shared_data / "sevir_demo"
    if not path.is_dir():
        pytest.skip(f"{path} not found (real SEVIR demo sequences absent)")
    return path


@pytest.fixture(scope="session")
def radar_data(shared_data: Path) -> Path:
    path = shared_data / "radar"
    if not path.is_dir():
        pytest.skip(f"{path} not found (pysteps radar archives absent)")
    return path
