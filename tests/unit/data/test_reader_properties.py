"""Property-based tests of every reader (issue 18, item 7): a file cut short at any point or with any of its
bytes overwritten gives either frames or one clear error (``ValueError`` or ``OSError``, which every command
prints as one line with exit 2 or 1), never a crash of another kind or a hang."""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from diffcast.pipeline import read_input  # noqa: E402

RADAR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "radar"
EXAMPLES = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: What a reader may raise on a damaged file; the command line turns each into one line.
CLEAR = (ValueError, OSError, KeyError)


def _first(pattern: str) -> Path | None:
    return next(iter(sorted(RADAR.glob(pattern))), None) if RADAR.is_dir() else None


@pytest.fixture(scope="module")
def samples(tmp_path_factory, helper_module) -> dict[str, Path]:
    """One intact file per input kind: made here, or (MeteoSwiss GIF, FMI PGM, BoM NetCDF) the shared archives'."""
    root = tmp_path_factory.mktemp("samples")
    out: dict[str, Path] = {}
    rng = np.random.default_rng(0)
    np.save(root / "seq.npy", rng.random((6, 32, 32)).astype(np.float32))
    out["npy"] = root / "seq.npy"
    import h5py

    with h5py.File(root / "seq.h5", "w") as fh:
        fh["frames"] = rng.random((6, 32, 32)).astype(np.float32)
    out["h5"] = root / "seq.h5"
    helper_module("unit/training/test_radar_windows.py").write_odim_archive(root / "odim", [datetime(2021, 6, 1, 12)],
                                                                            n_frames=1, size=32)
    out["odim"] = next((root / "odim").rglob("*.h5"))
    from PIL import Image

    (root / "png").mkdir()
    for k in range(6):  # numbered frames in a folder; the last one is the one damaged
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(root / "png" / f"{k}.png")
    out["png"] = root / "png" / "5.png"
    example = helper_module("unit/data/test_radar_formats_pysteps.py").metranet_example_source()
    if example is not None:  # MeteoSwiss' METRANET example file in Py-ART (the metranet extra), under a METRANET name
        out["mch_metranet"] = root / "RZC240530740VL.801"
        shutil.copyfile(example, out["mch_metranet"])
    for kind, pattern in (("mch_gif", "mch/*/*.gif"), ("fmi_pgm", "fmi/pgm/*/*.pgm.gz"),
                          ("bom_nc", "bom/prcp-cscn/**/*.nc")):
        path = _first(pattern)
        if path is not None:
            out[kind] = path
    return out


def _read(path: Path) -> None:
    raw = read_input([path])
    np.asarray(raw.frames[:])  # decode every frame, not only the header


def _check(path: Path) -> None:
    t0 = time.perf_counter()
    try:
        _read(path)
    except CLEAR:
        pass
    assert time.perf_counter() - t0 < 20, f"{path.name}: reading took {time.perf_counter() - t0:.0f} s"


KINDS = ["npy", "h5", "odim", "png", "mch_gif", "fmi_pgm", "bom_nc", "mch_metranet"]


def _damaged(samples, kind, tmp_path, data: bytes) -> Path:
    if kind not in samples:
        pytest.skip(f"no {kind} sample: " + ("Py-ART (pyart-mch, the metranet extra) not installed"
                                             if kind == "mch_metranet" else "../shared/data/radar not found"))
    src = samples[kind]
    folder = tmp_path / "in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    dst = folder / src.name  # radar formats take their time stamps from the names
    dst.write_bytes(data)
    if kind == "png":  # image input is a folder of frames
        for k in range(5):
            shutil.copyfile(src.parent / f"{k}.png", folder / f"{k}.png")
        return folder
    return dst


@pytest.mark.parametrize("kind", KINDS)
def test_intact_sample_reads(samples, kind, tmp_path):
    path = _damaged(samples, kind, tmp_path, samples[kind].read_bytes() if kind in samples else b"")
    _read(path)


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(cut=st.floats(0.0, 0.999))
def test_truncated_file_gives_a_clear_error(samples, kind, tmp_path, cut):
    data = samples[kind].read_bytes() if kind in samples else b""
    _check(_damaged(samples, kind, tmp_path, data[: int(len(data) * cut)]))


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(where=st.floats(0.0, 1.0), garbage=st.binary(min_size=1, max_size=64))
def test_overwritten_bytes_give_frames_or_a_clear_error(samples, kind, tmp_path, where, garbage):
    data = bytearray(samples[kind].read_bytes() if kind in samples else b"")
    at = int(where * max(len(data) - 1, 0))
    data[at : at + len(garbage)] = garbage
    _check(_damaged(samples, kind, tmp_path, bytes(data)))


@EXAMPLES
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".npy", ".h5", ".png", ".gif", ".nc", ".pgm.gz"]))
def test_random_bytes_under_any_name_give_a_clear_error(tmp_path, data, suffix):
    folder = tmp_path / "rnd"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = folder / f"AQC161932045V_00005.801{suffix}" if suffix == ".gif" else folder / f"201609281445_x{suffix}"
    path.write_bytes(data)
    _check(path)
