"""Few-step students by distillation (issue 17): the teacher's sub-grids, a toy problem with a known
answer, `diffcast distill` end to end with an exact resume, and a student file that samples in its own
step count wherever a model is used."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from train_plugins import tiny_config

from diffcast.cli import main
from diffcast.config import config_from_dict
from diffcast.models import build_model
from diffcast.models.diffusion.schedules import alphas_cumprod_from_betas, make_betas
from diffcast.training import train
from diffcast.training import trainer as trainer_mod
from diffcast.training.distill import Distiller, student_grid, substep_grid

pytestmark = pytest.mark.usefixtures("one_thread")

ABAR = alphas_cumprod_from_betas(make_betas("sigmoid", 1000))


@pytest.mark.parametrize("t, t_next, r", [(999, -1, 8), (999, 400, 4), (400, 120, 3), (5, 4, 8), (0, -1, 3),
                                          (300, -1, 1), (999, 998, 2)])
def test_substep_grid_runs_from_t_to_t_next_in_at_most_r_steps(t, t_next, r):
    g = substep_grid(ABAR, t, t_next, r)
    assert g[0] == t and g[-1] == t_next
    assert all(a > b for a, b in zip(g[:-1], g[1:]))
    assert 1 <= len(g) - 1 <= r
    if t - t_next >= 4 * r and t_next >= 0:
        assert len(g) - 1 == r  # room for all of them: exactly r steps, uniform in log-SNR
    if t_next < 0 and t > 50 and r > 1:
        assert g[-2] == 0  # to the clean data through the last training step, as the samplers
    if r == 1:
        assert g == [t, t_next]  # one teacher step: the teacher's own DDIM step


def test_substep_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        substep_grid(ABAR, 10, 5, 0)
    with pytest.raises(ValueError, match="down to"):
        substep_grid(ABAR, 10, 10, 2)


# --------------------------------------------------------------------------- toy problem
M, S = 0.2, 0.3  # the residual: i.i.d. N(M, S^2) per pixel, whatever the input


class GaussianDenoiser(nn.Module):
    """The exact v-prediction for x0 ~ N(M, S^2): E[x0 | z_t] = M + a S^2 (z - a M) / (a^2 S^2 + s^2)."""

    def __init__(self, abar: torch.Tensor) -> None:
        super().__init__()
        self.abar = abar

    def forward(self, z, t, cond, ctx, idx):
        ab = self.abar[t].float().view(-1, *([1] * (z.ndim - 1)))
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x0 = M + a * S**2 * (z - a * M) / (a**2 * S**2 + s**2)
        eps = (z - a * x0) / s
        return a * eps - s * x0


def _gaussian_models(steps: int):
    mcfg = {"type": "diffcast", "t_in": 2, "t_out": 2, "channels": 1, "height": 8, "width": 8,
            "backbone": {"name": "persistence"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4,
                          "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 3, "sampler": "ddim",
                          "sampling_steps": steps, "timestep_spacing": "logsnr_trailing"}}
    torch.manual_seed(0)
    teacher = build_model(mcfg)
    teacher.model = GaussianDenoiser(teacher.alphas_cumprod)
    student = build_model(mcfg)
    return teacher, student


def _toy_batch(n: int, gen: torch.Generator):
    x_in = torch.full((n, 2, 1, 8, 8), 0.5)  # persistence: mu = 0.5, so the residual is 2 y - 1
    y = 0.5 + 0.5 * (M + S * torch.randn(n, 2, 1, 8, 8, generator=gen))
    return x_in, y


@pytest.mark.parametrize("steps", [1, 2])
def test_student_matches_a_known_target_distribution(steps):
    """Residuals N(0.2, 0.3^2) and the exact teacher: the teacher's own 1- or 2-step DDIM collapses the
    spread (std 0.00 / 0.13), the distilled student samples the target's mean and variance."""
    teacher, student = _gaussian_models(steps)
    distiller = Distiller(student, teacher, steps=steps, substeps=16, solver="unipc_3")
    assert distiller.grid == student_grid(student, steps) and distiller.grid[-1] == -1
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(150 if steps == 1 else 300):  # two regimes to learn for two steps
        x_in, y = _toy_batch(8, gen)
        loss = distiller.loss(x_in, y, generator=gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_in = torch.full((1, 2, 1, 8, 8), 0.5)
    g = torch.Generator().manual_seed(1)
    r = student.eval().sample(x_in, members=64, generator=g).residual
    assert abs(r.mean().item() - M) < 0.03 and abs(r.std().item() - S) < 0.03, (r.mean(), r.std())
    naive = teacher.sample(x_in, members=64, steps=steps, generator=torch.Generator().manual_seed(1)).residual
    assert abs(naive.std().item() - S) > 0.1  # what distillation fixes
    exact = teacher.sample(x_in, members=64, sampler="unipc_3", steps=20, generator=torch.Generator().manual_seed(1))
    assert abs(exact.residual.std().item() - S) < 0.03  # and the teacher itself, given steps, is right


# --------------------------------------------------------------------------- the command
def _teacher_run(tmp_path, **sections):
    cfg = config_from_dict(tiny_config(**sections,
        model={"type": "diffcast", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
               "backbone": {"name": "persistence"},
               "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4,
                             "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 3, "sampling_steps": 4,
                             "train_segments": "random"}},
        train={"max_steps": 2, "val_every": 0, "ckpt_every": 2}))
    train(cfg, tmp_path / "teacher", progress=False)
    return tmp_path / "teacher"


class _StopAfter(trainer_mod._StopFlag):
    """Acts as if SIGTERM arrived during update 3."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    @property
    def requested(self):
        self.reads += 1
        return self.reads >= 3

    @requested.setter
    def requested(self, value):
        pass


def test_distill_command_trains_a_student_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    teacher = _teacher_run(tmp_path)
    args = ["distill", "--from", str(teacher), "--steps", "2", "--substeps", "3", "--no-progress",
            "--set", "train.max_steps=5", "--set", "train.ckpt_every=0", "--set", "train.val_every=0"]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    with monkeypatch.context() as m:
        m.setattr(trainer_mod, "_StopFlag", _StopAfter)
        assert main([*args, "--out", str(tmp_path / "run")]) == 130
    assert main(["distill", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0
    last = "checkpoints/step_00000005"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(tmp_path / "run" / last / name)), load_file(str(tmp_path / "ref" / last / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # the student learned (not a copy of the teacher), only in the denoiser and the context encoder
    t = load_file(str(teacher / "checkpoints" / "step_00000002" / "ema.safetensors"))
    s = load_file(str(tmp_path / "ref" / last / "model.safetensors"))
    assert s.keys() == t.keys() and any(not torch.equal(s[k], t[k]) for k in s)
    import csv

    with open(tmp_path / "ref" / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "distill" in rows[0] and all(float(r["loss"]) > 0 for r in rows)


def test_student_file_samples_with_its_stored_step_count(tmp_path):
    from diffcast.inference import Nowcaster

    teacher = _teacher_run(tmp_path)
    assert main(["distill", "--from", str(teacher), "--steps", "2", "--no-progress", "--set", "train.max_steps=1",
                 "--set", "train.val_every=0", "--out", str(tmp_path / "s")]) == 0
    nc = Nowcaster.from_checkpoint(tmp_path / "s")
    model = nc.model
    assert (model.sampler_name, model.sampling_steps, model.eta) == ("ddim", 2, 0.0)
    assert nc.config["train"]["distill"]["steps"] == 2
    calls = []
    model.model.register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(1, 3, 1, 32, 32)
    out = model.sample(x, members=3, generator=torch.Generator().manual_seed(0))
    assert out.forecast.shape == (3, 1, 4, 1, 32, 32)
    assert len(calls) == 2 * model.n_segments  # K calls per segment (members batched)


def test_distill_refuses_what_it_cannot_do(tmp_path, capsys):
    cfg = config_from_dict(tiny_config(train={"max_steps": 1, "val_every": 0, "ckpt_every": 1}))
    train(cfg, tmp_path / "bb", progress=False)  # a backbone alone: nothing to distil
    assert main(["distill", "--from", str(tmp_path / "bb"), "--steps", "2", "--out", str(tmp_path / "x")]) == 2
    assert "only DiffCast models" in capsys.readouterr().err
    assert main(["distill", "--from", str(tmp_path / "bb"), "--steps", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--steps must be an integer from 1 to 64" in capsys.readouterr().err
    assert main(["distill", "--steps", "2", "--out", str(tmp_path / "x")]) == 2
    assert "give --from MODEL" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_sampler_set_grid_steps_through_an_interval():
    from diffcast.sampling import SAMPLERS

    smp = SAMPLERS.build("unipc_3", alphas_cumprod=ABAR, prediction_type="v")
    smp.set_grid([999, 700, 500], final=300)
    assert smp.timesteps.tolist() == [999, 700, 500] and smp._prev == [700, 500, 300]
    for bad in ([500, 700], [1000], []):
        with pytest.raises(ValueError, match="decrease strictly"):
            smp.set_grid(bad, final=-1)
    with pytest.raises(ValueError, match="decrease strictly"):
        smp.set_grid([500, 400], final=400)


def test_bench_quality_scores_students_against_their_teacher(tmp_path, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_quality.py"
    spec = importlib.util.spec_from_file_location("diffcast_bench_quality", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "REFERENCE", ("ddim", 20))  # DDIM-250's role at a test's cost
    # synthetic storms: a dataset that the evaluation builds by name, at the model's frame size
    teacher = _teacher_run(tmp_path, data={"name": "synthetic", "kwargs": {"size": 32, "num_sequences": 8},
                                           "val_limit": 2})
    assert main(["distill", "--from", str(teacher), "--steps", "1", "--no-progress", "--set", "train.max_steps=1",
                 "--set", "train.val_every=0", "--out", str(tmp_path / "s1")]) == 0
    rows = bench.evaluate_grid(teacher, grid={"unipc_3": (4,)}, members=3, limit=2, batch_size=2,
                               students=[tmp_path / "s1"], split="val")
    table = [r for r in rows if "sampler" in r]
    assert [(r["sampler"], r["steps"]) for r in table] == [("ddim", 20), ("unipc_3", 4), ("student:ddim", 1)]
    student = table[-1]
    assert student["denoiser_calls_per_segment"] == 1 and student["student"] == str(tmp_path / "s1")
    # against the teacher's own default setting (its config: unipc_3, 4 steps), as issue 17's target reads
    assert student["vs_teacher"]["teacher"] == "unipc_3:4"
    rel = (student["crps"] - table[1]["crps"]) / table[1]["crps"]
    assert student["vs_teacher"]["crps"] == pytest.approx(rel, abs=1e-4)
    assert isinstance(student["student_target"], bool)
    for r in table:
        assert r["rank_flatness"] >= 0 and r["spread_skill_ratio"] > 0 and r["seconds_per_forecast"] > 0
    choice = next(r for r in rows if "choice" in r)
    assert choice["choice"]["sampler"] != "student:ddim"  # students are not sampler settings of the teacher
    md = bench.markdown(rows)
    assert "student:ddim (target vs teacher:" in md and "spread/skill" in md


def test_model_spec_with_a_sampler():
    from diffcast.skill import split_model_spec

    assert split_model_spec("runs/x") == ("runs/x", {})
    assert split_model_spec("radar_diffcast_extrapolation@ddim:250") == ("radar_diffcast_extrapolation",
                                                                          {"sampler": "ddim", "steps": 250})
    assert split_model_spec("m@unipc_3:10:bf16") == ("m", {"sampler": "unipc_3", "steps": 10, "autocast_dtype": "bf16"})
    assert split_model_spec("m@BF16") == ("m", {"autocast_dtype": "bf16"})
    assert split_model_spec("m@fp32") == ("m", {"autocast_dtype": None})
    for bad in ("m@ddim", "m@ddim:bf16", "m@ddim:10:fp8", "m@:10", "m@"):
        with pytest.raises(ValueError, match="sampler:steps"):
            split_model_spec(bad)


def test_student_grid_ends_above_the_clean_data():
    """A 2-step student on the plain logsnr grid would step 999 -> 0 -> clean (its second call wasted); the
    students' logsnr_trailing grid puts the second step half-way in log-SNR."""
    from diffcast.sampling.base import respace

    assert respace("logsnr", 1000, 2, ABAR)[0] == [999, 0]
    ts, prev = respace("logsnr_trailing", 1000, 2, ABAR)
    assert ts[0] == 999 and 300 < ts[1] < 800 and prev == [ts[1], -1]
    ls = 0.5 * (torch.log1p(-ABAR) - torch.log(ABAR))
    ts4, _ = respace("logsnr_trailing", 1000, 4, ABAR)
    gaps = [float(ls[a] - ls[b]) for a, b in zip(ts4[1:-1], ts4[2:])]
    assert max(gaps) - min(gaps) < 0.05 * max(gaps)  # uniform in log-SNR below the capped top


def test_student_and_teacher_must_share_the_residual_scale():
    teacher, _ = _gaussian_models(1)
    mcfg = {"type": "diffcast", "t_in": 2, "t_out": 2, "channels": 1, "height": 8, "width": 8,
            "backbone": {"name": "persistence"},
            "diffusion": {"preset": "tiny", "dim": 8, "dim_mults": [1, 2], "segment": 2, "groups": 4,
                          "attn_heads": 1, "attn_dim_head": 8, "ta_kernel": 3, "residual_scale": [0.1, 0.2]}}
    with pytest.raises(ValueError, match="share model.diffusion.residual_scale"):
        Distiller(build_model(mcfg), teacher, steps=1)
    scaled_teacher = build_model(mcfg)
    Distiller(build_model(mcfg), scaled_teacher, steps=1)  # the same scale: accepted
