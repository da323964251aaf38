"""DPM-Solver's singlestep solvers (Lu et al. 2022, "DPM-Solver", Alg. 1 and 2) and its fixed-budget schedule.

Written, as the paper does for VE, in the coordinates ``x~ = x / alpha`` and ``t = lambda / 2 = -log sigma~``, where the
noise-prediction ODE is ``dx~/dt = -e^{-t} eps``; the denoiser is called at ``alpha x~`` with the process's own alpha at
each (also intermediate) log-SNR, so the solver is exact for every process.
"""

import math
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers import Callback, _call, _half_lambdas


def dpm_solver_step(eps_fn, x: Tensor, t: float, t_next: float, order: int, r1: float = 1 / 3,
                    r2: float = 2 / 3) -> Tensor:
    """One DPM-Solver-``order`` step (eqs. 3.7-3.9 / Alg. 1-2 with ``r1 = 1/2`` for order 2, ``1/3, 2/3`` for order 3)
    from ``t`` to ``t_next``; ``eps_fn(x, t)`` is the noise prediction (``order`` evaluations)."""
    h = t_next - t

    def sig(v: float) -> float:
        return math.exp(-v)

    eps = eps_fn(x, t)
    x1 = x - (sig(t_next) * math.expm1(h)) * eps
    if order == 1:
        return x1
    if order == 2:
        s1 = t + h / 2
        eps_1 = eps_fn(x - (sig(s1) * math.expm1(h / 2)) * eps, s1)
        return x1 - (sig(t_next) * math.expm1(h)) * (eps_1 - eps)  # / (2 r1) with r1 = 1/2
    s1, s2 = t + r1 * h, t + r2 * h
    eps_1 = eps_fn(x - (sig(s1) * math.expm1(r1 * h)) * eps, s1)
    u2 = (x - (sig(s2) * math.expm1(r2 * h)) * eps
          - (sig(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1)) * (eps_1 - eps))
    eps_2 = eps_fn(u2, s2)
    return x1 - (sig(t_next) / r2 * (math.expm1(h) / h - 1)) * (eps_2 - eps)


def fast_orders(nfe: int) -> list[int]:
    """DPM-Solver-fast's orders for a budget of ``nfe`` evaluations (Lu et al. 2022, Sec. 3.4): third-order steps,
    with the remainder (or a 2, 1 pair) at the end."""
    m = nfe // 3 + 1
    return [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]


def dpm_fast(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
             callback: Callback | None = None) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, Sec. 3.4; k-diffusion's ``sample_dpm_fast``) within the grid's noise range.

    It places its own steps, uniform in log-SNR between the grid's first and last finite level, and spends the grid's
    budget (one evaluation per interval) on them with :func:`fast_orders`; a grid that ends at sigma = 0 keeps one of
    those evaluations for the final ``x0_hat`` at its last finite level. The grid's interior levels are not used.
    """
    lam, alpha, _ = _half_lambdas(model, logsnrs)
    to_zero = math.isinf(lam[-1])
    t_start, t_end = lam[0], lam[-2] if to_zero else lam[-1]
    nfe = len(logsnrs) - 1 - int(to_zero)
    calls = [0]

    def eps_fn(xv: Tensor, t: float) -> Tensor:
        a = float(model.process.alpha_sigma(torch.tensor(2 * t, dtype=torch.float64))[0])
        x0 = _call(model, xv * a, torch.tensor(2 * t, dtype=torch.float64), cond)
        if callback is not None:
            callback(calls[0], xv * a, x0)
        calls[0] += 1
        return (xv - x0) / math.exp(-t)

    xv = x.double() / alpha[0]
    if nfe > 0:
        orders = fast_orders(nfe)
        ts = torch.linspace(t_start, t_end, len(orders) + 1, dtype=torch.float64).tolist()
        for i, order in enumerate(orders):
            xv = dpm_solver_step(eps_fn, xv, ts[i], ts[i + 1], order)
    if to_zero:  # the final step to sigma = 0: x0_hat at the last finite level
        a = alpha[-2]
        x0 = _call(model, xv * a, logsnrs[-2], cond)
        if callback is not None:
            callback(calls[0], xv * a, x0)
        return x0
    return xv * alpha[-1]
