"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper that turns one denoiser into another."""

from typing import Any

from torch import Tensor

from polydiff.core.denoiser import Denoiser


class ClassifierFreeGuidance:
    """``D_w(x) = D(x, null) + w (D(x, cond) - D(x, null))``.

    Mixing x0 predictions at a fixed ``x_t`` is the same as mixing eps, v or score predictions (they are affine in x0), so
    the guided model is again a denoiser that any sampler can drive. ``scale = 1`` is the conditional model, ``0`` the
    unconditional one.
    """

    def __init__(self, model: Denoiser, scale: float, null_cond: Any):
        self.model = model
        self.scale = float(scale)
        self.null_cond = null_cond
        self.process = model.process
        self.sigma_data = model.sigma_data

    def __call__(self, x: Tensor, logsnr: Tensor, cond: Any = None) -> Tensor:
        cond_x0 = self.model(x, logsnr, cond)
        if self.scale == 1.0:
            return cond_x0
        uncond_x0 = self.model(x, logsnr, self.null_cond)
        return uncond_x0 + self.scale * (cond_x0 - uncond_x0)
