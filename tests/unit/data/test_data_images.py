"""Image-sequence folders: numeric ordering, preds/targets layout, sevir_demo, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcast.data import DATASETS
from diffcast.data.images import list_frames, read_image_frames, read_image_sequence


def _write(folder: Path, frames: np.ndarray, name: str = "{i}.png", mode: str = "L") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        img = Image.fromarray(f.astype(np.uint8))
        if mode != "L":
            img = img.convert(mode)
        img.save(folder / name.format(i=i))


def _codes(t: int, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w)).astype(np.uint8)


def test_numeric_order_not_alphabetical(tmp_path):
    codes = _codes(12)
    _write(tmp_path / "seq", codes)
    files = list_frames(tmp_path / "seq")
    assert [p.stem for p in files] == [str(i) for i in range(12)]  # 10, 11 after 9
    x = read_image_frames(tmp_path / "seq")
    assert x.shape == (12, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x * 255, codes, atol=1e-4)


def test_zero_padded_names_and_rgba(tmp_path):
    codes = _codes(3, seed=1)
    _write(tmp_path / "s", codes, name="frame_{i:04d}.png", mode="RGBA")
    x = read_image_frames(tmp_path / "s")
    np.testing.assert_allclose(x * 255, codes, atol=1e-4)


def test_preds_targets_layout(tmp_path):
    codes = _codes(7, seed=2)
    _write(tmp_path / "demo" / "preds", codes[:2])
    _write(tmp_path / "demo" / "targets", codes[2:])
    x_in, y = read_image_sequence(tmp_path / "demo")
    assert x_in.shape == (2, 8, 8) and y.shape == (5, 8, 8)
    np.testing.assert_allclose(y * 255, codes[2:], atol=1e-4)
    # plain folder -> no targets
    x_in, y = read_image_sequence(tmp_path / "demo" / "targets")
    assert y is None and x_in.shape == (5, 8, 8)


def test_sevir_demo(sevir_demo):
    x_in, y = read_image_sequence(sevir_demo / "demo_0")
    assert x_in.shape == (5, 128, 128) and y.shape == (20, 128, 128)
    assert 0 <= x_in.min() and y.max() <= 1 and y.max() > 0.3
    grey = np.asarray(Image.open(sevir_demo / "demo_0" / "targets" / "7.png"))[..., 0]
    np.testing.assert_allclose(y[7] * 255, grey, atol=1e-4)
    ds = DATASETS.build("images", root=sevir_demo, split="test")
    assert len(ds) >= 1 and ds[0].shape == (25, 1, 128, 128)
    np.testing.assert_allclose(
        ds[0].numpy()[5, 0], read_image_sequence(sevir_demo / "demo_0")[1][0]
    )


def test_dataset_splits_and_seq_len(tmp_path, caplog):
    for k in range(5):
        _write(tmp_path / f"seq_{k}" / "inputs", _codes(2, seed=k))
        _write(tmp_path / f"seq_{k}" / "targets", _codes(3, seed=10 + k))
    with caplog.at_level("WARNING"):
        ds = DATASETS.build("images", root=tmp_path, split="train")
    assert len(ds) == 5 and "uses all" in caplog.text
    parts = {
        s: DATASETS.build("images", root=tmp_path, split=s, split_fractions=(0.6, 0.2, 0.2))
        for s in ("train", "val", "test")
    }
    names = [tuple(f.name for f in parts[s].folders) for s in ("train", "val", "test")]
    assert [len(n) for n in names] == [3, 1, 1] and len(set(sum(names, ()))) == 5
    ds = DATASETS.build("images", root=tmp_path, split="test", seq_len=4, size=4)
    assert ds[0].shape == (4, 1, 4, 4)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        DATASETS.build("images", root=tmp_path, split="test", seq_len=9)[0]


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image_frames(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image frames"):
        read_image_frames(tmp_path / "empty")
    bad = tmp_path / "corrupt"
    _write(bad, _codes(2))
    (bad / "2.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"2\.png"):
        read_image_frames(bad)
    colour = tmp_path / "colour"
    colour.mkdir()
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(colour / "0.png")
    with pytest.raises(ValueError, match="colour image"):
        read_image_frames(colour)
    sizes = tmp_path / "sizes"
    _write(sizes, _codes(1))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(sizes / "1.png")
    with pytest.raises(ValueError, match="different sizes"):
        read_image_frames(sizes)
    dup = tmp_path / "dup"
    _write(dup, _codes(1))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(dup / "frame_0.png")
    with pytest.raises(ValueError, match="share frame number"):
        read_image_frames(dup)
    nonum = tmp_path / "nonum"
    nonum.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(nonum / "first.png")
    with pytest.raises(ValueError, match="no frame number"):
        read_image_frames(nonum)
