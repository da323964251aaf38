"""Critically damped Langevin diffusion (CLD; Dockhorn, Vahdat & Kreis 2022, "Score-Based Generative Modeling with
Critically-Damped Langevin Diffusion", ICLR): the data ``x`` is coupled to an auxiliary velocity ``v`` and noise enters
only through the velocity.

Forward SDE per dimension (paper eq. 5), with mass ``M``, friction ``Gamma`` and a constant time scale ``beta``::

    dx = M^-1 v beta dt,    dv = (-x - Gamma M^-1 v) beta dt + sqrt(2 Gamma beta) dW.

Critical damping ``Gamma^2 = 4 M`` makes the drift matrix ``A = [[0, 1/M], [-1, -Gamma/M]]`` have the double
eigenvalue ``-k`` with ``k = 2 / Gamma``, so ``A + k I`` is nilpotent and ``exp(A B) = e^{-kB} (I + B (A + k I))``
for the integrated time scale ``B = beta t``. That closed form gives the perturbation kernel (paper App. B.1): a
Gaussian whose mean is ``exp(A B) (x_0, v_0)`` and whose per-dimension 2x2 covariance is
``exp(A B) Sigma_0 exp(A B)^T + 2 Gamma int_0^B e^{-2kr} c(r) c(r)^T dr`` with ``c(r) = (r/M, 1 - k r)`` the second
column of ``e^{kr} exp(A r)``; the integrals are regularised incomplete gamma functions, accurate at small ``B``.
The stationary distribution is ``x ~ N(0, 1)``, ``v ~ N(0, M)``.

The same kernel with ``x`` negated is the exact solution of the linear part of the *reverse* SDE, which the SSCS
sampler (:mod:`polydiff.core.cld_samplers`) uses; the formula lives here once.

Hybrid score matching (HSM, paper Sec. 3.2) starts from ``v_0 ~ N(0, gamma M)`` marginalised into the kernel
(``Sigma_0 = diag(0, gamma M)``) and learns only the velocity score
``grad_v log p(u_t | x_0) = -ell_t eps_v`` with ``ell_t = 1 / L_vv`` (``L`` the Cholesky factor of ``Sigma_t``).
"""

import math

import torch
from torch import Tensor

from polydiff.core.processes import LOGSNR_LIMIT
from polydiff.core.utils import PolydiffError, append_dims

Cov = tuple[Tensor, Tensor, Tensor]  # (Sigma_xx, Sigma_xv, Sigma_vv) per item


class CriticallyDampedLangevin:
    """The CLD forward process on the joint state ``u = (x, v)``; ``t`` runs from 0 (data) to 1 (prior).

    Args:
        beta: constant time scale of the SDE (paper: 4).
        m_inv: inverse mass ``M^-1`` (paper: 4, i.e. ``M = 0.25``); the friction is the critical ``Gamma = 2 sqrt(M)``.
        gamma: initial velocity variance in units of ``M``: ``v_0 ~ N(0, gamma M)`` (paper: 0.04).
        t_min: smallest training time (paper: 1e-5).
        t_end: last time of the sampling grid before the final denoising step to 0 (paper: 1e-3).
        numerical_eps: added to the kernel's variances (paper code: 1e-9 for images) so that the Cholesky factor stays
            finite at ``t -> 0``.
    """

    name = "cld"
    #: the network sees the state ``(x, v)``: twice the data's channels
    state_multiplier = 2

    def __init__(self, beta: float = 4.0, m_inv: float = 4.0, gamma: float = 0.04, t_min: float = 1e-5,
                 t_end: float = 1e-3, numerical_eps: float = 1e-9) -> None:
        if beta <= 0 or m_inv <= 0 or gamma < 0 or not 0 < t_min < 1 or not 0 < t_end < 1:
            raise PolydiffError(f"CLD needs beta > 0, m_inv > 0, gamma >= 0 and 0 < t_min < 1 (got beta={beta}, "
                                f"m_inv={m_inv}, gamma={gamma}, t_min={t_min}, t_end={t_end}); set --model.diffusion.cld_*")
        self.beta, self.m_inv, self.gamma = float(beta), float(m_inv), float(gamma)
        self.mass = 1.0 / self.m_inv
        self.friction = 2.0 * math.sqrt(self.mass)  # critical damping: Gamma^2 = 4 M
        self.k = 2.0 / self.friction  # the double eigenvalue of A is -k
        self.t_min, self.t_end = float(t_min), float(t_end)
        self.numerical_eps = float(numerical_eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta}, m_inv={self.m_inv}, gamma={self.gamma}, t_min={self.t_min})"

    # ------------------------------------------------------------------ the linear dynamics in closed form
    def integrated_beta(self, t: Tensor | float) -> Tensor:
        """``B(t) = int_0^t beta ds`` (float64)."""
        return self.beta * torch.as_tensor(t, dtype=torch.float64)

    def transition(self, x: Tensor, v: Tensor, B: Tensor, var_x0: float = 0.0, var_v0: float = 0.0
                   ) -> tuple[Tensor, Tensor, Cov]:
        """Mean and covariance after integrated time ``B`` (shape ``[B]``) of the linear SDE started at ``(x, v)`` with
        independent initial spreads ``var_x0``, ``var_v0`` per dimension. Returns ``(mean_x, mean_v, (Sxx, Sxv, Svv))``
        with the variances of shape ``[B]`` (they do not depend on the state)."""
        B = torch.as_tensor(B, dtype=torch.float64, device=x.device)
        e = torch.exp(-self.k * B)
        p11, p12, p21, p22 = e * (1 + self.k * B), e * B / self.mass, -e * B, e * (1 - self.k * B)
        n = x.ndim
        mean_x = append_dims(p11, n) * x.double() + append_dims(p12, n) * v.double()
        mean_v = append_dims(p21, n) * x.double() + append_dims(p22, n) * v.double()
        # noise integrals I_j = int_0^B r^j e^{-2kr} dr = j! P(j+1, 2kB) / (2k)^{j+1} (regularised incomplete gamma)
        y = 2 * self.k * B
        i0 = torch.special.gammainc(torch.full_like(y, 1.0), y) / (2 * self.k)
        i1 = torch.special.gammainc(torch.full_like(y, 2.0), y) / (2 * self.k) ** 2
        i2 = 2 * torch.special.gammainc(torch.full_like(y, 3.0), y) / (2 * self.k) ** 3
        g = 2 * self.friction
        sxx = var_x0 * p11**2 + var_v0 * p12**2 + g * i2 / self.mass**2
        sxv = var_x0 * p11 * p21 + var_v0 * p12 * p22 + g * (i1 - self.k * i2) / self.mass
        svv = var_x0 * p21**2 + var_v0 * p22**2 + g * (i0 - 2 * self.k * i1 + self.k**2 * i2)
        return mean_x, mean_v, (sxx, sxv, svv)

    @staticmethod
    def cholesky(cov: Cov) -> Cov:
        """``(L_xx, L_xv, L_vv)`` of the lower Cholesky factor of ``[[Sxx, Sxv], [Sxv, Svv]]``."""
        sxx, sxv, svv = cov
        lxx = sxx.sqrt()
        lxv = sxv / lxx
        return lxx, lxv, (svv - lxv**2).clamp_min(0).sqrt()

    # ------------------------------------------------------------------ the perturbation kernel of HSM
    def kernel_cov(self, t: Tensor, var_x0: float = 0.0) -> Cov:
        """Covariance of ``p(u_t | x_0)`` with ``v_0 ~ N(0, gamma M)`` marginalised (plus ``var_x0`` of ``x_0``: the
        marginal of zero-mean data of that variance), with ``numerical_eps`` on the variances."""
        zero = torch.zeros(1, dtype=torch.float64)
        _, _, (sxx, sxv, svv) = self.transition(zero, zero, self.integrated_beta(t), var_x0, self.gamma * self.mass)
        return sxx + self.numerical_eps, sxv, svv + self.numerical_eps

    def perturb(self, x0: Tensor, t: Tensor, noise_x: Tensor, noise_v: Tensor) -> tuple[Tensor, Tensor]:
        """A draw ``(x_t, v_t)`` of ``p(u_t | x_0)`` (HSM: ``v_0`` marginalised) from standard normal noises:
        ``u_t = mean + L (noise_x, noise_v)``."""
        mean_x, mean_v, _ = self.transition(x0, torch.zeros_like(x0), self.integrated_beta(t).to(x0.device))
        lxx, lxv, lvv = (append_dims(c.to(x0.device), x0.ndim) for c in self.cholesky(self.kernel_cov(t)))
        x_t = mean_x + lxx * noise_x.double()
        v_t = mean_v + lxv * noise_x.double() + lvv * noise_v.double()
        return x_t, v_t

    def ell(self, t: Tensor) -> Tensor:
        """``ell_t = 1 / L_vv``: the velocity score of the kernel is ``-ell_t eps_v`` (paper eq. 9)."""
        return 1.0 / self.cholesky(self.kernel_cov(t))[2]

    def gaussian_velocity_score(self, x: Tensor, v: Tensor, t: Tensor, sigma_data: float) -> Tensor:
        """``grad_v log p_t(x, v)`` when the data are ``N(0, sigma_data^2 I)``: the Gaussian part of the mixed score
        (the network learns the rest; paper Sec. 3.2 and LSGM's mixed score)."""
        cov = tuple(append_dims(c.to(x.device), x.ndim) for c in self.kernel_cov(t, sigma_data**2))
        return velocity_score_of_gaussian(x, v, cov)


    def marginal_std(self, t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
        """Standard deviations of ``x_t`` and ``v_t`` for zero-mean data of std ``sigma_data`` (the network's input
        scaling: unit-variance inputs at every ``t``)."""
        sxx, _, svv = self.kernel_cov(t, sigma_data**2)
        return sxx.sqrt(), svv.sqrt()

    def logsnr_x(self, t: Tensor) -> Tensor:
        """Log signal-to-noise ratio of ``x_t`` about ``x_0``, ``log(m_t^2 / Sigma_xx)`` with ``m_t = e^{-kB}(1 + kB)``
        the weight of ``x_0`` in the mean, clamped to +-LOGSNR_LIMIT: the noise level the network is conditioned on
        (``c_noise = -lambda / 8``, as for the Gaussian processes)."""
        B = self.integrated_beta(t)
        m = torch.exp(-self.k * B) * (1 + self.k * B)
        return (2 * torch.log(m) - torch.log(self.kernel_cov(t)[0])).clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT)

    # ------------------------------------------------------------------ the SDE and its prior
    def drift(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Forward drift ``(M^-1 v, -x - Gamma M^-1 v) beta``."""
        return self.beta * self.m_inv * v, self.beta * (-x - self.friction * self.m_inv * v)

    @property
    def diffusion_v(self) -> float:
        """Diffusion coefficient of the velocity, ``sqrt(2 Gamma beta)`` (the data get none)."""
        return math.sqrt(2 * self.friction * self.beta)

    def prior_std(self) -> tuple[float, float]:
        """Standard deviations of the stationary distribution: ``x ~ N(0, 1)``, ``v ~ N(0, M)``."""
        return 1.0, math.sqrt(self.mass)


#: the augmented-state processes, by config name (beside the Gaussian ``PROCESSES``)
CLD_PROCESSES: dict[str, type[CriticallyDampedLangevin]] = {CriticallyDampedLangevin.name: CriticallyDampedLangevin}


def velocity_score_of_gaussian(x: Tensor, v: Tensor, cov: Cov) -> Tensor:
    """``grad_v log N((x, v); 0, Sigma) = (Sigma_xv x - Sigma_xx v) / det Sigma`` (covariances broadcastable to x)."""
    sxx, sxv, svv = cov
    return (sxv * x.double() - sxx * v.double()) / (sxx * svv - sxv**2)
