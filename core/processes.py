"""Gaussian noise processes ``x_t = alpha_t x_0 + sigma_t eps``, described through their log-SNR.

Everything downstream (objectives, samplers, guidance) needs only two maps:

* ``logsnr(t)`` — the schedule: time ``t`` in [0, 1] to ``lambda = log(alpha^2 / sigma^2)`` (and back, ``t_of_logsnr``);
* ``alpha_sigma(lambda)`` — the family: how a log-SNR is split into a signal scale and a noise scale.

The family fixes the scaling (variance preserving, variance exploding, or the straight line of rectified flow); the
schedule fixes how fast noise is added. A *log-SNR shift* (the "resolution shift" of Hoogeboom et al. 2023 and SD3,
Esser et al. 2024, eq. 23) adds a constant to ``lambda(t)``; it can be set at training and changed at sampling.

Samplers work on log-SNR grids and ask the family for ``(alpha, sigma)``, so every sampler runs on every process. The
network is conditioned on log-SNR as well (``c_noise = -lambda / 8``, EDM's ``ln(sigma) / 4`` in VE units), so a model
can be sampled on any grid of its own family.
"""

import inspect
import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

from polydiff.core.utils import PolydiffError, append_dims

#: Log-SNR values are clamped to this range wherever a finite number is needed (network conditioning, the start of a
#: sampling grid, training). At -20 the signal scale of a VP process is e^-10 = 4.5e-5: pure noise for any data.
LOGSNR_LIMIT = 20.0


class NoiseProcess(ABC):
    """A Gaussian forward process. ``t`` runs from 0 (data) to 1 (prior).

    Args:
        logsnr_shift: constant added to the schedule's log-SNR. ``-2 ln s`` equals SD3's timestep shift with factor ``s``.
    """

    #: name used in configs and checkpoints
    name: str = ""
    #: the network's input is this many times the data's width (1: x_t alone; CLD's state (x, v) is 2)
    state_multiplier: int = 1

    def __init__(self, logsnr_shift: float = 0.0) -> None:
        self.logsnr_shift = float(logsnr_shift)

    # --- the schedule --------------------------------------------------------------------------------------------
    @abstractmethod
    def _logsnr(self, t: Tensor) -> Tensor:
        """Unshifted log-SNR of the schedule at time ``t`` (float64)."""

    @abstractmethod
    def _t_of_logsnr(self, logsnr: Tensor) -> Tensor:
        """Inverse of ``_logsnr``."""

    # --- the family ----------------------------------------------------------------------------------------------
    @abstractmethod
    def alpha_sigma(self, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        """Signal and noise scales of this family at the given log-SNR (``lambda = +inf`` is clean data)."""

    # --- derived, written once -------------------------------------------------------------------------------------
    def logsnr(self, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return self._logsnr(t) + self.logsnr_shift

    def t_of_logsnr(self, logsnr: Tensor | float) -> Tensor:
        lam = torch.as_tensor(logsnr, dtype=torch.float64)
        return self._t_of_logsnr(lam - self.logsnr_shift).clamp(0.0, 1.0)

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)`` of q(x_t | x_0) at time ``t``."""
        return self.alpha_sigma(self.logsnr(t))

    def add_noise(self, x0: Tensor, noise: Tensor, logsnr: Tensor) -> Tensor:
        """Sample of q(x_t | x_0) for per-item log-SNR ``logsnr`` (shape ``[B]``)."""
        alpha, sigma = self.alpha_sigma(logsnr)
        return (append_dims(alpha, x0.ndim) * x0.double() + append_dims(sigma, x0.ndim) * noise.double()).to(x0.dtype)

    def posterior(self, x_t: Tensor, x0: Tensor, logsnr_t: Tensor, logsnr_s: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(x_s | x_t, x_0) for ``logsnr_s > logsnr_t`` (s earlier than t).

        In log-SNR form (Kingma et al. 2021, VDM, eq. 29-30 rewritten): with ``r = exp(lambda_t - lambda_s)``,
        ``mean = alpha_s x_0 + sigma_s sqrt(r) (x_t - alpha_t x_0) / sigma_t`` and ``var = sigma_s^2 (1 - r)``.
        """
        a_t, s_t = self.alpha_sigma(logsnr_t)
        a_s, s_s = self.alpha_sigma(logsnr_s)
        r = torch.exp(logsnr_t - logsnr_s)
        n = x_t.ndim
        eps = (x_t.double() - append_dims(a_t, n) * x0.double()) / append_dims(s_t, n)
        mean = append_dims(a_s, n) * x0.double() + append_dims(s_s * r.sqrt(), n) * eps
        std = s_s * (1 - r).clamp_min(0).sqrt()
        return mean, std

    def prior_std(self, logsnr: Tensor | float, sigma_data: float = 0.0) -> Tensor:
        """Standard deviation of the start of a sampling grid: the marginal ``sqrt(alpha^2 sd^2 + sigma^2)`` of x_t for
        zero-mean data of standard deviation ``sigma_data`` (just ``sigma`` when the grid starts at pure noise or
        ``sigma_data`` is 0). Schedules that end short of pure noise (DiffWave's alpha_bar_T = 0.29) need the signal
        share, or samples come out too quiet."""
        alpha, sigma = self.alpha_sigma(torch.as_tensor(logsnr, dtype=torch.float64))
        return torch.sqrt(alpha**2 * sigma_data**2 + sigma**2)

    def logsnr_range(self, t_min: float = 0.0, t_max: float = 1.0) -> tuple[float, float]:
        """Finite ``(lambda_min, lambda_max)`` for a sampling grid between ``t_max`` and ``t_min``."""
        hi = float(self.logsnr(t_min).clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT))
        lo = float(self.logsnr(t_max).clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT))
        return lo, hi

    def __repr__(self) -> str:
        return f"{type(self).__name__}(logsnr_shift={self.logsnr_shift})"


class VariancePreserving(NoiseProcess):
    """``alpha^2 + sigma^2 = 1``: ``alpha^2 = sigmoid(lambda)``, ``sigma^2 = sigmoid(-lambda)``."""

    def alpha_sigma(self, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        lam = torch.as_tensor(logsnr, dtype=torch.float64)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


class VPLinear(VariancePreserving):
    """DDPM's linear betas in continuous time (Song et al. 2021, score SDE, VP-SDE).

    ``log alpha_bar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2)`` with the DDPM values beta_min = 0.1,
    beta_max = 20 (1e-4 .. 0.02 per step at T = 1000). ``lambda = -log(expm1(-log alpha_bar))``.
    """

    name = "vp_linear"

    def __init__(self, logsnr_shift: float = 0.0, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        super().__init__(logsnr_shift)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def _logsnr(self, t: Tensor) -> Tensor:
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return -torch.log(torch.expm1(integral))

    def _t_of_logsnr(self, logsnr: Tensor) -> Tensor:
        integral = torch.log1p(torch.exp(-logsnr))  # = -log alpha_bar
        a, b = 0.5 * (self.beta_max - self.beta_min), self.beta_min
        return (-b + torch.sqrt(b * b + 4 * a * integral)) / (2 * a)


class VPCosine(VariancePreserving):
    """Cosine schedule (Nichol & Dhariwal 2021) without the offset: ``alpha = cos(pi t / 2)``,
    ``lambda = -2 log tan(pi t / 2)``."""

    name = "vp_cosine"

    def _logsnr(self, t: Tensor) -> Tensor:
        return -2 * torch.log(torch.tan(math.pi * t / 2))

    def _t_of_logsnr(self, logsnr: Tensor) -> Tensor:
        return torch.atan(torch.exp(-logsnr / 2)) * 2 / math.pi


class VarianceExploding(NoiseProcess):
    """EDM / VE: ``alpha = 1``, ``sigma = exp(-lambda / 2)``; time is ``t = sigma / sigma_max`` (Karras et al. 2022)."""

    name = "edm"

    def __init__(self, logsnr_shift: float = 0.0, sigma_max: float = 80.0) -> None:
        super().__init__(logsnr_shift)
        self.sigma_max = float(sigma_max)

    def alpha_sigma(self, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        lam = torch.as_tensor(logsnr, dtype=torch.float64)
        return torch.ones_like(lam), torch.exp(-lam / 2)

    def _logsnr(self, t: Tensor) -> Tensor:
        return -2 * torch.log(self.sigma_max * t)

    def _t_of_logsnr(self, logsnr: Tensor) -> Tensor:
        return torch.exp(-logsnr / 2) / self.sigma_max


class RectifiedFlow(NoiseProcess):
    """Gaussian flow matching / rectified flow: ``x_t = (1 - t) x_0 + t eps`` (Liu et al. 2022; Lipman et al. 2022).

    The family is ``alpha = sigmoid(lambda / 2)``, ``sigma = sigmoid(-lambda / 2)`` (so ``alpha + sigma = 1``).
    """

    name = "flow"

    def alpha_sigma(self, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        lam = torch.as_tensor(logsnr, dtype=torch.float64)
        return torch.sigmoid(lam / 2), torch.sigmoid(-lam / 2)

    def _logsnr(self, t: Tensor) -> Tensor:
        return 2 * (torch.log1p(-t) - torch.log(t))

    def _t_of_logsnr(self, logsnr: Tensor) -> Tensor:
        return torch.sigmoid(-logsnr / 2)


PROCESSES: dict[str, type[NoiseProcess]] = {
    cls.name: cls for cls in (VPLinear, VPCosine, VarianceExploding, RectifiedFlow)
}
#: the process names as a config type (taken from the registry: the one source)
ProcessName = Literal[tuple(PROCESSES)]  # type: ignore[valid-type]


def logsnr_of_ve_sigma(sigma: float) -> float:
    """The log-SNR of a noise level given in VE units ``sigma / alpha`` (EDM's sigma): ``-2 log sigma``."""
    return -2.0 * math.log(sigma)


def process_by_name(name: str, logsnr_shift: float = 0.0, **options: float) -> NoiseProcess:
    """The process registered under ``name`` (``vp_linear``, ``vp_cosine``, ``edm``, ``flow``).

    ``options`` (e.g. ``beta_min``, ``beta_max``) are passed to the processes whose constructor takes them and ignored by
    the others, so one config can carry every process's settings.
    """
    if name not in PROCESSES:
        raise PolydiffError(f"unknown noise process {name!r}; choose one of {sorted(PROCESSES)}")
    cls = PROCESSES[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(logsnr_shift=logsnr_shift, **{k: v for k, v in options.items() if k in accepted})


def sd3_shift_to_logsnr_shift(shift: float) -> float:
    """SD3's timestep shift ``t' = s t / (1 + (s - 1) t)`` is a log-SNR shift of ``-2 ln s``."""
    return -2.0 * math.log(shift)
