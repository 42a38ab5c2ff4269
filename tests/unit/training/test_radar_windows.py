"""``radar_windows``: crops of radar windows with a cached backbone ``mu``, and training from it."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

h5py = pytest.importorskip("h5py")
pytest.importorskip("pysteps")

from diffcast.data.radar_train import RadarWindows, find_series  # noqa: E402
from diffcast.models import build_model  # noqa: E402
from diffcast.models.backbones import BACKBONES  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def write_odim_archive(folder: Path, starts: list[datetime], n_frames: int, size: int = 64, seed: int = 0,
                       step_min: int = 5, prefix: str = "comp", width: int | None = None,
                       coverage_radius: float | None = None) -> None:
    """Moving rain cells as ODIM DBZH composites, one file per ``step_min`` minutes from each start.

    ``size`` rows by ``width`` (default ``size``) columns; ``coverage_radius`` (pixels): no data
    (ODIM ``nodata``) outside that circle around the centre, as a single radar sees."""
    rng = np.random.default_rng(seed)
    width = size if width is None else width
    yy, xx = np.mgrid[0:size, 0:width].astype(float)
    corners = {"LL_lat": 50.0, "LL_lon": 0.0, "UR_lat": 50.6, "UR_lon": 0.9}
    if width != size or coverage_radius is not None:  # corners that agree with the 1 km pixels of any grid
        from pyproj import Proj

        proj = Proj("+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +ellps=WGS84")
        x0, y0 = proj(0.0, 50.0)
        corners["UR_lon"], corners["UR_lat"] = proj(x0 + 1000.0 * width, y0 + 1000.0 * size, inverse=True)
    outside = None
    if coverage_radius is not None:
        outside = (yy - size / 2) ** 2 + (xx - width / 2) ** 2 > coverage_radius**2
    folder.mkdir(parents=True, exist_ok=True)
    for e, start in enumerate(starts):
        cells = [(rng.uniform(10, size - 10), rng.uniform(5, 30), rng.uniform(5, 9), rng.uniform(35, 50)) for _ in range(3)]
        for k in range(n_frames):
            dbz = np.zeros((size, width))
            for cy, cx, s, peak in cells:
                dbz = np.maximum(dbz, peak * np.exp(-((yy - cy - 0.5 * k) ** 2 + (xx - cx - 1.2 * k) ** 2) / (2 * s * s)))
            code = np.clip(np.round((dbz + 32.0) / 0.5), 1, 254).astype(np.uint8)
            code[dbz < 5] = 0  # undetect
            if outside is not None:
                code[outside] = 255  # nodata
            t = start + timedelta(minutes=step_min * k)
            with h5py.File(folder / f"{prefix}_{t:%Y%m%d%H%M}.h5", "w") as f:
                f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_2")
                w = f.create_group("what")
                w.attrs["date"], w.attrs["time"] = np.bytes_(f"{t:%Y%m%d}"), np.bytes_(f"{t:%H%M%S}")
                wh = f.create_group("where")
                wh.attrs["projdef"] = np.bytes_("+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +ellps=WGS84")
                for key, v in (*corners.items(), ("xscale", 1000.0), ("yscale", 1000.0)):
                    wh.attrs[key] = v
                d = f.create_group("dataset1/data1")
                d.create_dataset("data", data=code)
                dw = d.create_group("what")
                dw.attrs["quantity"] = np.bytes_("DBZH")
                for key, v in (("gain", 0.5), ("offset", -32.0), ("nodata", 255.0), ("undetect", 0.0)):
                    dw.attrs[key] = v
        del e


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("radar_archive")
    days = [datetime(2021, 6, d, 12, 0) for d in (1, 2, 3)]
    write_odim_archive(root / "odim", days, n_frames=18)
    return root


def _windows(archive: Path, tmp_path: Path, **kw) -> RadarWindows:
    args = {"split": "all", "seq_len": 10, "t_in": 4, "size": 32, "stride": 2, "crops_per_window": 2, "candidates": 12,
            "min_rain": 0.01, "cache_dir": tmp_path / "cache", "augment": False, "mu_context": 32}
    return RadarWindows(archive, **{**args, **kw})


def test_series_found_and_items_shaped(archive, tmp_path):
    assert find_series(archive) == [archive]  # one series (searched recursively)
    ds = _windows(archive, tmp_path)
    assert len(ds) > 0
    item = ds[0]
    assert item.shape == (10 + 6, 1, 32, 32) and item.dtype == torch.float32
    assert 0.0 <= float(item.min()) and float(item.max()) <= 1.0
    assert ds.meta.unit == "dBZ" and ds.meta.timestep_min == 5.0


def test_cached_mu_equals_backbone_on_the_fly(archive, tmp_path):
    """The cache gives the batches that computing the backbone at each step would give."""
    ds = _windows(archive, tmp_path)
    bb = BACKBONES.build("extrapolation", t_in=4, t_out=6, channels=1, height=32, width=32)
    for i in range(min(len(ds), 4)):
        item = ds[i]
        with torch.no_grad():
            mu = bb(item[None, :4])[0]
        # the pool stores float16: mu to 1e-3, the inputs the same way
        np.testing.assert_allclose(item[10:].numpy(), mu.clamp(0, 1).numpy(), atol=2e-3)
    # a second construction reads the cache file instead of recomputing, also when the root is spelled otherwise
    again = _windows(Path(os.path.relpath(archive)), tmp_path)
    assert again.cache_file == ds.cache_file and ds.cache_file.is_file()
    np.testing.assert_array_equal(again.pool, ds.pool)


@pytest.mark.parametrize("backbone", ["extrapolation", "sprog"])
def test_mu_on_a_larger_context_window(archive, tmp_path, backbone):
    """With mu_context > size, mu is the backbone on the window around the crop, cut to the crop: the backbone
    on the archive's frames, as computing it on the fly would give. (S-PROG is compared here, on the frames as
    read, not on the pool's float16 inputs: on this archive S-PROG of the float16-rounded inputs differs from
    S-PROG of the frames by up to 0.25 on 8 % of the pixels - a nonlinear method (rain threshold, AR fit) - and
    the cache stores S-PROG of the frames themselves.)"""
    ds = _windows(archive, tmp_path, mu_context=64, crops_per_window=1, backbone=backbone)
    lab = ds.labels[0]
    y0, x0 = (int(tok[1:]) for tok in lab.split()[-2:])
    from diffcast.data.radar import RadarArchive, read_frame

    arch = RadarArchive(archive, split="all", seq_len=10, size=None, stride=2)
    start = arch.windows[0]
    frames = np.stack([read_frame(arch.paths[start + i], arch.fmt)[0] for i in range(4)])
    bb = BACKBONES.build(backbone, t_in=4, t_out=6, channels=1, height=64, width=64)
    with torch.no_grad():
        mu = bb(torch.from_numpy(frames)[None, :, None])[0, :, 0].clamp(0, 1).numpy()
    assert mu.max() > 0.1
    np.testing.assert_allclose(ds[0][10:, 0].numpy(), mu[:, y0 : y0 + 32, x0 : x0 + 32], atol=2e-3)


def test_loss_with_cached_mu_equals_loss_on_the_fly(archive, tmp_path):
    ds = _windows(archive, tmp_path)
    batch = torch.stack([ds[i] for i in range(2)])
    mcfg = {"type": "diffcast", "t_in": 4, "t_out": 6, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": "extrapolation"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                          "attn_dim_head": 8, "ta_kernel": 7, "train_segments": "random"}}
    torch.manual_seed(0)
    model = build_model(mcfg)
    x_in, y_true, mu = batch[:, :4], batch[:, 4:10], batch[:, 10:]
    with torch.no_grad():
        mu_live = model.backbone_net(x_in).clamp(0, 1)
    cached = model.loss(x_in, y_true, generator=torch.Generator().manual_seed(1), mu=mu)
    live = model.loss(x_in, y_true, generator=torch.Generator().manual_seed(1), mu=mu_live)
    assert float(cached["loss"].detach()) == pytest.approx(float(live["loss"].detach()), rel=1e-3)
    with pytest.raises(ValueError, match="mu must have shape"):
        model.loss(x_in, y_true, mu=mu[:, :3])


def test_series_of_other_time_steps_on_request(tmp_path, monkeypatch):
    """A list of time steps takes series of each at their own cadence; the metadata keep the first."""
    import diffcast.data.radar_train as radar_train

    root = tmp_path / "two"
    # two ODIM series in sibling folders read as one from their parent (same product): list them as two,
    # as find_series does for archives of different formats (BoM beside MeteoSwiss)
    monkeypatch.setattr(radar_train, "find_series", lambda r: [Path(r) / "a_six", Path(r) / "b_five"])
    write_odim_archive(root / "a_six", [datetime(2021, 6, 1, 12, 0)], n_frames=14, step_min=6, seed=1, prefix="six")
    write_odim_archive(root / "b_five", [datetime(2021, 6, 2, 12, 0)], n_frames=14, step_min=5, seed=2, prefix="five")
    five = _windows(root, tmp_path)
    both = _windows(root, tmp_path, timestep_min=[5, 6])
    assert {lab.split()[0] for lab in five.labels} == {"b_five"}
    assert {lab.split()[0] for lab in both.labels} == {"a_six", "b_five"}
    assert len(both) > len(five) and both.cache_file != five.cache_file
    # the 6-min series sorts first, but the model's time step is the first one asked for
    assert both.meta.timestep_min == 5.0
    six_first = _windows(root, tmp_path, timestep_min=[6, 5])
    assert six_first.meta.timestep_min == 6.0
    # as many crops of the 5-min series whichever list brought it in (positions differ: one random stream)
    assert sum(lab.startswith("b_five") for lab in both.labels) == len(five)
    with pytest.raises(ValueError, match="at least one time step"):
        _windows(root, tmp_path, timestep_min=[])
    with pytest.raises(ValueError, match="positive"):
        _windows(root, tmp_path, timestep_min=[5, -6])


def test_coarsened_series_are_block_averages(tmp_path, monkeypatch):
    """coarsen: a series' frames are block-averaged (valid pixels) before crops and mu are cut."""
    import diffcast.data.radar_train as radar_train
    from diffcast.data.radar import RadarArchive, read_frame

    root = tmp_path / "fine"
    # two series listed apart, as find_series does for archives of different formats
    monkeypatch.setattr(radar_train, "find_series", lambda r: [Path(r) / "bom" / "c10", Path(r) / "five"])
    write_odim_archive(root / "bom" / "c10", [datetime(2021, 6, 1, 12, 0)], n_frames=12, size=128, seed=3,
                       step_min=10, prefix="ten")
    write_odim_archive(root / "five", [datetime(2021, 6, 2, 12, 0)], n_frames=12, seed=4, prefix="five")
    ds = _windows(root, tmp_path, timestep_min=[5, 10], coarsen={"c10": 4}, crops_per_window=1)
    plain = _windows(root, tmp_path, timestep_min=[5, 10], crops_per_window=1)
    assert ds.cache_file != plain.cache_file and len(ds) > 0
    arch = RadarArchive(root / "bom" / "c10", split="all", seq_len=10, size=None, stride=2)
    lab = ds.labels[0]
    assert lab.startswith("c10")  # the series that sorts first; the other one is not coarsened
    # the other series is cut from its native frames
    k = next(i for i, lab in enumerate(ds.labels) if lab.startswith("five"))
    fy, fx = (int(tok[1:]) for tok in ds.labels[k].split()[-2:])
    five = RadarArchive(root / "five", split="all", seq_len=10, size=None, stride=2)
    raw = np.stack([read_frame(five.paths[five.windows[0] + i], five.fmt)[0] for i in range(10)])
    np.testing.assert_allclose(ds[k][:10, 0].numpy(), raw[:, fy : fy + 32, fx : fx + 32], atol=1e-3)
    y0, x0 = (int(tok[1:]) for tok in lab.split()[-2:])
    frames = np.stack([read_frame(arch.paths[arch.windows[0] + i], arch.fmt)[0] for i in range(10)])
    # 4 x 4 block means, computed here by reshaping, not by the code under test
    blocks = frames.reshape(10, 32, 4, 32, 4).mean(axis=(2, 4))
    assert y0 + 32 <= 32 and x0 + 32 <= 32  # the 128-pixel frames are 32 pixels wide once coarsened
    np.testing.assert_allclose(ds[0][:10, 0].numpy(), blocks[:, y0 : y0 + 32, x0 : x0 + 32], atol=1e-3)
    # a path under root works as a key too; a key that names no series is refused
    assert _windows(root, tmp_path, timestep_min=[5, 10], coarsen={"bom/c10": 4}, crops_per_window=1).cache_file == ds.cache_file
    with pytest.raises(ValueError, match="names no series.*c10"):
        _windows(root, tmp_path, timestep_min=[5, 10], coarsen={"c20": 4})
    with pytest.raises(ValueError, match="positive integer"):
        _windows(root, tmp_path, timestep_min=[5, 10], coarsen={"c10": 2.5})


def test_augmentation_is_consistent(archive, tmp_path):
    ds = _windows(archive, tmp_path, augment=True)
    np.random.seed(3)
    a = ds[0]
    plain = torch.from_numpy(ds.pool[0].astype(np.float32))[:, None]
    # some rotation/flip of the stored item, the same for every frame
    candidates = []
    for k in range(4):
        r = torch.rot90(plain, k, dims=(2, 3))
        candidates += [r, torch.flip(r, dims=(3,))]
    assert any(torch.equal(a, c) for c in candidates)


def _train_shrunk(config: str, archive: Path, tmp_path: Path, *settings: str) -> Path:
    """``configs/<config>.yaml`` trained through `diffcast train` on the synthetic archive at 32 x 32 with a
    tiny network; ``settings``: further ``key=value`` overrides. Returns the run folder."""
    from diffcast.cli import main

    out = tmp_path / "run"
    shrink = [f"data.kwargs.root={archive}", f"data.kwargs.cache_dir={tmp_path / 'cache'}", "data.kwargs.size=32",
              "data.kwargs.mu_context=32", "data.kwargs.split_events=null", "data.train_split=all",
              "data.kwargs.candidates=8", "data.kwargs.min_rain=0.01", "model.height=32", "model.width=32",
              "model.diffusion.dim=8", "train.batch_size=2", "train.warmup_steps=1", "train.ema_start=1", *settings]
    rc = main(["train", "--config", str(REPO / "configs" / f"{config}.yaml"), "--out", str(out),
               *(arg for kv in shrink for arg in ("--set", kv))])
    assert rc in (0, None)
    return out


def test_train_config_runs_a_few_steps(archive, tmp_path):
    """configs/radar_diffcast_extrapolation.yaml, shrunk, trains through `diffcast train`."""
    out = _train_shrunk("radar_diffcast_extrapolation", archive, tmp_path,
                        "train.max_steps=3", "train.ckpt_every=3", "train.log_every=1")
    assert (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) >= 2 and "diffusion" in log[0]


def test_sprog_config_runs_a_few_steps(archive, tmp_path):
    """configs/radar_diffcast_sprog.yaml (S-PROG as the cached backbone), shrunk, trains and loads."""
    from diffcast.inference import Nowcaster
    from diffcast.models.backbones.pysteps_methods import SProg

    out = _train_shrunk("radar_diffcast_sprog", archive, tmp_path,
                        "train.max_steps=2", "train.ckpt_every=2", "train.val_every=0")
    assert any((tmp_path / "cache").iterdir())  # the pool of crops with S-PROG's mu
    assert isinstance(Nowcaster.from_checkpoint(out).model.backbone_net, SProg)


def test_residual_scale_auto_is_resolved_from_the_training_data(archive, tmp_path):
    """configs/radar_diffcast_extrapolation_scaled.yaml (residual_scale: auto), shrunk: the run records the RMS
    residual per lead of its training items, and the trained model loads with that scale."""
    import yaml

    from diffcast.inference import Nowcaster
    from diffcast.training.data import residual_rms

    out = _train_shrunk("radar_diffcast_extrapolation_scaled", archive, tmp_path,
                        "train.max_steps=2", "train.ckpt_every=2", "train.val_every=0")
    ds = RadarWindows(archive, split="all", seq_len=16, t_in=4, size=32, backbone="extrapolation", stride=1,
                      crops_per_window=8, candidates=8, min_rain=0.01, cache_dir=tmp_path / "cache", mu_context=32,
                      timestep_min=[5, 6], augment=False)
    expected = residual_rms(ds, 4, 12)
    recorded = yaml.safe_load((out / "config.yaml").read_text())["model"]["diffusion"]["residual_scale"]
    assert recorded == expected and len(set(expected)) > 1
    model = Nowcaster.from_checkpoint(out).model
    np.testing.assert_allclose(model.residual_scale.numpy(), expected, rtol=1e-6)
