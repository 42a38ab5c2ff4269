"""The ``mlcast`` dataset: gap-free windows of a spec store, time-range splits, crops, no-data masks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("zarr")

from diffcast.data import DATASETS  # noqa: E402
from diffcast.data.mlcast import SpecStore, parse_time_range, write_spec_store  # noqa: E402
from diffcast.data.mlcast.dataset import StoreWindows  # noqa: E402
from diffcast.training.data import ShardedBatches  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (48, 40)
SEQ = 6
RANGES = {"train": "2020-06-01/2020-06-01T03:00", "val": "2020-06-01T03:05/2020-06-01T04:30",
          "test": "2020-06-01T04:35/2020-06-02"}

VARIANTS = {
    "rate": dict(kind="rate"),
    "amount": dict(kind="amount"),
    "dbz": dict(kind="reflectivity"),
    "km": dict(kind="rate", xy_units="km"),
    "y_up": dict(kind="rate", y_increasing=True),
    "steps": dict(kind="amount", steps_before=[(15, 5), (10, 5)]),
    "missing": dict(kind="rate", missing=[7, 20, 21, 40]),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def store(request, tmp_path_factory) -> SpecStore:
    path = tmp_path_factory.mktemp("mlcast") / f"{request.param}.zarr"
    return SpecStore(write_spec_store(path, n_frames=72, shape=SHAPE, **VARIANTS[request.param]))


def _ds(store, split, **kw) -> StoreWindows:
    kw.setdefault("size", 16)
    kw.setdefault("crops_per_window", 2)
    return DATASETS.build("mlcast", store=store, split=split, seq_len=SEQ, **RANGES, **kw)


def test_windows_are_gap_free_and_follow_the_splits(store):
    step = np.timedelta64(int(store.timestep_min * 60), "s")
    seen = {}
    for split in ("train", "val", "test"):
        ds = _ds(store, split, stride=1)
        assert len(ds) == 2 * len(ds.windows) > 0
        lo, hi = parse_time_range(RANGES[split])
        for s in ds.windows:
            t = store.times[s : s + SEQ]
            assert np.all(np.diff(t) == step)  # no gap, no change of step
            assert not np.any((store.missing_times >= t[0]) & (store.missing_times <= t[-1]))
            if store.consistent_start is not None:
                assert t[0] >= store.consistent_start
            assert lo <= t[0] and t[-1] < hi  # the whole window in its split
        seen[split] = set(int(s) for s in ds.windows)
    assert not (seen["train"] & seen["val"]) and not (seen["val"] & seen["test"])


def test_items_are_the_stores_encoded_crops(store):
    ds = _ds(store, "train", augment=False, min_coverage=1.0)
    raw, corners = ds._load(3)
    (y0, x0), x = corners[1], ds[7].numpy()  # item 7 = crop 1 of window 3
    s = int(ds.windows[3])
    want = np.stack([store.frame(i)[0][y0 : y0 + 16, x0 : x0 + 16] for i in range(s, s + SEQ)])
    assert x.shape == (SEQ, 1, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], want, atol=1e-6)
    assert ds.decoded_windows == 1  # both crops from one decompressed window


def test_no_data_is_nan_in_training_items_and_absent_from_evaluation_items(tmp_path):
    store = SpecStore(write_spec_store(tmp_path / "s.zarr", n_frames=72, shape=SHAPE))  # NaN south-west corner
    train = _ds(store, "train", size=32, min_coverage=0.3, augment=False, candidates=64)
    items = torch.stack([train[i] for i in range(len(train))])
    assert torch.isnan(items).any()  # partly covered crops keep their no-data pixels as NaN
    finite = items[~torch.isnan(items)]
    assert float(finite.min()) >= 0 and float(finite.max()) <= 1
    for split in ("val", "test"):
        ev = _ds(store, split, size=32)
        assert ev.min_coverage == 1.0
        assert not any(torch.isnan(ev[i]).any() for i in range(len(ev)))


def test_evaluation_crops_partly_covered_on_request_keep_nan_in_either_unit(tmp_path):
    # 40 x 32 frames with no data in the south-west corner: every 32 x 32 crop holds some
    store = SpecStore(write_spec_store(tmp_path / "s.zarr", n_frames=72, shape=(40, 32)))
    for units in ("dBZ", "mm/h"):  # the rain-rate encoding keeps NaN (Marshall-Palmer alone would give 0 mm/h)
        ev = _ds(store, "test", size=32, eval_min_coverage=0.5, units=units)
        assert ev.min_coverage == 0.5
        x = torch.stack([ev[i] for i in range(len(ev))])
        nan = torch.isnan(x)
        assert 0 < float(nan.float().mean()) < 0.5
        assert bool(nan[:, :, :, -2:, :8].all())  # the corner's rows in every crop
    with pytest.raises(ValueError, match="eval_min_coverage"):
        _ds(store, "test", eval_min_coverage=0.0)


def test_backbone_mu_units_and_metadata(tmp_path):
    pytest.importorskip("pysteps")
    store = SpecStore(write_spec_store(tmp_path / "s.zarr", n_frames=72, shape=SHAPE, kind="reflectivity",
                                       nodata_corner=False))
    ds = _ds(store, "val", t_in=2, backbone="persistence")
    x = ds[0]
    assert x.shape == (SEQ + 4, 1, 16, 16)
    torch.testing.assert_close(x[SEQ:], x[1:2].expand(4, -1, -1, -1))  # persistence repeats the last input
    assert ds.meta.unit == "dBZ" and ds.meta.timestep_min == 5.0 and ds.meta.pixel_km == pytest.approx(1.0)
    rate = _ds(store, "val", units="mm/h")
    assert rate.meta.unit == "mm/h" and rate.model_meta.unit == "dBZ"
    prov = ds.provenance()
    assert prov["mlcast_dataset_identifier"] == "XX-DIFFCAST-reflectivity" and prov["units"] == "dBZ"
    assert prov["splits"]["val"] == [RANGES["val"]]


def test_pickles_for_data_loader_workers(tmp_path):
    store = SpecStore(write_spec_store(tmp_path / "s.zarr", n_frames=40, shape=SHAPE, nodata_corner=False))
    ds = _ds(store, "all", augment=False)
    again = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(again[3], ds[3])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, multiprocessing_context="fork")
    torch.testing.assert_close(next(iter(loader))[1], ds[1])


def test_bad_options_are_clear(tmp_path):
    path = write_spec_store(tmp_path / "s.zarr", n_frames=40, shape=SHAPE)
    with pytest.raises(ValueError, match="no time range for the val split"):
        DATASETS.build("mlcast", store=path, split="val", seq_len=SEQ, size=16, train="2020")
    with pytest.raises(ValueError, match="overlap"):
        DATASETS.build("mlcast", store=path, split="train", seq_len=SEQ, size=16, train="2020", val="2020-06")
    with pytest.raises(ValueError, match="smaller than the crop size"):
        DATASETS.build("mlcast", store=path, split="all", seq_len=SEQ, size=64)
    empty = DATASETS.build("mlcast", store=path, split="train", seq_len=SEQ, size=16, train="2019")
    assert len(empty) == 0 and "no window" in empty.empty_reason


def test_batches_keep_a_windows_crops_together():
    order = ShardedBatches(40, batch_size=4, seed=0, group=4)
    idx = order.epoch_indices(0)
    assert sorted(idx) == list(range(40))
    assert all(idx[i : i + 4] == list(range(idx[i], idx[i] + 4)) for i in range(0, 40, 4))
    ranks = [ShardedBatches(40, batch_size=2, seed=0, rank=r, world_size=3, group=4) for r in range(3)]
    got = [r.epoch_indices(0) for r in ranks]
    assert len({len(g) for g in got}) == 1 and not set(got[0]) & set(got[1])
