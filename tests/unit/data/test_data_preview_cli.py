"""SEVIR VIL colour map, fast colourisation and preview PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffcast.cli import main
from diffcast.data.transforms import CIKM_META, SEVIR_META, SEVIR_VIL_BOUNDS
from diffcast.viz.colormaps import VIL_COLORS, colorize_meta, colorize_vil, vil_cmap, vil_lut
from diffcast.viz.preview import plot_sequences


def test_lut_bins_follow_boundaries():
    lut = vil_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    for i, lo in enumerate(SEVIR_VIL_BOUNDS[:-1]):
        want = np.round(np.asarray(VIL_COLORS[i]) * 255).astype(np.uint8)
        np.testing.assert_array_equal(lut[int(lo)], want)
        if i > 0:  # the code just below a boundary belongs to the previous bin
            np.testing.assert_array_equal(
                lut[int(lo) - 1], np.round(np.asarray(VIL_COLORS[i - 1]) * 255)
            )
    np.testing.assert_array_equal(lut[255], np.round(np.asarray(VIL_COLORS[-1]) * 255))
    np.testing.assert_array_equal(lut[0], [0, 0, 0])


def test_matplotlib_cmap_agrees_with_lut():
    cmap, norm = vil_cmap()
    codes = np.arange(256, dtype=float)
    rgba = cmap(norm(codes), bytes=True)[:, :3]
    np.testing.assert_array_equal(rgba, vil_lut())


def test_colorize_vil_shapes_and_values():
    x = np.array([[0.0, 16 / 255], [133 / 255, 1.0]], dtype=np.float32)
    rgb = colorize_vil(x[None])
    assert rgb.shape == (1, 2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 1, 0], vil_lut()[133])
    assert colorize_vil(np.array([np.nan])).tolist() == [[0, 0, 0]]
    assert colorize_meta(np.zeros((2, 2)), CIKM_META).shape == (2, 2, 3)


def test_preview_writes_valid_png(tmp_path):
    seqs = [np.random.default_rng(i).random((6, 32, 32)).astype(np.float32) for i in range(2)]
    out = plot_sequences(seqs, tmp_path / "p.png", SEVIR_META, frames=3, titles=["a", "b"])
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 50
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temp file left
    with pytest.raises(ValueError, match="out of range"):
        plot_sequences(seqs, tmp_path / "q.png", SEVIR_META, frames=[0, 9])
    assert not (tmp_path / "q.png").exists()


def test_cli_preview_and_info(tmp_path, capsys):
    out = tmp_path / "syn.png"
    rc = main(
        [
            "-q",
            "data",
            "preview",
            "synthetic",
            "--out",
            str(out),
            "--n",
            "2",
            "--frames",
            "3",
            "--size",
            "32",
            "--seq-len",
            "6",
            "--seed",
            "3",
        ]
    )
    assert rc == 0 and out.is_file()
    with Image.open(out) as im:
        assert im.format == "PNG"
    rc = main(["-q", "data", "info", "synthetic", "--json", "--size", "16", "--seq-len", "4"])
    assert rc == 0
    import json

    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["splits"] == {"train": 4096, "val": 256, "test": 512}
    assert info["item_shape"] == [4, 1, 16, 16] and info["meta"]["scale"] == 255.0


def test_cli_errors(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["data", "preview", "synthetic", "--out", str(tmp_path / "no" / "x.png")]) == 2
    assert main(["data", "preview", "synthetic", "--out", str(tmp_path / "x.gif")]) == 2
    assert main(["data", "info", "synthetic", "--set", "bogus_knob=1"]) == 2
    assert "bogus_knob" in capsys.readouterr().err


def _sevir_h5(path, n=2, size=12):
    import h5py

    with h5py.File(path, "w") as fh:
        fh.create_dataset(
            "vil",
            data=np.random.default_rng(0).integers(0, 256, (n, size, size, 49), dtype=np.uint8),
        )
        fh.create_dataset("id", data=np.array([f"E{i}".encode() for i in range(n)]))
    return path


def test_resolve_sources(tmp_path, sevir_demo):
    from diffcast.cli.data import resolve_source

    assert resolve_source("synthetic") == ("synthetic", {})
    assert resolve_source(str(sevir_demo))[0] == "images"
    assert resolve_source(str(sevir_demo / "demo_0"))[0] == "images"
    assert resolve_source("s3://bucket/sevir/CATALOG.csv") == (
        "sevir",
        {"catalog": "s3://bucket/sevir/CATALOG.csv"},
    )
    h5 = _sevir_h5(tmp_path / "SEVIR_VIL_X.h5")
    assert resolve_source(str(h5))[0] == "sevir-file"
    radar = tmp_path / "radar"
    radar.mkdir()
    assert resolve_source(str(radar))[0] == "radar"
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_source("synthetic", kind="nope")


def test_cli_preview_h5_and_images(tmp_path, sevir_demo, capsys):
    h5 = _sevir_h5(tmp_path / "SEVIR_VIL_X.h5")
    assert (
        main(
            [
                "-q",
                "data",
                "preview",
                str(h5),
                "--out",
                str(tmp_path / "a.png"),
                "--size",
                "4",
                "--n",
                "2",
            ]
        )
        == 0
    )
    assert main(["-q", "data", "info", str(h5), "--size", "4", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"all": 6' in out  # 2 events x 3 windows (seq_len 25, stride 12)
    assert (
        main(
            ["-q", "data", "preview", str(sevir_demo), "--out", str(tmp_path / "b.png"), "--n", "1"]
        )
        == 0
    )
    assert (tmp_path / "b.png").is_file()
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"nonsense")
    assert main(["data", "info", str(bad)]) == 2
    assert "bad.h5" in capsys.readouterr().err
