"""``forecast.html`` (:mod:`diffcast.viz.forecast_page`): a self-contained page, its frames and panels,
the graticule, grey no-data, probabilities read back from the pictures, the CLI, and a headless browser
where one is installed."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcast.data.transforms import SEVIR_META
from diffcast.geo import ProjectedGrid
from diffcast.viz.animate import NO_COVERAGE_RGB, colorize
from diffcast.viz.forecast_page import graticule_step, write_forecast_page

T0 = dt.datetime(2024, 5, 1, 12, 0)
DATA_PNG = "data:image/png;base64,"


class _Page(HTMLParser):
    """Panels (caption, kind, {frame: src}), the frame list, every src/href, the graticule labels."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.panels: list[dict] = []
        self.urls: list[str] = []
        self.labels: list[str] = []
        self._in = None
        self.feed(text)
        self.frames = json.loads(re.search(r'<script type="application/json" id="frames">(.*?)</script>', text, re.S)[1])

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href")]
        if tag == "figure":
            self.panels.append({"kind": a["data-kind"], "imgs": {}, "caption": ""})
        elif tag == "img" and "data-frame" in a:
            self.panels[-1]["imgs"][int(a["data-frame"])] = a["src"]
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "figcaption":
            self.panels[-1]["caption"] += data
        elif self._in == "text":
            self.labels.append(data)


def _decode(src: str) -> np.ndarray:
    assert src.startswith(DATA_PNG)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src[len(DATA_PNG):]))).convert("RGB"))


def _page(tmp_path, x_in, fc, **kw) -> tuple[_Page, str]:
    kw.setdefault("thresholds", [74.0, 133.0])
    path = write_forecast_page(tmp_path / "forecast.html", x_in, fc, SEVIR_META, analysis_time=T0, step_min=5.0, **kw)
    text = path.read_text(encoding="utf-8")
    return _Page(text), text


def _geographic_grid(h=30, w=40) -> ProjectedGrid:
    # 0.1 degree pixels from 5 E and 45 N (outer edges); row 0 on top: pixel centres 47.95 N ... 45.05 N
    return ProjectedGrid.from_pysteps(
        {"projection": "+proj=longlat +datum=WGS84", "x1": 5.0, "x2": 5.0 + w / 10, "y1": 45.0, "y2": 45.0 + h / 10,
         "xpixelsize": 0.1, "ypixelsize": 0.1, "cartesian_unit": "degrees", "yorigin": "upper"}, (h, w))


def test_page_is_self_contained_with_all_frames_and_panels(tmp_path):
    rng = np.random.default_rng(0)
    x_in, fc, y_true = rng.random((3, 8, 10), np.float32), rng.random((4, 5, 8, 10), np.float32), rng.random((2, 8, 10), np.float32)
    page, text = _page(tmp_path, x_in, fc, y_true=y_true, thresholds=[74.0, 133.0, 181.0])
    # nothing outside the file: every src/href is a data URI, no stylesheet or script is linked
    assert page.urls and all(u.startswith(DATA_PNG) for u in page.urls)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text) and "<link" not in text
    assert "<script src" not in text and "@import" not in text and "url(" not in text
    # frames: the 3 inputs (observed, with valid times) then the 5 leads
    assert len(page.frames) == 3 + 5
    assert [f["kind"] for f in page.frames] == ["observed"] * 3 + ["forecast"] * 5
    assert page.frames[0]["label"] == "observed -10 min, valid 11:50Z"
    assert page.frames[2]["label"] == "observed +0 min, valid 12:00Z"
    assert page.frames[3]["label"] == "+5 min, valid 12:05Z" and page.frames[-1]["valid"] == "2024-05-01T12:25:00Z"
    assert 'max="7"' in text  # the slider spans every frame
    # panels: observed, mean, one member, one per threshold
    assert [p["caption"] for p in page.panels] == [
        "observed", "ensemble mean", "member 1", "P(≥ 74 VIL code)", "P(≥ 133 VIL code)", "P(≥ 181 VIL code)"]
    assert [p["kind"] for p in page.panels] == ["value"] * 3 + ["prob"] * 3
    assert sorted(page.panels[0]["imgs"]) == [0, 1, 2, 3, 4]  # inputs and the observed future (2 frames)
    assert all(sorted(p["imgs"]) == [3, 4, 5, 6, 7] for p in page.panels[1:])
    assert all(_decode(s).shape == (8, 10, 3) for p in page.panels for s in p["imgs"].values())
    # the observed and mean panels show those values in the value colour map
    np.testing.assert_array_equal(_decode(page.panels[0]["imgs"][1]), colorize(x_in[1], SEVIR_META))
    np.testing.assert_array_equal(_decode(page.panels[0]["imgs"][4]), colorize(y_true[1], SEVIR_META))
    np.testing.assert_array_equal(_decode(page.panels[1]["imgs"][5]), colorize(fc.mean(0)[2], SEVIR_META))
    # colour bars for both panel kinds, in the output units; no graticule for image inputs
    assert "value (VIL code (0-255))" in text and "exceedance probability (0-1)" in text
    assert page.labels == [] and 'class="grat"' not in text and "no graticule" in text
    # one member: a "forecast" panel and no member panel
    page1, _ = _page(tmp_path, x_in, fc[:1])
    assert [p["caption"] for p in page1.panels] == ["observed", "forecast", "P(≥ 74 VIL code)", "P(≥ 133 VIL code)"]


def test_exceedance_panel_is_the_fraction_of_members_at_or_above(tmp_path):
    # column j: (j % 5) of the 4 members at 0.6 (VIL code 153), the others at 0.4 (code 102)
    h, w = 6, 10
    counts = np.arange(w) % 5
    fc = np.stack([np.broadcast_to(np.where(m < counts, 0.6, 0.4), (2, h, w)) for m in range(4)]).astype(np.float32)
    page, _ = _page(tmp_path, np.zeros((2, h, w), np.float32), fc, thresholds=[133.0, 160.0])
    probs = [p for p in page.panels if p["kind"] == "prob"]
    levels = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    palette = colorize(levels[None], SEVIR_META, "prob")[0].astype(int)  # (5, 3)
    rgb = _decode(probs[0]["imgs"][2]).astype(int)  # first lead of P(>= 133)
    dist = np.abs(rgb[..., None, :] - palette).sum(-1)  # (h, w, 5)
    assert (dist.min(-1) == 0).all()  # every pixel is exactly one of the five probability colours
    np.testing.assert_array_equal(levels[dist.argmin(-1)], np.broadcast_to(counts / 4, (h, w)))
    # no member reaches 160: probability 0 everywhere
    np.testing.assert_array_equal(_decode(probs[1]["imgs"][3]), np.broadcast_to(palette[0], (h, w, 3)))


def test_no_data_is_grey(tmp_path):
    rng = np.random.default_rng(1)
    x_in, fc = rng.uniform(0.3, 0.9, (2, 6, 8)).astype(np.float32), rng.uniform(0.3, 0.9, (3, 2, 6, 8)).astype(np.float32)
    coverage = np.ones((6, 8), bool)
    coverage[:, :2] = False
    x_in[0, 4, 6] = np.nan  # a missing pixel in one input frame
    page, text = _page(tmp_path, x_in, fc, coverage=coverage)
    grey = np.array(NO_COVERAGE_RGB, np.uint8)
    for p in page.panels:
        for i, src in p["imgs"].items():
            expected = ~coverage
            if (p["caption"], i) == ("observed", 0):
                expected = expected.copy()
                expected[4, 6] = True  # the NaN
            np.testing.assert_array_equal((_decode(src) == grey).all(-1), expected, err_msg=f"{p['caption']} {i}")
    assert "outside radar coverage" in text
    # per-frame input masks replace the coverage for the observed frames
    mask = np.zeros((2, 6, 8), bool)
    mask[0, 0, 7] = True
    page, _ = _page(tmp_path, x_in, fc, coverage=coverage, input_mask=mask)
    assert (_decode(page.panels[0]["imgs"][0])[0, 7] == grey).all() and not (_decode(page.panels[0]["imgs"][1])[:, :2] == grey).all()


def test_graticule_lines_and_labels_from_the_grid(tmp_path):
    assert [graticule_step(s) for s in (0.07, 2.9, 3.9, 12.0, 60.0)] == [0.02, 1.0, 1.0, 2.5, 15.0]
    grid = _geographic_grid()
    fc = np.zeros((1, 2, 30, 40), np.float32)
    page, text = _page(tmp_path, fc[0], fc, grid=grid)
    # 45.05-47.95 N and 5.05-8.95 E: lines every degree inside the map, labelled on every panel
    assert sorted(set(page.labels)) == ["46°N", "47°N", "6°E", "7°E", "8°E"]
    assert page.labels.count("46°N") == len(page.panels) == 4
    svg = re.search(r'<svg class="grat" viewBox="0 0 40 30".*?</svg>', text, re.S)[0]
    lines = [np.array([p.split(",") for p in pts.split()], float) for pts in re.findall(r'points="([^"]+)"', svg)]
    assert len(lines) == 5
    # 46 N runs between rows 19 and 20 (47.95 - 0.1 i = 46 at i = 19.5): y = 20 in pixel-edge coordinates
    flat = [ln for ln in lines if np.ptp(ln[:, 1]) < 1e-6]
    assert sorted(round(ln[0, 1], 6) for ln in flat) == [10.0, 20.0]
    assert sorted(round(ln[0, 0], 6) for ln in lines if np.ptp(ln[:, 0]) < 1e-6) == [10.0, 20.0, 30.0]
    # a projected southern-hemisphere grid (Albers over Brisbane): S and E labels
    albers = ProjectedGrid.from_pysteps(
        {"projection": "+proj=aea +lon_0=153.240 +lat_0=-27.718 +lat_1=-26.200 +lat_2=-29.300", "x1": -128000.0,
         "y1": -128000.0, "x2": 128000.0, "y2": 128000.0, "xpixelsize": 8000.0, "ypixelsize": 8000.0,
         "cartesian_unit": "m", "yorigin": "upper"}, (32, 32))
    page, _ = _page(tmp_path, np.zeros((1, 32, 32), np.float32), np.zeros((1, 1, 32, 32), np.float32), grid=albers)
    # 28.84-26.59 S (every 0.5 degree: 4 lines), 151.97-154.51 E (every degree: 3 lines)
    assert sorted(set(page.labels)) == ["152°E", "153°E", "154°E", "27.5°S", "27°S", "28.5°S", "28°S"]


def test_large_grids_are_subsampled_for_display(tmp_path):
    fc = np.zeros((1, 1, 1700, 12), np.float32)
    fc[..., ::3, :] = 0.9  # every third row rains: subsampling by 3 keeps exactly those
    page, text = _page(tmp_path, fc[0], fc)
    rgb = _decode(page.panels[1]["imgs"][1])
    assert rgb.shape == (567, 4, 3) and "shown at 1/3 resolution (1700x12 grid)" in text
    np.testing.assert_array_equal(rgb, colorize(fc[0, 0, ::3, ::3], SEVIR_META))


# ----------------------------------------------------------------------------- through diffcast nowcast
def test_cli_writes_the_page_with_several_thresholds(tmp_path, helper_module, one_thread):
    from diffcast.cli import main

    writer = helper_module("unit/data/test_data_radar.py")._write_knmi
    folder = tmp_path / "radar"
    folder.mkdir()
    yy, xx = np.mgrid[0:16, 0:20]
    for i in range(6):  # a rain cell moving right; KNMI accumulations in 0.01 mm per 5 min
        acc = (400 * np.exp(-((yy - 8) ** 2 + (xx - 6 - i) ** 2) / 12.0)).astype(np.uint16)
        acc[:, 0] = 65535  # no data in the first column
        writer(folder / f"RAD_NL25_RAP_NA_{dt.datetime(2010, 8, 26, 0, 5 * i):%Y%m%d%H%M}.h5", acc)
    out = tmp_path / "out"
    assert main(["nowcast", "--baseline", "extrapolation", "--input", str(folder), "--out", str(out), "--t-out", "3",
                 "--prob-threshold", "2", "0.5", "10", "--no-progress"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["outputs"] == ["forecast.nc", "forecast.gif", "panel.png", "forecast.html", "run.json"]
    assert info["prob_threshold"] == 2.0 and info["prob_thresholds"] == [2.0, 0.5, 10.0]
    assert {0.5, 2.0, 10.0} <= set(info["output"]["thresholds"])
    page = _Page((out / "forecast.html").read_text(encoding="utf-8"))
    assert len(page.frames) == 5 + 3
    assert [p["caption"] for p in page.panels] == ["observed", "forecast", "P(≥ 0.5 mm/h)", "P(≥ 2 mm/h)", "P(≥ 10 mm/h)"]
    assert page.labels and all(s.endswith(("°N", "°E", "°W", "°S")) for s in page.labels)  # KNMI grid: a graticule
    grey = np.array(NO_COVERAGE_RGB, np.uint8)
    assert all((_decode(s)[:, 0] == grey).all() for p in page.panels for s in p["imgs"].values())
    # --no-html: no page, and run.json says so
    out2 = tmp_path / "out2"
    assert main(["nowcast", "--baseline", "persistence", "--input", str(folder), "--out", str(out2), "--t-out", "2",
                 "--no-html"]) == 0
    assert not (out2 / "forecast.html").exists()
    assert "forecast.html" not in json.loads((out2 / "run.json").read_text())["outputs"]


# ----------------------------------------------------------------------------- in a browser
def _browser() -> tuple[str, str] | None:
    """``("chrome", executable)`` for a Chromium-family browser on PATH, ``("playwright", "")``, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        exe = shutil.which(name)
        if exe:
            return "chrome", exe
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as pw:
        for kind in (pw.chromium, pw.firefox, pw.webkit):
            try:
                kind.launch().close()
                return "playwright", kind.name
            except Exception:  # noqa: BLE001 - that browser is not installed
                continue
    return None


def test_player_advances_in_a_headless_browser(tmp_path):
    found = _browser()
    if found is None:
        firefox = " (firefox is on PATH, but its command line cannot report the page's state; playwright can)" if (
            shutil.which("firefox")) else ""
        pytest.skip("no headless browser: no chromium, chromium-browser or google-chrome on PATH and no playwright "
                    f"with an installed browser{firefox}")
    rng = np.random.default_rng(0)
    path = write_forecast_page(tmp_path / "forecast.html", rng.random((3, 8, 8), np.float32),
                               rng.random((2, 4, 8, 8), np.float32), SEVIR_META, thresholds=[133.0],
                               analysis_time=T0, step_min=5.0, grid=_geographic_grid(8, 8))
    kind, exe = found
    if kind == "chrome":
        # the page plays on load; 4 s of virtual time is several frames at 600 ms a frame
        dom = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000", "--dump-dom",
             Path(path).as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
        body = re.search(r"<body([^>]*)>", dom)[1]
        attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body))
        assert attrs.get("errors") == "", attrs
        assert int(attrs["steps"]) >= 2 and 0 <= int(attrs["frame"]) < 7
        assert re.search(r'id="label"[^>]*>[^<]*valid \d\d:\d\dZ<', dom)
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = getattr(pw, exe).launch()
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(path).as_uri())
        page.wait_for_function("Number(document.body.dataset.steps) >= 2", timeout=10_000)
        page.click("#play")  # pause, then step with the keyboard
        frame = int(page.evaluate("document.body.dataset.frame"))
        page.keyboard.press("ArrowRight")
        assert int(page.evaluate("document.body.dataset.frame")) == (frame + 1) % 7
        visible = page.evaluate("Array.from(document.querySelectorAll('img.f')).filter(i => !i.hidden).length")
        assert visible == (3 if (frame + 1) % 7 >= 3 else 1)  # forecast frames: 3 panels; inputs: observed only
        assert errors == [] and page.evaluate("document.body.dataset.errors") == ""
        browser.close()
