"""The training objective: how noise levels are drawn, and how errors at each level are weighted.

Both are written as functions of log-SNR so that they apply to every process. Weightings are expressed in the
"eps frame" of Kingma & Gao (2023): the loss is ``w(lambda) |eps_hat - eps|^2``. The network is trained with an MSE on its
own target, rescaled by ``w(lambda) / w_implicit(lambda)``; the ratio is formed in log space, so the default
(``native``: the plain MSE of the target) is exactly 1 everywhere and nothing overflows at the ends of the schedule.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.parameterization import PREDICTIONS, implicit_log_weight, target
from polydiff.core.processes import LOGSNR_LIMIT, NoiseProcess
from polydiff.core.utils import PolydiffError

TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "log_normal", "logit_normal")
TimeSampling = Literal[TIME_SAMPLINGS]  # type: ignore[valid-type]
#: ``native`` (the network's own target), the MSE of any prediction target, or Min-SNR-gamma
WEIGHTINGS: tuple[str, ...] = ("native", *PREDICTIONS, "min_snr")
Weighting = Literal[WEIGHTINGS]  # type: ignore[valid-type]


def sample_logsnr(
    process: NoiseProcess,
    n: int,
    kind: str,
    loc: float,
    scale: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw ``n`` training log-SNRs (float64, clamped to +-LOGSNR_LIMIT).

    * ``uniform``: t ~ U(0, 1) through the process's schedule (DDPM, Ho et al. 2020).
    * ``log_normal``: ln(sigma / alpha) ~ N(loc, scale^2), i.e. lambda = -2 ln sigma~ (EDM, Karras et al. 2022: loc = -1.2,
      scale = 1.2).
    * ``logit_normal``: t = sigmoid(N(loc, scale^2)) through the schedule (SD3, Esser et al. 2024: loc = 0, scale = 1).

    The process's log-SNR shift applies to all three.
    """
    if kind == "uniform":
        # stratified draws: lower variance of the loss estimate at the same cost (Kingma et al. 2021, VDM)
        u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n
        u = u[torch.randperm(n, generator=generator)]
        lam = process.logsnr(u)
    elif kind == "log_normal":
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        lam = -2 * (loc + scale * z) + process.logsnr_shift
    elif kind == "logit_normal":
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        lam = process.logsnr(torch.sigmoid(loc + scale * z))
    else:
        raise PolydiffError(f"unknown time sampling {kind!r}; choose one of {list(TIME_SAMPLINGS)}")
    return lam.clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT).to(device)


def weighting_log_weight(kind: str, logsnr: Tensor, prediction: str, sigma_data: float, min_snr_gamma: float) -> Tensor:
    """log w(lambda) of a weighting in the eps frame.

    * ``native``: the plain MSE of the network's own target.
    * ``eps`` / ``x0`` / ``v`` / ``velocity``: the MSE of that quantity whatever the network predicts.
    * ``min_snr``: Min-SNR-gamma (Hang et al. 2023): x0-MSE weighted by min(SNR, gamma), i.e. ``min(SNR, gamma) / SNR`` in
      the eps frame.
    * ``edm``: EDM's lambda(sigma) = (sigma~^2 + sd^2) / (sigma~ sd)^2 on the x0 error (Karras et al. 2022, eq. 8).
    """
    lam = logsnr.double()
    if kind == "native":
        return implicit_log_weight(prediction, lam, sigma_data)
    if kind in PREDICTIONS:
        return implicit_log_weight(kind, lam, sigma_data)
    if kind == "min_snr":
        return torch.clamp(math.log(min_snr_gamma) - lam, max=0.0)
    raise PolydiffError(f"unknown loss weighting {kind!r}; choose one of {list(WEIGHTINGS)}")


def loss_weight(kind: str, logsnr: Tensor, prediction: str, sigma_data: float, min_snr_gamma: float) -> Tensor:
    """Factor applied to the MSE of the network's own target so that the total loss has the requested weighting."""
    log_w = weighting_log_weight(kind, logsnr, prediction, sigma_data, min_snr_gamma)
    return torch.exp(log_w - implicit_log_weight(prediction, logsnr, sigma_data))


def masked_mse(out: Tensor, tgt: Tensor, mask: Tensor | None) -> Tensor:
    """Per-item mean squared error over the elements where ``mask`` is 1 (all elements without a mask)."""
    err = F.mse_loss(out.float(), tgt.float(), reduction="none")
    if mask is None:
        return err.flatten(1).mean(1)
    mask = mask.to(err.dtype).expand_as(err)
    return (err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


@dataclass
class ObjectiveConfig:
    """How training draws noise levels and weights the loss.

    Args:
        time_sampling: distribution of training noise levels: uniform t, log-normal sigma (EDM), logit-normal t (SD3).
        time_loc: location of the log-normal / logit-normal distribution (EDM: -1.2; SD3: 0.0).
        time_scale: scale of the log-normal / logit-normal distribution (EDM: 1.2; SD3: 1.0).
        weighting: loss weighting, see ``weighting_log_weight`` (``native`` = plain MSE of the prediction target).
        min_snr_gamma: gamma of Min-SNR weighting.
        cond_dropout: probability of replacing the condition by the null condition (classifier-free guidance).
    """

    time_sampling: TimeSampling = "uniform"
    time_loc: float = 0.0
    time_scale: float = 1.0
    weighting: Weighting = "native"
    min_snr_gamma: float = 5.0
    cond_dropout: float = 0.0


def denoising_loss(denoiser: NetworkDenoiser, x0: Tensor, noise: Tensor, logsnr: Tensor, cond: Any = None,
                   mask: Tensor | None = None, weighting: str = "native", min_snr_gamma: float = 5.0) -> Tensor:
    """Per-item loss ``[B]`` of one batch at the given log-SNRs: the (masked) MSE of the network's own target for
    ``x_t = alpha x0 + sigma noise``, rescaled so that the total has the requested ``weighting`` in the eps frame."""
    x_t = denoiser.process.add_noise(x0, noise, logsnr)
    out = denoiser.network_output(x_t, logsnr, cond)
    alpha, sigma = denoiser.process.alpha_sigma(logsnr)
    tgt = target(denoiser.prediction, x0, noise, alpha, sigma, denoiser.sigma_data)
    w = loss_weight(weighting, logsnr, denoiser.prediction, denoiser.sigma_data, min_snr_gamma)
    return masked_mse(out, tgt, mask) * w.to(out.dtype)
