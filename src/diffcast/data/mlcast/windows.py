"""Gap-aware windows and time-range splits of a spec store's frames.

A window is ``seq_len`` frames each exactly one regular time step after the
previous: it never spans an entry of ``missing_times`` (absent from ``time``, so
the spacing there is larger), a change of time step, or the period before
``consistent_timestep_start``. Splits are ISO time ranges (``"2001-01-01/2019-12-31"``,
``"2020"``, ``"2021-2023"``, ``"2020-06"``; both ends inclusive at their own
precision); a window belongs to a split only if all its frames lie in the
split's ranges, so no window is cut across two splits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_SPLITS = ("train", "val", "test")


def regular_runs(times: np.ndarray, timestep_min: float, start: np.datetime64 | None = None) -> list[tuple[int, int]]:
    """``[a, b)`` index ranges of ``times`` whose neighbours are exactly ``timestep_min`` apart (from ``start`` on)."""
    t = np.asarray(times).astype("datetime64[ns]")
    if t.size == 0 or not np.isfinite(timestep_min):
        return []
    first = 0 if start is None else int(np.searchsorted(t, np.datetime64(start, "ns")))
    if first >= t.size:
        return []
    step = np.timedelta64(int(round(timestep_min * 60e9)), "ns")
    breaks = np.flatnonzero(np.diff(t[first:]) != step) + 1 + first
    edges = [first, *breaks.tolist(), int(t.size)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def window_starts(runs: Sequence[tuple[int, int]], seq_len: int, stride: int = 1) -> np.ndarray:
    """First frame of every window of ``seq_len`` frames inside the runs, every ``stride`` frames."""
    if seq_len < 1 or stride < 1:
        raise ValueError(f"seq_len and stride must be positive, got {seq_len} and {stride}")
    parts = [np.arange(a, b - seq_len + 1, stride) for a, b in runs if b - a >= seq_len]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


_ISO = re.compile(r"^\d{4}(-\d{2}(-\d{2}([T ]\d{2}(:\d{2}(:\d{2})?)?)?)?)?$")


def _bounds(text: str) -> tuple[np.datetime64, np.datetime64]:
    """``[lo, hi)`` of one ISO time, e.g. ``"2020"`` -> the year 2020."""
    s = text.strip().replace(" ", "T")
    if not _ISO.match(s):
        raise ValueError(f"{text!r} is not an ISO time (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
    n = len(s)
    unit = {4: "Y", 7: "M", 10: "D", 13: "h", 16: "m", 19: "s"}[n]
    lo = np.datetime64(s, unit)
    return lo.astype("datetime64[ns]"), (lo + np.timedelta64(1, unit)).astype("datetime64[ns]")


def parse_time_range(text: Any) -> tuple[np.datetime64, np.datetime64]:
    """``[lo, hi)`` of a range ``"A/B"``, ``"YYYY-YYYY"`` or a single ISO time (inclusive at its precision).

    Raises
    ------
    ValueError
        Malformed text or a range that ends before it starts.
    """
    s = str(text).strip()
    m = re.fullmatch(r"(\d{4})-(\d{4})", s)
    parts = [m.group(1), m.group(2)] if m else s.split("/")
    if len(parts) not in (1, 2) or not all(p.strip() for p in parts):
        raise ValueError(f"time range {text!r}: expected A/B, YYYY-YYYY or one ISO time")
    try:
        lo, _ = _bounds(parts[0])
        _, hi = _bounds(parts[-1])
    except ValueError as exc:
        raise ValueError(f"time range {text!r}: {exc}") from None
    if hi <= lo:
        raise ValueError(f"time range {text!r} ends before it starts")
    return lo, hi


def _ranges(items: Any) -> list[tuple[np.datetime64, np.datetime64]]:
    if items is None:
        return []
    items = [items] if isinstance(items, (str, int)) else list(items)
    return [parse_time_range(i) for i in items]


def split_windows(
    times: np.ndarray, starts: np.ndarray, seq_len: int, ranges: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The window starts of each split: those whose first and last frames lie in one of its ranges.

    ``ranges`` maps ``train``/``val``/``test`` to a range or a list of ranges.

    Raises
    ------
    ValueError
        Unknown split names, malformed ranges, or two splits whose ranges overlap.
    """
    parsed = {}
    for split, items in ranges.items():
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; choose train, val or test")
        parsed[split] = _ranges(items)
    names = [s for s in parsed if parsed[s]]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for lo1, hi1 in parsed[a]:
                for lo2, hi2 in parsed[b]:
                    if lo1 < hi2 and lo2 < hi1:
                        raise ValueError(f"the time ranges of {a} and {b} overlap ({max(lo1, lo2)} to {min(hi1, hi2)})")
    t = np.asarray(times).astype("datetime64[ns]")
    first, last = t[starts], t[starts + seq_len - 1] if starts.size else t[starts]
    out = {}
    for split, rs in parsed.items():
        keep = np.zeros(starts.size, bool)
        for lo, hi in rs:
            keep |= (first >= lo) & (last < hi)
        out[split] = starts[keep]
    return out


def gap_summary(store: Any) -> dict[str, Any]:
    """Time steps found, gaps and gap-free runs of a store (no pixels read)."""
    allt = np.union1d(store.times, store.missing_times)
    d = np.diff(allt).astype("timedelta64[s]").astype(np.int64) / 60.0 if allt.size > 1 else np.zeros(0)
    vals, counts = np.unique(d, return_counts=True)
    runs = regular_runs(store.times, store.timestep_min, store.consistent_start)
    dt = np.diff(store.times).astype("timedelta64[s]").astype(np.int64) / 60.0 if store.times.size > 1 else np.zeros(0)
    return {
        "time_steps_min": {f"{v:g}": int(c) for v, c in zip(vals, counts)},
        "gaps": int(np.sum(np.abs(dt - store.timestep_min) > 1e-6)),
        "gap_free_runs": len(runs),
        "longest_run_frames": max((b - a for a, b in runs), default=0),
    }
