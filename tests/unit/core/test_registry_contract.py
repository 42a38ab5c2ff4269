"""The shared plumbing: registries, the tensor contract, atomic writes, model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffcast.data.contract import as_tensor, split_sequence, validate_sequence
from diffcast.data.transforms import (
    SEVIR_META,
    dbz_to_rainrate,
    get_meta,
    kgm2_to_vil_code,
    rainrate_to_dbz,
    vil_code_to_kgm2,
)
from diffcast.registry import Registry
from diffcast.utils.io import atomic_path, atomic_write_text, ensure_writable_dir


def test_registry_build_and_unknown_name_lists_choices():
    reg = Registry("thing")

    @reg.register("b")
    class B:
        def __init__(self, x=1):
            self.x = x

    reg.register("a")(dict)
    assert reg.names() == ["a", "b"]
    assert reg.build("b", x=3).x == 3
    with pytest.raises(ValueError, match="unknown thing 'c'; choose one of: a, b"):
        reg.build("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(list)


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((2, 5, 1, 8)), {}, "must have shape"),
        (np.full((1, 5, 1, 8, 8), np.nan, np.float32), {}, "NaN or inf"),
        (np.full((1, 5, 1, 8, 8), 1.5, np.float32), {}, r"must lie in \[0, 1\]"),
        (np.zeros((1, 4, 1, 8, 8), np.float32), {"length": 5}, "must have 5 frames, got 4"),
        (np.zeros((1, 5, 2, 8, 8), np.float32), {"channels": 1}, "1 channel"),
        (np.zeros((1, 5, 1, 8, 8), np.float32), {"size": (16, 16)}, "16x16"),
        (np.zeros((1, 5, 1, 8, 8), np.uint8), {}, "floating point"),
        (torch.zeros(1, 0, 1, 8, 8), {}, "empty"),
    ],
)
def test_validate_sequence_names_the_problem(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_sequence(x, "x_in", **kwargs)


def test_as_tensor_and_split():
    seq = np.random.default_rng(0).random((2, 25, 1, 8, 8), dtype=np.float32)
    t = as_tensor(seq, "seq", length=25)
    assert t.dtype == torch.float32 and t.shape == (2, 25, 1, 8, 8)
    x_in, y = split_sequence(t, 5, 20)
    assert x_in.shape[1] == 5 and y.shape[1] == 20
    assert torch.equal(y[:, 0], t[:, 5])
    with pytest.raises(ValueError, match="cannot split"):
        split_sequence(t, 5, 21)


def test_vil_decoding_matches_sevir_definition_and_inverts():
    codes = np.array([0, 5, 10, 18, 19, 100, 255], dtype=np.float32)
    kg = vil_code_to_kgm2(codes)
    assert kg[0] == 0 and kg[1] == 0
    assert kg[2] == pytest.approx((10 - 2) / 90.66, rel=1e-6)
    assert kg[5] == pytest.approx(np.exp((100 - 83.9) / 38.9), rel=1e-6)
    assert np.all(np.diff(kg[1:]) > 0)
    np.testing.assert_allclose(kgm2_to_vil_code(kg[2:]), codes[2:], atol=1e-3)
    phys = SEVIR_META.to_physical(np.array([100 / 255.0], np.float32))
    assert phys[0] == pytest.approx(np.exp((100 - 83.9) / 38.9), rel=1e-5)


def test_marshall_palmer_round_trip():
    r = np.array([0.1, 1.0, 10.0, 100.0])
    dbz = rainrate_to_dbz(r)
    assert dbz[1] == pytest.approx(10 * np.log10(200), rel=1e-5)  # 23.01 dBZ at 1 mm/h
    np.testing.assert_allclose(dbz_to_rainrate(dbz), r, rtol=1e-4)


def test_meta_lookup():
    assert get_meta("cikm").thresholds == (20.0, 30.0, 35.0, 40.0)
    assert get_meta("meteonet").thresholds == (12.0, 18.0, 24.0, 32.0)
    with pytest.raises(ValueError, match="no metadata for dataset 'nope'"):
        get_meta("nope")
    assert SEVIR_META.as_dict()["scale"] == 255.0


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "report.md"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_ensure_writable_dir_rejects_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write to output folder"):
        ensure_writable_dir(blocker / "sub")
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
