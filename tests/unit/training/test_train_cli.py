"""``diffcast train`` on the command line (in-process)."""

from __future__ import annotations

import yaml
from train_plugins import tiny_config

from diffcast.cli import main
from diffcast.training import checkpoint as ck


def _cfg_file(tmp_path, **sections):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(**sections)))
    return path


def test_train_then_resume_from_the_command_line(tmp_path, capsys):
    cfg = _cfg_file(tmp_path, train={"max_steps": 2, "val_every": 0})
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--set", "train.ckpt_every=1", "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finished step 2/2" in out and str(run) in out
    assert [s for s, _ in ck.list_checkpoints(run)] == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["ckpt_every"] == 1
    assert main(["train", "--resume", str(run), "--set", "train.max_steps=3", "--no-progress"]) == 0
    assert "finished step 3/3 (1 this session" in capsys.readouterr().out


def test_print_config_and_errors(tmp_path, capsys):
    cfg = _cfg_file(tmp_path)
    assert main(["train", "--config", str(cfg), "--set", "train.lr=0.5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.5 and printed["model"]["backbone"]["name"] == "test_tiny"
    assert main(["train", "--config", str(cfg), "--set", "train.lrr=1", "--out", str(tmp_path / "x")]) == 2
    assert "train.lrr" in capsys.readouterr().err
    assert main(["train", "--config", "no_such_preset", "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--config", str(cfg), "--out", str(blocker / "run")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_nan_guard_exit_code(tmp_path, capsys):
    cfg = _cfg_file(tmp_path, data={"kwargs": {"size": 32, "num_sequences": 4, "poison_index": 0,
                                                "noise": 0.1}}, train={"val_every": 0})
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    assert "non-finite loss" in capsys.readouterr().err
