"""Features of the noise level that networks condition on (one definition for every domain)."""

import math

import torch
from torch import Tensor


def noise_level_features(c_noise: Tensor, dim: int, max_freq: float = 100.0) -> Tensor:
    """Sinusoidal features ``[cos(f_k c), sin(f_k c)]`` (``[B, 2 * (dim // 2)]``) of ``c_noise = -lambda/8`` with
    frequencies geometric in [1, max_freq].

    The transformer position encoding (Vaswani et al. 2017) as DDPM/ADM and DiffWave use it for diffusion steps, with
    frequencies chosen for the continuous ``c_noise``, which spans about [-2.5, 2.5] (ADM's timesteps span [0, 1000]).
    """
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), half, device=c_noise.device, dtype=torch.float32))
    args = c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)
