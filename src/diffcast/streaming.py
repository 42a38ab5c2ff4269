"""Streaming nowcasts: ``diffcast nowcast --watch DIR``.

A :class:`FolderWatcher` polls a folder that radar files arrive in and nowcasts
the newest analysis time each time a newer file appears. Each step reuses the
file-to-file road of :mod:`diffcast.pipeline`: the folder is indexed by
:func:`diffcast.data.radar.list_radar_files` (time stamps from the file names,
ODIM files from their ``/what`` attributes; ``pattern`` and ``radar_format`` as
for ``--input``), the frames go through :func:`~diffcast.pipeline.inputs.read_input`
and :func:`~diffcast.pipeline.run.nowcast_raw`, and one model is loaded once.

Rules of a cycle
----------------
- The analysis time ``T`` is the time of the newest file. Only the newest time is
  nowcast: files that arrive together supersede the older ones (the cycle's log
  line names them).
- The input is the ``t_in`` frames one model time step apart ending at ``T``
  (the archive's own step for baselines), found by time stamp. When one is
  missing the cycle is skipped with the missing times named, and tried again
  when a late file fills the gap (unless a newer file has arrived by then). A
  file that arrives for a time already nowcast is reported as late and not used.
- A file that cannot be read (still being written, corrupt) skips the cycle; it
  is tried again at the next polls, at most ``retries`` times while the files are
  unchanged (same size and modification time), and again whenever they change.
- A cycle writes ``OUT/<YYYYmmddTHHMMZ>/`` with what ``diffcast nowcast`` writes
  (``forecast.nc``, ``forecast.gif``, ``panel.png``, ``forecast.html``, ``run.json``), staged in a
  hidden temporary folder in ``OUT`` and renamed when complete
  (:func:`~diffcast.writers.staging.staged_output`). An output that exists is not
  recomputed, so a restarted watcher continues where it stopped; ``OUT/latest``
  holds the name of the newest output folder (replaced atomically). Temporary
  folders left by a killed run are removed at start (one watcher per ``OUT``).
- ``catch_up`` (``--catch-up``): every analysis time in order, not only the newest,
  from after the newest output in ``OUT`` (or the first full input window), without
  waiting between cycles; gaps and given-up times are passed while newer times exist;
  ``once`` works off the backlog. ``keep=N`` (``--keep``): the N newest outputs stay.
- Every cycle logs one line: INFO when written or found complete, WARNING when
  skipped. Polls that find nothing new are not cycles (DEBUG).
- An error in one cycle is logged and the watcher goes on. ``KeyboardInterrupt``
  (Ctrl-C; the command line maps SIGTERM to it) abandons the current cycle, whose
  temporary folder is removed, and ends :meth:`FolderWatcher.run` normally.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Statuses of a :class:`Cycle`.
CYCLE_STATUSES = ("written", "exists", "missing", "unreadable", "error")
#: Name of the file in the output folder that holds the newest output folder's name.
LATEST_NAME = "latest"
#: Output folder names (analysis times) and the temporary folders staged beside them.
_OUT_NAME = re.compile(r"^\d{8}T\d{4}(\d{2})?Z$")
_STALE = re.compile(r"^\.(\d{8}T\d{4}(\d{2})?Z|" + LATEST_NAME + r")\.tmp\.")


def output_name(t: dt.datetime) -> str:
    """Output folder name of analysis time ``t`` (UTC): ``20160711T1200Z`` (seconds only when not 0)."""
    return t.strftime("%Y%m%dT%H%M%SZ" if t.second else "%Y%m%dT%H%MZ")


def _clock(t: dt.datetime, ref: dt.datetime | None = None) -> str:
    """``HH:MM`` on ``ref``'s day, else ``YYYY-mm-ddTHH:MMZ``."""
    return t.strftime("%H:%M" if ref is not None and t.date() == ref.date() else "%Y-%m-%dT%H:%MZ")


def _fingerprint(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """What tells a file that is still being written from the same file later: size and modification time."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), -1, -1))
    return tuple(out)


class InputReadError(ValueError):
    """A radar file of a cycle's input cannot be read (still being written, corrupt)."""


@dataclass
class Cycle:
    """What one cycle of :class:`FolderWatcher` did.

    Attributes
    ----------
    status : str
        One of :data:`CYCLE_STATUSES`: ``written`` (nowcast written), ``exists``
        (complete output found, not recomputed), ``missing`` (an input frame is
        missing), ``unreadable`` (a file cannot be read), ``error`` (anything else).
    analysis_time : datetime or None
        UTC analysis time (naive); ``None`` when the problem has none (a file whose
        time stamp cannot be read, a folder that cannot be indexed).
    message : str
        The log line.
    output : Path or None
        The output folder (``written``, ``exists``).
    files : list of Path
        Input files used or tried.
    seconds : float
        Wall time of the cycle.
    """

    status: str
    analysis_time: dt.datetime | None
    message: str
    output: Path | None = None
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


class FolderWatcher:
    """Nowcast the newest analysis time of a folder of radar files, poll after poll.

    Parameters
    ----------
    spec : str
        Checkpoint (file, folder, shipped model name) or baseline name.
    folder : path-like
        Folder the radar files arrive in (searched recursively).
    out_dir : path-like
        Output folder: one subfolder per analysis time (created).
    radar_format, radar_pattern : str, optional
        As ``--radar-format`` and ``--pattern`` of ``diffcast nowcast``.
    retries : int
        How many times an unreadable, unchanged input is tried again (default 3).
    catch_up : bool
        Nowcast every analysis time in order, not only the newest (see the module
        docstring).
    keep : int or None
        Keep only the ``keep`` newest output folders (``None``: keep all).
    crop, size, t_in, t_out, data_meta
        As for :func:`~diffcast.pipeline.model.make_nowcaster` and
        :func:`~diffcast.pipeline.prepare.prepare_input`.
    members, seed, prob_threshold, sample_kwargs, command, units, html, output_format
        As for :func:`~diffcast.pipeline.run.run_nowcast` (the seed, when given, is
        used for every cycle; ``output_format="zarr"`` writes ``forecast.zarr`` instead
        of ``forecast.nc`` in each output folder).

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    ValueError
        Bad arguments or a model that cannot be built (checked before any polling).
    """

    def __init__(
        self,
        spec: str,
        folder: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        radar_format: str | None = None,
        radar_pattern: str | None = None,
        retries: int = 3,
        catch_up: bool = False,
        keep: int | None = None,
        crop: str = "none",
        size: tuple[int, int] | None = None,
        t_in: int | None = None,
        t_out: int | None = None,
        data_meta: str | None = None,
        members: int = 1,
        seed: int | None = None,
        prob_threshold: float | Sequence[float] | None = None,
        sample_kwargs: dict[str, Any] | None = None,
        command: Sequence[str] | None = None,
        units: str = "auto",
        html: bool = True,
        output_format: str = "netcdf",
    ) -> None:
        from .data.radar import RADAR_FORMATS
        from .inference import BASELINES
        from .pipeline import OUTPUT_UNITS, make_nowcaster
        from .utils.io import ensure_writable_dir

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"watch folder {self.folder} does not exist or is not a folder")
        if retries < 0:
            raise ValueError(f"--retries must be >= 0, got {retries}")
        if keep is not None and keep < 1:
            raise ValueError(f"--keep must be >= 1, got {keep}")
        if members < 1:
            raise ValueError(f"--members must be >= 1, got {members}")
        if units not in OUTPUT_UNITS:
            raise ValueError(f"unknown units {units!r}; choose one of: {', '.join(OUTPUT_UNITS)}")
        from .pipeline.run import OUTPUT_FORMATS

        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {output_format!r}; choose one of: {', '.join(OUTPUT_FORMATS)}")
        if radar_format is not None and radar_format not in RADAR_FORMATS:
            raise ValueError(f"unknown radar format {radar_format!r}; choose one of: {', '.join(RADAR_FORMATS)}")
        if crop not in ("none", "center"):
            raise ValueError(f"crop must be 'none' or 'center', got {crop!r}")
        self.spec = str(spec)
        self.radar_format = radar_format
        self.radar_pattern = radar_pattern
        self.retries = int(retries)
        self.catch_up = bool(catch_up)
        self.keep = None if keep is None else int(keep)
        self.crop = crop
        self._model_args = {"t_in": t_in, "t_out": t_out, "size": size, "data_meta": data_meta}
        self._run_args: dict[str, Any] = {
            "members": members, "seed": seed, "prob_threshold": prob_threshold, "sample_kwargs": sample_kwargs,
            "spec": self.spec, "command": command, "units": units, "progress": False, "html": html,
            "output_format": output_format,
        }
        # Built now, so that a bad checkpoint or option fails before the first poll; it also
        # gives t_in and (checkpoints) the time step the inputs must have.
        self._probe = make_nowcaster(self.spec, None, **self._model_args)
        self._baseline = self.spec in BASELINES
        self._models: dict[tuple[Any, ...], Any] = {}
        self.out_dir = ensure_writable_dir(out_dir)
        self._remove_stale()
        self.done: dt.datetime | None = None  # newest analysis time with a complete output
        self.cycles: list[Cycle] = []
        self._times: dict[tuple[Path, int, int], dt.datetime] = {}  # ODIM time stamps by (path, size, mtime)
        self._known: set[Path] | None = None  # files of the previous poll
        self._tried: set[dt.datetime] = set()  # analysis times that had a cycle
        self._attempts: dict[tuple[Any, ...], int] = {}  # failed attempts by (what, fingerprint)
        self._reported: set[tuple[Any, ...]] = set()  # missing-frame states already logged
        self._last_error: str | None = None
        self._waiting = False  # the folder had no radar files at the last poll
        # catch-up: the last analysis time dealt with (written, found, or passed), and whether newer ones wait
        newest = self.outputs()
        self._cursor: dt.datetime | None = _output_time(newest[-1].name) if catch_up and newest else None
        self._backlog = False

    # ------------------------------------------------------------------ running
    def run(self, poll_seconds: float = 10.0, *, max_cycles: int | None = None, once: bool = False,
            sleep: Callable[[float], Any] = time.sleep) -> list[Cycle]:
        """Poll until ``max_cycles`` cycles have run, after one poll (``once``), or until interrupted.

        ``KeyboardInterrupt`` ends the run normally (the current cycle is abandoned
        and leaves no output). Returns the cycles of this run.
        """
        if poll_seconds < 0:
            raise ValueError(f"--poll-seconds must be >= 0, got {poll_seconds}")
        if max_cycles is not None and max_cycles < 1:
            raise ValueError(f"--max-cycles must be >= 1, got {max_cycles}")
        first = len(self.cycles)
        log.info(
            "watching %s for radar files (every %g s%s); nowcasts go to %s", self.folder, poll_seconds,
            "" if max_cycles is None else f", {max_cycles} cycle(s)", self.out_dir,
        )
        try:
            while True:
                self.poll()
                if max_cycles is not None and len(self.cycles) - first >= max_cycles:
                    break
                if self._backlog:  # catch-up: the next analysis time at once
                    continue
                if once:
                    break
                sleep(poll_seconds)
        except KeyboardInterrupt:
            log.info("interrupted: stopped watching %s after %d cycle(s)", self.folder, len(self.cycles) - first)
        return self.cycles[first:]

    def poll(self) -> list[Cycle]:
        """Look at the folder once and run the cycles it calls for (none when nothing changed).

        Never raises, except ``KeyboardInterrupt``: errors are logged as ``error`` cycles.
        """
        first = len(self.cycles)
        try:
            self._poll()
            self._last_error = None
        except Exception as exc:  # one bad poll never stops the watcher
            msg = f"poll failed: {type(exc).__name__}: {exc}"
            if msg != self._last_error:  # the same failure poll after poll is logged once
                self._add(Cycle("error", None, msg))
            self._last_error = msg
            log.debug("poll failed", exc_info=True)
        return self.cycles[first:]

    # ------------------------------------------------------------------ one poll
    def _poll(self) -> None:
        from .data.radar import list_radar_files

        start = time.perf_counter()
        self._backlog = False
        skipped: list[tuple[Path, str]] = []
        fmt, items = list_radar_files(
            self.folder, self.radar_format, pattern=self.radar_pattern, skipped=skipped, allow_empty=True,
            time_cache=self._times,
        )
        unreadable = {("file", _fingerprint([path])): (path, reason) for path, reason in skipped}
        # Files readable again (or gone) are forgotten: the state stays small however long the watcher runs.
        self._attempts = {k: v for k, v in self._attempts.items() if k[0] != "file" or k in unreadable}
        for key, (path, reason) in unreadable.items():
            what = reason if path.name in reason else f"{path}: {reason}"  # name the file once
            self._failed(key, None, [path], f"file skipped: {what}", start, True)
        items = [(_naive_utc(t), p) for t, p in items]
        known, self._known = self._known, {p for _, p in items}
        # Time stamps of files no longer there are forgotten, so the cache does not grow without end.
        present = self._known | {p for p, _ in skipped}
        self._times = {k: v for k, v in self._times.items() if k[0] in present}
        if not items:
            if not self._waiting:  # said once, so that a --pattern that matches nothing is noticed
                log.info(
                    "no radar files%s in %s yet: waiting", "" if self.radar_pattern is None else
                    f" matching {self.radar_pattern!r}", self.folder,
                )
            self._waiting = True
            return
        self._waiting = False
        if known is not None and self.done is not None:
            for t, p in items:
                if t <= self.done and p not in known:
                    log.warning(
                        "late file %s (%s) arrived after the %s nowcast: not used", p.name, _clock(t, self.done),
                        _clock(self.done),
                    )
        t_in, step = self._window(items)
        analysis = self._next(items, t_in, step) if self.catch_up else items[-1][0]
        if analysis is None or (self.done is not None and analysis <= self.done and not self.catch_up):
            log.debug("nothing new in %s (newest %s, done)", self.folder, _clock(items[-1][0]))
            return
        newer = analysis < items[-1][0]  # catch-up: later analysis times wait
        out = self.out_dir / output_name(analysis)
        if (out / "run.json").is_file():
            self._advance(analysis, newer)
            self._add(Cycle("exists", analysis, f"{_clock(analysis)} exists: {out} (not recomputed)", out,
                            seconds=time.perf_counter() - start))
            return
        by_time = dict(items)
        need = [analysis - dt.timedelta(minutes=step * (t_in - 1 - j)) for j in range(t_in)]
        files = [by_time[t] for t in need if t in by_time]
        missing = [t for t in need if t not in by_time]
        state = (analysis, _fingerprint(files))
        if missing:
            if ("missing", *state) not in self._reported:  # logged once per state of the folder
                self._reported.add(("missing", *state))
                self._tried.add(analysis)
                names = ", ".join(_clock(t, analysis) for t in missing)
                self._add(Cycle(
                    "missing", analysis,
                    f"{_clock(analysis)} skipped: missing input frame(s) {names} ({len(missing)} of {t_in}, "
                    f"{step:g} min apart); {'passed (catch-up)' if newer else 'waiting for late files'}",
                    files=files, seconds=time.perf_counter() - start,
                ))
            self._pass(analysis, newer)
            return
        if self._attempts.get(state, 0) > self.retries:
            self._pass(analysis, newer)
            return  # given up until the files change
        # Times between the last nowcast and this one that never had a cycle (not reported after a start).
        done = self.done
        superseded = [] if done is None else [t for t, _ in items if done < t < analysis and t not in self._tried]
        self._tried.add(analysis)
        try:
            info = self._nowcast(fmt, files, out, step)
        except InputReadError as exc:
            self._failed(state, analysis, files, f"{_clock(analysis)} skipped: {exc}", start, True)
            self._pass(analysis, newer and self._attempts.get(state, 0) > self.retries)
            return
        except Exception as exc:
            log.debug("cycle %s failed", analysis, exc_info=True)
            self._failed(state, analysis, files, f"{_clock(analysis)} failed: {type(exc).__name__}: {exc}", start, False)
            self._pass(analysis, newer and self._attempts.get(state, 0) > self.retries)
            return
        self._advance(analysis, newer)
        seconds = time.perf_counter() - start
        used = files[0].name if len(files) == 1 else f"{files[0].name} .. {files[-1].name}"
        shown = [_clock(t, analysis) for t in superseded[:6]] + ([f"... ({len(superseded)} in all)"] if len(superseded) > 6 else [])
        note = f"; superseded before nowcast: {', '.join(shown)}" if superseded else ""
        self._add(Cycle(
            "written", analysis,
            f"{_clock(analysis)} written: {out} ({len(files)} file(s) {used}, {info['members']} member(s) x "
            f"{len(info['valid_times'])} lead(s), {seconds:.1f} s){note}",
            out, files, seconds,
        ))
        self._housekeep()

    def _next(self, items: Sequence[tuple[dt.datetime, Path]], t_in: int, step: float) -> dt.datetime | None:
        """Catch-up: the oldest analysis time after the cursor (at the start of an archive, the
        first one whose input window lies inside it); ``None`` when all are dealt with."""
        if self._cursor is None:
            first = items[0][0] + dt.timedelta(minutes=step * (t_in - 1))
            return next((t for t, _ in items if t >= first), items[-1][0])
        return next((t for t, _ in items if t > self._cursor), None)

    def _pass(self, analysis: dt.datetime, newer: bool) -> None:
        """Catch-up: leave ``analysis`` without output and go on to the next time, when newer ones exist."""
        if self.catch_up and newer:
            self._cursor = analysis
            self._backlog = True

    def _housekeep(self) -> None:
        """``keep``: remove the output folders older than the ``keep`` newest (never the one ``latest`` names)."""
        if self.keep is None:
            return
        old = self.outputs()[: -self.keep]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
        if old:
            log.info("housekeeping: removed %d old output folder(s) (%s%s), keeping the %d newest", len(old),
                     old[0].name, "" if len(old) == 1 else f" .. {old[-1].name}", self.keep)

    def _window(self, items: Sequence[tuple[dt.datetime, Path]]) -> tuple[int, float]:
        """``(t_in, minutes between input frames)``: the model's step, or the archive's for baselines."""
        if not self._baseline:
            return self._probe.t_in, float(self._probe.meta.timestep_min)
        gaps = [(b[0] - a[0]).total_seconds() / 60.0 for a, b in zip(items[:-1], items[1:])]
        # The archive's step is its shortest spacing (a gap is never shorter), as data.radar reads it.
        return self._probe.t_in, min(gaps) if gaps else float(self._probe.meta.timestep_min)

    def _nowcast(self, fmt: str, files: list[Path], out: Path, step: float) -> dict[str, Any]:
        from .pipeline import make_nowcaster, nowcast_raw, read_input

        try:
            raw = read_input(files, "radar", radar_format=fmt)
            raw.frames[:]  # decode every file now, so that an unreadable one is reported as such
        except (ValueError, OSError) as exc:
            raise InputReadError(str(exc)) from exc
        if len(files) == 1:  # one file does not tell the step; the folder does
            raw = dataclasses.replace(raw, timestep_min=step)
        key = (tuple(raw.frames.shape[1:]), raw.timestep_min, raw.pixel_km, raw.quantity)
        if key not in self._models:
            # One model per grid and step: a checkpoint is loaded once, not every cycle (and not
            # again at all when --size fixes its grid: the one built at start is it).
            fixed = not self._baseline and self._model_args["size"] is not None
            self._models = {key: self._probe if fixed else make_nowcaster(self.spec, raw, **self._model_args)}
        return nowcast_raw(self._models[key], raw, out, crop=self.crop, **self._run_args)

    # ------------------------------------------------------------------ bookkeeping
    def _add(self, cycle: Cycle) -> None:
        self.cycles.append(cycle)
        log.log(logging.INFO if cycle.status in ("written", "exists") else logging.WARNING, "%s", cycle.message)

    def _failed(
        self, key: tuple[Any, ...], analysis: dt.datetime | None, files: list[Path], message: str, start: float,
        unreadable: bool,
    ) -> None:
        """Count a failed attempt; log it while retries are left (once more when giving up)."""
        n = self._attempts.get(key, 0)
        if n > self.retries:
            return
        self._attempts[key] = n + 1
        what = "the file changes" if analysis is None else "its files change"
        then = f"retry {n + 1}/{self.retries} at the next poll" if n < self.retries else f"given up until {what}"
        self._add(Cycle(
            "unreadable" if unreadable else "error", analysis, f"{message}; {then}", files=list(files),
            seconds=time.perf_counter() - start,
        ))

    def _advance(self, analysis: dt.datetime, newer: bool = False) -> None:
        """``analysis`` is complete: remember it and point ``latest`` at it (catch-up: go on
        to the next time when ``newer`` ones exist)."""
        from .utils.io import atomic_write_text

        if self.catch_up:
            self._cursor, self._backlog = analysis, newer
        if self.done is not None and analysis < self.done:
            return  # catch-up below an output of the newest-only mode: `latest` stays
        self.done = analysis
        atomic_write_text(self.out_dir / LATEST_NAME, output_name(analysis) + "\n")
        # Forget what concerns older times: the state stays small however long the watcher runs.
        self._tried = {t for t in self._tried if t > analysis}
        self._reported = {k for k in self._reported if k[1] > analysis}
        self._attempts = {k: v for k, v in self._attempts.items() if k[0] == "file" or k[0] > analysis}

    def _remove_stale(self) -> None:
        """Remove temporary outputs a killed run left behind (``.20160711T1200Z.tmp.*``, ``.latest.tmp.*``)."""
        for p in self.out_dir.iterdir():
            if _STALE.match(p.name):
                log.info("removing %s left by an interrupted run", p)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def outputs(self) -> list[Path]:
        """Complete output folders in :attr:`out_dir`, oldest first."""
        return sorted(p for p in self.out_dir.iterdir() if _OUT_NAME.match(p.name) and (p / "run.json").is_file())


def _output_time(name: str) -> dt.datetime:
    """Analysis time of an output folder name (inverse of :func:`output_name`)."""
    return dt.datetime.strptime(name, "%Y%m%dT%H%M%SZ" if len(name) == 16 else "%Y%m%dT%H%MZ")


def _naive_utc(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t
