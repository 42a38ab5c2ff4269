"""GIF/PNG pictures and the Markdown/HTML report renderer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffcast.data.transforms import RADAR_DBZ_META, SEVIR_META
from diffcast.viz.animate import (
    Panel,
    colorize,
    default_prob_threshold,
    save_forecast_gif,
    save_forecast_panel,
    save_panels_gif,
)
from diffcast.viz.colormaps import vil_cmap
from diffcast.viz.report import (
    Report,
    Section,
    Table,
    best_cells,
    markdown_table,
    render_html,
    write_report,
)


def test_default_prob_threshold_is_middle_paper_threshold():
    assert default_prob_threshold(SEVIR_META) == 133.0  # (16, 74, 133, 160, 181, 219)
    assert default_prob_threshold(RADAR_DBZ_META) == 30.0  # (20, 30, 35, 40)


def test_colorize_uses_vil_colour_map():
    cmap, norm = vil_cmap()
    codes = np.array([[0.0, 20.0, 140.0, 250.0]], dtype=np.float32)
    rgb = colorize(codes / 255.0, SEVIR_META)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    want = (np.asarray(cmap(norm(codes)))[..., :3] * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(rgb, want)
    assert len({tuple(c) for c in rgb[0]}) == 4  # four different VIL bins, four colours
    prob = colorize(np.array([[0.0, 1.0]]), SEVIR_META, kind="prob")
    assert not np.array_equal(prob[0, 0], prob[0, 1])
    with pytest.raises(ValueError, match="kind"):
        colorize(codes, SEVIR_META, kind="bogus")


def test_forecast_gif_and_panel(tmp_path):
    rng = np.random.default_rng(0)
    x_in = rng.random((5, 16, 20), dtype=np.float32)
    fc = rng.random((3, 6, 16, 20), dtype=np.float32)
    gif = save_forecast_gif(tmp_path / "f.gif", x_in, fc, SEVIR_META)
    with Image.open(gif) as im:
        assert im.format == "GIF"
        assert im.n_frames == 5 + 6
    png = save_forecast_panel(tmp_path / "p.png", x_in, fc, SEVIR_META, y_true=fc[0], title="t")
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gif", "p.png"]


def test_panels_gif_offsets_and_shape_check(tmp_path):
    a = np.zeros((3, 8, 8), np.float32)
    b = np.ones((2, 8, 8), np.float32)
    path = save_panels_gif(tmp_path / "a.gif", [Panel("a", a), Panel("b", b, offset=3)], SEVIR_META)
    with Image.open(path) as im:
        assert im.n_frames == 5
    with pytest.raises(ValueError, match="panel"):
        save_panels_gif(tmp_path / "b.gif", [Panel("a", a), Panel("c", np.zeros((2, 4, 4)))], SEVIR_META)
    assert not (tmp_path / "b.gif").exists()


def test_report_markdown_and_html(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "img.png")
    rows = [["persistence", 0.1, 0.5], ["diffcast", 0.3, float("nan")]]
    table = Table(["model", "CSI", "CRPS"], rows, caption="scores", bold=best_cells(rows, {1: "max", 2: "min"}))
    assert table.bold == {(1, 1), (0, 2)}
    md = markdown_table(table)
    assert "| model | CSI | CRPS |" in md
    assert "| diffcast | **0.3000** | - |" in md
    report = Report("Demo", [Section("Results", ["claim held: **yes**"], [table], [("a picture", "img.png")])], summary="s")
    md_path, html_path = write_report(report, tmp_path)
    text = md_path.read_text()
    assert "# Demo" in text and "![a picture](img.png)" in text and "claim held: **yes**" in text
    page = html_path.read_text()
    assert "data:image/png;base64," in page and "<strong>yes</strong>" in page and "<table>" in page
    linked = render_html(report, tmp_path, embed=False)
    assert 'src="img.png"' in linked


def test_no_coverage_is_grey_and_rain_rate_colours(tmp_path):
    from diffcast.pipeline.units import rain_rate_meta
    from diffcast.viz.animate import NO_COVERAGE_RGB, display_unit, threshold_value

    meta = rain_rate_meta(RADAR_DBZ_META)
    x = np.array([[0.0, 0.0, 23.0103 / 90, 60 / 90]], np.float32)  # no rain, no rain, 1 mm/h, heavy
    nodata = np.array([[True, False, False, False]])
    rgb = colorize(x, meta, nodata=nodata)
    assert tuple(rgb[0, 0]) == NO_COVERAGE_RGB and tuple(rgb[0, 1]) == (255, 255, 255)  # no rain stays white
    assert len({tuple(c) for c in rgb[0]}) == 4
    assert tuple(colorize(x, meta, kind="prob", nodata=nodata)[0, 0]) == NO_COVERAGE_RGB
    assert tuple(colorize(x, SEVIR_META, nodata=nodata)[0, 0]) == NO_COVERAGE_RGB
    assert display_unit(meta) == "mm/h" and display_unit(RADAR_DBZ_META) == "dBZ"
    assert threshold_value(default_prob_threshold(meta), meta) == 1.0  # the panel's default: 1 mm/h
    fc = np.broadcast_to(x, (2, 3, 1, 4)).copy()
    cov = ~nodata
    save_forecast_gif(tmp_path / "f.gif", x[None].repeat(2, 0), fc, meta, coverage=cov)
    save_forecast_panel(tmp_path / "p.png", x[None].repeat(2, 0), fc, meta, coverage=cov)
    with Image.open(tmp_path / "f.gif") as im:
        first = np.asarray(im.convert("RGB"))
    assert (first == NO_COVERAGE_RGB).all(axis=-1).any()
    with pytest.raises(ValueError, match="coverage must be"):
        save_forecast_gif(tmp_path / "g.gif", x[None], fc, meta, coverage=cov[:, :2])


def test_panels_gif_takes_one_no_data_mask_per_frame(tmp_path):
    """A ``(T, H, W)`` mask greys frame k's own pixels (NaN that advection brings in grows with lead)."""
    from diffcast.viz.animate import NO_COVERAGE_RGB

    frames = np.full((3, 8, 8), 0.5, np.float32)
    nodata = np.zeros((3, 8, 8), bool)
    nodata[1, :, :2] = True
    nodata[2, :, :4] = True
    path = save_panels_gif(tmp_path / "p.gif", [Panel("x", frames, nodata=nodata)], SEVIR_META, scale=1)
    with Image.open(path) as im:
        grey = []
        for k in range(3):
            im.seek(k)
            rgb = np.asarray(im.convert("RGB"))
            # the panel's pixels: rows below the 14-px header, columns after the 4-px gap
            body = rgb[14:22, 4:12]
            grey.append(int((body == NO_COVERAGE_RGB).all(axis=-1).sum()))
    assert grey == [0, 16, 32]


def test_streamed_gif_decodes_to_the_frames_pillow_writes(tmp_path):
    """write_gif_stream (one frame in memory) against Pillow's own save_all: same frames after decoding."""
    import io

    from diffcast.viz.animate import write_gif_stream

    rng = np.random.default_rng(0)
    frames = []
    for k in range(5):
        rgb = rng.integers(0, 256, size=(3, 3, 3), dtype=np.uint8).repeat(7, 0).repeat(9, 1)  # blocks of colour
        rgb[k] = 0  # frames differ from each other, and the 5th row differs between frames
        frames.append(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
    buf = io.BytesIO()
    assert write_gif_stream(buf, iter([f.copy() for f in frames]), 120) == 5
    ref = tmp_path / "ref.gif"
    frames[0].save(ref, format="GIF", save_all=True, append_images=frames[1:], duration=120, loop=0, disposal=2)

    def decoded(src):
        with Image.open(src) as im:
            out = []
            for i in range(im.n_frames):
                im.seek(i)
                out.append((np.asarray(im.convert("RGB")), im.info.get("duration"), im.info.get("loop")))
            return out

    got, want = decoded(io.BytesIO(buf.getvalue())), decoded(ref)
    assert len(got) == len(want) == 5
    for (a, da, _), (b, db, _), f in zip(got, want, frames):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, np.asarray(f.convert("RGB")))
        assert da == db == 120
    assert got[0][2] == 0  # loops forever
    with pytest.raises(ValueError, match="palette"):
        write_gif_stream(io.BytesIO(), iter([Image.new("RGB", (2, 2))]), 100)
    with pytest.raises(ValueError, match="at least one frame"):
        write_gif_stream(io.BytesIO(), iter([]), 100)


@pytest.mark.parametrize("kind", ["value", "prob"])
def test_colorize_in_chunks_is_the_whole_frame_at_once(monkeypatch, kind):
    # colourised a chunk of pixels at a time (bounded memory): the same image as one matplotlib call
    from diffcast.pipeline.units import rain_rate_meta
    from diffcast.viz import animate
    from diffcast.viz.animate import (
        RAIN_RATE_RANGE,
        display_values,
        is_rain_rate,
        prob_cmap,
        value_cmap,
    )

    rng = np.random.default_rng(0)
    x = rng.random((3, 17, 23)).astype(np.float32)
    x[0, :5] = 0.0
    nodata = rng.random((17, 23)) < 0.1
    for meta in (rain_rate_meta(RADAR_DBZ_META), SEVIR_META, RADAR_DBZ_META):
        whole = animate.colorize(x, meta, kind, nodata)
        monkeypatch.setattr(animate, "COLORIZE_CHUNK", 50)  # many chunks, the last one short
        chunked = animate.colorize(x, meta, kind, nodata)
        monkeypatch.undo()
        assert chunked.dtype == np.uint8 and chunked.shape == (3, 17, 23, 3)
        np.testing.assert_array_equal(chunked, whole)
        # and what the earlier whole-frame code computed
        if kind == "prob":
            cmap, norm = prob_cmap()
            rgba = cmap(norm(x))
        else:
            cmap, norm = value_cmap(meta)
            shown = display_values(x, meta)
            if is_rain_rate(meta):
                shown = np.where(shown > 0, shown, 0.5 * RAIN_RATE_RANGE[0])
            rgba = cmap(np.ma.getdata(norm(shown.reshape(-1))).reshape(shown.shape))
        ref = (np.asarray(rgba)[..., :3] * 255.0 + 0.5).astype(np.uint8)
        ref[..., nodata, :] = animate.NO_COVERAGE_RGB
        np.testing.assert_array_equal(chunked, ref)
        assert len({tuple(c) for c in chunked.reshape(-1, 3)}) > 10
