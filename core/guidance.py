"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper that turns one denoiser into another."""

import math
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.processes import logsnr_of_ve_sigma
from polydiff.core.utils import append_dims


class ClassifierFreeGuidance:
    """``D_w(x) = D(x, null) + w (D(x, cond) - D(x, null))``.

    Mixing x0 predictions at a fixed ``x_t`` is the same as mixing eps, v or score predictions (they are affine in x0), so
    the guided model is again a denoiser that any sampler can drive. ``scale = 1`` is the conditional model, ``0`` the
    unconditional one.

    ``sigma_min`` limits guidance to the noise levels ``sigma / alpha >= sigma_min``; below, the conditional model alone
    (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval": what guidance decides, such as the class, is
    decided at high noise, while guidance at low noise mostly costs diversity and sample quality).
    """

    def __init__(self, model: Denoiser, scale: float, null_cond: Any, sigma_min: float = 0.0):
        self.model = model
        self.scale = float(scale)
        self.null_cond = null_cond
        # sigma / alpha >= sigma_min  <=>  logsnr <= logsnr(sigma_min)
        self.logsnr_max = math.inf if sigma_min <= 0 else logsnr_of_ve_sigma(sigma_min)
        self.process = model.process
        self.sigma_data = model.sigma_data

    def __call__(self, x: Tensor, logsnr: Tensor, cond: Any = None) -> Tensor:
        cond_x0 = self.model(x, logsnr, cond)
        if self.scale == 1.0:
            return cond_x0
        active = torch.as_tensor(logsnr) <= self.logsnr_max
        if not bool(active.any()):
            return cond_x0
        uncond_x0 = self.model(x, logsnr, self.null_cond)
        guided = uncond_x0 + self.scale * (cond_x0 - uncond_x0)
        return guided if bool(active.all()) else torch.where(append_dims(active, x.ndim), guided, cond_x0)
