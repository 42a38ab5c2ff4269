"""SEVIR VIL (the paper's main benchmark): ``CATALOG.csv`` + HDF5 event files.

Layout (Veillette et al., 2020): each HDF5 file holds ``vil`` of shape
``(N, 384, 384, 49)`` uint8 (time last, 5-min steps, 1 km pixels) and ``id``
(event ids, bytes). The catalog lists one row per (event, image type) with
``id, file_name, file_index, img_type, time_utc, ..., pct_missing``;
``file_name`` is relative to the data root (the catalog's folder by default).

Selection, as in the published pipelines: rows with ``img_type == "vil"`` and
``pct_missing == 0``; ids that occur more than once are dropped entirely. Events
are split by ``time_utc`` (``train <= train_end < val <= val_end < test``):

* ``diffcast``: train_end 2019-01-01, val_end 2019-10-01;
* ``earthformer``: train_end 2019-01-01, val_end 2019-06-01.

Each event yields windows of ``seq_len`` frames starting every ``stride`` frames
(``stride`` 12 as in Earthformer, or 5 for denser sampling). Frames are resized
from 384 to ``size`` with an explicit method recorded in ``meta.transform``:
``"area"`` (exact block averaging, default) or ``"bilinear"`` / ``"diffcast-compat"``
(bilinear without antialiasing, like ``F.interpolate(mode="bilinear")``).

I/O: one event is read at a time (never a whole file) and cached per worker;
HDF5 handles are opened lazily in the process that reads (DataLoader workers),
never pickled. Catalog and files may be local paths or fsspec URLs
(``s3://bucket/sevir/CATALOG.csv``) with ``storage_options``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from . import DATASETS
from .contract import DatasetMeta
from .transforms import SEVIR_META

log = logging.getLogger(__name__)

#: Time-split presets: ``train <= train_end < val <= val_end < test``.
SPLIT_PRESETS: dict[str, dict[str, str]] = {
    "diffcast": {"train_end": "2019-01-01", "val_end": "2019-10-01"},
    "earthformer": {"train_end": "2019-01-01", "val_end": "2019-06-01"},
}
#: Resize methods: name -> OpenCV interpolation flag name.
RESIZE_METHODS = {
    "area": "INTER_AREA",
    "bilinear": "INTER_LINEAR",
    "diffcast-compat": "INTER_LINEAR",
}
REQUIRED_COLUMNS = ("id", "file_name", "file_index", "img_type", "time_utc", "pct_missing")
SEVIR_FRAMES = 49
SEVIR_SIZE = 384


def _is_url(path: str | os.PathLike[str]) -> bool:
    return "://" in str(path)


def _join(root: str, rel: str) -> str:
    if _is_url(root):
        return root.rstrip("/") + "/" + rel.lstrip("/")
    return str(Path(root) / rel)


def _open_binary(path: str, storage_options: dict[str, Any] | None) -> Any:
    """Open a local path or fsspec URL for binary reading (file-like)."""
    if _is_url(path):
        import fsspec

        try:
            return fsspec.open(path, mode="rb", **(storage_options or {})).open()
        except FileNotFoundError:
            raise FileNotFoundError(f"SEVIR file {path} not found") from None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SEVIR file {p} not found")
    return open(p, "rb")


def read_catalog(
    catalog: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Any:
    """Read ``CATALOG.csv`` (local or fsspec URL) as a pandas DataFrame.

    Raises
    ------
    FileNotFoundError
        Missing catalog.
    ValueError
        Unreadable CSV or missing required columns.
    """
    import pandas as pd

    with _open_binary(str(catalog), storage_options) as fh:
        try:
            df = pd.read_csv(io.BytesIO(fh.read()), low_memory=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot parse SEVIR catalog {catalog}: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"SEVIR catalog {catalog} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns[:12]))})"
        )
    return df


def select_events(df: Any) -> Any:
    """VIL events without missing data; every copy of a duplicated id dropped; sorted by time."""
    import pandas as pd

    vil = df[
        (df["img_type"].astype(str) == "vil")
        & (pd.to_numeric(df["pct_missing"], errors="coerce") == 0)
    ].copy()
    dup = vil["id"].duplicated(keep=False)
    if dup.any():
        log.info("dropping %d catalog rows whose id is duplicated", int(dup.sum()))
    vil = vil[~dup]
    vil["time_utc"] = pd.to_datetime(vil["time_utc"], utc=True, errors="coerce")
    bad = vil["time_utc"].isna()
    if bad.any():
        raise ValueError(
            f"SEVIR catalog has unparsable time_utc for id(s) {', '.join(map(str, vil.loc[bad, 'id'][:5]))}"
        )
    return vil.sort_values(["time_utc", "id"]).reset_index(drop=True)


def split_events(
    events: Any,
    split: str,
    preset: str = "diffcast",
    train_end: str | None = None,
    val_end: str | None = None,
) -> Any:
    """Rows of ``events`` in ``split`` (``train <= train_end < val <= val_end < test``)."""
    import pandas as pd

    if preset not in SPLIT_PRESETS:
        raise ValueError(
            f"unknown SEVIR split preset {preset!r}; choose one of: {', '.join(SPLIT_PRESETS)}"
        )
    t1 = pd.Timestamp(train_end or SPLIT_PRESETS[preset]["train_end"], tz="UTC")
    t2 = pd.Timestamp(val_end or SPLIT_PRESETS[preset]["val_end"], tz="UTC")
    if t2 < t1:
        raise ValueError(f"val_end {t2} is before train_end {t1}")
    t = events["time_utc"]
    masks = {"train": t <= t1, "val": (t > t1) & (t <= t2), "test": t > t2}
    if split not in masks:
        raise ValueError(f"unknown split {split!r}; choose one of: train, val, test")
    return events[masks[split]].reset_index(drop=True)


def resize_frames(x: np.ndarray, size: tuple[int, int], method: str = "area") -> np.ndarray:
    """Resize ``(T, H, W)`` frames to ``size`` with a named method (see :data:`RESIZE_METHODS`)."""
    import cv2

    if method not in RESIZE_METHODS:
        raise ValueError(
            f"unknown resize method {method!r}; choose one of: {', '.join(RESIZE_METHODS)}"
        )
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    flag = getattr(cv2, RESIZE_METHODS[method])
    out = np.empty((x.shape[0], *size), dtype=np.float32)
    for i, frame in enumerate(x):
        out[i] = cv2.resize(frame, (size[1], size[0]), interpolation=flag)
    return out


@DATASETS.register("sevir")
class SEVIRDataset(Dataset):
    """SEVIR VIL windows as ``(seq_len, 1, H, W)`` float32 in ``[0, 1]`` (= VIL code / 255).

    Parameters
    ----------
    catalog : str or path
        ``CATALOG.csv`` (local path or fsspec URL).
    split : {"train", "val", "test"}
    seq_len : int
        Frames per window (default 25 = 5 inputs + 20 targets).
    stride : int
        Frames between window starts within an event (12 or 5 in the presets).
    size : int or (int, int) or None
        Output frame size (default 128); ``None`` keeps 384.
    resize : {"area", "bilinear", "diffcast-compat"}
        Resize method (recorded in ``meta.transform``).
    preset : {"diffcast", "earthformer"}
        Time-split boundaries; ``train_end`` / ``val_end`` override them.
    data_root : str or path, optional
        Folder that ``file_name`` is relative to; default: the catalog's folder.
    frames_per_event : int
        Frames per event in the files (49 in SEVIR); checked when an event is read.
    storage_options : dict, optional
        fsspec options for URLs (e.g. ``{"anon": True}`` or an ``endpoint_url``).
    verify_ids : bool
        Check the file's ``id`` entry against the catalog when reading an event.
    """

    def __init__(
        self,
        catalog: str | os.PathLike[str],
        split: str = "train",
        seq_len: int = 25,
        stride: int = 12,
        size: int | tuple[int, int] | None = 128,
        resize: str = "area",
        preset: str = "diffcast",
        train_end: str | None = None,
        val_end: str | None = None,
        data_root: str | os.PathLike[str] | None = None,
        frames_per_event: int = SEVIR_FRAMES,
        storage_options: dict[str, Any] | None = None,
        verify_ids: bool = True,
    ) -> None:
        if resize not in RESIZE_METHODS:
            raise ValueError(
                f"unknown resize method {resize!r}; choose one of: {', '.join(RESIZE_METHODS)}"
            )
        if seq_len < 1 or stride < 1:
            raise ValueError(
                f"seq_len and stride must be >= 1, got seq_len={seq_len}, stride={stride}"
            )
        if seq_len > frames_per_event:
            raise ValueError(
                f"seq_len={seq_len} exceeds the {frames_per_event} frames of a SEVIR event"
            )
        self.catalog = str(catalog)
        self.storage_options = dict(storage_options or {})
        if data_root is None:
            data_root = (
                self.catalog.rsplit("/", 1)[0]
                if _is_url(self.catalog)
                else str(Path(self.catalog).parent)
            )
        self.data_root = str(data_root)
        events = split_events(
            select_events(read_catalog(self.catalog, self.storage_options)),
            split,
            preset,
            train_end,
            val_end,
        )
        self.split = split
        self.seq_len = int(seq_len)
        self.stride = int(stride)
        self.frames_per_event = int(frames_per_event)
        self.size = (
            None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        )
        self.resize = resize
        self.verify_ids = verify_ids
        self.events = [
            (str(r.id), str(r.file_name), int(r.file_index), r.time_utc.isoformat())
            for r in events.itertuples(index=False)
        ]
        self.starts = list(range(0, self.frames_per_event - self.seq_len + 1, self.stride))
        self.windows_per_event = len(self.starts)
        self.meta: DatasetMeta = self._make_meta(self.size, resize)
        if not self.events:
            log.warning("SEVIR split %r of %s has no events", split, self.catalog)
        self._handles: dict[str, Any] = {}
        self._cache: tuple[tuple[str, int], np.ndarray] | None = None
        self._pid = os.getpid()

    # --- pickling: never carry open handles to another process ------------------------------
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        seq_len: int = 25,
        stride: int = 12,
        size: int | tuple[int, int] | None = 128,
        resize: str = "area",
        storage_options: dict[str, Any] | None = None,
    ) -> SEVIRDataset:
        """All events of one SEVIR HDF5 file, without a catalog (no filtering, no split).

        Used by ``diffcast data preview/info`` on a bare ``.h5`` file; the ``split``
        attribute is ``"all"``.
        """
        import h5py

        path = str(path)
        raw = _open_binary(path, storage_options)
        try:
            with h5py.File(raw, "r") as fh:
                if "vil" not in fh:
                    raise ValueError(
                        f"{path} is not a SEVIR VIL file: no 'vil' dataset (keys: {', '.join(fh.keys())})"
                    )
                n, *_, frames = fh["vil"].shape
                ids = (
                    [v.decode() if isinstance(v, bytes) else str(v) for v in fh["id"][:]]
                    if "id" in fh
                    else [str(i) for i in range(n)]
                )
        except OSError as exc:
            raise ValueError(f"cannot open SEVIR HDF5 file {path}: {exc}") from exc
        finally:
            raw.close()
        self = cls.__new__(cls)
        self.catalog = path
        self.storage_options = dict(storage_options or {})
        self.data_root = path.rsplit("/", 1)[0] if _is_url(path) else str(Path(path).parent)
        rel = path.rsplit("/", 1)[-1] if _is_url(path) else Path(path).name
        self.split = "all"
        self.seq_len, self.stride, self.frames_per_event = int(seq_len), int(stride), int(frames)
        if self.seq_len > self.frames_per_event:
            raise ValueError(f"seq_len={seq_len} exceeds the {frames} frames per event of {path}")
        self.size = (
            None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        )
        if resize not in RESIZE_METHODS:
            raise ValueError(
                f"unknown resize method {resize!r}; choose one of: {', '.join(RESIZE_METHODS)}"
            )
        self.resize = resize
        self.verify_ids = False
        self.events = [(eid, rel, i, "") for i, eid in enumerate(ids)]
        self.starts = list(range(0, self.frames_per_event - self.seq_len + 1, self.stride))
        self.windows_per_event = len(self.starts)
        self.meta = cls._make_meta(self.size, resize)
        self._handles, self._cache, self._pid = {}, None, os.getpid()
        return self

    @staticmethod
    def _make_meta(size: tuple[int, int] | None, resize: str) -> DatasetMeta:
        out = size or (SEVIR_SIZE, SEVIR_SIZE)
        return dataclasses.replace(
            SEVIR_META,
            pixel_km=SEVIR_SIZE / out[0],
            transform=SEVIR_META.transform
            + (
                f"; resized {SEVIR_SIZE}->{out[0]}x{out[1]} by {resize}"
                if size
                else "; native 384x384"
            ),
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_cache"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        """Close open HDF5 handles (they reopen on demand)."""
        for fh, raw in self._handles.values():
            try:
                fh.close()
                if raw is not None:
                    raw.close()
            except Exception:  # pragma: no cover - best effort
                pass
        self._handles = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover
            pass

    def _file(self, rel: str) -> Any:
        import h5py

        if os.getpid() != self._pid:  # forked after handles were opened: never share them
            self._handles = {}
            self._cache = None
            self._pid = os.getpid()
        if rel not in self._handles:
            path = _join(self.data_root, rel)
            raw = _open_binary(path, self.storage_options) if _is_url(path) else None
            if raw is None and not Path(path).is_file():
                raise FileNotFoundError(f"SEVIR file {path} (listed in {self.catalog}) not found")
            try:
                fh = h5py.File(raw if raw is not None else path, "r")
            except OSError as exc:
                raise ValueError(f"cannot open SEVIR HDF5 file {path}: {exc}") from exc
            if "vil" not in fh:
                keys = ", ".join(fh.keys())
                fh.close()
                raise ValueError(f"SEVIR file {path} has no 'vil' dataset (keys: {keys})")
            vil = fh["vil"]
            if vil.ndim != 4 or vil.shape[3] < self.frames_per_event:
                shape = vil.shape
                fh.close()
                raise ValueError(
                    f"SEVIR file {path}: 'vil' must be (N, H, W, {self.frames_per_event}) with time last, got {shape}"
                )
            self._handles[rel] = (fh, raw)
        return self._handles[rel][0]

    def read_event(self, i: int) -> np.ndarray:
        """Event ``i`` as ``(frames, H, W)`` uint8 (native resolution), cached per worker."""
        eid, rel, fidx, _ = self.events[i]
        key = (rel, fidx)
        if self._cache is not None and self._cache[0] == key and os.getpid() == self._pid:
            return self._cache[1]
        fh = self._file(rel)
        vil = fh["vil"]
        if not 0 <= fidx < vil.shape[0]:
            raise ValueError(
                f"{_join(self.data_root, rel)}: file_index {fidx} of event {eid} out of range (N={vil.shape[0]})"
            )
        if self.verify_ids and "id" in fh:
            got = fh["id"][fidx]
            got = got.decode() if isinstance(got, bytes) else str(got)
            if got != eid:
                raise ValueError(
                    f"{_join(self.data_root, rel)}[{fidx}] holds event {got!r}, catalog says {eid!r}"
                )
        ev = np.ascontiguousarray(np.moveaxis(vil[fidx], -1, 0))  # (T, H, W)
        self._cache = (key, ev)
        return ev

    def __len__(self) -> int:
        return len(self.events) * self.windows_per_event

    def window(self, idx: int) -> tuple[int, int]:
        """``(event index, start frame)`` of item ``idx``."""
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} windows")
        e, w = divmod(idx, self.windows_per_event)
        return e, self.starts[w]

    def sequence(self, idx: int) -> np.ndarray:
        """Item ``idx`` as ``(seq_len, H, W)`` float32 in ``[0, 1]``."""
        e, s = self.window(idx)
        ev = self.read_event(e)
        x = ev[s : s + self.seq_len].astype(np.float32) * (1.0 / 255.0)
        if self.size is not None:
            x = np.clip(resize_frames(x, self.size, self.resize), 0.0, 1.0)
        return x

    def __getitem__(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(self.sequence(int(idx)))[:, None]

    def __repr__(self) -> str:
        return (
            f"SEVIRDataset(split={self.split!r}, events={len(self.events)}, windows={len(self)}, "
            f"seq_len={self.seq_len}, stride={self.stride}, size={self.size}, resize={self.resize!r})"
        )
