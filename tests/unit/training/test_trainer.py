"""End to end on a tiny model: train, checkpoint, resume (bit for bit), evaluate, and the fault paths."""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_plugins import tiny_config

from diffcast.config import config_from_dict
from diffcast.inference import Nowcaster
from diffcast.training import NonFiniteLossError, train
from diffcast.training import checkpoint as ck
from diffcast.training import trainer as trainer_mod
from diffcast.training.optim import WarmupCosine


def _cfg(**sections):
    return config_from_dict(tiny_config(**sections))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_train_checkpoint_resume_evaluate(tmp_path):
    run = tmp_path / "run"
    s = train(_cfg(logging={"tensorboard": True}), run, progress=False)
    assert (s.steps, s.start_step, s.interrupted, s.num_processes) == (4, 0, False, 1)
    assert s.samples_seen == 8 and s.samples_per_s > 0 and s.final_loss is not None
    ckpts = [p.name for _, p in ck.list_checkpoints(run)]
    assert ckpts == ["step_00000002", "step_00000004"]
    last = run / "checkpoints" / "step_00000004"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_0.pt",
                 "trainer_state.json"):
        assert (last / name).is_file(), name
    for pt in last.glob("*.pt"):  # nothing needs unpickling
        torch.load(pt, weights_only=True)
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["micro_step"] == 4 and state["ema_updates"] == 4
    assert (run / "checkpoints" / "best" / "ema.safetensors").is_file()
    assert s.best_step in (2, 4) and s.best_metric == "mse01" and s.best_score > 0
    assert (run / "config.yaml").is_file() and list((run / "tb").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["best_score"] == s.best_score
    rows = _rows(run / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {"loss", "mse", "lr", "samples_per_s", "grad_norm"} <= set(rows[0])
    assert float(rows[0]["lr"]) == pytest.approx(1e-2)  # warm-up of 1 step reaches lr at once
    val = _rows(run / "val.csv")
    assert [int(r["step"]) for r in val] == [2, 4]
    assert {"csi_m", "csi_pool16_m", "crps", "mse01"} <= set(val[0])
    # EMA differs from the raw weights (decay 0.9) and the model learned something
    assert not torch.equal(_weights(last / "model.safetensors")["net.0.weight"],
                           _weights(last / "ema.safetensors")["net.0.weight"])

    # evaluate: the run folder is a model for the inference API
    nc = Nowcaster.from_checkpoint(run)
    x_in = torch.rand(2, 3, 1, 32, 32)
    out = nc.predict(x_in)
    assert out.forecast.shape == (1, 2, 4, 1, 32, 32) and bool(torch.isfinite(out.forecast).all())
    from diffcast.training.model_io import load_model_file

    _, saved_cfg, metadata = load_model_file(run / "checkpoints" / "best" / "ema.safetensors")
    assert json.loads(metadata["diffcast_meta"])["name"] == "synthetic"  # the dataset's own metadata
    assert saved_cfg["model"] == nc.config["model"] and metadata["weights"] == "ema"

    # resume with a larger budget: continues the log, and the schedule follows the new max_steps
    s2 = train(None, run, resume=True, progress=False, overrides=["train.max_steps=6"])
    assert (s2.start_step, s2.steps) == (4, 6)
    rows = _rows(run / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    expect = 1e-2 * WarmupCosine(1, 6, 1e-6 / 1e-2)(4)  # lr used by step 5 (scheduler index 4)
    assert float(rows[4]["lr"]) == pytest.approx(expect)


class _StopAfter(trainer_mod._StopFlag):
    """Acts as if SIGTERM arrived during update ``n`` (the flag is read once per update)."""

    n = 3

    def __init__(self):
        super().__init__()
        self.reads = 0

    @property
    def requested(self):
        self.reads += 1
        return self.reads >= self.n

    @requested.setter
    def requested(self, value):
        pass


def test_stopped_and_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path, monkeypatch):
    cfg = _cfg(train={"max_steps": 6, "ckpt_every": 0, "val_every": 2})
    ref = train(cfg, tmp_path / "ref", progress=False)
    with monkeypatch.context() as m:
        m.setattr(trainer_mod, "_StopFlag", _StopAfter)
        first = train(cfg, tmp_path / "run", progress=False)
    assert first.interrupted and first.steps == 3
    assert [s for s, _ in ck.list_checkpoints(tmp_path / "run")] == [3]
    second = train(None, tmp_path / "run", resume=True, progress=False)
    assert (second.start_step, second.steps, second.interrupted) == (3, 6, False)
    for name in ("model.safetensors", "ema.safetensors"):
        a = _weights(tmp_path / "run" / "checkpoints" / "step_00000006" / name)
        b = _weights(tmp_path / "ref" / "checkpoints" / "step_00000006" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    opt_a = torch.load(tmp_path / "run" / "checkpoints" / "step_00000006" / "optimizer.pt", weights_only=True)
    opt_b = torch.load(tmp_path / "ref" / "checkpoints" / "step_00000006" / "optimizer.pt", weights_only=True)
    for k, st in opt_a["state"].items():
        assert torch.equal(st["exp_avg_sq"], opt_b["state"][k]["exp_avg_sq"])
    assert second.best_score == ref.best_score and second.best_step == ref.best_step
    log_a, log_b = _rows(tmp_path / "run" / "log.csv"), _rows(tmp_path / "ref" / "log.csv")
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]


def test_grad_accumulation_matches_the_larger_batch(tmp_path):
    big = train(_cfg(train={"max_steps": 2, "val_every": 0}), tmp_path / "big", progress=False)
    acc = train(_cfg(train={"max_steps": 2, "val_every": 0, "batch_size": 1, "grad_accum": 2}), tmp_path / "acc",
                progress=False)
    assert big.samples_seen == acc.samples_seen == 4
    a = _weights(tmp_path / "big" / "checkpoints" / "step_00000002" / "model.safetensors")
    b = _weights(tmp_path / "acc" / "checkpoints" / "step_00000002" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_nan_batch_stops_with_clear_message_and_keeps_last_checkpoint(tmp_path):
    # 16 sequences, batch 2: micro-step 3 (step 3) reads batch 2 of epoch 0; poison an item in it
    from diffcast.training.data import ShardedBatches

    poisoned = ShardedBatches(16, 2, seed=0).epoch_indices(0)[4]
    cfg = _cfg(data={"kwargs": {"size": 32, "num_sequences": 16, "poison_index": poisoned}},
               train={"max_steps": 6, "val_every": 0})
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*step_00000002"):
        train(cfg, run, progress=False)
    assert [s for s, _ in ck.list_checkpoints(run)] == [2]
    w = _weights(run / "checkpoints" / "step_00000002" / "model.safetensors")
    assert all(bool(torch.isfinite(v).all()) for v in w.values())
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_unwritable_output_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("the model was built before the output folder was checked")

    monkeypatch.setattr(trainer_mod, "build_model", boom)
    with pytest.raises(PermissionError, match="cannot write"):
        train(_cfg(), blocker / "run", progress=False)


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 0))
    with pytest.raises(OSError, match="not enough free disk space"):
        train(_cfg(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = trainer_mod.save_model_file
    calls = {"n": 0}

    def flaky(path, *a, **k):
        calls["n"] += 1
        if Path(path).parent.name == ".tmp-step_00000004":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(trainer_mod, "save_model_file", flaky)
    with pytest.raises(OSError, match=r"step_00000004.*previous checkpoint.*step_00000002.*intact"):
        train(_cfg(train={"val_every": 0}), run, progress=False)
    assert [s for s, _ in ck.list_checkpoints(run)] == [2]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    Nowcaster.from_checkpoint(run)  # still loadable


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    from diffcast.training.data import ShardedBatches

    trigger = ShardedBatches(16, 2, seed=0).epoch_indices(0)[4]  # loaded during step 3
    cfg = _cfg(data={"kwargs": {"size": 32, "num_sequences": 16, "signal_at": trigger}},
               train={"max_steps": 50, "ckpt_every": 0, "val_every": 0})
    s = train(cfg, tmp_path / "run", progress=False)
    assert s.interrupted and s.steps == 3
    assert [st for st, _ in ck.list_checkpoints(tmp_path / "run")] == [3]
    assert "--resume" in s.format()


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(_cfg(model={"backbone": {"name": "persistence"}}), tmp_path / "p", progress=False)
    run = tmp_path / "run"
    train(_cfg(train={"max_steps": 2, "val_every": 0}), run, progress=False)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(_cfg(), run, progress=False)
    with pytest.raises(ValueError, match="different 'model' section"):
        train(_cfg(model={"t_out": 5}), run, resume=True, progress=False)
    with pytest.raises(ValueError, match="best_metric"):
        train(_cfg(train={"best_metric": "nope"}), tmp_path / "m", progress=False)
    with pytest.raises(ValueError, match="data.kwargs"):
        train(_cfg(data={"kwargs": {"bogus": 1}}), tmp_path / "k", progress=False)


def test_keep_last_prunes_old_checkpoints(tmp_path):
    train(_cfg(train={"ckpt_every": 1, "keep_last": 2, "val_every": 0}), tmp_path / "run", progress=False)
    assert [s for s, _ in ck.list_checkpoints(tmp_path / "run")] == [3, 4]


def _trained_then_initialised(tmp_path, key):
    """A 2-step run ``src``, then a 1-step run that starts from it through ``train.<key>`` with a learning
    rate too small to move a weight; returns (src, src's EMA weights, the second run's weights)."""
    src = tmp_path / "src"
    train(_cfg(train={"max_steps": 2, "val_every": 0}), src, progress=False)
    dst = tmp_path / "dst"
    train(_cfg(train={"max_steps": 1, "val_every": 0, "ckpt_every": 0, "lr": 1e-12, "min_lr": 0.0,
                      key: str(src)}), dst, progress=False)
    return (src, _weights(src / "checkpoints" / "step_00000002" / "ema.safetensors"),
            _weights(dst / "checkpoints" / "step_00000001" / "model.safetensors"))


def test_init_backbone_loads_trained_weights(tmp_path):
    _, a, b = _trained_then_initialised(tmp_path, "init_backbone")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-9)


def test_init_from_loads_every_weight_for_fine_tuning(tmp_path):
    src, a, b = _trained_then_initialised(tmp_path, "init_from")
    fresh = _weights(tmp_path / "src" / "checkpoints" / "step_00000002" / "model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], fresh[k]) for k in a)  # EMA != last weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="leave train.init_backbone unset"):
        train(_cfg(train={"init_from": str(src), "init_backbone": str(src)}), tmp_path / "both", progress=False)
    with pytest.raises(ValueError, match="do not fit this model"):
        train(_cfg(model={"t_out": 5}, train={"init_from": str(src)}), tmp_path / "other", progress=False)


def test_init_from_keeps_the_residual_scale_of_its_weights(tmp_path):
    """Weights trained on a scaled residual mean nothing at another scale: ``auto`` takes the source's when
    fine-tuning; a different or missing scale is refused."""
    from diffcast.inference import Nowcaster

    def diffcast(scale):
        return {"type": "diffcast", "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 4,
                                                   "residual_scale": scale}}

    src = tmp_path / "src"
    train(_cfg(model=diffcast(0.5), train={"max_steps": 1, "val_every": 0}), src, progress=False)
    dst = tmp_path / "dst"
    train(_cfg(model=diffcast("auto"), train={"max_steps": 1, "val_every": 0, "init_from": str(src)}), dst,
          progress=False)
    torch.testing.assert_close(Nowcaster.from_checkpoint(dst).model.residual_scale, torch.full((4,), 0.5))
    for other, name in ((None, "none"), (0.25, "other")):
        with pytest.raises(ValueError, match="trained with model.diffusion.residual_scale"):
            train(_cfg(model=diffcast(other), train={"init_from": str(src)}), tmp_path / name, progress=False)


def test_bf16_mixed_precision_after_a_full_precision_run(tmp_path):
    full = train(_cfg(train={"val_every": 0}), tmp_path / "fp32", progress=False)
    half = train(_cfg(train={"val_every": 0, "mixed_precision": "bf16"}), tmp_path / "bf16", progress=False)
    assert half.final_loss == pytest.approx(full.final_loss, rel=2e-2)
    assert half.final_loss != full.final_loss  # autocast was active
    w = _weights(tmp_path / "bf16" / "checkpoints" / "step_00000004" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in w.values())  # master weights stay float32


def test_dataloader_workers_do_not_change_the_result(tmp_path):
    train(_cfg(train={"val_every": 0}), tmp_path / "w0", progress=False)
    train(_cfg(train={"val_every": 0}, data={"num_workers": 2, "kwargs": {"size": 32, "num_sequences": 16},
                                             "val_limit": 4}), tmp_path / "w2", progress=False)
    a = _weights(tmp_path / "w0" / "checkpoints" / "step_00000004" / "model.safetensors")
    b = _weights(tmp_path / "w2" / "checkpoints" / "step_00000004" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
