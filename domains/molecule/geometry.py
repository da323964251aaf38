"""Zero centre of mass over the real atoms of padded molecules (EDM for molecules, Hoogeboom et al. 2022, Sec. 3.2).

Coordinates ``[B, N, 3]`` with a node mask ``[B, N]`` live in the linear subspace where the mean over real atoms is 0
and padding is 0; it has ``(n - 1) * 3`` dimensions for a molecule of ``n`` atoms. A Gaussian restricted to it is the
projection of an isotropic Gaussian, and its log-density counts only those dimensions (EDM eq. 9 and App. A).
"""

import math

import torch
from torch import Tensor


def remove_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` ``[B, N, D]`` minus its mean over the real atoms, padding set to 0."""
    m = mask.to(x.dtype).unsqueeze(-1)
    n = m.sum(1, keepdim=True).clamp(min=1)
    mean = (x * m).sum(1, keepdim=True) / n
    return (x - mean) * m


def centre_of_mass(x: Tensor, mask: Tensor) -> Tensor:
    """Mean ``[B, D]`` of ``x`` over the real atoms."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def zero_com_noise(shape: tuple[int, ...], mask: Tensor, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard Gaussian noise in the zero centre-of-mass subspace ``[B, N, 3]`` (padding 0)."""
    device = generator.device if generator is not None else mask.device
    eps = torch.randn(shape, generator=generator, device=device, dtype=dtype).to(mask.device)
    return remove_mean(eps, mask)


def coordinate_dimensions(mask: Tensor) -> Tensor:
    """Degrees of freedom ``(n - 1) * 3`` of the coordinates of every molecule ``[B]``."""
    return (mask.sum(-1) - 1).clamp(min=0) * 3


def zero_com_log_normal(x: Tensor, mask: Tensor, sigma: float | Tensor = 1.0) -> Tensor:
    """Log-density ``[B]`` of zero-CoM coordinates ``x`` ``[B, N, 3]`` under the isotropic Gaussian N(0, sigma^2) of the
    subspace: ``-|x|^2 / (2 sigma^2) - d/2 log(2 pi sigma^2)`` with ``d = (n - 1) * 3`` (not ``n * 3``)."""
    d = coordinate_dimensions(mask).to(torch.float64)
    sq = (x.double() ** 2 * mask.double().unsqueeze(-1)).sum((1, 2))
    s2 = torch.as_tensor(sigma, dtype=torch.float64) ** 2
    return -sq / (2 * s2) - d / 2 * torch.log(2 * math.pi * s2)
