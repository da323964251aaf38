"""Gaussian-mixture targets whose denoiser ``E[x0 | x_t]`` is known in closed form.

For ``x0 ~ sum_k w_k N(m_k, C_k)`` and ``x~ = x0 + s n`` (VE coordinates, ``s = sigma/alpha``):
``p(x~ | k) = N(m_k, C_k + s^2 I)`` and ``E[x0 | x~, k] = m_k + C_k (C_k + s^2 I)^{-1} (x~ - m_k)``; the posterior
responsibilities weight the component means (Bishop 2006, eq. 2.116 and 9.13). With ``C_k = U_k diag(e_k) U_k^T`` every
inverse is a division in the eigenbasis, so one call costs K matrix products.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from polydiff.core.processes import NoiseProcess, VarianceExploding
from polydiff.core.utils import append_dims


@dataclass
class GaussianMixture:
    """``means [K, d]``, ``eigvecs [K, d, d]`` (columns), ``eigvals [K, d]``, ``log_weights [K]`` (float64)."""

    name: str
    means: Tensor
    eigvecs: Tensor
    eigvals: Tensor
    log_weights: Tensor

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        # x = m_k + U_k diag(sqrt(e_k)) z
        return self.means[k] + torch.einsum("nij,nj->ni", self.eigvecs[k], z * self.eigvals[k].sqrt())

    def std(self) -> float:
        """Overall standard deviation (sqrt of the mean per-dimension variance)."""
        w = self.log_weights.exp()
        mean = (w[:, None] * self.means).sum(0)
        var = (w[:, None] * ((self.means - mean) ** 2 + self.eigvals)).sum(0)  # trace only needs eigenvalues
        return float(var.mean().sqrt())

    def denoise(self, x: Tensor, s: Tensor) -> Tensor:
        """``E[x0 | x0 + s n = x]`` for ``x [B, d]`` and VE noise level ``s [B]`` (or a scalar)."""
        x = x.double()
        s2 = append_dims(torch.as_tensor(s, dtype=torch.float64).expand(x.shape[0]), 2) ** 2  # [B, 1]
        diff = x[:, None, :] - self.means[None]  # [B, K, d]
        proj = torch.einsum("bkd,kde->bke", diff, self.eigvecs)  # coordinates in each eigenbasis
        var = self.eigvals[None] + s2[:, None]  # [B, K, d]
        logp = -0.5 * (proj**2 / var).sum(-1) - 0.5 * var.log().sum(-1) + self.log_weights[None]
        resp = torch.softmax(logp, dim=1)  # [B, K]
        shrunk = proj * (self.eigvals[None] / var)  # C (C + s^2)^{-1} (x - m) in the eigenbasis
        post = self.means[None] + torch.einsum("bke,kde->bkd", shrunk, self.eigvecs)
        return (resp[..., None] * post).sum(1)


class MixtureDenoiser:
    """The exact denoiser as a polydiff :class:`~polydiff.core.denoiser.Denoiser` of any process; counts calls."""

    def __init__(self, gmm: GaussianMixture, process: NoiseProcess | None = None):
        self.gmm = gmm
        self.process = process or VarianceExploding()
        self.sigma_data = 0.0  # samplers are started by the caller; 0 would treat the start as pure noise
        self.calls = 0

    def __call__(self, x: Tensor, logsnr: Tensor, cond=None) -> Tensor:
        self.calls += 1
        alpha, sigma = self.process.alpha_sigma(logsnr.double())
        return self.gmm.denoise(x.double() / append_dims(alpha, x.ndim), sigma / alpha)


def _rotation(d: int, gen: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None]


def make_mixture(name: str, dim: int, k: int, spread: float, anisotropic: bool, seed: int = 0) -> GaussianMixture:
    """Means ``~ spread * N(0, I)``; component variances log-uniform in [0.003, 1] per axis of a random rotation
    (anisotropic) or 0.3^2 (isotropic); weights from a Dirichlet(2) draw."""
    gen = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(k, dim, generator=gen, dtype=torch.float64)
    if anisotropic:
        eigvals = torch.exp(torch.empty(k, dim, dtype=torch.float64).uniform_(math.log(0.003), 0.0, generator=gen))
        eigvecs = torch.stack([_rotation(dim, gen) for _ in range(k)])
    else:
        eigvals = torch.full((k, dim), 0.09, dtype=torch.float64)
        eigvecs = torch.eye(dim, dtype=torch.float64).expand(k, dim, dim).clone()
    # Dirichlet(2) from the seeded generator: Gamma(2, 1) is the sum of two Exp(1) draws
    w = -torch.log(torch.rand(k, 2, generator=gen, dtype=torch.float64)).sum(1)
    log_weights = (w / w.sum()).log()
    return GaussianMixture(name, means, eigvecs, eigvals, log_weights)


def ring_2d(k: int = 8, radius: float = 4.0, std: float = 0.3) -> GaussianMixture:
    """Eight well separated isotropic modes on a circle (the classic 2-D toy target)."""
    ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = radius * torch.stack([ang.cos(), ang.sin()], 1)
    eye = torch.eye(2, dtype=torch.float64).expand(k, 2, 2).clone()
    return GaussianMixture("ring2d-sep-iso", means, eye, torch.full((k, 2), std**2, dtype=torch.float64),
                           torch.full((k,), -math.log(k), dtype=torch.float64))


def targets(full: bool = False) -> list[GaussianMixture]:
    """The benchmark targets: dimensions 2 to 64, isotropic and anisotropic, separated and overlapping modes."""
    out = [
        ring_2d(),
        make_mixture("d8-overlap-iso", 8, 4, spread=0.5, anisotropic=False, seed=1),
        make_mixture("d16-overlap-aniso", 16, 5, spread=0.5, anisotropic=True, seed=2),
        make_mixture("d64-sep-aniso", 64, 10, spread=1.5, anisotropic=True, seed=3),
        # 64-D with overlapping modes: mean offsets ~ the components' own spread, so the posterior over components
        # stays mixed down to small noise levels (the case where k-diffusion's LMS was ahead at 6-10 NFE, issue 21)
        make_mixture("d64-overlap-iso", 64, 8, spread=0.05, anisotropic=False, seed=5),
        make_mixture("d64-overlap-aniso", 64, 8, spread=0.1, anisotropic=True, seed=6),
    ]
    if full:
        out.append(make_mixture("d32-sep-iso", 32, 6, spread=2.0, anisotropic=False, seed=4))
    return out
