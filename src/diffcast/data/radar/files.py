"""Radar files of a folder or a list, by time: listing, selection and time-stamp checks.


Time series are never bridged across gaps: a sequence only contains frames
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from .formats import RADAR_FORMATS, RadarFormat, detect_format


def _check_order(times: Sequence[datetime], paths: Sequence[Path]) -> None:
    """Raise unless ``times`` increase strictly (files in time order, no duplicates)."""
    for i in range(1, len(times)):
        if times[i] == times[i - 1]:
            raise ValueError(
                f"two radar files share the time stamp {times[i]:%Y-%m-%d %H:%M}: {paths[i - 1].name} and {paths[i].name}; "
                "if the folder holds several products, pick one with --pattern GLOB (pattern= in Python)"
            )
        if times[i] < times[i - 1]:
            raise ValueError(
                f"radar time stamps are not increasing: {paths[i].name} ({times[i]:%Y-%m-%d %H:%M}) "
                f"follows {paths[i - 1].name} ({times[i - 1]:%Y-%m-%d %H:%M}); pass the files in time order without duplicates"
            )


def _time_step(times: Sequence[datetime], timestep_min: float | None) -> float:
    """The time step: ``timestep_min`` when given, else the shortest spacing (a gap is never shorter)."""
    if timestep_min:
        return float(timestep_min)
    if len(times) < 2:
        return 5.0
    return min((b - a).total_seconds() / 60.0 for a, b in zip(times[:-1], times[1:]))


def _check_times(
    times: Sequence[datetime], paths: Sequence[Path], timestep_min: float | None = None
) -> float:
    """Check strictly increasing, gap-free times; return the time step in minutes."""
    _check_order(times, paths)
    step = _time_step(times, timestep_min)
    for i in range(1, len(times)):
        d = (times[i] - times[i - 1]).total_seconds() / 60.0
        if abs(d - step) > 1e-6:
            raise ValueError(
                f"gap in the radar time series: {d:g} min between {paths[i - 1].name} and {paths[i].name} "
                f"(expected {step:g} min); sequences never span missing frames"
            )
    return step


def select_files(files: Sequence[Path], pattern: str, where: str) -> list[Path]:
    """The ``files`` whose names match the shell ``pattern``; a clear error when none does."""
    import fnmatch

    sel = [p for p in files if fnmatch.fnmatch(p.name, pattern)]
    if not sel:
        names = ", ".join(sorted({p.name for p in files})[:5])
        raise ValueError(f"no file under {where} matches the pattern {pattern!r} (file names look like: {names or 'none'})")
    return sel


def _file_time(
    fobj: RadarFormat, path: Path, cache: dict[tuple[Path, int, int], datetime] | None
) -> datetime:
    """``fobj.timestamp(path)``; time stamps read from file contents are kept in ``cache`` by (path, size, mtime)."""
    if cache is None or fobj.time is not None:  # names are parsed, not cached
        return fobj.timestamp(path)
    st = path.stat()
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in cache:
        cache[key] = fobj.timestamp(path)
    return cache[key]


def list_radar_files(
    root: str | Path,
    fmt: str | None = None,
    series: str | None = None,
    pattern: str | None = None,
    *,
    skipped: list[tuple[Path, str]] | None = None,
    allow_empty: bool = False,
    time_cache: dict[tuple[Path, int, int], datetime] | None = None,
) -> tuple[str, list[tuple[datetime, Path]]]:
    """All radar files under ``root`` (recursively) as ``(format, [(time, path), ...])`` sorted by time.

    Parameters
    ----------
    root : path
        Folder searched recursively.
    fmt : str, optional
        Format name; detected when omitted (must be unique under ``root``).
    series : str, optional
        Product/station to keep when ``root`` holds several (e.g. ``"66/prcp-c10"``
        for BoM, ``"AQC"`` for MeteoSwiss); required in that case, since series
        differ in grid and time step.
    pattern : str, optional
        Shell pattern on the file names (``fnmatch``, e.g. ``"RAD_NL25_RAP_*"``) that
        picks one product out of a folder holding several.
    skipped : list, optional
        For a folder that is being filled (``diffcast nowcast --watch``): files whose
        time stamp cannot be read (an ODIM file still being written) are appended to
        it as ``(path, reason)`` and left out, instead of raising.
    allow_empty : bool
        A folder without matching files gives ``(fmt or "", [])`` instead of an error.
    time_cache : dict, optional
        Time stamps read from file contents (ODIM ``/what``) are kept in it by
        ``(path, size, mtime)``, so a folder listed again opens only new or changed files.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing folder, no matching files, several formats without ``fmt``,
        several series without ``series``, or duplicate time stamps.
    """
    import fnmatch

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"radar folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if pattern is not None:
        if allow_empty:
            files = [p for p in files if fnmatch.fnmatch(p.name, pattern)]
        else:
            files = select_files(files, pattern, str(root))
    if fmt is None:
        cand = [p for p in files if any(f.match(p) for f in RADAR_FORMATS.values())]
        if not cand:
            if allow_empty:
                return "", []
            raise ValueError(
                f"no radar files of a known format ({', '.join(RADAR_FORMATS)}) under {root}"
            )
        fmt = detect_format(cand)
    elif fmt not in RADAR_FORMATS:
        raise ValueError(f"unknown radar format {fmt!r}; choose one of: {', '.join(RADAR_FORMATS)}")
    fobj = RADAR_FORMATS[fmt]
    sel = [p for p in files if fobj.match(p)]
    if not sel:
        if allow_empty:
            return fmt, []
        raise ValueError(f"no {fmt} files ({fobj.description}) under {root}")
    by_series = Counter(fobj.series(p) for p in sel)
    if series is not None:
        if series not in by_series:
            raise ValueError(
                f"no {fmt} files of series {series!r} under {root}; found {', '.join(sorted(by_series))}"
            )
        sel = [p for p in sel if fobj.series(p) == series]
    elif len(by_series) > 1:
        found = ", ".join(f"{k!r} ({n} files)" for k, n in sorted(by_series.items()))
        raise ValueError(
            f"{root} holds several {fmt} series ({found}) with their own grids and time steps; "
            "pass series=NAME (or pattern=GLOB on the file names, --pattern on the command line) or use the folder of one series"
        )
    items = []
    for p in sel:
        try:
            items.append((_file_time(fobj, p, time_cache), p))
        except FileNotFoundError:
            if skipped is None:
                raise
            # removed since it was listed (a writer's rename): not an error
        except (ValueError, OSError) as exc:
            if skipped is None:
                raise
            skipped.append((p, str(exc)))
    items.sort()
    for (t1, p1), (t2, p2) in zip(items[:-1], items[1:]):
        if t1 == t2:
            raise ValueError(
                f"two radar files share the time stamp {t1:%Y-%m-%d %H:%M}: {p1} and {p2}; if they are two products, "
                "pick one with pattern=GLOB (--pattern on the command line)"
            )
    return fmt, items
