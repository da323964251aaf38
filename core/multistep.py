"""Linear multistep samplers: Adams-Bashforth steps over the last few predictions, and Adams-Moulton correctors.

* :func:`lms`: k-diffusion's ``sample_lms``: Adams-Bashforth on the probability-flow ODE ``dx~/dsigma~ = (x~ - x0)/sigma~``
  in VE coordinates, with non-uniform steps (the Lagrange polynomial of the last ``order`` derivatives in sigma~,
  integrated exactly over the step).
* :func:`plms`: PNDM's pseudo linear multistep (Liu et al. 2022, eq. 12; diffusers' ``PNDMScheduler`` with
  ``skip_prk_steps``): the DDIM transfer with a fixed-coefficient Adams-Bashforth combination of the last four noise
  predictions, after a Heun-like first step (one extra evaluation).
* :func:`deis` / :func:`deis_pc`: exponential Adams methods in log-SNR. The linear part of the ODE is integrated exactly
  and the prediction (noise or data) is replaced by its Lagrange polynomial in lambda through the last ``order``
  evaluations (Zhang & Chen 2023, DEIS, tAB-DEIS eq. 15 with polynomials in ``log rho = -lambda/2``; Lu et al. 2022,
  DPM-Solver(++) multistep, of which this is the exact-integration form at any order). ``deis_pc`` adds the exponential
  Adams-Moulton corrector: once the next point is evaluated, the step is re-solved with that evaluation as a node (one
  order higher, no extra evaluation: the idea of UniC, Zhao et al. 2023, Sec. 3.2, with exact weights).

Weights are integrals of Lagrange basis polynomials (times ``e^{+-(lambda_s - lambda)}`` for the exponential methods),
computed once per step in float64 by 16-point Gauss-Legendre quadrature: exact for the polynomials, and accurate to
rounding for the exponential kernel over any step of a sampling grid (its Taylor remainder is ``(h/2)^32 / 32!``).
"""

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers import Callback, _call, _final_denoise, _half_lambdas

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)


def lagrange_weights(nodes: list[float], a: float, b: float,
                     kernel: Callable[[np.ndarray], np.ndarray] | None = None) -> list[float]:
    """``w_j = int_a^b kernel(u) L_j(u) du`` for the Lagrange basis ``L_j`` of ``nodes`` (kernel 1 when None)."""
    u = a + (b - a) * (_GL_X + 1) / 2
    w = _GL_W * (b - a) / 2
    if kernel is not None:
        w = w * kernel(u)
    out = []
    for j, uj in enumerate(nodes):
        basis = np.ones_like(u)
        for k, uk in enumerate(nodes):
            if k != j:
                basis *= (u - uk) / (uj - uk)
        out.append(float((w * basis).sum()))
    return out


def _combine(x: Tensor, scale: float, terms: list[tuple[float, Tensor]]) -> Tensor:
    """``scale * x + sum_j c_j f_j`` in as few tensor operations as possible."""
    out = x * scale
    for c, f in terms:
        out.add_(f, alpha=c)
    return out


def lms(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
        callback: Callback | None = None, order: int = 4) -> Tensor:
    """Linear multistep in sigma~ (k-diffusion's ``sample_lms``; Adams-Bashforth with non-uniform steps).

    The state is ``x~ = x / alpha`` with ``sigma~ = sigma / alpha = e^{-lambda/2}``; each step adds
    ``sum_j c_j d_j`` where ``d_j = (x~_j - x0_j) / sigma~_j`` are the last ``order`` derivatives and ``c_j`` the integral
    over ``[sigma~_i, sigma~_{i+1}]`` of their Lagrange basis polynomials in sigma~. The first steps use the orders the
    history allows; the step to sigma = 0 is taken at full order, as k-diffusion does.
    """
    if order < 1:
        raise ValueError(f"lms order must be at least 1, got {order}")
    lam, alpha, _ = _half_lambdas(model, logsnrs)
    sig = [math.exp(-v) for v in lam]
    xv = x.double() / alpha[0]
    ds: list[Tensor] = []
    for i in range(len(logsnrs) - 1):
        x0 = _call(model, xv * alpha[i], logsnrs[i], cond)
        if callback is not None:
            callback(i, xv * alpha[i], x0)
        ds = (ds + [(xv - x0) / sig[i]])[-order:]
        nodes = [sig[i - j] - sig[i] for j in range(len(ds))]  # most recent first, relative to sigma~_i
        coeffs = lagrange_weights(nodes, 0.0, sig[i + 1] - sig[i])
        xv = _combine(xv, 1.0, list(zip(coeffs, reversed(ds))))
    return xv * alpha[-1]


#: PLMS's Adams-Bashforth coefficients on a uniform step index (most recent first)
_PLMS = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def plms(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
         callback: Callback | None = None) -> Tensor:
    """PLMS (Liu et al. 2022, "Pseudo numerical methods for diffusion models", eq. 12; diffusers' PNDM, skip_prk_steps).

    Every step is the DDIM transfer (the paper's phi, eq. 9: DDIM with a given noise prediction) with the noise replaced
    by the Adams-Bashforth combination of the last 1-4 noise predictions, coefficients for equal steps in the grid
    index. The first step is Heun-like: DDIM to the next level, a second evaluation there, the step redone with the mean
    of the two noise predictions. ``n`` steps cost ``n + 1`` evaluations.
    """
    x = x.double()
    lam, alpha, sigma = _half_lambdas(model, logsnrs)
    n = len(logsnrs) - 1

    def transfer(x: Tensor, eps: list[tuple[float, Tensor]], i: int) -> Tensor:
        """DDIM from level i to i + 1 with the noise prediction sum_j c_j eps_j."""
        k = sigma[i + 1] - alpha[i + 1] * sigma[i] / alpha[i]
        return _combine(x, alpha[i + 1] / alpha[i], [(k * c, e) for c, e in eps])

    def noise(x: Tensor, x0: Tensor, i: int) -> Tensor:
        return torch.add(x, x0, alpha=-alpha[i]).div_(sigma[i])

    hist: list[Tensor] = []
    for i in range(n):
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        hist = (hist + [noise(x, x0, i)])[-4:]
        if i == 0 and n > 1:
            x_next = transfer(x, [(1.0, hist[0])], 0)
            eps = [(0.5, hist[0]), (0.5, noise(x_next, _call(model, x_next, logsnrs[1], cond), 1))]
        else:
            eps = list(zip(_PLMS[len(hist)], reversed(hist)))
        x = transfer(x, eps, i)
    return x


def _exp_step(x: Tensor, nodes: list[tuple[float, Tensor]], lam_t: float, lam_s: float, a_t: float, s_t: float,
              a_s: float, s_s: float, prediction: str) -> Tensor:
    """One exponential Adams step from half log-SNR ``lam_t`` to ``lam_s`` (``h = lam_s - lam_t``).

    Data prediction (DPM-Solver++ form): ``x_s = (s_s/s_t) x_t + a_s int_0^h e^{-(h-u)} P(u) du``;
    noise prediction (DPM-Solver / DEIS form): ``x_s = (a_s/a_t) x_t - s_s int_0^h e^{h-u} P(u) du``,
    with ``P`` the Lagrange polynomial through ``nodes`` ((lambda, prediction) pairs) in ``u = lambda - lam_t``.
    """
    h = lam_s - lam_t
    u = [lam - lam_t for lam, _ in nodes]
    if prediction == "x0":
        w = lagrange_weights(u, 0.0, h, lambda v: np.exp(v - h))
        return _combine(x, s_s / s_t, [(a_s * wj, f) for wj, (_, f) in zip(w, nodes)])
    w = lagrange_weights(u, 0.0, h, lambda v: np.exp(h - v))
    return _combine(x, a_s / a_t, [(-s_s * wj, f) for wj, (_, f) in zip(w, nodes)])


def exp_multistep(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None,
                  generator: torch.Generator | None = None, callback: Callback | None = None, order: int = 3,
                  prediction: str = "eps", corrector: bool = False, lower_order_final: bool = True) -> Tensor:
    """Exponential Adams-Bashforth of any order in log-SNR, with an optional exponential Adams-Moulton corrector.

    Args:
        order: number of past evaluations in the predictor's polynomial (warm-up: 1, 2, ... as they become available).
        prediction: ``eps`` (DEIS / DPM-Solver: the noise prediction is interpolated) or ``x0`` (DPM-Solver++).
        corrector: re-solve each step once its end point is evaluated, with that evaluation as an extra node (order + 1
            per step, no extra evaluation); the final step to sigma = 0 keeps the last correction (``_final_denoise``).
        lower_order_final: with fewer than 15 finite steps, the last finite step is first order and the one before at
            most second (diffusers' rule; the largest step-size ratios of a Karras grid are there).
    """
    if order < 1:
        raise ValueError(f"exp_multistep order must be at least 1, got {order}")
    if prediction not in ("eps", "x0"):
        raise ValueError(f"exp_multistep prediction must be 'eps' or 'x0', got {prediction!r}")
    x = x.double()
    lam, alpha, sigma = _half_lambdas(model, logsnrs)
    n = len(logsnrs) - 1
    finite = n - 1 if math.isinf(lam[-1]) else n  # steps that end at a finite noise level
    hist: list[tuple[float, Tensor]] = []  # (half lambda, prediction), most recent last
    prev = None  # (start state, predictor order) of the last step, for the corrector
    for i in range(n):
        x_eval = x
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        f = x0 if prediction == "x0" else (x - alpha[i] * x0) / sigma[i]
        hist = (hist + [(lam[i], f)])[-(order + 1):]
        if corrector and prev is not None:
            x_start, p = prev
            x = _exp_step(x_start, hist[-(p + 1):], lam[i - 1], lam[i], alpha[i - 1], sigma[i - 1], alpha[i], sigma[i],
                          prediction)
        if math.isinf(lam[i + 1]):
            return _final_denoise(x, x_eval, x0, alpha[i])
        p = min(order, len(hist))
        if lower_order_final and finite < 15:
            p = min(p, finite - i)
        prev = (x, p)
        x = _exp_step(x, hist[-p:], lam[i], lam[i + 1], alpha[i], sigma[i], alpha[i + 1], sigma[i + 1], prediction)
    return x


def deis(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
         callback: Callback | None = None) -> Tensor:
    """DEIS, third order (tAB-DEIS in log rho; diffusers' ``DEISMultistepScheduler(solver_order=3)``)."""
    return exp_multistep(model, x, logsnrs, cond, generator, callback, order=3, prediction="eps")


def deis_2(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
           callback: Callback | None = None) -> Tensor:
    """DEIS, second order (diffusers' ``DEISMultistepScheduler(solver_order=2)``)."""
    return exp_multistep(model, x, logsnrs, cond, generator, callback, order=2, prediction="eps")


def deis_pc(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
            callback: Callback | None = None) -> Tensor:
    """DEIS-3 predictor with the exponential Adams-Moulton corrector (fourth order per step, one evaluation per step)."""
    return exp_multistep(model, x, logsnrs, cond, generator, callback, order=3, prediction="eps", corrector=True)
