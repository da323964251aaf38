"""The network side of CLD: a velocity-score model and the hybrid score matching loss.

The boundary for CLD samplers is ``model(u, t, cond) -> eps_v_hat``, with the state ``u = cat([x, v], dim=1)`` (for
images: ``2C`` channels) and ``t`` of shape ``[B]``; the velocity score is ``-ell_t eps_v_hat``
(:meth:`CriticallyDampedLangevin.ell`). Because it is linear in the network output, classifier-free guidance is the
core's :class:`~polydiff.core.guidance.ClassifierFreeGuidance` wrapped around this model unchanged.
"""

from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core import parameterization as P
from polydiff.core.cld import CriticallyDampedLangevin, velocity_score_of_gaussian
from polydiff.core.objective import masked_mse
from polydiff.core.utils import PolydiffError, append_dims


def split_state(u: Tensor) -> tuple[Tensor, Tensor]:
    """``(x, v)`` of a state ``u = cat([x, v], dim=1)``."""
    if u.ndim < 2 or u.shape[1] % 2:
        raise PolydiffError(f"a CLD state needs an even size along dim 1 (x and v stacked), got {tuple(u.shape)}")
    x, v = u.chunk(2, dim=1)
    return x, v


class CLDScoreModel(nn.Module):
    """Wrap ``network(u_in, c_noise, cond) -> out`` (``u_in`` with twice the data's channels, ``out`` with the data's) as
    a CLD velocity-score model ``(u, t, cond) -> eps_v_hat``.

    The input is the state scaled to unit variance per component (for data of std ``sigma_data``); the noise level is
    ``c_noise = -lambda_x / 8`` with the log-SNR of ``x_t`` (:meth:`CriticallyDampedLangevin.logsnr_x`). The output is
    the *mixed score* of the paper (Sec. 3.2): the exact velocity score of Gaussian data of std ``sigma_data`` plus the
    network's correction, both in eps units, ``eps_v_hat = -s_gauss / ell_t + out``, so an untrained network is already
    the score of the best Gaussian fit.

    Args:
        network: the network (its output is read as the correction in eps units).
        process: the CLD process.
        sigma_data: standard deviation of the data.
    """

    def __init__(self, network: nn.Module, process: CriticallyDampedLangevin, sigma_data: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.process = process
        self.sigma_data = float(sigma_data)

    def forward(self, u: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        # the time-dependent scales once per distinct time (a sampler's batch shares one), then per item; the Gaussian
        # part is the exact velocity score of data N(0, sigma_data^2) (CriticallyDampedLangevin.gaussian_velocity_score)
        times, index = torch.unique(t.detach().to(torch.float64).cpu(), return_inverse=True)
        sx, sv = self.process.marginal_std(times, self.sigma_data)
        gauss_cov = self.process.kernel_cov(times, self.sigma_data**2)
        ell = self.process.ell(times)
        c_noise = P.c_noise(self.process.logsnr_x(times))
        x, v = split_state(u.double())

        def per_item(c: Tensor) -> Tensor:
            return append_dims(c[index].to(u.device), x.ndim)

        dtype = next(self.network.parameters()).dtype
        u_in = torch.cat([x / per_item(sx), v / per_item(sv)], dim=1).to(dtype)
        out = self.network(u_in, c_noise[index].to(u.device), cond).double()
        gauss = velocity_score_of_gaussian(x, v, tuple(per_item(c) for c in gauss_cov))
        return -gauss / per_item(ell) + out

    def score(self, u: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The velocity score ``grad_v log p_t(u)``."""
        return -append_dims(self.process.ell(t.cpu()).to(u.device), u.ndim) * self(u, t, cond)


def sample_cld_times(process: CriticallyDampedLangevin, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Stratified training times in ``[t_min, 1]`` (float64, CPU): one per ``1/n`` of the interval, shuffled."""
    u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n
    u = u[torch.randperm(n, generator=generator)]
    return process.t_min + (1 - process.t_min) * u


def hsm_loss(model: Any, x0: Tensor, t: Tensor, noise_x: Tensor, noise_v: Tensor, cond: Any = None,
             mask: Tensor | None = None) -> Tensor:
    """Per-item hybrid score matching loss ``[B]`` (paper eq. 9 with the weighting ``lambda(t) = ell_t^-2``, its
    "reweighted" objective): the MSE between the velocity noise ``eps_v`` of ``u_t = mu_t(x_0) + L_t eps`` and the
    model's ``eps_v_hat(u_t, t)``; ``model`` is a :class:`CLDScoreModel` (or a model of the same call)."""
    process: CriticallyDampedLangevin = model.process
    x_t, v_t = process.perturb(x0, t, noise_x, noise_v)
    eps_hat = model(torch.cat([x_t, v_t], dim=1), t, cond)
    return masked_mse(eps_hat, noise_v, mask)
