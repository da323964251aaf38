"""One place that turns a network output into every other quantity, and back.

Prediction targets (``x_t = alpha x_0 + sigma eps``, ``lambda = log(alpha^2/sigma^2)``):

* ``eps``      — the noise (Ho et al. 2020).
* ``x0``       — the clean data.
* ``v``        — ``v = a eps - s x_0`` with ``a = alpha/r``, ``s = sigma/r``, ``r = sqrt(alpha^2 + sigma^2)`` (Salimans & Ho 2022;
  for VP processes ``r = 1``; the normalisation keeps the definition valid for VE and flow processes).
* ``velocity`` — the flow-matching velocity ``u = eps - x_0``: the time derivative of ``x_t / (alpha + sigma)`` with respect to
  ``sigma / (alpha + sigma)``; for rectified flow this is exactly ``dx_t/dt``.
* ``edm``      — EDM preconditioning (Karras et al. 2022, Table 1) written for any ``(alpha, sigma)``: with ``sigma~ = sigma/alpha``,
  ``D = c_skip x~ + c_out F`` where ``x~ = x_t / alpha``. Multiplying through by ``alpha`` keeps every coefficient finite
  when ``alpha -> 0``: ``c_skip x~ = sd^2 alpha x_t / (sigma^2 + alpha^2 sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + alpha^2 sd^2)``.

Every network also receives its input scaled to unit variance, ``c_in = 1 / sqrt(alpha^2 sd^2 + sigma^2)`` (EDM's c_in), and
the noise level ``c_noise = -lambda / 8`` (EDM's ``ln(sigma)/4`` in VE units).

The *implicit weight* of each target (``log_weight``) is the factor by which a plain MSE on that target weights the
eps-MSE: ``|F - F*|^2 = w(lambda) |eps_hat - eps|^2`` (Kingma & Gao 2023, "Understanding diffusion objectives", App. D).
"""

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.processes import LOGSNR_LIMIT
from polydiff.core.utils import PolydiffError, append_dims

Prediction = Literal["eps", "x0", "v", "velocity", "edm"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v", "velocity", "edm")


def check_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise PolydiffError(f"unknown prediction target {kind!r}; choose one of {list(PREDICTIONS)}")
    return kind


def _dims(alpha: Tensor, sigma: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    return append_dims(alpha, ref.ndim), append_dims(sigma, ref.ndim)


def c_in(alpha: Tensor, sigma: Tensor, sigma_data: float) -> Tensor:
    """Input scale that gives the network unit-variance input."""
    return torch.rsqrt(alpha**2 * sigma_data**2 + sigma**2)


def c_noise(logsnr: Tensor) -> Tensor:
    """Noise-level conditioning passed to every network: ``-lambda/8``, finite at both ends of the schedule."""
    return (-logsnr.clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT) / 8).float()


def edm_skip_out(alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """``(c_skip, c_out)`` of EDM preconditioning acting on ``x_t`` directly (c_skip already divided by alpha)."""
    denom = sigma**2 + alpha**2 * sigma_data**2
    return sigma_data**2 * alpha / denom, sigma * sigma_data / denom.sqrt()


def eps_from_x0(x0: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    a, s = _dims(alpha, sigma, x_t)
    return (x_t - a * x0) / s


def x0_from_eps(eps: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    a, s = _dims(alpha, sigma, x_t)
    return (x_t - s * eps) / a


def score_from_x0(x0: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``grad log p(x_t) = -eps / sigma`` (Tweedie)."""
    s = append_dims(sigma, x_t.ndim)
    return -eps_from_x0(x0, x_t, alpha, sigma) / s


def to_x0(kind: str, out: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """The x_0 prediction implied by a network output ``out`` of the given kind (computed in float64)."""
    out, x_t = out.double(), x_t.double()
    a, s = _dims(alpha, sigma, x_t)
    if kind == "x0":
        return out
    if kind == "eps":
        return (x_t - s * out) / a
    if kind == "v":
        r = torch.sqrt(a**2 + s**2)
        return (a / r) * (x_t / r) - (s / r) * out
    if kind == "velocity":
        return (x_t - s * out) / (a + s)
    if kind == "edm":
        skip, cout = edm_skip_out(a, s, sigma_data)
        return skip * x_t + cout * out
    raise PolydiffError(f"unknown prediction target {kind!r}; choose one of {list(PREDICTIONS)}")


def target(kind: str, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """What a network of the given kind should output for ``x_t = alpha x0 + sigma eps`` (float64)."""
    x0, eps = x0.double(), eps.double()
    a, s = _dims(alpha, sigma, x0)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "v":
        r = torch.sqrt(a**2 + s**2)
        return (a / r) * eps - (s / r) * x0
    if kind == "velocity":
        return eps - x0
    if kind == "edm":
        skip, cout = edm_skip_out(a, s, sigma_data)
        return (x0 - skip * (a * x0 + s * eps)) / cout
    raise PolydiffError(f"unknown prediction target {kind!r}; choose one of {list(PREDICTIONS)}")


def implicit_log_weight(kind: str, logsnr: Tensor, sigma_data: float = 1.0) -> Tensor:
    """log of w(lambda) with ``|out - target|^2 = w(lambda) |eps_hat - eps|^2`` for a network of this kind.

    Derivation: at fixed x_t, ``x0_hat - x0 = -(sigma/alpha)(eps_hat - eps)``, so the x0 error carries ``e^{-lambda}``,
    the v error ``1 + e^{-lambda}``, the velocity error ``(1 + e^{-lambda/2})^2``, the EDM F error
    ``(e^{-lambda} + sd^2) / sd^2``.
    """
    lam = logsnr.double()
    if kind == "eps":
        return torch.zeros_like(lam)
    if kind == "x0":
        return -lam
    if kind == "v":
        return F.softplus(-lam)
    if kind == "velocity":
        return 2 * F.softplus(-lam / 2)
    if kind == "edm":
        log_sd2 = 2 * math.log(sigma_data)
        return torch.logaddexp(-lam, torch.full_like(lam, log_sd2)) - log_sd2
    raise PolydiffError(f"unknown prediction target {kind!r}; choose one of {list(PREDICTIONS)}")
