"""End-to-end evaluation: library loop with in-test models and data, the CLI on synthetic storms."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from diffcast.data.transforms import SYNTHETIC_META
from diffcast.evaluation import _gather_evaluator, evaluate, markdown_table, write_outputs
from diffcast.metrics import Evaluator


class TinySeqs(Dataset):
    """Blobs drifting right by one pixel per frame: (T, 1, H, W) in [0, 1]."""

    meta = SYNTHETIC_META

    def __init__(self, n=5, t=6, size=24):
        yy, xx = np.mgrid[0:size, 0:size]
        self.items = []
        rng = np.random.default_rng(0)
        for _ in range(n):
            cy, cx = rng.uniform(6, size - 6, 2)
            frames = [np.exp(-((yy - cy) ** 2 + (xx - cx - k) ** 2) / 20.0) for k in range(t)]
            self.items.append(torch.tensor(np.stack(frames)[:, None], dtype=torch.float32))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class Fake:
    """Nowcaster-like test double: persistence, an ideal shifter, or a noisy ensemble."""

    def __init__(self, name, kind, t_in=2, t_out=4):
        self.name, self.kind, self.t_in, self.t_out = name, kind, t_in, t_out
        self.is_probabilistic = kind == "ensemble"
        self.model = torch.nn.Identity()
        self.calls = []

    def predict(self, x_in, members=1, seed=None, **kw):
        self.calls.append((x_in.shape[0], members, seed, kw))
        last = x_in[:, -1:]
        if self.kind == "persistence":
            fc = last.expand(-1, self.t_out, -1, -1, -1).unsqueeze(0)
        else:
            fc = torch.stack([torch.roll(last[:, 0], k + 1, dims=-1) for k in range(self.t_out)], 1).unsqueeze(0)
        if self.is_probabilistic:
            g = torch.Generator().manual_seed(seed)
            fc = (fc + 0.05 * torch.randn(members, *fc.shape[1:], generator=g)).clamp(0, 1)
        return SimpleNamespace(forecast=fc)


def test_library_evaluate_and_outputs(tmp_path):
    ds = TinySeqs()
    models = [Fake("persistence", "persistence"), Fake("shift", "shift"), Fake("ens", "ensemble")]
    res = evaluate(models, ds, members=3, batch_size=2, limit=4, seed=7, fss_scales=(3,), progress=False,
                   sample_kwargs={"steps": 5})
    assert set(res) == {"persistence", "shift", "ens"}
    assert res["shift"]["n_samples"] == 4 and res["ens"]["members"] == 3 and res["persistence"]["members"] == 1
    assert res["shift"]["mse"] < res["persistence"]["mse"]
    assert res["shift"]["csi_m"] > res["persistence"]["csi_m"]
    assert res["shift"]["lead_time_min"] == [5.0, 10.0, 15.0, 20.0]
    # batch seeds are seed + first index; sampler options only go to probabilistic models
    assert [c[2] for c in models[2].calls] == [7, 9] and models[2].calls[0][3] == {"steps": 5}
    assert models[0].calls[0][3] == {}
    files = write_outputs(res, tmp_path / "out", meta=SYNTHETIC_META, run_info={"seed": 7})
    for key in ("metrics", "csv", "table", "csi_plot", "hss_plot", "rank_plot", "reliability_plot"):
        assert files[key].is_file() and files[key].stat().st_size > 0, key
    payload = json.loads(files["metrics"].read_text())
    assert payload["run"] == {"seed": 7} and payload["dataset"]["name"] == "synthetic"
    assert payload["models"]["ens"]["crps_fair"] > 0
    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == 3 * 4 and rows[0]["model"] == "persistence" and rows[0]["lead"] == "1"
    assert float(rows[4]["csi_16"]) == pytest.approx(res["shift"]["csi_by_lead"]["16"][0])
    table = files["table"].read_text()
    assert "| Model | CSI-M ↑ | CSI-pool4 ↑ | CSI-pool16 ↑ | HSS ↑ | SSIM ↑ | LPIPS ↓ | CRPS ↓" in table
    assert "ens (x3)" in table and "LPIPS skipped (all models)" in table
    assert f"**{res['shift']['csi_m']:.4f}**" in table


def test_sharded_evaluation_merges_exactly():
    """Two 'processes' each score half of the batches; gathering their states equals one pass."""
    ds = TinySeqs(n=6)
    full = evaluate([Fake("shift", "shift")], ds, batch_size=2, progress=False)["shift"]

    class FakeAccelerator:
        def __init__(self, rank, other_states=None):
            self.process_index, self.num_processes, self.device = rank, 2, torch.device("cpu")
            self.other = other_states
            self.is_main_process = rank == 0

        def gather(self, t):
            return t if self.other is None else torch.cat([t, self.other.pop(0)])

    rank1 = []

    class Recorder(FakeAccelerator):
        def gather(self, t):
            rank1.append(t)
            return torch.cat([t, t])  # result unused on this rank

    evaluate([Fake("shift", "shift")], ds, batch_size=2, progress=False, accelerator=Recorder(1))
    merged = evaluate([Fake("shift", "shift")], ds, batch_size=2, progress=False, accelerator=FakeAccelerator(0, rank1))
    merged = merged["shift"]
    assert merged["n_samples"] == full["n_samples"] == 6
    for key in ("csi_m", "hss_m", "csi_pool4_m", "mse", "ssim", "crps", "psnr"):
        assert merged[key] == pytest.approx(full[key], rel=1e-12), key
    assert merged["fss_m"] == pytest.approx(full["fss_m"], rel=1e-12)


def test_gather_is_identity_for_one_process():
    ev = Evaluator((16.0,))
    assert _gather_evaluator(ev, None) is ev
    assert _gather_evaluator(ev, SimpleNamespace(num_processes=1)) is ev


def test_evaluate_rejects_bad_setups():
    ds = TinySeqs()
    with pytest.raises(ValueError, match="no models"):
        evaluate([], ds)
    with pytest.raises(ValueError, match="disagree"):
        evaluate([Fake("a", "shift"), Fake("b", "shift", t_out=3)], ds, progress=False)
    with pytest.raises(ValueError, match="unique"):
        evaluate([Fake("a", "shift"), Fake("a", "persistence")], ds, progress=False)
    with pytest.raises(ValueError, match="cannot split"):
        evaluate([Fake("a", "shift", t_out=10)], ds, progress=False)
    with pytest.raises(ValueError, match="no results"):
        markdown_table({})


def test_cli_persistence_vs_extrapolation_on_synthetic(tmp_path):
    from diffcast.cli import main

    out = tmp_path / "eval"
    rc = main([
        "-q", "evaluate", "--model", "persistence", "--model", "extrapolation", "--data", "synthetic",
        "--size", "64", "--limit", "4", "--batch-size", "2", "--fss-scales", "4", "--no-progress", "--out", str(out),
    ])
    assert rc == 0
    for name in ("metrics.json", "per_lead.csv", "table.md", "csi_by_lead.png", "hss_by_lead.png"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "metrics.json").read_text())
    per, ext = payload["models"]["persistence"], payload["models"]["extrapolation"]
    assert per["n_samples"] == ext["n_samples"] == 4 and per["lead_times"] == 20
    assert ext["mse"] < per["mse"]
    assert ext["csi_m"] > per["csi_m"]
    assert payload["run"]["size"] == [64, 64]
    assert "no LPIPS weights" in per["skipped"]["lpips"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from diffcast.cli import main

    rc = main(["evaluate", "--model", str(tmp_path / "nope"), "--data", "synthetic", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffcast evaluate: error:")
    rc = main(["evaluate", "--model", "persistence", "--data", "images", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--data-root" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_match_one(tmp_path):
    """Real `accelerate launch` (torchrun + gloo on CPU): gathered states equal a single process."""
    import socket
    import subprocess
    import sys

    pytest.importorskip("accelerate")
    script = tmp_path / "diffcast_cli.py"
    script.write_text("from diffcast.cli import main\nraise SystemExit(main())\n")
    args = ["-q", "evaluate", "--model", "persistence", "--data", "synthetic", "--size", "32", "--limit", "6",
            "--batch-size", "2", "--no-progress", "--no-plots", "--fss-scales", "4"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["ACCELERATE_USE_CPU"] = "1"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
           str(script), *args, "--out", str(tmp_path / "two")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), *args, "--out", str(tmp_path / "one")],
                         env={k: v for k, v in env.items() if k != "ACCELERATE_USE_CPU"},
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert two["run"]["processes"] == 2 and single["run"]["processes"] == 1
    a, b = two["models"]["persistence"], single["models"]["persistence"]
    assert a["n_samples"] == b["n_samples"] == 6
    for key in ("csi_m", "hss_m", "csi_pool4_m", "csi_pool16_m", "mse", "ssim", "crps"):
        assert a[key] == pytest.approx(b[key], rel=1e-12), key
    assert a["fss_m"] == pytest.approx(b["fss_m"], rel=1e-9)


@pytest.mark.slow
def test_cli_on_real_sevir_demo_sequences(sevir_demo, tmp_path):
    from diffcast.cli import main

    out = tmp_path / "demo"
    rc = main(["-q", "evaluate", "--model", "persistence", "--model", "extrapolation", "--data", "images",
               "--data-root", str(sevir_demo), "--limit", "2", "--no-progress", "--no-plots", "--out", str(out)])
    assert rc == 0
    models = json.loads((out / "metrics.json").read_text())["models"]
    assert models["persistence"]["n_samples"] == 2
    assert models["extrapolation"]["mse"] < models["persistence"]["mse"]
    assert 0.0 < models["persistence"]["csi_m"] < 1.0
