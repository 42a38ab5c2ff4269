"""The model file format: weights + config in one safetensors file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from diffcast.training.model_io import load_model_file, resolve_model_file, save_model_file


def test_round_trip_with_shared_tensors(tmp_path):
    w = torch.randn(3, 4)
    state = {"a.weight": w, "b.weight": w, "c.bias": torch.zeros(4)}  # a and b alias
    cfg = {"model": {"type": "backbone", "backbone": {"name": "persistence"}}, "data": {"name": "sevir"}}
    path = save_model_file(tmp_path / "m.safetensors", state, cfg, extra={"weights": "ema"})
    loaded, cfg2, meta = load_model_file(path)
    assert cfg2 == cfg and meta["weights"] == "ema"
    assert torch.equal(loaded["a.weight"], w) and torch.equal(loaded["b.weight"], w)


def test_rejects_foreign_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ValueError, match="not a diffcast model file"):
        load_model_file(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_model_file(junk)
    with pytest.raises(FileNotFoundError):
        load_model_file(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="'model' section"):
        save_model_file(tmp_path / "x.safetensors", {}, {"data": {}})


def test_resolve_prefers_ema_and_best(tmp_path):
    cfg = {"model": {}}
    run = tmp_path / "run"
    for step in ("step_00000010", "step_00000020"):
        (run / "checkpoints" / step).mkdir(parents=True)
        save_model_file(run / "checkpoints" / step / "model.safetensors", {}, cfg)
    assert resolve_model_file(run).parent.name == "step_00000020"
    (run / "checkpoints" / "best").mkdir()
    save_model_file(run / "checkpoints" / "best" / "model.safetensors", {}, cfg)
    save_model_file(run / "checkpoints" / "best" / "ema.safetensors", {}, cfg)
    assert resolve_model_file(run) == run / "checkpoints" / "best" / "ema.safetensors"
    with pytest.raises(FileNotFoundError, match="no model weights"):
        resolve_model_file(tmp_path)


def test_nowcaster_uses_metadata_stored_in_file_for_unknown_datasets(tmp_path):
    from diffcast.data.transforms import CIKM_META
    from diffcast.inference import Nowcaster

    mcfg = {"type": "backbone", "t_in": 3, "t_out": 2, "height": 8, "width": 8,
            "backbone": {"name": "persistence"}}
    stored = dict(CIKM_META.as_dict(), name="my_radar", thresholds=[1.0, 2.0])
    path = save_model_file(tmp_path / "m.safetensors", {}, {"model": mcfg, "data": {"name": "my_radar"}},
                           meta=stored)
    nc = Nowcaster.from_checkpoint(path)
    assert nc.meta.name == "my_radar" and nc.meta.thresholds == (1.0, 2.0)
    x = torch.rand(1, 3, 1, 8, 8)
    out = nc.predict(x)
    assert out.forecast.shape == (1, 1, 2, 1, 8, 8)
    assert torch.equal(out.forecast[0, 0, 1], x[0, 2])


def test_build_dataset_accepts_int_or_pair_size():
    from diffcast.evaluation import build_dataset

    for size in (16, (16, 16)):
        ds = build_dataset("synthetic", split="test", seq_len=6, size=size, num_sequences=2)
        assert tuple(ds[0].shape) == (6, 1, 16, 16)


def test_evaluate_cli_rejects_conflicting_sizes(tmp_path, capsys):
    from diffcast.cli import main

    rc = main(["evaluate", "-m", "persistence", "--data", "synthetic", "--size", "16", "--set", "size=32",
               "--t-in", "2", "--t-out", "2", "--limit", "1", "--no-plots", "--no-progress",
               "--out", str(tmp_path / "ev")])
    assert rc == 2
    assert "conflicts" in capsys.readouterr().err
