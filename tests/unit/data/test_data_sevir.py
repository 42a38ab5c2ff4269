"""SEVIR VIL: catalog filtering, time splits, windows, resizing, lazy handles, fsspec/S3."""

from __future__ import annotations

import os
import pickle
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from diffcast.data import DATASETS
from diffcast.data.sevir import SEVIRDataset, resize_frames

H = 12  # native size in the fixture (384 in SEVIR); 12 -> 4 is the same 3x3 block averaging
FRAMES = 49

# id, file, index, img_type, time, pct_missing
ROWS = [
    ("S1", "vil/2018/A.h5", 0, "vil", "2018-06-01 10:00:00", 0.0),  # train
    ("S2", "vil/2018/A.h5", 1, "vil", "2018-12-31 23:00:00", 0.0),  # train
    ("S3", "vil/2019/B.h5", 0, "vil", "2019-03-01 12:00:00", 0.0),  # val in both presets
    (
        "S4",
        "vil/2019/B.h5",
        1,
        "vil",
        "2019-07-15 12:00:00",
        0.0,
    ),  # val (diffcast) / test (earthformer)
    ("S5", "vil/2019/B.h5", 2, "vil", "2019-11-02 12:00:00", 0.0),  # test
    ("S6", "vil/2019/B.h5", 3, "vil", "2019-11-03 12:00:00", 3.5),  # missing data -> dropped
    ("S7", "vil/2018/A.h5", 2, "vil", "2018-07-01 12:00:00", 0.0),  # duplicated id -> all dropped
    ("S7", "vil/2019/B.h5", 4, "vil", "2019-08-01 12:00:00", 0.0),
    ("S1", "ir069/2018/X.h5", 0, "ir069", "2018-06-01 10:00:00", 0.0),  # other image type
]


def _event(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    return rng.integers(0, 256, size=(H, H, FRAMES), dtype=np.uint8)


def write_fixture(root: Path) -> Path:
    files: dict[str, list[tuple[int, str]]] = {}
    for eid, fn, idx, typ, *_ in ROWS:
        if typ == "vil":
            files.setdefault(fn, []).append((idx, eid))
    for fn, items in files.items():
        n = max(i for i, _ in items) + 1
        path = root / fn
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as fh:
            vil = fh.create_dataset(
                "vil", shape=(n, H, H, FRAMES), dtype=np.uint8, chunks=(1, H, H, FRAMES)
            )
            ids = [b""] * n
            for i, eid in items:
                vil[i] = _event(zlib.crc32(f"{fn}:{i}".encode()) % 1000)  # stable across runs
                ids[i] = eid.encode()
            fh.create_dataset("id", data=np.array(ids, dtype="S8"))
    header = "id,file_name,file_index,img_type,time_utc,minute_offsets,episode_id,event_id,event_type,llcrnrlat,pct_missing\n"
    lines = [f"{e},{f},{i},{t},{ts},-120:-115,1,2,Hail,30.0,{pm}" for e, f, i, t, ts, pm in ROWS]
    cat = root / "CATALOG.csv"
    cat.write_text(header + "\n".join(lines) + "\n")
    return cat


@pytest.fixture()
def sevir_root(tmp_path):
    write_fixture(tmp_path)
    return tmp_path


def _ids(ds: SEVIRDataset) -> list[str]:
    return [e[0] for e in ds.events]


def test_filtering_and_time_splits(sevir_root):
    cat = sevir_root / "CATALOG.csv"
    kw = dict(catalog=cat, frames_per_event=FRAMES, size=None)
    assert _ids(DATASETS.build("sevir", split="train", **kw)) == ["S1", "S2"]
    assert _ids(DATASETS.build("sevir", split="val", **kw)) == ["S3", "S4"]
    assert _ids(DATASETS.build("sevir", split="test", **kw)) == ["S5"]
    ef = dict(kw, preset="earthformer")
    assert _ids(DATASETS.build("sevir", split="val", **ef)) == ["S3"]
    assert _ids(DATASETS.build("sevir", split="test", **ef)) == ["S4", "S5"]
    with pytest.raises(ValueError, match="preset"):
        DATASETS.build("sevir", split="val", preset="nope", **kw)


def test_windows_and_stride(sevir_root):
    cat = sevir_root / "CATALOG.csv"
    ds12 = DATASETS.build("sevir", catalog=cat, split="train", stride=12, size=None)
    ds5 = DATASETS.build("sevir", catalog=cat, split="train", stride=5, size=None)
    assert ds12.starts == [0, 12, 24] and len(ds12) == 2 * 3
    assert ds5.starts == [0, 5, 10, 15, 20] and len(ds5) == 2 * 5
    x = ds12[4]  # event 1 (S2), start 12
    assert x.shape == (25, 1, H, H) and x.dtype == torch.float32
    with h5py.File(sevir_root / "vil/2018/A.h5") as fh:
        raw = fh["vil"][1][:, :, 12:37]
    np.testing.assert_allclose(x.numpy()[:, 0], np.moveaxis(raw, -1, 0) / 255.0, atol=1e-6)


def test_resize_methods(sevir_root):
    cat = sevir_root / "CATALOG.csv"
    area = DATASETS.build("sevir", catalog=cat, split="test", size=4)
    x = area.sequence(0)
    raw = area.read_event(0)[:25].astype(np.float64) / 255.0
    blocks = raw.reshape(25, 4, 3, 4, 3).mean(axis=(2, 4))  # exact 3x3 block means
    np.testing.assert_allclose(x, blocks, atol=1e-5)
    assert "by area" in area.meta.transform
    bil = DATASETS.build("sevir", catalog=cat, split="test", size=4, resize="diffcast-compat")
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(raw).float()[None], size=(4, 4), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(bil.sequence(0), ref[0].numpy(), atol=1e-5)
    assert "diffcast-compat" in bil.meta.transform
    with pytest.raises(ValueError, match="resize method"):
        resize_frames(raw.astype(np.float32), (4, 4), "nearest")


def test_lazy_handles_and_pickling(sevir_root):
    ds = DATASETS.build("sevir", catalog=sevir_root / "CATALOG.csv", split="val", size=4)
    assert ds._handles == {}
    clone = pickle.loads(pickle.dumps(ds))  # picklable before use
    ds[0]
    assert len(ds._handles) == 1
    clone2 = pickle.loads(pickle.dumps(ds))  # and after: handles are not carried
    assert clone2._handles == {} and clone2._cache is None
    np.testing.assert_array_equal(clone[3].numpy(), ds[3].numpy())
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    got = torch.cat(list(loader))
    assert got.shape == (len(ds), 25, 1, 4, 4)
    np.testing.assert_array_equal(got[5].numpy(), ds[5].numpy())
    ds.close()


def test_from_file(sevir_root):
    ds = SEVIRDataset.from_file(sevir_root / "vil/2019/B.h5", size=4)
    assert len(ds.events) == 5 and ds.split == "all" and ds[0].shape == (25, 1, 4, 4)


def test_bad_inputs(sevir_root, tmp_path):
    cat = sevir_root / "CATALOG.csv"
    with pytest.raises(FileNotFoundError, match="CATALOG"):
        DATASETS.build("sevir", catalog=sevir_root / "missing" / "CATALOG.csv")
    bad_cat = tmp_path / "bad.csv"
    bad_cat.write_text("id,file_name\nS1,a.h5\n")
    with pytest.raises(ValueError, match="lacks column"):
        DATASETS.build("sevir", catalog=bad_cat)
    with pytest.raises(ValueError, match="seq_len"):
        DATASETS.build("sevir", catalog=cat, seq_len=50)
    # wrong id in the file
    with h5py.File(sevir_root / "vil/2018/A.h5", "r+") as fh:
        fh["id"][0] = b"XX"
    ds = DATASETS.build("sevir", catalog=cat, split="train", size=None)
    with pytest.raises(ValueError, match="holds event 'XX'"):
        ds[0]
    # missing file and wrong layout
    (sevir_root / "vil/2019/B.h5").rename(sevir_root / "vil/2019/B.bak")
    ds = DATASETS.build("sevir", catalog=cat, split="test")
    with pytest.raises(FileNotFoundError, match="B.h5"):
        ds[0]
    with h5py.File(sevir_root / "vil/2019/B.h5", "w") as fh:
        fh.create_dataset("ir069", data=np.zeros((1, 2, 2, 49), np.uint8))
    with pytest.raises(ValueError, match="no 'vil'"):
        DATASETS.build("sevir", catalog=cat, split="test")[0]
    (sevir_root / "vil/2019/B.h5").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot open SEVIR HDF5 file"):
        DATASETS.build("sevir", catalog=cat, split="test")[0]


def test_s3_via_moto(sevir_root, local_s3):
    import s3fs

    endpoint, make_bucket = local_s3
    opts = {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    fs = s3fs.S3FileSystem(**opts)
    make_bucket("sevir-test")
    fs.put(str(sevir_root) + "/", "sevir-test/data/", recursive=True)
    ds = DATASETS.build(
        "sevir",
        catalog="s3://sevir-test/data/CATALOG.csv",
        split="val",
        size=4,
        storage_options=opts,
    )
    local = DATASETS.build("sevir", catalog=sevir_root / "CATALOG.csv", split="val", size=4)
    assert _ids(ds) == ["S3", "S4"] and len(ds) == len(local)
    np.testing.assert_array_equal(ds[4].numpy(), local[4].numpy())
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1].numpy(), local[1].numpy())
    ds.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc to read RSS")
def test_memory_stays_flat_on_a_full_size_file(tmp_path):
    """Full-size events (384 x 384 x 49 uint8, ~7 MB each) in one file: iterating every
    window must not accumulate events in memory (one event at a time, no whole-file read)."""
    n = 24  # a 173 MB file
    path = tmp_path / "vil" / "2018" / "BIG.h5"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=(384, 384, FRAMES), dtype=np.uint8)
    with h5py.File(path, "w") as fh:
        vil = fh.create_dataset(
            "vil", shape=(n, 384, 384, FRAMES), dtype=np.uint8, chunks=(1, 384, 384, FRAMES)
        )
        for i in range(n):
            vil[i] = np.roll(block, i, axis=0)
        fh.create_dataset("id", data=np.array([f"E{i}".encode() for i in range(n)], dtype="S8"))
    lines = [f"E{i},vil/2018/BIG.h5,{i},vil,2018-03-{1 + i:02d} 00:00:00,0.0" for i in range(n)]
    cat = tmp_path / "CATALOG.csv"
    cat.write_text(
        "id,file_name,file_index,img_type,time_utc,pct_missing\n" + "\n".join(lines) + "\n"
    )
    ds = DATASETS.build("sevir", catalog=cat, split="train", stride=12, size=128)
    assert len(ds) == n * 3
    first = ds[0]
    base = _rss_bytes()
    peak = base
    for i in range(len(ds)):
        item = ds[i]
        peak = max(peak, _rss_bytes())
    assert item.shape == first.shape == (25, 1, 128, 128)
    np.testing.assert_array_equal(  # the last window is the last event's frames 24..48
        ds.read_event(n - 1)[24:], np.moveaxis(np.roll(block, n - 1, axis=0), -1, 0)[24:]
    )
    ds.close()
    # a leak of one event per event read would be ~170 MB; allow a few events of slack
    assert peak - base < 40 * 2**20, f"RSS grew by {(peak - base) / 2**20:.0f} MB while iterating"
