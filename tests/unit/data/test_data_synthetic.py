"""Synthetic storms: determinism, splits, value distribution, predictability structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from diffcast.data import DATASETS
from diffcast.data.synthetic import SPLIT_OFFSETS, SyntheticStorms, generate_sequence
from diffcast.data.transforms import SEVIR_THRESHOLDS


def test_deterministic_per_seed_and_index():
    a = generate_sequence(3, 7, t=6, h=64, w=64)
    b = generate_sequence(3, 7, t=6, h=64, w=64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate_sequence(3, 8, t=6, h=64, w=64))
    assert not np.array_equal(a, generate_sequence(4, 7, t=6, h=64, w=64))


def test_shape_dtype_range_any_size():
    for t, h, w in ((1, 8, 8), (7, 40, 72), (25, 128, 128)):
        x = generate_sequence(0, 1, t=t, h=h, w=w)
        assert x.shape == (t, h, w) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        # 8-bit quantisation like SEVIR codes
        np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-3)


def test_dataset_items_and_disjoint_splits():
    tr = DATASETS.build("synthetic", split="train", seq_len=5, size=32, num_sequences=6, seed=1)
    va = DATASETS.build("synthetic", split="val", seq_len=5, size=32, num_sequences=6, seed=1)
    te = DATASETS.build("synthetic", split="test", seq_len=5, size=32, num_sequences=6, seed=1)
    assert len(tr) == 6 and tr.meta.name == "synthetic"
    x = tr[0]
    assert isinstance(x, torch.Tensor) and x.shape == (5, 1, 32, 32) and x.dtype == torch.float32
    # item i of split s is generate_sequence(seed, offset_s + i)
    np.testing.assert_array_equal(
        va[2].numpy()[:, 0], generate_sequence(1, SPLIT_OFFSETS["val"] + 2, 5, 32, 32)
    )
    seqs = {
        s: {ds[i].numpy().tobytes() for i in range(len(ds))}
        for s, ds in (("tr", tr), ("va", va), ("te", te))
    }
    assert (
        not (seqs["tr"] & seqs["va"])
        and not (seqs["tr"] & seqs["te"])
        and not (seqs["va"] & seqs["te"])
    )
    assert len(seqs["tr"]) == 6
    with pytest.raises(IndexError):
        tr[6]


def test_all_paper_thresholds_have_events():
    x = np.stack([generate_sequence(0, i) for i in range(12)]) * 255.0
    frac = {thr: float((x >= thr).mean()) for thr in SEVIR_THRESHOLDS}
    for thr, f in frac.items():
        assert f > 0, f"no pixel reaches {thr}"
    # heavy tail: most pixels near zero, a small fraction above the highest threshold
    assert (x < 16).mean() > 0.6
    assert frac[219.0] < 0.01
    assert frac[16.0] > 10 * frac[133.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="difficulty"):
        generate_sequence(0, 0, difficulty=-1)
    with pytest.raises(ValueError, match="unknown synthetic knob"):
        SyntheticStorms(split="train", n_cell=3)
    with pytest.raises(ValueError, match="split"):
        SyntheticStorms(split="validation")
    with pytest.raises(ValueError, match="h must be"):
        generate_sequence(0, 0, h=4)
    with pytest.raises(ValueError, match=">= 0"):
        generate_sequence(0, 0, wind_speed=-1.0)


def test_difficulty_zero_has_no_initiation_and_knobs_matter():
    calm = generate_sequence(0, 0, t=10, h=64, w=64, difficulty=0.0, n_cells=0.0)
    busy = generate_sequence(0, 0, t=10, h=64, w=64, difficulty=2.0, n_cells=20.0)
    # with no cells nothing convective (stratiform stays below ~110 codes)
    assert calm.max() * 255 < 120
    assert busy.max() * 255 > 150


def _lk_extrapolate(seq: np.ndarray, t_in: int, t_out: int) -> np.ndarray:
    from pysteps import motion
    from pysteps.extrapolation import semilagrangian

    obs = seq[:t_in].astype(np.float64)
    velocity = motion.get_method("LK")(obs[-3:], verbose=False)
    return semilagrangian.extrapolate(obs[-1], velocity, t_out, outval=0.0)


def test_extrapolation_beats_persistence():
    pytest.importorskip("pysteps")
    t_in, t_out = 5, 10
    mse_pers, mse_extr = [], []
    for i in range(6):
        seq = generate_sequence(11, i, t=t_in + t_out, h=96, w=96)
        y = seq[t_in:]
        pers = np.repeat(seq[t_in - 1][None], t_out, axis=0)
        extr = np.nan_to_num(_lk_extrapolate(seq, t_in, t_out))
        mse_pers.append(((pers - y) ** 2).mean())
        mse_extr.append(((extr - y) ** 2).mean())
    assert np.mean(mse_extr) < 0.9 * np.mean(mse_pers), (mse_extr, mse_pers)


def test_growth_and_decay_present():
    # Convective intensity changes over the sequence (advection alone keeps the maximum).
    x = generate_sequence(2, 0, t=25)
    maxima = x.reshape(25, -1).max(axis=1) * 255
    assert maxima.max() - maxima.min() > 30
    # with the growth/decay knobs off (difficulty 0, long-lived cells) it changes much less
    calm = generate_sequence(2, 0, t=25, difficulty=0.0, lifetime=1e6)
    cmax = calm.reshape(25, -1).max(axis=1) * 255
    assert cmax.max() - cmax.min() < maxima.max() - maxima.min()


def test_dataloader_with_workers():
    ds = SyntheticStorms(split="train", seq_len=4, size=32, num_sequences=8, seed=5)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2 and batches[0].shape == (4, 4, 1, 32, 32)
    np.testing.assert_array_equal(batches[1][3].numpy(), ds[7].numpy())


def test_future_is_stochastic_given_the_past():
    base = generate_sequence(4, 2, t=15, h=64, w=64)
    alt = [generate_sequence(4, 2, t=15, h=64, w=64, future_seed=s, t_split=5) for s in (1, 2, 3)]
    for a in alt:
        np.testing.assert_array_equal(a[:5], base[:5])  # identical observed frames
    assert not np.array_equal(alt[0][5:], alt[1][5:])  # different futures
    spread = np.stack(alt).std(axis=0).mean(axis=(1, 2))
    assert spread[:5].max() < 1e-7 and spread[-1] > spread[6] > 1e-4  # uncertainty grows with lead
    np.testing.assert_array_equal(alt[0], generate_sequence(4, 2, t=15, h=64, w=64, future_seed=1))
    with pytest.raises(ValueError, match="t_split"):
        generate_sequence(0, 0, t=5, future_seed=1, t_split=9)


def test_dataset_futures_share_the_item_past():
    ds = SyntheticStorms(split="test", seq_len=10, size=32, num_sequences=3, seed=2)
    fut = ds.futures(1, members=4, t_split=5)
    assert fut.shape == (4, 10, 32, 32)
    np.testing.assert_array_equal(fut[:, :5], np.broadcast_to(ds.sequence(1)[:5], (4, 5, 32, 32)))
