"""``diffcast train`` and ``diffcast evaluate`` on an mlcast spec store; the no-data mask in the loss and the scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("zarr")

from diffcast.cli import main  # noqa: E402
from diffcast.data import DATASETS  # noqa: E402
from diffcast.data.mlcast import write_spec_store  # noqa: E402
from diffcast.models import build_model  # noqa: E402
from diffcast.training.data import ShardedBatches  # noqa: E402
from diffcast.training.model_io import load_model_file  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN, VAL, TEST = "2020-06-01/2020-06-01T06:00", "2020-06-01T06:05/2020-06-01T09:00", "2020-06-01T09:05/2020-06-02"

MODEL = {
    "type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": 64, "width": 64,
    "backbone": {"name": "persistence"},
    "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4, "attn_heads": 1,
                  "attn_dim_head": 8, "ta_kernel": 3, "train_segments": "random"},
}


def _config(tmp_path, **data_kwargs):
    cfg = {
        "name": "tiny_mlcast", "seed": 0, "model": MODEL,
        "data": {"name": "mlcast", "kwargs": {"size": 64, "t_in": 3, "backbone": "persistence",
                                              "crops_per_window": 4, **data_kwargs},
                 "num_workers": 0, "val_limit": 4},
        "train": {"batch_size": 4, "max_steps": 2, "warmup_steps": 1, "log_every": 1, "val_every": 2,
                  "ckpt_every": 2, "val_batch_size": 4, "val_members": 1, "val_sampler_steps": 2},
        "logging": {"csv": True, "tensorboard": False, "wandb": False},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """96 x 80, 15- then 10- then 5-minute steps, two missing frames, no data in the south-west corner."""
    path = tmp_path_factory.mktemp("mlcast_train") / "rate.zarr"
    return write_spec_store(path, n_frames=150, missing=[40, 90], steps_before=[(15, 6), (10, 6)])


def test_masked_loss_ignores_pixels_without_data():
    torch.manual_seed(0)
    model = build_model(MODEL)
    x_in, y = torch.rand(2, 3, 1, 64, 64), torch.rand(2, 4, 1, 64, 64)
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[..., 20:, :12] = False
    y2 = y.clone()
    y2[~mask] = 1.0 - y2[~mask]  # different values where there are no data

    def loss(target, m=None):
        return model.loss(x_in, target, generator=torch.Generator().manual_seed(1), mask=m)

    for key in ("loss", "mse"):
        torch.testing.assert_close(loss(y, mask)[key], loss(y2, mask)[key])
        assert not torch.allclose(loss(y)[key], loss(y2)[key])  # unmasked, those pixels count
    torch.testing.assert_close(loss(y, torch.ones_like(mask))["loss"], loss(y)["loss"])


def test_train_and_evaluate_on_a_store(tmp_path, store, capsys):
    # partly covered crops in every split: NaN reaches the trainer's loss and validation, and the evaluation
    cfg = _config(tmp_path, min_coverage=0.3, eval_min_coverage=0.3, candidates=64)
    run = tmp_path / "run"
    code = main(["train", "--config", str(cfg), "--data", store, "--train", TRAIN, "--val", VAL,
                 "--out", str(run), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "finished step 2/2" in out
    # the batches trained on held pixels without data (NaN): scored, they would have made the loss NaN
    # and stopped the run with exit status 1
    ds = DATASETS.build("mlcast", store=store, split="train", seq_len=7, train=TRAIN, val=VAL,
                        **yaml.safe_load(cfg.read_text())["data"]["kwargs"])
    used = ShardedBatches(len(ds), 4, 0, group=ds.items_per_window).epoch_indices(0)[:8]
    assert any(bool(torch.isnan(ds[i]).any()) for i in used)
    val = DATASETS.build("mlcast", store=store, split="val", seq_len=7, train=TRAIN, val=VAL,
                         **yaml.safe_load(cfg.read_text())["data"]["kwargs"])
    assert any(bool(torch.isnan(val[i]).any()) for i in range(4))  # validated over the pixels with data
    _, saved, meta = load_model_file(run / "checkpoints" / "best" / "ema.safetensors")
    prov = json.loads(meta["diffcast_data"])
    assert prov["store"] == store and prov["variable"] == "rainfall_flux" and prov["units"] == "kg m-2 h-1"
    assert prov["mlcast_dataset_identifier"] == "XX-DIFFCAST-rate" and prov["mlcast_dataset_version"] == "0.1.0"
    assert prov["splits"] == {"train": [TRAIN], "val": [VAL]}
    assert saved["data"]["kwargs"]["store"] == store and json.loads((run / "data.json").read_text()) == prov
    card = (run / "MODEL_CARD.md").read_text()  # the same provenance in words
    for text in ("dataset: `XX-DIFFCAST-rate`", "dataset version: `0.1.0`", f"store: `{store}`",
                 "variable: `rainfall_flux`", "units: `kg m-2 h-1`", f"train time ranges: `{TRAIN}`",
                 f"val time ranges: `{VAL}`", "2 of 2 updates"):
        assert text in card, text

    ev = tmp_path / "eval"
    code = main(["evaluate", "--model", str(run), "--model", "persistence", "--data", store, "--test", TEST,
                 "--set", "eval_min_coverage=0.3", "--set", "t_in=3", "--set", "candidates=64", "--steps", "2", "--limit", "4", "--no-plots", "--no-progress",
                 "--out", str(ev)])
    assert code == 0, capsys.readouterr().err
    res = json.loads((ev / "metrics.json").read_text())
    assert res["run"]["data"] == "mlcast" and res["run"]["data_provenance"]["splits"] == {"test": [TEST]}
    for name in ("tiny_mlcast", "persistence"):
        scores = res["models"][name] if "models" in res else res[name]
        assert all(v == v for v in (scores["csi_m"], scores["crps"], scores["mse"]))  # finite: no NaN scored
        assert 0.5 < scores["no_data"]["covered_fraction"] < 1  # test crops partly outside coverage, masked
        assert scores["no_data"]["windows_skipped"] == 0 and scores["n_samples"] == 4


def test_nan_observations_are_refused_where_the_dataset_does_not_call_them_no_data():
    from diffcast.evaluation import evaluate
    from diffcast.inference import Nowcaster

    seq = torch.rand(2, 7, 1, 16, 16)
    seq[0, 5, 0, :4, :4] = float("nan")
    from diffcast.data.transforms import RADAR_DBZ_META

    nc = Nowcaster.from_spec("persistence", t_in=3, t_out=4, channels=1, height=16, width=16, meta=RADAR_DBZ_META)
    with pytest.raises(ValueError, match="without data"):
        evaluate([nc], list(seq), meta=RADAR_DBZ_META, progress=False)


def test_store_options_rewrite_a_radar_config(tmp_path, store, capsys):
    assert main(["train", "--config", "radar_diffcast_extrapolation", "--data", store, "--train", "2020",
                 "--val", "2021", "--storage-option", "anon=true", "--print-config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["name"] == "mlcast"
    kw = data["kwargs"]
    assert kw["store"] == store and kw["train"] == "2020" and kw["storage_options"] == {"anon": True}
    assert kw["size"] == 96 and kw["backbone"] == "extrapolation"  # shared crop options kept
    assert "root" not in kw and "split_events" not in kw and "timestep_min" not in kw


def test_bad_store_arguments(tmp_path, store, capsys):
    out = str(tmp_path / "e")
    assert main(["evaluate", "--model", "persistence", "--data", str(tmp_path / "nope.zarr"), "--out", out]) == 2
    assert "neither a registered dataset" in capsys.readouterr().err
    assert main(["evaluate", "--model", "persistence", "--data", store, "--out", out]) == 2
    assert "no time range for the test split" in capsys.readouterr().err
    assert main(["train", "--config", "tiny_convgru", "--test", "2020", "--out", out]) == 2
    assert "apply to a spec store" in capsys.readouterr().err


def test_evaluate_crops_partly_outside_coverage(tmp_path, capsys):
    # 40 x 32 frames, no data in rows 30..39 of columns 0..7: every 32 x 32 crop holds some
    store = write_spec_store(tmp_path / "small.zarr", n_frames=40, shape=(40, 32))
    test = "2020-06-01T01:00/2020-06-02"
    ds = DATASETS.build("mlcast", store=store, split="test", seq_len=7, test=test, size=32, eval_min_coverage=0.5)
    assert all(0 < float(torch.isnan(ds[i]).float().mean()) < 0.5 for i in range(4))
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", "persistence", "--t-in", "3", "--t-out", "4", "--data", store, "--test", test,
                 "--size", "32", "--set", "eval_min_coverage=0.5", "--limit", "4", "--no-plots", "--no-progress",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    scores = json.loads((out / "metrics.json").read_text())["models"]["persistence"]
    assert scores["n_samples"] == 4 and scores["no_data"]["windows_skipped"] == 0
    assert 0.5 < scores["no_data"]["covered_fraction"] < 1
    for key in ("csi_m", "hss_m", "csi_pool4_m", "csi_pool16_m", "mse", "mae", "ssim", "crps"):
        assert np.isfinite(scores[key]), key
    assert 0 < scores["csi_m"] <= 1 and scores["ssim"] > 0
    assert "Pixels without data left out" in (out / "table.md").read_text()
