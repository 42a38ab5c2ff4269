"""Events of a radar archive (runs of frames without a long gap) and their train/val/test splits."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def contiguous_runs(times: Sequence[datetime], timestep_min: float) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of gap-free runs of sorted ``times``."""
    runs, start = [], 0
    for i in range(1, len(times)):
        if abs((times[i] - times[i - 1]).total_seconds() / 60.0 - timestep_min) > 1e-6:
            runs.append((start, i))
            start = i
    if times:
        runs.append((start, len(times)))
    return runs


#: Frames more than this many minutes apart belong to different events.
EVENT_GAP_MIN = 60.0
#: Splits of a :class:`RadarArchive` (``"all"``: every event).
RADAR_SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class RadarEvent:
    """A maximal run of frames without a gap longer than :data:`EVENT_GAP_MIN`.

    Attributes
    ----------
    label : str
        UTC date (``YYYY-MM-DD``) of the first frame.
    start, stop : int
        ``[start, stop)`` indices of its frames in the time-sorted archive.
    first, last : datetime
        Valid times of its first and last frames.
    """

    label: str
    start: int
    stop: int
    first: datetime
    last: datetime

    @property
    def n_frames(self) -> int:
        return self.stop - self.start


def find_events(times: Sequence[datetime], gap_min: float = EVENT_GAP_MIN) -> list[RadarEvent]:
    """Cut sorted ``times`` into events at every spacing longer than ``gap_min`` minutes."""
    events: list[RadarEvent] = []
    start = 0
    for i in range(1, len(times) + 1):
        if i == len(times) or (times[i] - times[i - 1]).total_seconds() / 60.0 > gap_min:
            first = times[start]
            day = first.astimezone(timezone.utc) if first.tzinfo else first
            events.append(RadarEvent(f"{day:%Y-%m-%d}", start, i, times[start], times[i - 1]))
            start = i
    return events


def _date_range(text: Any) -> tuple[date, date]:
    """``"YYYY-MM-DD"`` or ``"YYYY-MM-DD/YYYY-MM-DD"`` (inclusive) as ``(first, last)``."""
    parts = str(text).strip().split("/")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        lo, hi = date.fromisoformat(parts[0].strip()), date.fromisoformat(parts[-1].strip())
    except ValueError:
        raise ValueError(
            f"split_events: {text!r} is not a date YYYY-MM-DD or a date range YYYY-MM-DD/YYYY-MM-DD"
        ) from None
    if hi < lo:
        raise ValueError(f"split_events: the range {text!r} ends before it starts")
    return lo, hi


def assign_events(
    events: Sequence[RadarEvent],
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    split_events: Mapping[str, Any] | None = None,
) -> list[str]:
    """The split (``"train"``, ``"val"`` or ``"test"``, or ``""``: unused) of each event.

    Without ``split_events``, in time order: with ``n`` events, ``test`` takes the
    last ``max(1, round(f_test n))``, ``val`` the ``max(1, round(f_val n))`` before
    them and ``train`` the rest, as long as ``train`` keeps at least one event
    (``test`` is served first); a zero fraction gives no event. Hence one event:
    train only; two: train and test; three: one each.

    With ``split_events`` (split -> date or list of dates ``"YYYY-MM-DD"`` and ranges
    ``"YYYY-MM-DD/YYYY-MM-DD"``, inclusive, matched against the event labels), the
    named events go to their splits; when ``train`` is not named it takes every
    event no split names, otherwise such events are unused. Dates that match no
    event are allowed (one mapping may serve several archives) and logged.

    Raises
    ------
    ValueError
        Unknown split names, malformed dates, or an event named for two splits.
    """
    n = len(events)
    if split_events is None:
        fr = np.asarray(split_fractions, dtype=float)
        fr = fr / fr.sum()

        def count(f: float) -> int:
            return 0 if f <= 0 else max(1, int(np.floor(f * n + 0.5)))

        n_test = min(count(fr[2]), max(n - 1, 0))
        n_val = min(count(fr[1]), max(n - 1 - n_test, 0))
        n_train = n - n_val - n_test
        return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    if not isinstance(split_events, Mapping):
        raise ValueError(
            f"split_events must map split names to dates, e.g. {{\"test\": [\"2016-07-11\"]}}, got {split_events!r}"
        )
    out = [""] * n
    for split, items in split_events.items():
        if split not in ("train", "val", "test"):
            raise ValueError(f"split_events: unknown split {split!r}; choose train, val or test")
        items = [items] if isinstance(items, (str, date)) else list(items or [])
        for item in items:
            lo, hi = _date_range(item)
            hits = [i for i, e in enumerate(events) if lo <= date.fromisoformat(e.label) <= hi]
            if not hits:
                log.info("split_events: no event on %s (events: %s)", item, ", ".join(e.label for e in events))
            for i in hits:
                if out[i] and out[i] != split:
                    raise ValueError(
                        f"split_events: the event of {events[i].label} is named for both {out[i]} and {split}"
                    )
                out[i] = split
    if "train" not in split_events:
        out = [s or "train" for s in out]
    return out

