"""UniPC multistep predictor-corrector (Zhao et al. 2023, arXiv:2302.04867), data-prediction form.

The network output (v, eps or x0) is turned into ``x0_hat`` through the
schedule (as in :mod:`.dpm_solver`), so any trained DiffCast model can use it.
One model evaluation per step; the variant is ``B(h) = exp(h) - 1`` ("bh2", the
paper's recommended choice for few steps), in the "UniPC with DPM-Solver++
style" (data prediction) form.

With ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``,
``lambda = log(alpha / sigma)``, ``h = lambda_t - lambda_s0`` and
``m_i = x0_hat`` at the earlier points ``s_i`` (newest first), the predictor
UniP-p (UniPC eq. 8 / algorithm 2, with ``hh = -h``)::

    x_t = sigma_t / sigma_s0 x_s0 - alpha_t (e^hh - 1) m_0 - alpha_t B(h) sum_k rho_k D_k
    D_k = (m_k - m_0) / r_k,   r_k = (lambda_{s_k} - lambda_s0) / h

with ``rho`` solving ``R rho = b``, ``R[i, k] = r_k ** i`` and
``b_i = i! phi_{i+1}(hh) / B(h)`` (``phi`` the exponential-integrator phi
functions, ``h phi_1(hh) = e^hh - 1``); for ``p = 2`` the predictor uses the
paper's simplified ``rho = 1/2``. After every new evaluation at ``t`` the
corrector UniC-p re-does the previous step including the new ``x0_hat`` (a
difference with ``r = 1``), raising the order of accuracy by one at no extra
model evaluation::

    x_t^c = sigma_t / sigma_s0 x_s0^c - alpha_t (e^hh - 1) m_0
            - alpha_t B(h) (sum_k rho_k D_k + rho_p (m_t - m_0))

The corrected sample is where the next predictor step starts; the model is
evaluated at the uncorrected (predicted) sample, as in the paper. The corrector
is applied on every step but the last (there is no evaluation after the last
step), the order is lowered at the start (too little history) and near the end
(``lower_order_final``), and the step onto the clean data (``sigma = 0``)
returns ``x0_hat``. Written from the paper's equations, checked against the
algorithm of diffusers' ``UniPCMultistepScheduler`` (Apache-2.0); not copied.
"""

from __future__ import annotations

import math

import torch

from . import SAMPLERS
from .base import Sampler


def _bh2_coefficients(h: float, rks: list[float], order: int) -> tuple[float, float, list[list[float]], list[float]]:
    """``(e^hh - 1, B(h), R, b)`` of UniPC-bh2 in data prediction (``hh = -h``), in float64.

    ``R`` is ``order x order`` with rows ``rks ** i``; ``rks`` ends with 1.
    """
    hh = -h
    h_phi_1 = math.expm1(hh)  # h phi_1(hh) = e^hh - 1
    b_h = math.expm1(hh)  # bh2: B(h) = e^hh - 1
    h_phi_k = h_phi_1 / hh - 1.0  # h phi_2 recursion: phi_{k+1} = (phi_k - 1/k!) / hh
    factorial = 1
    rows: list[list[float]] = []
    b: list[float] = []
    for i in range(1, order + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, rows, b


def _solve(rows: list[list[float]], b: list[float]) -> list[float]:
    """Solve the small linear system ``rows @ x = b`` in float64."""
    a = torch.tensor(rows, dtype=torch.float64)
    return torch.linalg.solve(a, torch.tensor(b, dtype=torch.float64)).tolist()


class UniPCMultistep(Sampler):
    """UniPC-bh2 multistep predictor-corrector of a given order (1, 2 or 3).

    Parameters
    ----------
    alphas_cumprod : Tensor
        ``(T,)`` training schedule (see :class:`~.base.Sampler`).
    order : {1, 2, 3}
        Order ``p`` of the predictor UniP-p; with the corrector the method is
        of order ``p + 1``. 2 suits conditional models and very few steps,
        3 unconditional sampling with 10-20 steps (UniPC paper, sec. 4).
    use_corrector : bool
        Apply UniC after every model evaluation but the last (default). With
        ``False`` this is the plain multistep UniP predictor.
    lower_order_final : bool
        Lower the order over the last steps (stabler with few steps).
    **kwargs
        ``prediction_type``, ``timestep_spacing``, ``clip_sample``, ``clip_range``.
    """

    name = "unipc_base"

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        order: int = 2,
        use_corrector: bool = True,
        lower_order_final: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(alphas_cumprod, **kwargs)
        if order not in (1, 2, 3):
            raise ValueError(f"UniPC order must be 1, 2 or 3, got {order!r}")
        self.order = order
        self.use_corrector = bool(use_corrector)
        self.lower_order_final = bool(lower_order_final)
        self._reset_state()

    def _reset_state(self) -> None:
        self._history: list[tuple[int, torch.Tensor]] = []  # (timestep, x0_hat), newest first
        self._last_sample: torch.Tensor | None = None  # corrected sample the last predictor started from
        self._this_order = 1

    def _alpha_sigma_lam(self, t: int) -> tuple[float, float, float]:
        a = self.abar(t)
        return math.sqrt(a), math.sqrt(1 - a), 0.5 * (math.log(a) - math.log1p(-a))

    def _update(
        self,
        x: torch.Tensor,
        s0: int,
        t: int,
        order: int,
        history: list[tuple[int, torch.Tensor]],
        m_t: torch.Tensor | None,
    ) -> torch.Tensor:
        """Predictor (``m_t is None``) or corrector step from ``s0`` (``history[0]``) to ``t``."""
        _, sigma_s0, lam_s0 = self._alpha_sigma_lam(s0)
        alpha_t, sigma_t, lam_t = self._alpha_sigma_lam(t)
        h = lam_t - lam_s0
        m0 = history[0][1]
        rks: list[float] = []
        d1s: list[torch.Tensor] = []
        for k in range(1, order):
            s_k, m_k = history[k]
            r_k = (self._alpha_sigma_lam(s_k)[2] - lam_s0) / h
            rks.append(r_k)
            d1s.append((m_k - m0) / r_k)
        rks.append(1.0)
        h_phi_1, b_h, rows, b = _bh2_coefficients(h, rks, order)
        out = (sigma_t / sigma_s0) * x - (alpha_t * h_phi_1) * m0
        if m_t is None:  # UniP
            if not d1s:
                return out
            if order == 2:
                rhos = [0.5]  # the paper's simplified UniP-2 (the h -> 0 limit of b_1)
            else:
                rhos = _solve([r[:-1] for r in rows[:-1]], b[:-1])
            res = sum(rho * d for rho, d in zip(rhos, d1s))
            return out - (alpha_t * b_h) * res
        # UniC
        rhos = [0.5] if order == 1 else _solve(rows, b)
        res = rhos[-1] * (m_t - m0)
        for rho, d in zip(rhos[:-1], d1s):
            res = res + rho * d
        return out - (alpha_t * b_h) * res

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        i = self._next_index(timestep)
        s, t = self._grid[i], self._prev[i]
        # x0_hat from the predicted (uncorrected) sample the model saw
        x0, _ = self.convert_model_output(model_output, s, sample)
        if self.use_corrector and self._last_sample is not None and self._history:
            sample = self._update(self._last_sample, self._history[0][0], s, self._this_order, self._history, x0)
        self._history = ([(s, x0)] + self._history)[:3]
        if t < 0:
            return x0
        order = min(self.order, len(self._history))
        if self.lower_order_final:
            order = min(order, len(self._grid) - i)
        self._this_order = order
        self._last_sample = sample
        return self._update(sample, s, t, order, self._history, None)


@SAMPLERS.register("unipc")
class UniPC2(UniPCMultistep):
    """UniPC-bh2 with a second-order predictor (third order with the corrector)."""

    name = "unipc"

    def __init__(self, alphas_cumprod: torch.Tensor, **kwargs) -> None:
        kwargs.setdefault("order", 2)
        super().__init__(alphas_cumprod, **kwargs)


@SAMPLERS.register("unipc_3")
class UniPC3(UniPCMultistep):
    """UniPC-bh2 with a third-order predictor (fourth order with the corrector)."""

    name = "unipc_3"

    def __init__(self, alphas_cumprod: torch.Tensor, **kwargs) -> None:
        kwargs.setdefault("order", 3)
        super().__init__(alphas_cumprod, **kwargs)
