"""STEPS' incremental precipitation mask on diffusion ensembles (pysteps ``mask_method="incremental"``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, generate_binary_structure, iterate_structure

import diffcast
from diffcast.models.backbones import pysteps_methods as pm
from diffcast.models.backbones.pysteps_methods import IncrementalMask, match_cdf

pytest.importorskip("pysteps")


def _reference_mask(wet: np.ndarray, kernel: int, rim: int) -> np.ndarray:
    """pysteps' dilated mask written out (nowcasts/utils.compute_dilated_mask; STEPS' structuring element)."""
    struct = iterate_structure(generate_binary_structure(2, 1), int((kernel - 1) / 2.0))
    d = binary_dilation(wet, struct)
    mask = d.astype(float)
    for _ in range(rim):
        d = binary_dilation(d, generate_binary_structure(2, 1))
        mask += d
    return mask / mask.max()


def test_settings_are_pysteps_steps_defaults():
    m = IncrementalMask.for_grid(5, 1.0)
    assert (m.kernel, m.rim, m.threshold, m.log_scale) == (5, 10, 0.1, None)  # mask_f 1 x 5 min / 1 km; -10 dBR
    assert IncrementalMask.for_grid(6, 0.5).kernel == 12
    enc = IncrementalMask.for_grid(5, 1.0, log_scale=90.0)
    assert (enc.threshold, enc.log_scale) == (0.1, 90.0)  # the threshold is a rain rate either way
    x = np.array([np.nan, 0.0, 0.01, 0.3, 0.7])  # dBZ / 90
    np.testing.assert_allclose(enc.from_rate(enc.to_rate(x)), x, atol=1e-12)
    assert np.isnan(enc.to_rate(x)[0]) and enc.to_rate(x)[1] == 0
    np.testing.assert_allclose(enc.to_rate(x)[3], (10 ** (27 / 10) / 200) ** (1 / 1.6))


def test_first_lead_mask_is_pysteps_and_removes_far_rain():
    ref = np.zeros((60, 60))
    ref[25:35, 25:35] = 2.0  # observed rain in the middle
    fc = np.zeros((1, 1, 60, 60))
    fc[0, 0, 26:34, 26:34] = 3.0  # rain where it was observed
    fc[0, 0, 2, 2] = 5.0  # a speck far away (23 pixels from the rain: beyond kernel/2 + rim = 12)
    fc[0, 0, 30, 45] = 1.0  # light rain 10 pixels from the rain: inside the grey rim
    mask = IncrementalMask.for_grid(5, 1.0)
    expected = _reference_mask(ref >= 0.1, 5, 10)
    np.testing.assert_array_equal(mask.make(ref), expected)
    out = match_cdf(fc, ref, mask=mask, match=False)
    np.testing.assert_allclose(out[0, 0], fc[0, 0] * expected)
    assert out[0, 0, 2, 2] == 0  # the speck is gone
    assert 0 < out[0, 0, 30, 45] < 1.0  # tapered
    assert (out[0, 0, 26:34, 26:34] == 3.0).all()  # the rain area is untouched (mask 1 there)


def test_mask_grows_from_each_members_previous_lead():
    """Lead 2's mask is grown from the member's own lead-1 field (after matching), as STEPS does per member."""
    ref = np.zeros((80, 80))
    ref[35:45, 35:45] = 2.0
    fc = np.zeros((2, 2, 80, 80))
    fc[:, :, 36:44, 36:44] = 3.0
    fc[0, 0, 36:44, 54:58] = 3.0  # member 0 grows rain at the rim at lead 1 (tapered, still >= 0.1 mm/h)
    fc[:, 1, 36:44, 64:66] = 3.0  # both members put rain further out at lead 2
    mask = IncrementalMask.for_grid(5, 1.0)
    out = match_cdf(fc, ref, mask=mask, match=False)
    assert (out[0, 1, 36:44, 64:66] > 0).all()  # member 0: within reach of its lead-1 rain
    assert (out[1, 1, 36:44, 64:66] == 0).all()  # member 1: 20 pixels beyond its rain, removed
    m1 = mask.make(out[0, 0])
    np.testing.assert_allclose(out[0, 1], fc[0, 1] * m1)


def test_encoded_values_give_the_same_members_as_rain_rates():
    """The CLI masks dBZ / 90 values, diffcast.nowcast mm/h: the same members after decoding, matched or not."""
    rng = np.random.default_rng(0)
    ref = np.zeros((48, 48))
    ref[10:30, 12:34] = rng.gamma(2.0, 2.0, (20, 22))
    ref[0, :5] = np.nan
    fc = np.maximum(rng.normal(0.5, 2.0, (3, 4, 48, 48)), 0.0)
    fc[:, :, 40:, 40:] = np.nan

    def enc(r):
        with np.errstate(divide="ignore"):
            dbz = 10 * np.log10(200 * np.where(np.isnan(r), np.nan, r) ** 1.6)
        return np.where(np.isnan(r), np.nan, np.maximum(np.nan_to_num(dbz, neginf=0.0), 0.0)) / 90

    def dec(x):
        r = (10 ** (x * 90 / 10) / 200) ** (1 / 1.6)
        return np.where(x > 0, r, np.where(np.isnan(x), np.nan, 0.0))

    fc, ref = dec(enc(fc)), dec(enc(ref))  # values the encoding holds (rain below 0 dBZ is none)
    floor = (1 / 200) ** (1 / 1.6)  # 0 dBZ in mm/h
    for match in (False, True):
        a = match_cdf(fc, ref, mask=IncrementalMask.for_grid(5, 1.0), match=match)
        b = match_cdf(enc(fc), enc(ref), mask=IncrementalMask.for_grid(5, 1.0, log_scale=90.0), match=match)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        # the same members; tapered rain below 0 dBZ is stored as none in the encoding
        np.testing.assert_allclose(dec(b), np.where(a < floor, 0.0, a), rtol=1e-9, atol=1e-12)


def test_nowcast_applies_the_mask_by_default(tmp_path, helper_module):
    path = helper_module("unit/api/test_nowcast_api.py").tiny_radar_diffcast(tmp_path / "dc.safetensors", size=64)
    precip = np.zeros((3, 64, 64))
    precip[:, 20:30, 20:30] = 3.0  # a small storm; the untrained model's members rain everywhere
    kw = {"n_leadtimes": 2, "n_ens_members": 2, "seed": 0, "model": str(path), "steps": 2, "prob_matching": None}
    raw = diffcast.nowcast(precip, mask_method=None, **kw)
    masked = diffcast.nowcast(precip, **kw)  # default "incremental"
    far = np.zeros((64, 64), bool)
    far[50:, 50:] = True  # beyond kernel / 2 + rim of the storm
    assert (np.nan_to_num(raw[:, 0])[:, far] > 0).any()
    assert (np.nan_to_num(masked[:, 0])[:, far] == 0).all()
    mask = IncrementalMask.for_grid(5, 1.0)
    np.testing.assert_allclose(masked, match_cdf(raw, precip[-1], mask=mask, match=False))
    with pytest.raises(ValueError, match="mask_method must be"):
        diffcast.nowcast(precip, mask_method="obs", **kw)
    assert pm.MASK_METHODS == ("incremental", None)
