"""``diffcast.nowcast``: pysteps' calling convention, checked against pysteps called directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffcast
from diffcast.inference import Nowcaster
from diffcast.models import build_model
from diffcast.models.backbones import pysteps_methods as pm
from diffcast.training.model_io import save_model_file

pytestmark = pytest.mark.usefixtures("one_thread")

pysteps = pytest.importorskip("pysteps")


def rain_field(t: int = 5, h: int = 96, w: int = 96, seed: int = 0, speed: tuple[float, float] = (1.5, 0.8)) -> np.ndarray:
    """Moving rain cells with small-scale texture, mm/h (0 outside the cells)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    cells = [(rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.6) * w, rng.uniform(6, 14), rng.uniform(3, 25)) for _ in range(4)]
    tex = rng.gamma(2.0, 0.5, size=(h, w))
    out = np.zeros((t, h, w))
    for k in range(t):
        for cy, cx, s, a in cells:
            out[k] += a * np.exp(-((yy - cy - speed[1] * k) ** 2 + (xx - cx - speed[0] * k) ** 2) / (2 * s * s))
        out[k] *= np.roll(tex, (int(speed[1] * k), int(speed[0] * k)), axis=(0, 1))
    out[out < 0.05] = 0.0
    return out


def pysteps_direct(method: str, precip: np.ndarray, n: int, members: int = 1, seed: int = 0, kmperpixel: float = 1.0):
    """pysteps' example recipe, written out here independently of diffcast."""
    from pysteps import motion, nowcasts
    from pysteps.utils import transformation

    r_db, _ = transformation.dB_transform(precip.copy(), threshold=0.1, zerovalue=-15.0)
    r_db[~np.isfinite(r_db)] = -15.0
    v = motion.get_method("LK")(r_db)
    if method == "extrapolation":
        f = nowcasts.get_method("extrapolation")(r_db[-1], v, n)
    elif method == "sprog":
        f = nowcasts.get_method("sprog")(r_db[-3:], v, n, n_cascade_levels=6, precip_thr=-10.0)
    else:
        f = nowcasts.get_method("steps")(
            r_db[-3:], v, n, members, n_cascade_levels=6, precip_thr=-10.0, kmperpixel=kmperpixel, timestep=5,
            noise_method="nonparametric", vel_pert_method="bps", mask_method="incremental", seed=seed,
        )
    f = transformation.dB_transform(f, threshold=-10.0, inverse=True)[0]
    f[..., ~np.isfinite(precip[-1])] = np.nan
    return f


@pytest.mark.parametrize("method", ["extrapolation", "sprog", "steps"])
def test_baselines_equal_pysteps_called_directly(method):
    precip = rain_field()
    precip[:, :10, :] = np.nan  # a strip without coverage
    fc = diffcast.nowcast(precip, timestep=5, n_leadtimes=4, n_ens_members=3, seed=7, model=method)
    ref = pysteps_direct(method, precip, 4, members=3, seed=7)
    if ref.ndim == 3:
        ref = ref[None]
    assert fc.shape == ref.shape == ((3 if method == "steps" else 1), 4, 96, 96)
    np.testing.assert_array_equal(np.isnan(fc), np.isnan(ref))
    np.testing.assert_allclose(fc, ref, rtol=1e-10, atol=1e-12, equal_nan=True)
    assert np.nanmax(fc) > 1.0  # a real forecast, not an empty field


def test_steps_equals_pysteps_on_real_radar(radar_data):
    from pysteps.io.importers import import_fmi_pgm
    from pysteps.utils import conversion

    files = sorted((radar_data / "fmi" / "pgm" / "20160928").glob("*.pgm.gz"))[-4:]
    if len(files) < 4:
        pytest.skip("FMI example files not found")
    frames = []
    for f in files:
        data, _, meta = import_fmi_pgm(str(f), gzipped=True)
        frames.append(data)
    rate, _ = conversion.to_rainrate(np.array(frames), dict(meta, transform=None, zr_a=223.0, zr_b=1.53, threshold=0.1, zerovalue=0.0))
    rate = rate[:, 300:428, 300:428]
    fc = diffcast.nowcast(rate, n_leadtimes=3, n_ens_members=2, seed=3, model="steps")
    ref = pysteps_direct("steps", rate, 3, members=2, seed=3)
    np.testing.assert_allclose(fc, ref, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_shapes_units_mask_and_seed():
    precip = rain_field(h=64, w=80)
    precip[-1, 20:30, 40:60] = np.nan
    fc = diffcast.nowcast(precip, n_leadtimes=3, n_ens_members=4, seed=1, model="steps")
    assert fc.shape == (4, 3, 64, 80)
    nan = np.isnan(fc)
    assert nan[:, :, 20:30, 40:60].all()
    np.testing.assert_array_equal(diffcast.nowcast(precip, n_leadtimes=3, n_ens_members=4, seed=1, model="steps"), fc)
    other = diffcast.nowcast(precip, n_leadtimes=3, n_ens_members=4, seed=2, model="steps")
    assert not np.allclose(np.nan_to_num(other), np.nan_to_num(fc))
    # members differ from each other (a real ensemble)
    assert np.nanmean(np.nanstd(fc, axis=0)) > 0
    # persistence: the last frame, in mm/h, NaN kept
    pers = diffcast.nowcast(precip, n_leadtimes=2, model="persistence")
    assert pers.shape == (1, 2, 64, 80)
    np.testing.assert_array_equal(pers[0, 1], precip[-1])
    # deterministic models give one member whatever is asked
    assert diffcast.nowcast(precip, n_leadtimes=2, n_ens_members=5, model="sprog").shape == (1, 2, 64, 80)
    # the default model is an ensemble of the requested size
    assert diffcast.nowcast(precip, n_leadtimes=1, n_ens_members=2, seed=0).shape == (2, 1, 64, 80)


def test_large_grid_runs():
    precip = np.tile(rain_field(t=3, h=128, w=128), (1, 8, 8))  # 1024 x 1024
    fc = diffcast.nowcast(precip, n_leadtimes=1, model="sprog")
    assert fc.shape == (1, 1, 1024, 1024)
    assert np.isfinite(fc).mean() > 0.9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precip": np.zeros((5, 64))}, r"\(t, y, x\)"),
        ({"precip": -np.ones((5, 64, 64))}, "negative"),
        ({"precip": np.full((5, 64, 64), np.inf)}, "infinite"),
        ({"precip": np.zeros((5, 64, 64), dtype=bool)}, "numbers"),
        ({"precip": np.zeros((2, 64, 64)), "model": "steps"}, "at least 3"),
        ({"precip": np.zeros((5, 4, 4))}, "8x8"),
        ({"timestep": 0}, "timestep"),
        ({"timestep": "5"}, "timestep"),
        ({"pixel_size": -1}, "pixel_size"),
        ({"n_leadtimes": 0}, "n_leadtimes"),
        ({"n_leadtimes": 2.5}, "n_leadtimes"),
        ({"n_ens_members": 0}, "n_ens_members"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"model": "no_such_model"}, "unknown model"),
        ({"model": "steps", "sampler": "ddim"}, "diffusion models"),
    ],
)
def test_errors(kwargs, match):
    args = {"precip": rain_field(h=64, w=64), "n_leadtimes": 2, "n_ens_members": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        diffcast.nowcast(**args)


def test_missing_model_path_is_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        diffcast.nowcast(rain_field(h=64, w=64), model=str(tmp_path / "absent.safetensors"))


def _model_file(tmp_path, data: str = "radar", size: int = 32, t_in: int = 3, t_out: int = 4, backbone=None):
    mcfg = {"type": "backbone", "t_in": t_in, "t_out": t_out, "channels": 1, "height": size, "width": size,
            "backbone": backbone or {"name": "persistence"}}
    model = build_model(mcfg)
    return save_model_file(tmp_path / f"{data}.safetensors", model.state_dict(), {"model": mcfg, "data": {"name": data}})


def _tiny_diffcast_file(tmp_path, backbone: str):
    """A tiny untrained DiffCast (3 -> 4 frames, radar metadata) over the parameter-free ``backbone``, seeded."""
    mcfg = {"type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
            "backbone": {"name": backbone},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                          "attn_dim_head": 8, "ta_kernel": 7}}
    torch.manual_seed(0)
    model = build_model(mcfg)
    return save_model_file(tmp_path / "dc.safetensors", model.state_dict(), {"model": mcfg, "data": {"name": "radar"}})


def test_trained_model_file_round_trip(tmp_path):
    path = _model_file(tmp_path)
    precip = rain_field(t=4, h=32, w=32)
    precip[-1, :4] = np.nan
    fc = diffcast.nowcast(precip, n_leadtimes=3, model=str(path))
    assert fc.shape == (1, 3, 32, 32)
    # persistence through the dBZ encoding: rain rates come back (float32 round-off, 0.036 mm/h floor)
    last = precip[-1]
    ok = np.isfinite(last) & (last > 0.05)
    np.testing.assert_allclose(fc[0, 2][ok], last[ok], rtol=1e-4)
    assert np.isnan(fc[0, :, :4]).all()
    # a timestep of half the model's: every second frame is used
    fc2 = diffcast.nowcast(rain_field(t=6, h=32, w=32), timestep=2.5, n_leadtimes=1, model=str(path))
    assert fc2.shape == (1, 1, 32, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"timestep": 3}, "whole multiple"),
        ({"pixel_size": 2.0}, "km pixels"),
        ({"n_leadtimes": 5}, "forecasts 4 steps"),
        ({"precip": rain_field(t=2, h=32, w=32)}, "needs 3 frames"),
    ],
)
def test_trained_model_errors(tmp_path, kwargs, match):
    path = _model_file(tmp_path)
    args = {"precip": rain_field(t=4, h=32, w=32), "n_leadtimes": 2, "model": str(path), **kwargs}
    with pytest.raises(ValueError, match=match):
        diffcast.nowcast(**args)


def test_convolutional_model_runs_on_other_grids(tmp_path):
    """A model without size-dependent weights forecasts any grid (zero-padded, cropped back)."""
    path = _model_file(tmp_path)
    precip = rain_field(t=4, h=70, w=45)
    fc = diffcast.nowcast(precip, n_leadtimes=2, model=str(path))
    assert fc.shape == (1, 2, 70, 45)
    ok = precip[-1] > 0.05
    np.testing.assert_allclose(fc[0, 1][ok], precip[-1][ok], rtol=1e-4)


def test_diffcast_model_on_other_grid(tmp_path):
    from diffcast.models.diffusion.residual import ResidualDiffusion  # noqa: F401 (registers nothing; import check)

    path = _tiny_diffcast_file(tmp_path, "extrapolation")
    precip = rain_field(t=3, h=40, w=72)
    precip[-1, :5] = np.nan
    fc = diffcast.nowcast(precip, n_leadtimes=4, n_ens_members=2, seed=0, model=str(path), steps=2)
    assert fc.shape == (2, 4, 40, 72)
    assert np.isnan(fc[:, :, :5]).all()
    # elsewhere NaN only where the backbone's motion brings rain in from outside the domain or coverage
    from diffcast.inference import Nowcaster, inflow_of, padded_grid

    nc = Nowcaster.from_checkpoint(path, grid=padded_grid(40, 72))
    nc.set_domain(40, 72)  # motion on the domain, not on the zero padding (as diffcast.nowcast does)
    x = np.zeros((3, nc.height, nc.width))
    x[:, :40, :72] = pm.from_intensity(precip, "rainrate", float(nc.meta.scale))
    unknown = inflow_of(nc.model, x, np.isfinite(precip[-1]), 4)
    assert unknown.shape == (4, 40, 72) and unknown[:, :5].all()
    np.testing.assert_array_equal(np.isnan(fc), np.broadcast_to(unknown, fc.shape))
    again = diffcast.nowcast(precip, n_leadtimes=4, n_ens_members=2, seed=0, model=str(path), steps=2)
    np.testing.assert_array_equal(fc, again)


def test_sprog_backbone_on_a_padded_grid_runs_on_the_domain():
    """With ``domain`` set (a model's grid zero-padded to a multiple of 16), S-PROG runs on the
    domain only: the result equals pysteps' S-PROG on the unpadded frames, the padding stays zero,
    and its motion (the inflow mask's) is the one S-PROG advects with, edge-extended."""
    rate = rain_field(t=4, h=40, w=72)
    x = np.zeros((4, 48, 80))
    x[:, :40, :72] = pm.from_intensity(rate, "rainrate", 90.0)
    sp = pm.SProg(t_in=4, t_out=3, height=48, width=80)
    sp.domain = (40, 72)
    got = sp(torch.from_numpy(x[None, :, None]))[0, :, 0].numpy()
    back = pm.to_intensity(x[:, :40, :72], "rainrate", 90.0)
    want = pm.from_intensity(pm.sprog_nowcast(back, 3), "rainrate", 90.0)
    np.testing.assert_allclose(got[:, :40, :72], want, atol=1e-6)
    assert not got[:, 40:].any() and not got[:, :, 72:].any()
    own = pm.motion_field(pm.to_dbr(back))
    uv = sp.motion(x)
    assert uv.shape == (2, 48, 80) and np.abs(own).max() > 0.5
    np.testing.assert_allclose(uv[:, :40, :72], own)
    np.testing.assert_allclose(uv[:, 40:, :72], np.repeat(own[:, 39:40], 8, axis=1))
    sp.domain = None  # without the domain the padding's static zero edge enters the motion
    assert np.abs(sp(torch.from_numpy(x[None, :, None]))[0, :, 0].numpy()[:, :40, :72] - want).max() > 1e-3


def test_diffcast_over_sprog_marks_inflow(tmp_path):
    """A DiffCast model over S-PROG leaves NaN where S-PROG's motion brings rain in from outside."""
    from diffcast.inference import inflow_of, padded_grid

    path = _tiny_diffcast_file(tmp_path, "sprog")
    precip = rain_field(t=3, h=40, w=72)
    fc = diffcast.nowcast(precip, n_leadtimes=4, n_ens_members=2, seed=0, model=str(path), steps=2)
    assert fc.shape == (2, 4, 40, 72)
    nc = Nowcaster.from_checkpoint(path, grid=padded_grid(40, 72))
    nc.set_domain(40, 72)
    assert nc.model.backbone_net.domain == (40, 72)
    x = np.zeros((3, nc.height, nc.width))
    x[:, :40, :72] = pm.from_intensity(precip, "rainrate", float(nc.meta.scale))
    unknown = inflow_of(nc.model, x, np.ones((40, 72), bool), 4)
    assert unknown.shape == (4, 40, 72) and unknown.any() and not unknown.all()
    np.testing.assert_array_equal(np.isnan(fc), np.broadcast_to(unknown, fc.shape))


def test_size_dependent_model_refuses_other_grids(tmp_path):
    path = _model_file(tmp_path, t_in=4, backbone={"name": "earthformer", "preset": "tiny"})  # positional embeddings
    with pytest.raises(ValueError, match="cannot run on 48x32"):
        diffcast.nowcast(rain_field(t=4, h=48, w=32), n_leadtimes=2, model=str(path))


def test_vil_model_refuses_rain_rate(tmp_path):
    path = _model_file(tmp_path, data="sevir")
    with pytest.raises(ValueError, match="rain rate in mm/h"):
        diffcast.nowcast(rain_field(t=4, h=32, w=32), model=str(path))


# ----------------------------------------------------------------------------- model-space baselines
def test_model_space_steps_and_sprog_match_rain_rate_functions():
    """The registered baselines decode [0, 1] dBZ/90 values to mm/h and run the same pysteps calls."""
    rate = rain_field(t=5, h=64, w=64)
    x = pm.from_intensity(rate, "rainrate", 90.0).astype(np.float32)
    back = pm.to_intensity(x, "rainrate", 90.0)
    nc = Nowcaster.from_baseline("steps", t_in=5, t_out=3, height=64, width=64, meta="radar")
    assert nc.is_probabilistic
    out = nc.predict(torch.from_numpy(x)[None, :, None], members=2, seed=5)
    assert tuple(out.forecast.shape) == (2, 1, 3, 1, 64, 64)
    ref = pm.steps_nowcast(back, 3, 2, 5, timestep=5.0, pixel_size=1.0)
    np.testing.assert_allclose(out.forecast[:, 0, :, 0].numpy(), pm.from_intensity(ref, "rainrate", 90.0), atol=1e-6)
    sp = Nowcaster.from_baseline("sprog", t_in=5, t_out=3, height=64, width=64, meta="radar")
    assert not sp.is_probabilistic
    got = sp.predict(torch.from_numpy(x)[None, :, None]).forecast
    assert tuple(got.shape) == (1, 1, 3, 1, 64, 64)
    np.testing.assert_allclose(got[0, 0, :, 0].numpy(), pm.from_intensity(pm.sprog_nowcast(back, 3), "rainrate", 90.0), atol=1e-6)


def test_intensity_round_trips():
    r = np.array([0.0, 0.05, 0.1, 1.0, 10.0, 100.0])
    np.testing.assert_allclose(pm.to_intensity(pm.from_intensity(r, "rainrate", 90.0), "rainrate", 90.0)[1:], r[1:], rtol=1e-6)
    codes = np.array([0, 20, 80, 160, 250]) / 255.0
    np.testing.assert_allclose(pm.from_intensity(pm.to_intensity(codes, "vil", 255.0), "vil", 255.0), codes, atol=1 / 255)
    assert pm.intensity_of("dBZ") == "rainrate"
    assert pm.intensity_of("VIL code (0-255)", "kg m-2") == "vil"
    assert pm.intensity_of("mm/h") == "linear"


def test_baseline_argument_errors():
    with pytest.raises(ValueError, match="t_in >= 3"):
        Nowcaster.from_baseline("steps", t_in=2, meta="radar")
    with pytest.raises(ValueError, match="unknown intensity"):
        Nowcaster.from_baseline("sprog", meta="radar", intensity="foo")
    with pytest.raises(ValueError, match="unknown Steps argument"):
        Nowcaster.from_baseline("steps", meta="radar", bogus=1)


def test_no_rain_gives_zeros():
    fc = diffcast.nowcast(np.zeros((4, 64, 64)), n_leadtimes=2, n_ens_members=2, seed=0, model="steps")
    assert fc.shape == (2, 2, 64, 64)
    assert np.nanmax(fc) == 0.0


def test_inflow_mask_of_a_uniform_motion():
    """Closed form: moving 2 px/step east, lead k has no observed origin in the first 2k - 1
    columns (back-trajectories up to one pixel outside count as the edge pixel) and east of
    a coverage gap that moved with the flow."""
    cov = np.ones((20, 30), bool)
    cov[:, 14:16] = False
    uv = np.zeros((2, 20, 30))
    uv[0] = 2.0
    mask = pm.inflow_mask(cov, uv, 3)
    assert mask.shape == (3, 20, 30)
    for k in (1, 2, 3):
        cols = np.flatnonzero(mask[k - 1].all(axis=0))
        expect = set(range(2 * k - 1)) | set(range(14 + 2 * k, 16 + 2 * k))
        assert set(cols) == expect, (k, cols)
        assert not mask[k - 1][:, sorted(set(range(30)) - expect)].any()
    with pytest.raises(ValueError, match="uv must have shape"):
        pm.inflow_mask(cov, uv[:, :5], 3)


def test_diffcast_over_extrapolation_leaves_inflow_unknown(tmp_path):
    """Texture moving 2 px/step east: the model's forecast is NaN in the columns that rain from
    outside the domain would fill (pysteps leaves them NaN too), never invented zeros."""
    mcfg = {"type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": 48, "width": 48,
            "backbone": {"name": "extrapolation"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                          "attn_dim_head": 8, "ta_kernel": 7}}
    torch.manual_seed(0)
    path = save_model_file(tmp_path / "dc.safetensors", build_model(mcfg).state_dict(), {"model": mcfg, "data": {"name": "radar"}})
    rng = np.random.default_rng(1)
    from scipy.ndimage import gaussian_filter

    base = gaussian_filter(rng.gamma(2.0, 1.0, size=(48, 80)), 2.0) * 4.0
    precip = np.stack([base[:, 20 - 2 * k : 68 - 2 * k] for k in range(3)])  # content moves east
    fc = diffcast.nowcast(precip, n_leadtimes=4, n_ens_members=2, seed=0, model=str(path), steps=2,
                          prob_matching=None)
    for k in range(1, 5):
        nan_cols = np.flatnonzero(np.isnan(fc[0, k - 1]).all(axis=0))
        assert 2 * k - 2 <= len(nan_cols) <= 2 * k and nan_cols.max() == len(nan_cols) - 1, (k, nan_cols)
        assert np.isfinite(fc[:, k - 1, :, 2 * k + 1 :]).all()  # rows at the edges too
    base_fc = diffcast.nowcast(precip, n_leadtimes=4, model="extrapolation")
    assert np.isnan(base_fc[0, 3, :, :6]).all()  # pysteps: the same inflow side is NaN


def test_match_cdf_gives_each_field_the_reference_distribution():
    from diffcast.api import match_cdf

    rng = np.random.default_rng(0)
    ref = rain_field(t=1, h=24, w=20)[0]
    ref[:3] = np.nan
    fc = rng.gamma(1.0, 2.0, size=(3, 2, 24, 20))  # no ties: every rank gets its own reference value
    out = match_cdf(fc, ref)
    ok = np.isfinite(ref)
    for m in range(3):
        for t in range(2):
            np.testing.assert_allclose(np.sort(out[m, t][ok]), np.sort(ref[ok]))  # the reference's values
            assert np.isnan(out[m, t][~ok]).all() or np.array_equal(out[m, t][~ok], fc[m, t][~ok])
            # wetter forecast pixels stay wetter (ranks kept)
            a, b = fc[m, t][ok], out[m, t][ok]
            assert np.all(np.diff(b[np.argsort(a, kind="stable")]) >= -1e-12)


def test_match_cdf_in_place_equals_the_copy_then_cast():
    from diffcast.api import match_cdf

    rng = np.random.default_rng(1)
    ref = rain_field(t=1, h=24, w=20)[0]
    ref[:2] = np.nan
    fc = rng.gamma(1.0, 2.0, size=(2, 3, 24, 20)).astype(np.float32)
    fc[1, 2, 5:7, :4] = np.nan  # inflow NaN at one lead: left out of that lead's matching, stays NaN
    expected = match_cdf(fc, ref).astype(np.float32)
    work = fc.copy()
    out = match_cdf(work, ref, inplace=True)
    assert out is work and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)  # bit for bit, NaN where NaN
    assert not np.array_equal(out, fc, equal_nan=True)
    with pytest.raises(ValueError, match="writeable floating-point"):
        match_cdf(np.zeros((1, 1, 4, 4), np.int64), ref[:4, :4], inplace=True)


def tiny_radar_diffcast(path, size: int = 32):
    """An untrained DiffCast radar model file over extrapolation: 3 frames in, 4 out, ``size`` pixels (seeded)."""
    mcfg = {"type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": size, "width": size,
            "backbone": {"name": "extrapolation"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                          "attn_dim_head": 8, "ta_kernel": 7, "patch": 2}}
    torch.manual_seed(0)
    return save_model_file(path, build_model(mcfg).state_dict(), {"model": mcfg, "data": {"name": "radar"}})


def test_prob_matching_of_a_diffcast_ensemble(tmp_path):
    path = tiny_radar_diffcast(tmp_path / "dc.safetensors")
    precip = rain_field(t=3, h=32, w=32)
    precip[-1, :4] = np.nan
    kw = {"n_leadtimes": 4, "n_ens_members": 2, "seed": 0, "model": str(path), "steps": 2}
    raw = diffcast.nowcast(precip, prob_matching=None, **kw)
    matched = diffcast.nowcast(precip, **kw)  # default "cdf"
    ok = np.isfinite(precip[-1])
    assert np.isnan(matched[..., ~ok]).all()
    np.testing.assert_array_equal(np.isnan(raw), np.isnan(matched))  # the inflow NaN are the model's, not matching's
    for t in range(4):
        # per lead, on the pixels with an observed origin (inflow from outside grows with lead time)
        okt = ok & np.isfinite(matched[:, t]).all(axis=0)
        ref = precip[-1][okt]
        for m in range(2):
            # every value is one of the observation's (tied dry pixels share one), the wettest pixel gets its maximum
            assert np.isin(matched[m, t][okt], ref).all()
            assert matched[m, t][okt].max() == ref.max()
    fin = np.isfinite(raw)
    assert not np.allclose(raw[fin], matched[fin])
    with pytest.raises(ValueError, match="prob_matching must be"):
        diffcast.nowcast(precip, prob_matching="quantile", **kw)


def test_motion_interpolation_in_chunks_is_the_same_field(monkeypatch):
    """The motion vectors are interpolated onto the grid in chunks to bound memory: any chunk
    size gives pysteps' one-call field bit for bit (per-pixel arithmetic)."""
    fields = pm.to_dbr(rain_field(t=3, h=150, w=130))
    monkeypatch.setattr(pm, "INTERP_CHUNK_PIXELS", 150 * 130)  # max(4, ...): 4 chunks
    coarse = pm.motion_field(fields)
    monkeypatch.setattr(pm, "INTERP_CHUNK_PIXELS", 1 << 10)  # 25 chunks
    fine = pm.motion_field(fields)
    assert np.abs(coarse).max() > 0.5
    np.testing.assert_array_equal(fine, coarse)
    one = pm.motion_field(fields, interp_kwargs={"nchunks": 1})
    np.testing.assert_array_equal(fine, one)


def test_repeated_frames_sprog_falls_back_to_advection_and_steps_says_why(caplog):
    # a stalled feed repeats its last frame: every cascade level is perfectly correlated in time and
    # pysteps' AR(2) Yule-Walker system is singular (LinAlgError). S-PROG (the default model's backbone)
    # gives its limit, the advected last frame (here: no motion, so the frame itself); STEPS says why it cannot run.
    yy, xx = np.mgrid[0:96, 0:96]
    field = 2 + 3 * np.sin(xx / 20.0) * np.cos(yy / 25.0)
    field[field < 0.1] = 0.0
    precip = np.stack([field] * 5)
    with caplog.at_level("WARNING"):
        out = diffcast.nowcast(precip, n_leadtimes=3, model="sprog")
    assert "perfectly correlated" in caplog.text
    np.testing.assert_allclose(out[0], np.broadcast_to(field, (3, 96, 96)), atol=1e-9)
    with pytest.raises(ValueError, match="perfectly correlated in time"):
        diffcast.nowcast(precip, n_leadtimes=3, n_ens_members=2, seed=0, model="steps")
