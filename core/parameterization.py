"""One place that turns a network output into every other quantity, and back.

Prediction targets (``x_t = alpha x_0 + sigma eps``, ``lambda = log(alpha^2/sigma^2)``):

* ``eps``      — the noise (Ho et al. 2020).
* ``x0``       — the clean data.
* ``v``        — ``v = a eps - s x_0`` with ``a = alpha/r``, ``s = sigma/r``, ``r = sqrt(alpha^2 + sigma^2)`` (Salimans &
  Ho 2022; for VP processes ``r = 1``; the normalisation keeps the definition valid for VE and flow processes).
* ``velocity`` — the flow-matching velocity ``u = eps - x_0``: the time derivative of ``x_t / (alpha + sigma)`` with
  respect to ``sigma / (alpha + sigma)``; for rectified flow this is exactly ``dx_t/dt``.
* ``edm``      — EDM preconditioning (Karras et al. 2022, Table 1) written for any ``(alpha, sigma)``: with
  ``sigma~ = sigma/alpha``, ``D = c_skip x~ + c_out F`` where ``x~ = x_t / alpha``. Multiplying through by ``alpha`` keeps
  every coefficient finite when ``alpha -> 0``: ``c_skip x~ = sd^2 alpha x_t / (sigma^2 + alpha^2 sd^2)``,
  ``c_out = sigma sd / sqrt(sigma^2 + alpha^2 sd^2)``.

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


class PredictionTarget:
    """What a network predicts. Each target says, once, how its output becomes x0, what it should output for
    ``x_t = alpha x0 + sigma eps``, and its implicit eps-frame weight (``|out - target|^2 = w |eps_hat - eps|^2``).

    ``a`` and ``s`` are alpha and sigma already broadcast to the data's rank; arithmetic is float64.
    """

    name: str = ""

    def to_x0(self, out: Tensor, x_t: Tensor, a: Tensor, s: Tensor, sigma_data: float) -> Tensor:
        raise NotImplementedError

    def target(self, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor, sigma_data: float) -> Tensor:
        raise NotImplementedError

    def log_weight(self, lam: Tensor, sigma_data: float) -> Tensor:
        raise NotImplementedError


class EpsPrediction(PredictionTarget):
    """The noise (Ho et al. 2020): the eps frame itself, weight 1."""

    name = "eps"

    def to_x0(self, out, x_t, a, s, sigma_data):
        return (x_t - s * out) / a

    def target(self, x0, eps, a, s, sigma_data):
        return eps

    def log_weight(self, lam, sigma_data):
        return torch.zeros_like(lam)


class X0Prediction(PredictionTarget):
    """The clean data; ``x0_hat - x0 = -(sigma/alpha)(eps_hat - eps)``, so the error carries ``e^{-lambda}``."""

    name = "x0"

    def to_x0(self, out, x_t, a, s, sigma_data):
        return out

    def target(self, x0, eps, a, s, sigma_data):
        return x0

    def log_weight(self, lam, sigma_data):
        return -lam


class VPrediction(PredictionTarget):
    """``v = a eps - s x0`` normalised by ``r = sqrt(alpha^2 + sigma^2)`` (Salimans & Ho 2022); weight
    ``1 + e^{-lambda}``."""

    name = "v"

    def to_x0(self, out, x_t, a, s, sigma_data):
        r = torch.sqrt(a**2 + s**2)
        return (a / r) * (x_t / r) - (s / r) * out

    def target(self, x0, eps, a, s, sigma_data):
        r = torch.sqrt(a**2 + s**2)
        return (a / r) * eps - (s / r) * x0

    def log_weight(self, lam, sigma_data):
        return F.softplus(-lam)


class VelocityPrediction(PredictionTarget):
    """The flow-matching velocity ``eps - x0`` (rectified flow's ``dx_t/dt``); weight ``(1 + e^{-lambda/2})^2``."""

    name = "velocity"

    def to_x0(self, out, x_t, a, s, sigma_data):
        return (x_t - s * out) / (a + s)

    def target(self, x0, eps, a, s, sigma_data):
        return eps - x0

    def log_weight(self, lam, sigma_data):
        return 2 * F.softplus(-lam / 2)


class EDMPrediction(PredictionTarget):
    """EDM preconditioning (Karras et al. 2022, Table 1) for any (alpha, sigma); weight ``(e^{-lambda} + sd^2) / sd^2``."""

    name = "edm"

    def to_x0(self, out, x_t, a, s, sigma_data):
        skip, cout = edm_skip_out(a, s, sigma_data)
        return skip * x_t + cout * out

    def target(self, x0, eps, a, s, sigma_data):
        skip, cout = edm_skip_out(a, s, sigma_data)
        return (x0 - skip * (a * x0 + s * eps)) / cout

    def log_weight(self, lam, sigma_data):
        log_sd2 = 2 * math.log(sigma_data)
        return torch.logaddexp(-lam, torch.full_like(lam, log_sd2)) - log_sd2


#: every prediction target by name: the one source of the names (configs, CLI choices, weightings)
PREDICTIONS: dict[str, PredictionTarget] = {
    p.name: p for p in (EpsPrediction(), X0Prediction(), VPrediction(), VelocityPrediction(), EDMPrediction())
}
Prediction = Literal[tuple(PREDICTIONS)]  # type: ignore[valid-type]


def prediction_by_name(kind: str) -> PredictionTarget:
    if kind not in PREDICTIONS:
        raise PolydiffError(f"unknown prediction target {kind!r}; choose one of {list(PREDICTIONS)}")
    return PREDICTIONS[kind]


def check_prediction(kind: str) -> str:
    return prediction_by_name(kind).name


def to_x0(kind: str, out: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """The x_0 prediction implied by a network output ``out`` of the given kind (computed in float64)."""
    out, x_t = out.double(), x_t.double()
    a, s = _dims(alpha, sigma, x_t)
    return prediction_by_name(kind).to_x0(out, x_t, a, s, sigma_data)


def target(kind: str, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """What a network of the given kind should output for ``x_t = alpha x0 + sigma eps`` (float64)."""
    x0, eps = x0.double(), eps.double()
    a, s = _dims(alpha, sigma, x0)
    return prediction_by_name(kind).target(x0, eps, a, s, sigma_data)


def implicit_log_weight(kind: str, logsnr: Tensor, sigma_data: float = 1.0) -> Tensor:
    """log of w(lambda) with ``|out - target|^2 = w(lambda) |eps_hat - eps|^2`` for a network of this kind.

    Derivation: at fixed x_t, ``x0_hat - x0 = -(sigma/alpha)(eps_hat - eps)``, so the x0 error carries ``e^{-lambda}``,
    the v error ``1 + e^{-lambda}``, the velocity error ``(1 + e^{-lambda/2})^2``, the EDM F error
    ``(e^{-lambda} + sd^2) / sd^2``.
    """
    return prediction_by_name(kind).log_weight(logsnr.double(), sigma_data)
