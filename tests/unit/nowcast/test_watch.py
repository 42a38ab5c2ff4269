"""Streaming nowcasts, ``diffcast nowcast --watch DIR``: one output per new analysis time, gaps and
unreadable files skipped and reported, restart-safe, atomic outputs, clean stop on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import h5py
import pytest

from diffcast.cli import main
from diffcast.streaming import FolderWatcher, output_name

T0 = datetime(2016, 7, 11, 12, 0)
N_FILES = 8


def _name(k: int) -> str:
    return f"comp_{T0 + timedelta(minutes=5 * k):%Y%m%d%H%M}.h5"


def _out(k: int) -> str:
    return output_name(T0 + timedelta(minutes=5 * k))


@pytest.fixture(scope="module")
def staging(tmp_path_factory, helper_module) -> Path:
    """Eight 32x32 ODIM composites 5 min apart (12:00 .. 12:35), delivered to the watched folder by :func:`_arrive`."""
    root = tmp_path_factory.mktemp("odim_staging")
    helper_module("unit/training/test_radar_windows.py").write_odim_archive(root, [T0], N_FILES, 32, 0)
    return root


def _arrive(staging: Path, watch: Path, *ks: int) -> None:
    """Files arrive as an upstream writer delivers them: written aside, then renamed into place."""
    for k in ks:
        tmp = watch / f".{_name(k)}.part"
        shutil.copyfile(staging / _name(k), tmp)
        os.replace(tmp, watch / _name(k))


def _watcher(watch: Path, out: Path, **kw) -> FolderWatcher:
    return FolderWatcher("persistence", watch, out, t_in=3, t_out=2, **kw)


def _no_temp(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary outputs left behind"


def _cli(watch: Path, out: Path, *extra: str) -> list[str]:
    return ["nowcast", "--baseline", "persistence", "--watch", str(watch), "--out", str(out), "--t-in", "3",
            "--t-out", "2", "--poll-seconds", "0.05", *extra]


def _when(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_files_arriving_over_cycles_give_one_output_per_analysis_time(tmp_path, staging, capsys, caplog):
    handler = signal.getsignal(signal.SIGTERM)
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2)

    def feed() -> None:  # the next file arrives once the previous analysis time is written
        for k in (3, 4):
            if not _when(lambda k=k: (out / _out(k - 1) / "run.json").is_file()):
                os.kill(os.getpid(), signal.SIGTERM)  # the watcher stalled: stop it, the asserts below fail
                return
            _arrive(staging, watch, k)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with caplog.at_level(logging.INFO, logger="diffcast"):
        assert main(_cli(watch, out, "--max-cycles", "3")) == 0
    feeder.join(5)
    assert sorted(p.name for p in out.iterdir()) == [_out(2), _out(3), _out(4), "latest"]
    assert (out / "latest").read_text() == _out(4) + "\n"
    info = json.loads((out / _out(3) / "run.json").read_text())
    assert info["analysis_time"] == "2016-07-11T12:15:00Z"
    assert [Path(f).name for f in info["input"]["files"]] == [_name(1), _name(2), _name(3)]
    assert {p.name for p in (out / _out(3)).iterdir()} == {"forecast.nc", "forecast.gif", "panel.png", "forecast.html", "run.json"}
    # One line per cycle from the watcher; the per-step lines of reading and writing stay quiet without -v.
    lines = [r.getMessage() for r in caplog.records if r.name == "diffcast.streaming" and " written: " in r.getMessage()]
    assert [m.split()[0] for m in lines] == ["2016-07-11T12:10Z", "2016-07-11T12:15Z", "2016-07-11T12:20Z"]
    assert all("3 file(s)" in m and " s)" in m for m in lines)
    assert not [r for r in caplog.records if r.name.startswith(("diffcast.pipeline", "diffcast.writers"))]
    assert "3 cycle(s), 3 nowcast(s) written" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


def test_gap_is_reported_and_skipped_late_file_fills_it(tmp_path, staging, caplog):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 1, 2, 3)
    w = _watcher(watch, out)
    caplog.set_level(logging.INFO, logger="diffcast.streaming")
    assert [c.status for c in w.poll()] == ["written"]
    assert w.poll() == []  # nothing new: no cycle, no log line
    _arrive(staging, watch, 5)  # 12:20 missing
    (c,) = w.poll()
    assert c.status == "missing" and c.analysis_time == T0 + timedelta(minutes=25)
    assert "missing input frame(s) 12:20 (1 of 3, 5 min apart)" in c.message
    assert w.poll() == []  # reported once, not every poll
    _arrive(staging, watch, 6)  # 12:30 needs 12:20 too: a new cycle, skipped as well
    assert [c.status for c in w.poll()] == ["missing"]
    _arrive(staging, watch, 4)  # the late 12:20 completes the newest window
    (c,) = w.poll()
    assert c.status == "written" and c.output == out / _out(6)
    assert c.message.endswith("superseded before nowcast: 12:20")  # 12:25 had its (skipped) cycle, 12:20 none
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [_out(3), _out(6)]
    _arrive(staging, watch, 0)  # older than the last nowcast: reported as late, not a cycle
    assert w.poll() == []
    assert any("late file comp_201607111200.h5" in r.getMessage() and "not used" in r.getMessage() for r in caplog.records)
    _arrive(staging, watch, 7)
    (c,) = w.poll()
    assert c.status == "written" and c.output == out / _out(7)
    _no_temp(out)


def test_files_arriving_together_nowcast_the_newest(tmp_path, staging):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2)
    w = _watcher(watch, out)
    w.poll()
    _arrive(staging, watch, 3, 4)
    (c,) = w.poll()
    assert c.output == out / _out(4) and c.message.endswith("superseded before nowcast: 12:15")
    assert not (out / _out(3)).exists()


def test_truncated_newest_file_is_skipped_then_processed_when_complete(tmp_path, staging):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2)
    data = (staging / _name(3)).read_bytes()
    (watch / _name(3)).write_bytes(data[: len(data) // 2])  # still being written
    w = _watcher(watch, out, retries=1)
    cycles = w.poll()
    assert [c.status for c in cycles] == ["unreadable", "written"]
    assert cycles[0].files == [watch / _name(3)] and "retry 1/1" in cycles[0].message
    assert cycles[1].output == out / _out(2)
    assert [c.status for c in w.poll()] == ["unreadable"] and "given up until the file changes" in w.cycles[-1].message
    assert w.poll() == []  # bounded: no more tries while it does not change
    with open(watch / _name(3), "ab") as fh:
        fh.write(data[len(data) // 2 : 3 * len(data) // 4])  # grows: tried again
    assert [c.status for c in w.poll()] == ["unreadable"]
    (watch / _name(3)).write_bytes(data)  # complete
    (c,) = w.poll()
    assert c.status == "written" and c.output == out / _out(3)
    _no_temp(out)


def test_unreadable_radar_field_is_retried_a_bounded_number_of_times(tmp_path, staging):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2, 3)
    with h5py.File(watch / _name(3), "a") as fh:  # time stamp readable, field not
        del fh["dataset1/data1/data"]
    w = _watcher(watch, out, retries=2)
    msgs = [c.message for _ in range(4) for c in w.poll()]
    assert len(msgs) == 3 and all(m.startswith("2016-07-11T12:15Z skipped: cannot read odim radar file") for m in msgs)
    assert ["retry 1/2" in msgs[0], "retry 2/2" in msgs[1], "given up until its files change" in msgs[2]] == [True] * 3
    assert w.cycles[0].analysis_time == T0 + timedelta(minutes=15) and not (out / _out(3)).exists()
    _arrive(staging, watch, 3)  # the complete file replaces it
    (c,) = w.poll()
    assert c.status == "written" and c.output == out / _out(3)
    _no_temp(out)


def test_restart_does_not_recompute_and_removes_stale_temp_folders(tmp_path, staging, capsys):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2)
    assert main(_cli(watch, out, "--once")) == 0
    nc = out / _out(2) / "forecast.nc"
    stamp = nc.stat().st_mtime_ns
    (out / f".{_out(3)}.tmp.abc123").mkdir()  # left by a killed run
    (out / f".{_out(3)}.tmp.abc123" / "forecast.nc").write_bytes(b"partial")
    capsys.readouterr()
    assert main(_cli(watch, out, "--once")) == 0
    assert nc.stat().st_mtime_ns == stamp
    assert "1 cycle(s), 0 nowcast(s) written" in capsys.readouterr().out
    _no_temp(out)
    w = _watcher(watch, out)
    (c,) = w.poll()
    assert c.status == "exists" and "not recomputed" in c.message and w.done == T0 + timedelta(minutes=10)
    _arrive(staging, watch, 3)
    assert [c.status for c in w.poll()] == ["written"]


def test_interrupted_cycle_leaves_no_output(tmp_path, staging, monkeypatch):
    import diffcast.viz.animate as animate

    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(animate, "save_forecast_panel", interrupt)  # Ctrl-C in the middle of writing
    assert main(_cli(watch, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == []


def test_sigterm_stops_the_watcher_cleanly(tmp_path, staging, capsys):
    handler = signal.getsignal(signal.SIGTERM)
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2)

    def stop() -> None:
        _when(lambda: (out / "latest").is_file())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop, daemon=True).start()
    assert main(_cli(watch, out)) == 0  # no --max-cycles: runs until the signal
    assert sorted(p.name for p in out.iterdir()) == [_out(2), "latest"]
    assert "1 cycle(s), 1 nowcast(s) written" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is handler


def test_empty_folder_and_index_errors_do_not_crash(tmp_path, staging):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    w = _watcher(watch, out)
    assert w.poll() == []  # nothing yet
    _arrive(staging, watch, 0, 1, 2)
    shutil.copyfile(staging / _name(2), watch / "copy_of_1210.h5")  # two files with one time stamp
    (c,) = w.poll()
    assert c.status == "error" and "share the time stamp" in c.message
    assert w.poll() == []  # the same problem is logged once
    (watch / "copy_of_1210.h5").unlink()
    assert [c.status for c in w.poll()] == ["written"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--input", "x.h5"], "not allowed with argument"),
        (["--start-frame", "0"], "--start-frame does not apply"),
    ],
)
def test_bad_watch_options_exit_2(tmp_path, capsys, extra, match):
    (tmp_path / "in").mkdir()
    argv = _cli(tmp_path / "in", tmp_path / "out", *extra)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_watch_options_need_watch(tmp_path, capsys):
    rc = main(["nowcast", "--baseline", "persistence", "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--once"])
    assert rc == 2 and "--once applies to --watch DIR only" in capsys.readouterr().err
    rc = main(["nowcast", "--baseline", "persistence", "--input", str(tmp_path), "--out", str(tmp_path / "o"),
               "--keep", "3", "--catch-up"])
    assert rc == 2 and "--keep, --catch-up applies to --watch DIR only" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="watch folder"):
        _watcher(tmp_path / "nope", tmp_path / "o")


def test_catch_up_nowcasts_every_time_in_order_passing_gaps(tmp_path, staging, caplog):
    """--catch-up: a backlog (here 12:00 .. 12:35 with 12:20 missing) is worked off in one run: every time with a
    full window, oldest first, without waiting between cycles; the gap's times are reported and passed."""
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2, 3, 5, 6, 7)
    slept = []
    cycles = _watcher(watch, out, catch_up=True).run(0.05, once=True, sleep=slept.append)
    assert not slept
    assert [(c.status, c.analysis_time) for c in cycles] == [
        ("written", T0 + timedelta(minutes=10)), ("written", T0 + timedelta(minutes=15)),
        ("missing", T0 + timedelta(minutes=25)), ("missing", T0 + timedelta(minutes=30)),
        ("written", T0 + timedelta(minutes=35)),
    ]
    assert "passed (catch-up)" in cycles[2].message and "12:20" in cycles[2].message
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [_out(2), _out(3), _out(7)]
    assert (out / "latest").read_text().strip() == _out(7)
    # a restart continues after the newest output: new files only
    _arrive(staging, watch, 4)  # late 12:20: older than the newest output, not a cycle
    w = _watcher(watch, out, catch_up=True)
    assert w.run(0.05, once=True, sleep=slept.append) == []
    _no_temp(out)


def test_catch_up_waits_for_a_gap_at_the_newest_time_and_stops_at_max_cycles(tmp_path, staging):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2, 3, 4, 6)
    w = _watcher(watch, out, catch_up=True)
    assert [c.analysis_time for c in w.run(0.05, max_cycles=2, sleep=lambda s: None)] == [
        T0 + timedelta(minutes=10), T0 + timedelta(minutes=15)]
    cycles = w.run(0.05, once=True, sleep=lambda s: None)
    assert [(c.status, c.analysis_time) for c in cycles] == [
        ("written", T0 + timedelta(minutes=20)), ("missing", T0 + timedelta(minutes=30))]
    assert "waiting for late files" in cycles[-1].message  # the newest time: a late file may still come
    _arrive(staging, watch, 5)
    assert [(c.status, c.output) for c in w.poll()] == [("written", out / _out(5))]
    assert [(c.status, c.output) for c in w.poll()] == [("written", out / _out(6))]


def test_keep_removes_old_outputs(tmp_path, staging, caplog):
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2, 3, 4, 5)
    caplog.set_level(logging.INFO, logger="diffcast.streaming")
    rc = main(_cli(watch, out, "--catch-up", "--once", "--keep", "2"))
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [_out(4), _out(5)]
    assert (out / "latest").read_text().strip() == _out(5)
    assert any("housekeeping: removed 1 old output folder(s)" in r.getMessage() for r in caplog.records)
    rc = main(_cli(watch, out, "--keep", "0", "--once"))
    assert rc == 2


def test_watch_writes_zarr_with_format_zarr(tmp_path, staging):
    import xarray as xr

    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    _arrive(staging, watch, 0, 1, 2)
    assert main(_cli(watch, out, "--once", "--format", "zarr", "--no-html")) == 0
    folder = out / _out(2)
    assert (folder / "forecast.zarr").is_dir() and not (folder / "forecast.nc").exists()
    with xr.open_zarr(folder / "forecast.zarr") as ds:
        assert ds.forecast.sizes["time"] == 2 and ds.attrs["model"] == "persistence"
    assert "forecast.zarr" in json.loads((folder / "run.json").read_text())["outputs"]
    _no_temp(out)
    with pytest.raises(ValueError, match="unknown output format 'grib'"):
        _watcher(watch, out, output_format="grib")
