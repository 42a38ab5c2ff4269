"""Several radar products with equal time stamps in one folder: refused with the fix, picked with a pattern."""

from __future__ import annotations

from datetime import datetime

import pytest

from diffcast.cli import main
from diffcast.data.radar import RadarArchive, list_radar_files

pytest.importorskip("h5py")
pytest.importorskip("pysteps")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def mixed(tmp_path, helper_module):
    writer = helper_module("unit/training/test_radar_windows.py")
    folder = tmp_path / "mixed"
    for prefix, seed in (("dbz", 0), ("other", 1)):
        tmp = tmp_path / prefix
        writer.write_odim_archive(tmp, [datetime(2021, 6, 1, 12)], n_frames=6, size=32, seed=seed)
        folder.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            f.rename(folder / f"{prefix}_{f.name}")
    return folder


def test_two_products_need_a_pattern(mixed, tmp_path, capsys):
    with pytest.raises(ValueError, match="pattern=GLOB"):
        list_radar_files(mixed)
    fmt, items = list_radar_files(mixed, pattern="dbz_*")
    assert fmt == "odim" and len(items) == 6 and all(p.name.startswith("dbz_") for _, p in items)
    with pytest.raises(ValueError, match="matches the pattern"):
        list_radar_files(mixed, pattern="nothing_*")
    assert len(RadarArchive(mixed, split="all", seq_len=6, size=None, pattern="other_*")) == 1
    rc = main(["nowcast", "--checkpoint", "persistence", "--input", str(mixed), "--t-in", "3", "--t-out", "2",
               "--out", str(tmp_path / "bad")])
    assert rc == 2 and "--pattern" in capsys.readouterr().err
    rc = main(["nowcast", "--checkpoint", "persistence", "--input", str(mixed), "--pattern", "dbz_*", "--t-in", "3",
               "--t-out", "2", "--out", str(tmp_path / "nc")])
    assert rc == 0 and (tmp_path / "nc" / "forecast.nc").is_file()
    import json

    files = json.loads((tmp_path / "nc" / "run.json").read_text())["input"]["files"]
    assert files and all("dbz_" in f for f in files)
