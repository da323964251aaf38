"""The one boundary between networks and everything downstream: ``denoise(x_t, logsnr, cond) -> x0_hat``.

Samplers, guidance and inpainting only see objects that follow :class:`Denoiser`; a network becomes one through
:class:`NetworkDenoiser`, which applies the input scaling, the noise conditioning and the parameterisation.
"""

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from polydiff.core import parameterization as P
from polydiff.core.processes import NoiseProcess
from polydiff.core.utils import PolydiffError, append_dims


class Denoiser(Protocol):
    """``model(x_t, logsnr, cond) -> x0_hat`` with ``logsnr`` of shape ``[B]``; ``model.process`` gives alpha and sigma,
    ``model.sigma_data`` the standard deviation of the data it denoises (samplers start from the marginal of ``x_t``
    at the first grid level, ``alpha^2 sigma_data^2 + sigma^2``; 0 treats the start as pure noise)."""

    process: NoiseProcess
    sigma_data: float

    def __call__(self, x: Tensor, logsnr: Tensor, cond: Any = None) -> Tensor: ...


class NetworkDenoiser(nn.Module):
    """Wrap ``network(x_in, c_noise, cond) -> out`` as a denoiser of the given process and prediction target.

    Args:
        network: maps a unit-variance input, the noise level ``c_noise = -logsnr/8`` (shape ``[B]``) and a condition to an
            output of the input's shape, read as the ``prediction`` target.
        process: the forward process the network was (or will be) trained under.
        prediction: ``eps``, ``x0``, ``v``, ``velocity`` or ``edm``.
        sigma_data: standard deviation of the data, used for the input scaling and EDM preconditioning.
    """

    def __init__(self, network: nn.Module, process: NoiseProcess, prediction: str = "eps", sigma_data: float = 1.0):
        super().__init__()
        self.network = network
        self.process = process
        self.prediction = P.check_prediction(prediction)
        self._target = P.prediction_by_name(prediction)
        self.sigma_data = float(sigma_data)

    def network_output(self, x_t: Tensor, logsnr: Tensor, cond: Any = None) -> Tensor:
        """Raw network output at ``x_t`` (what the training loss compares with ``parameterization.target``)."""
        alpha, sigma = self.process.alpha_sigma(logsnr)
        scale = append_dims(P.c_in(alpha, sigma, self.sigma_data), x_t.ndim)
        dtype = next(self.network.parameters()).dtype
        x_in = (x_t.double() * scale).to(dtype)
        return self.network(x_in, P.c_noise(logsnr).to(x_in.device), cond)

    def forward(self, x: Tensor, logsnr: Tensor, cond: Any = None) -> Tensor:
        logsnr = logsnr.to(device=x.device, dtype=torch.float64)
        out = self.network_output(x, logsnr, cond)
        alpha, sigma = self.process.alpha_sigma(logsnr)
        a, s = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
        return self._target.to_x0(out.double(), x.double(), a, s, self.sigma_data)


def require_gaussian(model: Any, what: str) -> None:
    """Refuse, with a clear error, a model whose process is not a Gaussian :class:`NoiseProcess` (CLD's velocity-score
    model has no ``x0_hat`` and no log-SNR family): ``what`` (inpainting, the likelihood) is defined for those only."""
    process = getattr(model, "process", None)
    if not isinstance(process, NoiseProcess):
        raise PolydiffError(f"{what} needs a Gaussian process (vp_linear, vp_cosine, edm, flow), not "
                            f"{getattr(process, 'name', process)!r}; use a model trained with one of them")
