"""One writer per run folder and per nowcast output (issue 18, item 6c): the second refuses with one clear
line before any work, and a lock never outlives its process, however that process ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from diffcast.cli import main
from diffcast.utils.io import BusyError, exclusive_lock


def test_second_holder_is_refused_and_the_lock_file_goes_with_the_first(tmp_path):
    lock = tmp_path / ".x.lock"
    with exclusive_lock(lock, "thing X"):
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(BusyError, match=rf"thing X is in use by another process \(pid {os.getpid()};"):
            with exclusive_lock(lock, "thing X"):
                pass
    assert not lock.exists()
    with exclusive_lock(lock, "thing X"):  # free again
        pass


def test_a_killed_holder_leaves_no_lock(tmp_path):
    lock = tmp_path / ".run.lock"
    code = ("import sys, time; from diffcast.utils.io import exclusive_lock\n"
            f"with exclusive_lock({str(lock)!r}, 'x'):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=f"pid {proc.pid}"):
            with exclusive_lock(lock, "x"):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert lock.exists()  # SIGKILL: no clean-up ran, but the kernel dropped the lock
    with exclusive_lock(lock, "x"):
        pass


def test_second_trainer_on_a_run_folder_refuses(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with exclusive_lock(run / ".lock", "run folder"):  # as a running trainer holds it
        rc = main(["train", "--config", "tiny_diffcast_persistence", "--set", "train.max_steps=1", "--out", str(run),
                   "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"run folder {run} is in use by another process (pid {os.getpid()}" in err and "Traceback" not in err
    assert not (run / "checkpoints").exists()


def test_second_nowcast_into_one_output_refuses(tmp_path, capsys):
    inp = tmp_path / "x.npy"
    np.save(inp, np.random.default_rng(0).random((6, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    argv = ["nowcast", "--baseline", "persistence", "--input", str(inp), "--t-out", "2", "--out", str(out), "--no-html"]
    with exclusive_lock(tmp_path / ".out.lock", "output"):  # another nowcast is writing out/
        t0 = time.perf_counter()
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"output {out} is in use by another process" in err and time.perf_counter() - t0 < 30
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp." in p.name]
    assert main(argv) == 0 and (out / "forecast.nc").is_file()
    assert not (tmp_path / ".out.lock").exists()
