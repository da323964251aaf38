"""Likelihood of data under a Gaussian diffusion model: negative log-likelihood in nats and bits per dimension.

Both estimators work in the variance-exploding coordinates every process shares, ``x~ = x_t / alpha`` at noise level
``s = sigma / alpha = e^{-lambda/2}``, through the one boundary ``denoise(x_t, logsnr, cond) -> x0_hat``, so they apply
to every process (VP, VE/EDM, flow) and every parameterisation.

* :func:`ode_nll` -- the probability-flow ODE (Song et al. 2021, score_sde, App. D.2): with ``u = ln s``,
  ``dx~/du = x~ - D(x~, s)``, and ``log p_0(x) = log p_T(x~_T) + int_{u_min}^{u_max} div_x~ (x~ - D) du``; the prior at
  ``s_max`` is ``N(0, (s_max^2 + sigma_data^2) I)``. The divergence is exact (one backward pass per dimension, for small
  dimension) or Hutchinson's estimate with Rademacher probes; fixed-step RK4 in ``u``.
* :func:`elbo_nll` -- the continuous-time variational bound (Kingma et al. 2021, VDM, eq. 17, written over log-SNR):
  ``-ELBO = KL(q(x~_{lambda_min} | x) || N(0, e^{-lambda_min} I)) + E[-log N(x; x~_{lambda_max}, e^{-lambda_max} I)]
  + 1/2 int_{lambda_min}^{lambda_max} E ||eps - eps_hat(x~_lambda)||^2 dlambda``, with stratified lambda; an upper bound
  on the NLL, tight for the exact denoiser.

:func:`bits_per_dim` converts nats to bits per dimension, with the uniform-dequantisation offset for discrete data
(``bin_width``: ``2 / 255`` for 8-bit pixels scaled to [-1, 1]).
"""

import math
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser, require_gaussian
from polydiff.core.utils import PolydiffError, append_dims


def _denoise_ve(model: Denoiser, x_ve: Tensor, s: Tensor, cond: Any) -> Tensor:
    """``D(x~, s)`` through the model's own process: ``x_t = alpha x~`` at ``lambda = -2 ln s``."""
    lam = (-2 * torch.log(s)).to(torch.float64).expand(x_ve.shape[0])
    alpha, _ = model.process.alpha_sigma(lam)
    x_t = append_dims(alpha.to(x_ve.device, x_ve.dtype), x_ve.ndim) * x_ve
    return model(x_t, lam.to(x_ve.device), cond).to(x_ve.dtype)


def _divergence(model: Denoiser, x: Tensor, s: Tensor, cond: Any, method: str, probes: Optional[Tensor]
                ) -> tuple[Tensor, Tensor]:
    """``(g, div g)`` for ``g = x~ - D(x~, s)``, per item."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        d = _denoise_ve(model, x, s, cond)
        g = x - d
        dims = x[0].numel()
        if method == "exact":
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            flat_g = g.flatten(1)
            for i in range(dims):
                grad = torch.autograd.grad(flat_g[:, i].sum(), x, retain_graph=i < dims - 1)[0]
                div = div + grad.flatten(1)[:, i]
        else:
            assert probes is not None
            grad = torch.autograd.grad((g * probes).sum(), x)[0]
            div = (grad * probes).flatten(1).sum(1)
    return g.detach(), div.detach()


@torch.no_grad()
def ode_nll(model: Denoiser, x: Tensor, cond: Any = None, sigma_min: float = 1e-3, sigma_max: float = 80.0,
            steps: int = 64, divergence: Literal["exact", "hutchinson"] = "hutchinson",
            generator: Optional[torch.Generator] = None) -> Tensor:
    """Negative log-likelihood in nats ``[B]`` of data ``x`` (in the model's data space) by the probability-flow ODE."""
    require_gaussian(model, "the probability-flow likelihood")
    if divergence not in ("exact", "hutchinson"):
        raise PolydiffError(f"unknown divergence {divergence!r}; choose exact or hutchinson")
    if steps < 1 or not 0 < sigma_min < sigma_max:
        raise PolydiffError(f"need steps >= 1 and 0 < sigma_min < sigma_max (got {steps}, {sigma_min}, {sigma_max})")
    x = x.double()
    probes = None
    if divergence == "hutchinson":  # one fixed Rademacher probe per item for the whole path (score_sde's practice)
        dev = generator.device if generator is not None else "cpu"
        probes = (torch.randint(0, 2, x.shape, generator=generator, device=dev) * 2 - 1).to(x.device, x.dtype)
    u = torch.linspace(math.log(sigma_min), math.log(sigma_max), steps + 1, dtype=torch.float64)
    logdet = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)

    def f(xx: Tensor, uu: Tensor) -> tuple[Tensor, Tensor]:
        return _divergence(model, xx, torch.exp(uu), cond, divergence, probes)

    for i in range(steps):  # classical RK4 on the augmented state (x~, int div)
        h = u[i + 1] - u[i]
        k1, d1 = f(x, u[i])
        k2, d2 = f(x + h / 2 * k1, u[i] + h / 2)
        k3, d3 = f(x + h / 2 * k2, u[i] + h / 2)
        k4, d4 = f(x + h * k3, u[i + 1])
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        logdet = logdet + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    var = sigma_max**2 + float(getattr(model, "sigma_data", 0.0)) ** 2
    dims = x[0].numel()
    prior_nll = 0.5 * (x.flatten(1) ** 2).sum(1) / var + 0.5 * dims * math.log(2 * math.pi * var)
    return prior_nll - logdet


@torch.no_grad()
def elbo_nll(model: Denoiser, x: Tensor, cond: Any = None, logsnr_min: float = -13.0, logsnr_max: float = 13.0,
             num_times: int = 32, generator: Optional[torch.Generator] = None) -> Tensor:
    """``-ELBO`` in nats ``[B]`` (an upper bound on the NLL) of data ``x``, with ``num_times`` stratified log-SNRs."""
    require_gaussian(model, "the ELBO")
    if not logsnr_min < logsnr_max or num_times < 1:
        raise PolydiffError(f"need logsnr_min < logsnr_max and num_times >= 1 (got {logsnr_min}, {logsnr_max}, "
                            f"{num_times})")
    x = x.double()
    n, dims = x.shape[0], x[0].numel()
    dev = generator.device if generator is not None else "cpu"
    prior = 0.5 * (x.flatten(1) ** 2).sum(1) * math.exp(logsnr_min)
    recon = torch.full((n,), 0.5 * dims * (math.log(2 * math.pi) - logsnr_max + 1.0), dtype=torch.float64,
                       device=x.device)
    width = logsnr_max - logsnr_min
    diffusion = torch.zeros(n, dtype=torch.float64, device=x.device)
    for j in range(num_times):
        u = (j + torch.rand(n, generator=generator, dtype=torch.float64, device=dev)) / num_times
        lam = (logsnr_min + width * u).to(x.device)
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=dev).to(x.device)
        s = append_dims(torch.exp(-lam / 2), x.ndim)
        x_ve = x + s * eps
        alpha, _ = model.process.alpha_sigma(lam)
        d = model(append_dims(alpha, x.ndim) * x_ve, lam, cond).double()
        eps_hat = (x_ve - d) / s
        diffusion = diffusion + 0.5 * width * ((eps - eps_hat) ** 2).flatten(1).sum(1) / num_times
    return prior + recon + diffusion


def bits_per_dim(nll_nats: Tensor, dims: int, bin_width: Optional[float] = None) -> Tensor:
    """Bits per dimension of NLLs in nats; with ``bin_width`` the density is that of uniformly dequantised discrete
    data, and ``-log2 P(bin) ~ (nll - dims ln(bin_width)) / ln 2`` is what is reported."""
    offset = -dims * math.log(bin_width) if bin_width else 0.0
    return (nll_nats + offset) / (dims * math.log(2))
