"""Training in subprocesses: SIGKILL + --resume equals an uninterrupted run; two processes under accelerate."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

PLUGINS = Path(__file__).resolve().parents[1] / "unit" / "training"
sys.path.insert(0, str(PLUGINS))
from train_plugins import tiny_config  # noqa: E402

pytestmark = pytest.mark.slow

CLI = "import sys; from diffcast.cli import main; sys.exit(main())"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGINS), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"  # same thread count in every run: same float results
    return env


def _write_config(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(tiny_config(**sections)))
    return path


def _train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, "train", "--no-progress", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _final_weights(run: Path, step: int, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / name))


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    steps = 12
    cfg = _write_config(
        tmp_path / "cfg.yaml",
        data={"kwargs": {"size": 32, "num_sequences": 16, "delay": 0.05}},  # ~0.1 s per step
        train={"max_steps": steps, "ckpt_every": 2, "val_every": 4, "keep_last": 10},
    )
    ref = _train("--config", str(cfg), "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CLI, "train", "--no-progress", "--config", str(cfg),
                             "--out", str(run)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = run / "checkpoints" / "step_00000006"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "checkpoints" / f"step_{steps:08d}").exists()

    resumed = _train("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = _final_weights(run, steps, name), _final_weights(tmp_path / "ref", steps, name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert not list((run / "checkpoints").glob(".tmp-*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_accelerate_launch(tmp_path):
    pytest.importorskip("accelerate")
    script = tmp_path / "diffcast_cli.py"
    script.write_text("from diffcast.cli import main\nraise SystemExit(main())\n")
    steps = 4
    cfg2 = _write_config(tmp_path / "two.yaml", train={"max_steps": steps, "batch_size": 2, "val_every": 2})
    # accelerate's own `--cpu --num_processes 2` needs MPI; torchrun (`--multi_gpu`) with
    # ACCELERATE_USE_CPU=1 gives a gloo process group on a CPU-only machine.
    env = {**_env(), "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
           str(script), "train", "--no-progress", "--config", str(cfg2), "--out", str(tmp_path / "two")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 process(es)" in out.stdout
    two = tmp_path / "two"
    ckpts = sorted(p.name for p in (two / "checkpoints").iterdir())
    assert ckpts == ["best", "step_00000002", "step_00000004"]  # one set of checkpoints, not one per process
    last = two / "checkpoints" / "step_00000004"
    assert (last / "rng_state_0.pt").is_file() and (last / "rng_state_1.pt").is_file()
    r0 = torch.load(last / "rng_state_0.pt", weights_only=True)["torch"]
    r1 = torch.load(last / "rng_state_1.pt", weights_only=True)["torch"]
    assert not torch.equal(r0, r1)  # each process has its own noise stream
    state = yaml.safe_load((last / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["samples_seen"] == steps * 2 * 2

    # the two shards of batch 2 together are the single-process batch of 4: same update
    cfg1 = _write_config(tmp_path / "one.yaml", train={"max_steps": steps, "batch_size": 4, "val_every": 2})
    one = _train("--config", str(cfg1), "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = _final_weights(two, steps, name), _final_weights(tmp_path / "one", steps, name)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_distill_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    """`diffcast distill` (issue 17) is a training run: killed with SIGKILL mid-way, --resume ends bit for bit
    where an uninterrupted distillation ends."""
    model = {"type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
             "backbone": {"name": "persistence"},
             "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4,
                           "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 3, "train_segments": "random"}}
    cfg = _write_config(tmp_path / "teacher.yaml", model=model, data={"kwargs": {"size": 32, "num_sequences": 16,
                                                                                  "delay": 0.05}},
                        train={"max_steps": 2, "val_every": 0, "ckpt_every": 2})
    assert _train("--config", str(cfg), "--out", str(tmp_path / "teacher")).returncode == 0
    steps = 10
    args = ["distill", "--no-progress", "--from", str(tmp_path / "teacher"), "--steps", "2", "--substeps", "2",
            "--set", f"train.max_steps={steps}", "--set", "train.ckpt_every=2", "--set", "train.keep_last=10",
            "--set", "train.val_every=4"]
    ref = subprocess.run([sys.executable, "-c", CLI, *args, "--out", str(tmp_path / "ref")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args, "--out", str(run)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = run / "checkpoints" / "step_00000004"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = subprocess.run([sys.executable, "-c", CLI, "distill", "--no-progress", "--resume", str(run)],
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = _final_weights(run, steps, name), _final_weights(tmp_path / "ref", steps, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_sigkill_at_twenty_random_moments_still_ends_bit_for_bit(tmp_path):
    """Issue 18 item 6a: a run killed with SIGKILL at 20 random moments (between steps, mid-step, and while a
    checkpoint is being written: one is written every step) and resumed each time ends with the weights of an
    uninterrupted run."""
    import random

    steps = 80
    cfg = _write_config(
        tmp_path / "cfg.yaml",
        data={"kwargs": {"size": 32, "num_sequences": 16, "delay": 0.02}},
        train={"max_steps": steps, "ckpt_every": 1, "val_every": 10, "keep_last": 2},
    )
    ref = _train("--config", str(cfg), "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    rng = random.Random(18)
    kills = 0
    first = True
    while True:
        args = ["--config", str(cfg), "--out", str(run)] if first else ["--resume", str(run)]
        proc = subprocess.Popen([sys.executable, "-c", CLI, "train", "--no-progress", *args], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = False
        if kills < 20:
            # wait for the run to be under way (a checkpoint beyond the last one seen), then a random moment
            seen = {p.name for p in (run / "checkpoints").glob("*")} if (run / "checkpoints").exists() else set()
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline:
                now = {p.name for p in (run / "checkpoints").glob("*")} if (run / "checkpoints").exists() else set()
                if now - seen:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                continue
        assert proc.wait(timeout=300) == 0
        if (run / "checkpoints" / f"step_{steps:08d}").exists():
            break
    assert kills == 20
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = _final_weights(run, steps, name), _final_weights(tmp_path / "ref", steps, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert not list((run / "checkpoints").glob(".tmp-*"))
