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


@pytest.fixture(scope="session")
def helper_module():
    """Load a helper module of another test folder by path: ``helper_module("unit/data/test_data_sevir.py")``.

    The test folders are not packages, so fixture writers such as the SEVIR or ODIM
    file writers of the data tests are shared this way instead of being copied.
    """
    import importlib.util

    def load(rel: str):
        path = REPO / "tests" / rel
        spec = importlib.util.spec_from_file_location(f"_diffcast_test_helper_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture()
def one_thread():
    """Torch on one thread for the test: tiny convolutions run 10-40x faster single-threaded on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def local_s3():
    """A local moto S3 server: yields ``(endpoint_url, make_bucket)``; skips when s3fs, moto or boto3 cannot
    run it here. Credentials ``testing``/``testing``, region ``us-east-1``."""
    import socket

    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
    except Exception as exc:  # pragma: no cover - environment dependent
        pytest.skip(f"cannot start a local moto S3 server: {exc}")
    endpoint = f"http://127.0.0.1:{port}"

    def make_bucket(name: str) -> None:
        try:
            import boto3

            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing").create_bucket(Bucket=name)
        except Exception as exc:  # pragma: no cover
            pytest.skip(f"cannot use the local S3 endpoint: {exc}")

    try:
        yield endpoint, make_bucket
    finally:
        server.stop()
