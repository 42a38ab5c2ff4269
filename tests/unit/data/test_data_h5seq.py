"""DiffCast HDF5 layouts for CIKM, Shanghai and MeteoNet."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from diffcast.data import DATASETS


def _cikm(path, n=(3, 2, 2)):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as fh:
        for grp, k in zip(("train", "valid", "test"), n):
            g = fh.create_group(grp)
            for i in range(k):
                g.create_dataset(
                    f"sample_{i}", data=rng.integers(0, 256, (15, 101, 101), dtype=np.uint8)
                )
    return path


def _shanghai(path, n_train=10, n_test=3, size=32, values=None):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as fh:
        for grp, k in (("train", n_train), ("test", n_test)):
            g = fh.create_group(grp)
            for i in range(k):
                data = (
                    rng.integers(0, 256, (25, size, size), dtype=np.uint8)
                    if values is None
                    else values
                )
                g.create_dataset(str(i), data=data)
    return path


def test_cikm_padding_and_splits(tmp_path):
    path = _cikm(tmp_path / "cikm.h5")
    tr = DATASETS.build("cikm", path=path, split="train")
    va = DATASETS.build("cikm", path=path, split="val")
    assert (len(tr), len(va), len(DATASETS.build("cikm", path=path, split="test"))) == (3, 2, 2)
    x = va[1]
    assert x.shape == (15, 1, 128, 128) and x.dtype == torch.float32
    with h5py.File(path) as fh:
        raw = fh["valid/sample_1"][:]
    inner = x.numpy()[:, 0, 13:114, 13:114]
    np.testing.assert_allclose(inner, raw / 255.0, atol=1e-6)
    mask = np.ones((128, 128), bool)
    mask[13:114, 13:114] = False
    assert np.all(x.numpy()[:, 0][:, mask] == 0)
    assert tr.meta.thresholds == (20.0, 30.0, 35.0, 40.0) and tr.meta.scale == 90.0
    assert DATASETS.build("cikm", path=path, split="test", size=(128, 128))[0].shape == (
        15,
        1,
        128,
        128,
    )


def test_cikm_numeric_key_order(tmp_path):
    path = _cikm(tmp_path / "cikm.h5", n=(12, 1, 1))
    ds = DATASETS.build("cikm", path=path, split="train", size=None)
    assert ds.keys[:3] == ["sample_0", "sample_1", "sample_2"] and ds.keys[-1] == "sample_11"
    assert ds[0].shape == (15, 1, 101, 101)


def test_shanghai_resize_and_val_from(tmp_path, caplog):
    path = _shanghai(tmp_path / "sh.h5")
    with caplog.at_level("WARNING"):
        val = DATASETS.build("shanghai", path=path, split="val")
    assert "TEST group" in caplog.text and val.group == "test" and len(val) == 3
    x = val[0]
    assert x.shape == (25, 1, 128, 128) and 0 <= float(x.min()) and float(x.max()) <= 1
    tr = DATASETS.build("shanghai", path=path, split="train", val_from="train_tail")
    va = DATASETS.build("shanghai", path=path, split="val", val_from="train_tail")
    assert tr.keys == [str(i) for i in range(9)] and va.keys == ["9"]
    nat = DATASETS.build("shanghai", path=path, split="test", size=None)
    with h5py.File(path) as fh:
        np.testing.assert_allclose(nat.sequence(2), fh["test/2"][:] / 255.0, atol=1e-6)
    small = DATASETS.build("shanghai", path=path, split="test", size=16)
    blocks = nat.sequence(0).reshape(25, 16, 2, 16, 2).mean(axis=(2, 4))  # area = 2x2 means
    np.testing.assert_allclose(small.sequence(0), blocks, atol=1e-5)
    assert pickle.loads(pickle.dumps(small))[1].shape == (25, 1, 16, 16)


def test_meteonet_scaling_and_invalid(tmp_path):
    vals = np.full((25, 8, 8), 45, np.uint8)
    vals[:, 0, 0] = 255  # invalid
    vals[:, 1, 1] = 90
    vals[:, 2, 2] = 120  # above 90 dBZ -> clipped
    path = _shanghai(tmp_path / "mn.h5", n_train=2, n_test=1, values=vals)
    ds = DATASETS.build("meteonet", path=path, split="test", size=None)
    x = ds.sequence(0)
    assert x[0, 0, 0] == 0.0 and x[0, 1, 1] == pytest.approx(1.0) and x[0, 2, 2] == 1.0
    assert x[0, 3, 3] == pytest.approx(0.5)
    assert ds.meta.thresholds == (12.0, 18.0, 24.0, 32.0)


def test_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError):
        DATASETS.build("cikm", path=tmp_path / "missing.h5")
    sh = _shanghai(tmp_path / "sh.h5", n_train=2, n_test=1)
    with pytest.raises(ValueError, match="no group 'valid'"):
        DATASETS.build("cikm", path=sh, split="val")
    with pytest.raises(ValueError, match="unexpected entry"):
        DATASETS.build("cikm", path=sh, split="train")  # keys '0', '1' are not sample_i
    with pytest.raises(ValueError, match="fewer than seq_len"):
        DATASETS.build("shanghai", path=sh, split="train", seq_len=30)
    with pytest.raises(ValueError, match="val_from"):
        DATASETS.build("shanghai", path=sh, val_from="nope")
    (tmp_path / "junk.h5").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot open"):
        DATASETS.build("meteonet", path=tmp_path / "junk.h5")
    with h5py.File(tmp_path / "f.h5", "w") as fh:
        fh.create_dataset("train/0", data=np.zeros((25, 4, 4), np.float32))
        fh.create_dataset("test/0", data=np.zeros((25, 4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        DATASETS.build("shanghai", path=tmp_path / "f.h5")
