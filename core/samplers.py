"""Samplers: small pure functions over a denoiser and a log-SNR grid.

Each takes ``(model, x, logsnrs)`` where ``x`` is the start (pure noise at ``logsnrs[0]``, in the scale of the model's
process), ``logsnrs`` an increasing grid from :mod:`polydiff.core.grids`, and returns the end point. Random draws come
from the explicit ``generator``; arithmetic is in float64 whatever the network's precision. Because every update is
written in terms of ``(alpha, sigma, lambda)`` taken from the model's process, every sampler runs on every process
(VP, VE/EDM, rectified flow) and every parameterisation.

Notation: ``lambda = log(alpha^2/sigma^2)``; DPM-Solver's half log-SNR is ``lambda/2``; ``h = (lambda_s - lambda_t)/2``.
"""

import math
from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.utils import append_dims

Callback = Callable[[int, Tensor, Tensor], None]  # (step index, x, x0_hat)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # draw on the generator's device (CPU by default) so results do not depend on the accelerator
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=torch.float64, device=dev).to(x.device)


def _call(model: Denoiser, x: Tensor, lam: Tensor, cond: Any) -> Tensor:
    return model(x, lam.to(x.device).expand(x.shape[0]), cond).double()


def _scales(model: Denoiser, lam: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    a, s = model.process.alpha_sigma(lam)
    return a.to(x.device), s.to(x.device)


def ddim(
    model: Denoiser,
    x: Tensor,
    logsnrs: Tensor,
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) with stochasticity ``eta``; ``eta = 1`` is DDPM's ancestral sampler.

    ``x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps_hat + c z`` with ``c = eta sigma_s sqrt(1 - e^{lambda_t - lambda_s})``, the
    posterior standard deviation of q(x_s | x_t, x_0) scaled by ``eta``. Invariant to a common rescaling of (alpha, sigma).
    """
    x = x.double()
    for i in range(len(logsnrs) - 1):
        lt, ls = logsnrs[i], logsnrs[i + 1]
        x0 = _call(model, x, lt, cond)
        if callback is not None:
            callback(i, x, x0)
        x = ddim_step(model, x, x0, lt, ls, eta, generator)
    return x


def ddim_step(
    model: Denoiser, x: Tensor, x0: Tensor, lt: Tensor, ls: Tensor, eta: float, generator: torch.Generator | None
) -> Tensor:
    """One DDIM / ancestral step from log-SNR ``lt`` to ``ls`` given the prediction ``x0``."""
    a_t, s_t = _scales(model, lt, x)
    a_s, s_s = _scales(model, ls, x)
    if torch.isinf(ls):
        return x0
    eps = (x - a_t * x0) / s_t
    if eta == 0:
        return a_s * x0 + s_s * eps
    c = eta * s_s * (-torch.expm1(lt - ls)).clamp_min(0).sqrt()
    return a_s * x0 + (s_s**2 - c**2).clamp_min(0).sqrt() * eps + c * _randn_like(x, generator)


def ddpm(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
         callback: Callback | None = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020): each step draws from q(x_s | x_t, x0_hat)."""
    return ddim(model, x, logsnrs, cond, generator, callback, eta=1.0)


def flow_euler(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
               callback: Callback | None = None) -> Tensor:
    """Euler on the flow-matching ODE ``dx/dt = u`` in flow coordinates (Lipman et al. 2022; Liu et al. 2022).

    Any Gaussian process is a rectified flow after ``x_f = x / (alpha + sigma)``, ``t_f = sigma / (alpha + sigma)``; the
    velocity is ``u = (x_f - x0_hat) / t_f``. (Algebraically this is DDIM with eta = 0; the tests check it numerically.)
    """
    x = x.double()
    for i in range(len(logsnrs) - 1):
        lt, ls = logsnrs[i], logsnrs[i + 1]
        x0 = _call(model, x, lt, cond)
        if callback is not None:
            callback(i, x, x0)
        a_t, s_t = _scales(model, lt, x)
        a_s, s_s = _scales(model, ls, x)
        xf, tf, tf_next = x / (a_t + s_t), s_t / (a_t + s_t), s_s / (a_s + s_s)
        u = (xf - x0) / tf
        x = (xf + (tf_next - tf) * u) * (a_s + s_s)
    return x


def _ve_sigma(lam: Tensor) -> Tensor:
    """sigma~ = sigma / alpha = exp(-lambda / 2) (0 at lambda = +inf)."""
    return torch.exp(-lam / 2)


def _heun_like(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any, generator: torch.Generator | None,
               callback: Callback | None, second_order: bool, s_churn: float, s_tmin: float, s_tmax: float,
               s_noise: float) -> Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) in VE coordinates ``x~ = x / alpha``.

    The state is carried as ``x~``; each network call converts back with the family's alpha at that log-SNR, so the
    algorithm is exact for every process.
    """
    n = len(logsnrs) - 1
    a0, _ = _scales(model, logsnrs[0], x)
    xv = x.double() / a0
    for i in range(n):
        sig, sig_next = _ve_sigma(logsnrs[i]), _ve_sigma(logsnrs[i + 1])
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= float(sig) <= s_tmax else 0.0
        sig_hat = sig * (1 + gamma)
        if gamma > 0:
            xv = xv + (sig_hat**2 - sig**2).sqrt() * s_noise * _randn_like(xv, generator)
        lam_hat = -2 * torch.log(sig_hat)
        a_hat, _ = _scales(model, lam_hat, xv)
        x0 = _call(model, xv * a_hat, lam_hat, cond)
        if callback is not None:
            callback(i, xv * a_hat, x0)
        d = (xv - x0) / sig_hat
        x_next = xv + (sig_next - sig_hat) * d
        if second_order and sig_next > 0:
            a_next, _ = _scales(model, logsnrs[i + 1], xv)
            x0_next = _call(model, x_next * a_next, logsnrs[i + 1], cond)
            d_next = (x_next - x0_next) / sig_next
            x_next = xv + (sig_next - sig_hat) * (d + d_next) / 2
        xv = x_next
    a_end, _ = _scales(model, logsnrs[-1], xv)
    return xv * a_end


def euler(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
          callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
          s_noise: float = 1.0) -> Tensor:
    """Euler on the probability-flow ODE in ``sigma~`` (k-diffusion's ``sample_euler``), with optional EDM churn."""
    return _heun_like(model, x, logsnrs, cond, generator, callback, False, s_churn, s_tmin, s_tmax, s_noise)


def heun(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
         callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
         s_noise: float = 1.0) -> Tensor:
    """EDM's 2nd-order Heun sampler with churn (Karras et al. 2022, Alg. 2); the step to sigma = 0 is an Euler step.

    With a grid of ``n`` steps ending at zero it costs ``2n - 1`` network evaluations.
    """
    return _heun_like(model, x, logsnrs, cond, generator, callback, True, s_churn, s_tmin, s_tmax, s_noise)


def dpmpp_2m(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
             callback: Callback | None = None, eta: float = 0.0) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), and its SDE form for ``eta > 0``.

    Data-prediction exponential integrator with a multistep second-order correction:
    ``x_s = (sigma_s/sigma_t) e^{-eta h} x_t + alpha_s (1 - e^{-(1+eta) h}) D + sigma_s sqrt(1 - e^{-2 eta h}) z``,
    where ``D = x0 + (x0 - x0_prev) / (2r)``, ``r = h_prev / h`` (midpoint form; k-diffusion's ``sample_dpmpp_2m(_sde)``).
    The first step, and the step to sigma = 0, are first order.
    """
    x = x.double()
    x0_prev, h_prev = None, None
    for i in range(len(logsnrs) - 1):
        lt, ls = logsnrs[i], logsnrs[i + 1]
        x0 = _call(model, x, lt, cond)
        if callback is not None:
            callback(i, x, x0)
        if torch.isinf(ls):
            x = x0
            break
        a_s, s_s = _scales(model, ls, x)
        _, s_t = _scales(model, lt, x)
        h = (ls - lt) / 2
        phi = -torch.expm1(-(1 + eta) * h)
        d = x0
        if x0_prev is not None:
            r = h_prev / h
            d = x0 + (x0 - x0_prev) / (2 * r)
        x = (s_s / s_t) * torch.exp(-eta * h) * x + a_s * phi * d
        if eta > 0:
            x = x + s_s * (-torch.expm1(-2 * eta * h)).sqrt() * _randn_like(x, generator)
        x0_prev, h_prev = x0, h
    return x


def dpmpp_2m_sde(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None,
                 generator: torch.Generator | None = None, callback: Callback | None = None, eta: float = 1.0) -> Tensor:
    """DPM-Solver++(2M) SDE (eta = 1 by default)."""
    return dpmpp_2m(model, x, logsnrs, cond, generator, callback, eta=eta)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "euler": euler,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "flow_euler": flow_euler,
}


def network_evaluations(name: str, steps: int, final_step: str = "zero") -> int:
    """Number of network evaluations (NFE) of a sampler for a grid of ``steps`` intervals."""
    nfe = 2 * steps - (1 if final_step == "zero" else 0) if name == "heun" else steps
    return nfe + (1 if final_step == "denoise" else 0)


__all__ = ["SAMPLERS", "network_evaluations", "append_dims"] + list(SAMPLERS)
