"""Few-step students by distillation (``diffcast distill``, issue 17).

Method
------
Progressive distillation (Salimans & Ho, ICLR 2022, "Progressive Distillation for
Fast Sampling of Diffusion Models", algorithm 2) in a single phase in which each
student step matches several teacher steps at once, as in TRACT (Berthelot et al.
2023, "TRACT: Denoising Diffusion Models with Transitive Closure Time-Distillation"):

- The student (same architecture, initialised with the teacher's weights) samples
  with deterministic DDIM on a grid of ``K`` timesteps ``t_0 = T - 1 > ... > t_{K-1}``
  uniform in log-SNR (``timestep_spacing: logsnr_trailing``), the last step landing
  on the clean residual.
- A training example is a residual segment ``x`` of real data (teacher forcing, as in
  training the teacher), a student step ``i`` drawn uniformly and
  ``z = alpha_t x + sigma_t eps`` at ``t = t_i``.
- The teacher integrates the probability-flow ODE from ``z`` at ``t_i`` to
  ``t_{i+1}`` with ``substeps`` steps of its own sampler (UniPC-3 for the shipped
  models; uniform in log-SNR, x0 clamped to [-1, 1] as in sampling), giving ``z''``.
  (A first-order teacher is not enough: on a Gaussian toy, DDIM in 16 steps samples a
  standard deviation 14 % too small, and the student learns that bias.) The target is the clean ``x~`` from
  which *one* DDIM step of the student lands on ``z''``:
  ``x~ = (z'' - (sigma'' / sigma) z) / (alpha'' - (sigma'' / sigma) alpha)``; for the
  last step (to the clean residual) ``x~`` is the teacher's final x0.
- The loss is the student's x0 error weighted by ``max(SNR_t, 1)`` (the "truncated
  SNR" weighting of Salimans & Ho, eq. 9), in v-parameterisation for v models.

Why this one: it keeps the teacher's architecture and its deterministic ODE map from
noise to residual (so an ensemble keeps the teacher's spread, which comes from the
initial noise alone), needs neither a discriminator nor a second network (consistency
models need an EMA target and do worse than progressive distillation at 2-4 steps in
Song et al. 2023, table 1), and one phase to any ``K`` costs ``substeps`` teacher
evaluations per example instead of ``log2(N / K)`` separate phases. The backbone and
its output are the teacher's, frozen: only the context encoder and the denoiser learn.

The student is an ordinary model file: its config says ``sampler: ddim``,
``sampling_steps: K``, ``eta: 0`` (so ``nowcast``, ``evaluate`` and
:func:`diffcast.nowcast` sample it in ``K`` steps by default) and ``train.distill``
names the teacher, ``steps`` and ``substeps``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Default teacher DDIM steps per student step.
SUBSTEPS = 8


def _log_sigma(abar: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.log1p(-abar) - torch.log(abar))


def student_grid(model: nn.Module, steps: int) -> list[int]:
    """The student's timesteps ``[t_0, ..., t_{K-1}, -1]`` (``-1`` = clean): DDIM's grid
    for ``steps`` steps with the model's ``timestep_spacing``."""
    from ..sampling.base import respace

    ts, prev = respace(model.timestep_spacing, model.num_timesteps, int(steps), model.alphas_cumprod.cpu())
    return list(ts) + [prev[-1]]


def substep_grid(alphas_cumprod: torch.Tensor, t: int, t_next: int, substeps: int) -> list[int]:
    """Teacher timesteps from ``t`` to ``t_next`` (``-1`` = clean) in at most ``substeps``
    DDIM steps, uniform in log-SNR (from at most EDM's ``sigma_max``, as the ``logsnr``
    spacing), strictly decreasing, both ends included. To the clean data the sub-grid
    ends at ``0`` and then ``-1``, as the samplers' last step."""
    from ..sampling.base import SIGMA_MAX

    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    if not -1 <= t_next < t:
        raise ValueError(f"the teacher steps from t={t} down to t_next={t_next} (>= -1)")
    ls = _log_sigma(alphas_cumprod.double().cpu())
    end = max(t_next, 0)
    n = substeps - 1 if t_next < 0 else substeps  # to the clean data, 0 -> -1 is the last step
    start = min(float(ls[t]), math.log(SIGMA_MAX))
    points: list[int] = []
    if n >= 1:
        for v in (start + torch.linspace(0, 1, n + 1, dtype=torch.float64)[1:] * (float(ls[end]) - start)).tolist():
            points.append(int((ls - v).abs().argmin()))
        points[-1] = end
    out = [t]
    for v in points + ([-1] if t_next < 0 else []):
        if v < out[-1]:
            out.append(v)
    return out


def _x0_eps(objective: str, out: torch.Tensor, z: torch.Tensor, a: torch.Tensor, s: torch.Tensor,
            clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, eps)`` of a network output at noise level ``(alpha, sigma) = (a, s)``; with
    ``clip`` the x0 is clamped to [-1, 1] and eps re-derived from it (as the samplers do)."""
    if objective == "v":
        x0 = a * z - s * out
    elif objective == "eps":
        x0 = (z - s * out) / a
    else:
        x0 = out
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    return x0, (z - a * x0) / s


def _coef(abar: torch.Tensor, t: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t)`` per row, broadcastable to ``shape``; ``t < 0`` is the clean data."""
    ab = torch.where(t < 0, torch.ones_like(t, dtype=abar.dtype), abar[t.clamp(min=0)])
    view = (-1,) + (1,) * (len(shape) - 1)
    return ab.sqrt().float().view(view), (1 - ab).clamp(min=0).sqrt().float().view(view)


class Distiller:
    """The distillation loss of a student against a frozen teacher (see the module docstring).

    Parameters
    ----------
    student, teacher : ResidualDiffusion
        Same schedule and objective; the student is trained, the teacher is not.
    steps : int
        Student sampling steps ``K``.
    substeps : int
        Teacher steps per student step.
    solver : str, optional
        The teacher's sampler for those steps (default: the teacher's own, e.g. ``unipc_3``).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, steps: int, substeps: int = SUBSTEPS,
                 solver: str | None = None) -> None:
        if student.num_timesteps != teacher.num_timesteps or not torch.allclose(
            student.alphas_cumprod.cpu(), teacher.alphas_cumprod.cpu()
        ):
            raise ValueError("student and teacher must share the noise schedule")
        from ..models.diffusion.residual import same_residual_scale

        if not same_residual_scale(getattr(student, "residual_scale", None), getattr(teacher, "residual_scale", None)):
            raise ValueError("student and teacher must share model.diffusion.residual_scale (the student is the "
                             "teacher's config; leave residual_scale as the teacher has it)")
        if student.objective != teacher.objective:
            raise ValueError(f"student objective {student.objective!r} differs from the teacher's {teacher.objective!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.student, self.teacher = student, teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.steps, self.substeps = int(steps), int(substeps)
        # the teacher's own sampler (deterministic: UniPC, DPM-Solver++, DDIM with eta 0) integrates each interval
        from ..sampling import SAMPLERS

        name = solver or teacher.sampler_name
        self.solver = teacher.make_sampler(sampler=name, eta=0.0 if getattr(SAMPLERS.get(name), "accepts_eta", False)
                                           else None)
        if self.solver.stochastic:
            raise ValueError(f"the teacher's sampler {self.solver.name!r} is stochastic; distil with a deterministic "
                             "one (unipc_3, dpmpp_2m, ddim)")
        self.grid = student_grid(student, self.steps)
        abar = student.alphas_cumprod.detach().cpu().double()
        self.subgrids = [substep_grid(abar, a, b, self.substeps) for a, b in zip(self.grid[:-1], self.grid[1:])]

    def teacher_solve(self, z: torch.Tensor, i: int, cond: torch.Tensor, ctx: list[torch.Tensor],
                      idx: torch.Tensor) -> torch.Tensor:
        """The teacher's sampler from ``t_i`` to ``t_{i+1}`` over the sub-grid: the noisy residual
        there (the clean one for the last step)."""
        sub = self.subgrids[i]
        self.solver.set_grid(sub[:-1], final=sub[-1], device=z.device)
        n = z.shape[0]
        for t in self.solver.timesteps:
            tt = torch.full((n,), int(t), device=z.device, dtype=torch.long)
            z = self.solver.step(self.teacher.model(z, tt, cond, ctx, idx), t, z)
        return z

    def loss(self, x_in: torch.Tensor, y_true: torch.Tensor, mu: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Loss terms: ``loss`` (= ``distill``, the weighted x0 error) and ``mse`` (backbone, for monitoring)."""
        st, te = self.student, self.teacher
        if mu is None:
            with torch.no_grad():
                mu = te._backbone_mu(x_in)
        batch = st.training_segments(x_in, y_true, generator, mu.detach())
        x0, cond, idx, rows = batch.x0, batch.cond, batch.idx, batch.rows
        n, dev = x0.shape[0], x0.device
        gdev = generator.device if generator is not None else dev
        step = torch.randint(0, self.steps, (n,), generator=generator, device=gdev).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(dev)
        grid = torch.tensor(self.grid, device=dev)
        t, t_next = grid[step], grid[step + 1]
        abar = st.alphas_cumprod
        a, s = _coef(abar, t, x0.shape)
        z = a * x0 + s * noise
        target = torch.empty_like(x0)
        with torch.no_grad():
            g_ctx, l_ctx = te.context(x_in, mu)
            t_ctx = te.segment_context(g_ctx, l_ctx, idx, rows)
            for i in torch.unique(step).tolist():
                sel = (step == i).nonzero().flatten()
                end = self.teacher_solve(z[sel], i, cond[sel], [c[sel] for c in t_ctx], idx[sel])
                if self.grid[i + 1] < 0:
                    target[sel] = end
                else:
                    a_i, s_i = a[sel], s[sel]
                    a2, s2 = _coef(abar, t_next[sel], end.shape)
                    ratio = s2 / s_i
                    target[sel] = (end - ratio * z[sel]) / (a2 - ratio * a_i)
        out = st.model(z, t, cond, batch.ctx, idx)
        pred, _ = _x0_eps(st.objective, out, z, a, s, clip=False)
        weight = torch.clamp((a / s) ** 2, min=1.0).flatten()
        per_row = (pred - target).pow(2).flatten(1).mean(dim=1)
        l_distill = (weight * per_row).mean()
        return {"loss": l_distill, "distill": l_distill, "mse": torch.nn.functional.mse_loss(mu.detach(), y_true)}


def student_config(teacher_cfg: dict[str, Any], steps: int, substeps: int, teacher_file: str | Path) -> dict[str, Any]:
    """The run config of a student: the teacher's, sampling with DDIM in ``steps`` steps,
    the teacher recorded in ``train.distill``."""
    import copy

    cfg = copy.deepcopy(teacher_cfg)
    model = cfg.setdefault("model", {})
    if model.get("type", "diffcast") != "diffcast":
        raise ValueError(f"only DiffCast models (model.type diffcast) can be distilled; this one is {model.get('type')!r}")
    diff = model.setdefault("diffusion", {})
    # the backbone is the teacher's, frozen (its mu is the teacher's)
    # logsnr_trailing: K points uniform in log-SNR ending above the clean data (the plain logsnr grid ends at
    # t = 0, so its last step would be a wasted call); the backbone is the teacher's, frozen
    diff.update({"sampler": "ddim", "sampling_steps": int(steps), "eta": 0.0, "freeze_backbone": True,
                 "timestep_spacing": "logsnr_trailing"})
    train = cfg.setdefault("train", {})
    train["distill"] = {"teacher": str(teacher_file), "steps": int(steps), "substeps": int(substeps)}
    train.pop("init_backbone", None)
    train.pop("init_from", None)
    return cfg


def check_steps(steps: int) -> int:
    """``steps`` as the number of student steps (1 to 64)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 64:
        raise ValueError(f"--steps must be an integer from 1 to 64, got {steps!r}")
    return steps
