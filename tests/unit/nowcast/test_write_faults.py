"""Write faults during a nowcast (issue 18, items 6b and 6d): a full disk or Ctrl-C while the files are being
written leaves neither a partial output nor a temporary folder, and says so in one line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np

from diffcast.cli import main


def _input(tmp_path):
    inp = tmp_path / "x.npy"
    np.save(inp, np.random.default_rng(0).random((6, 32, 32)).astype(np.float32))
    return inp


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_full_disk_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    import diffcast.writers.netcdf as netcdf

    def full(path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\0" * 1000)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(netcdf, "write_forecast_netcdf", full)
    out = tmp_path / "out"
    rc = main(["nowcast", "--baseline", "persistence", "--input", str(_input(tmp_path)), "--t-out", "2",
               "--out", str(out), "--no-html"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error: No space left on device" in err and "Traceback" not in err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_full_disk_keeps_an_earlier_output_whole(tmp_path, monkeypatch):
    import diffcast.writers.netcdf as netcdf

    out = tmp_path / "out"
    argv = ["nowcast", "--baseline", "persistence", "--input", str(_input(tmp_path)), "--t-out", "2", "--out", str(out),
            "--no-html"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(netcdf, "write_forecast_netcdf", full)
    assert main(argv) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and _leftovers(tmp_path) == []


def test_ctrl_c_while_writing_leaves_nothing(tmp_path):
    """A real SIGINT to a `diffcast nowcast` process, sent while its NetCDF is half written."""
    out = tmp_path / "out"
    code = (
        "import sys, time\n"
        "import diffcast.writers.netcdf as netcdf\n"
        "def slow(path, *a, **k):\n"
        "    open(path, 'wb').write(b'partial'); print('writing', flush=True); time.sleep(60)\n"
        "netcdf.write_forecast_netcdf = slow\n"
        "from diffcast.cli import main\n"
        f"sys.exit(main(['nowcast', '--baseline', 'persistence', '--input', {str(_input(tmp_path))!r}, '--t-out', '2',"
        f" '--out', {str(out)!r}, '--no-html']))\n"
    )
    # SIGINT back to its default in the child: a test run started in the background of a non-interactive
    # shell (`make test &`) ignores SIGINT, the child would inherit that, and Python then installs no
    # KeyboardInterrupt handler (as for any command run that way)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(".tmp." in p.name for p in tmp_path.iterdir())  # mid-write: the staged folder exists
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and time.perf_counter() - t0 < 30
    assert not out.exists() and _leftovers(tmp_path) == []
