"""A KL-regularised convolutional autoencoder for grid data of any rank (LDM's ``AutoencoderKL``, Rombach et al. 2022,
App. G; MONAI's ``AutoencoderKL`` with ``spatial_dims``): 1-d signals, images, volumes or videos as ``[B, C, *grid]``.

The encoder halves the grid ``len(channel_mult) - 1`` times and outputs the mean and log-variance of a diagonal Gaussian
posterior over a ``latent_channels``-channel latent grid; the decoder mirrors it. Convolutions are
``Conv1d`` / ``Conv2d`` / ``Conv3d`` by the grid's rank, so one class serves every grid domain.
"""

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.domains.image.unet import group_norm


def conv(dims: int, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    """A ``dims``-d convolution with 'same' padding (stride 2 halves the grid)."""
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)


class ResBlock(nn.Module):
    """``skip(x) + conv(silu(norm(conv(silu(norm(x))))))`` (LDM's ``ResnetBlock`` without the time embedding)."""

    def __init__(self, dims: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(group_norm(in_ch), nn.SiLU(), conv(dims, in_ch, out_ch),
                                  group_norm(out_ch), nn.SiLU(), conv(dims, out_ch, out_ch))
        self.skip = nn.Identity() if in_ch == out_ch else conv(dims, in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling of the grid, then a convolution."""

    def __init__(self, dims: int, channels: int) -> None:
        super().__init__()
        self.conv = conv(dims, channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class KLAutoencoder(nn.Module):
    """``encode(x) -> (mean, logvar)`` of the latent posterior, ``decode(z) -> x``.

    Args:
        dims: rank of the grid (1, 2 or 3).
        channels: data channels.
        latent_channels: channels of the latent grid.
        base_channels: width of the first level.
        channel_mult: width multiplier per level; the grid halves between levels (factor ``2 ** (levels - 1)``).
        num_res_blocks: residual blocks per level.
    """

    def __init__(self, dims: int = 2, channels: int = 1, latent_channels: int = 2, base_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1) -> None:
        super().__init__()
        if dims not in (1, 2, 3):
            raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
        self.dims, self.channels, self.latent_channels = dims, channels, latent_channels
        self.factor = 2 ** (len(channel_mult) - 1)
        widths = [base_channels * m for m in channel_mult]
        enc: list[nn.Module] = [conv(dims, channels, widths[0])]
        ch = widths[0]
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(ResBlock(dims, ch, w))
                ch = w
            if level < len(widths) - 1:
                enc.append(conv(dims, ch, ch, stride=2))
        enc += [ResBlock(dims, ch, ch), group_norm(ch), nn.SiLU(), conv(dims, ch, 2 * latent_channels)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [conv(dims, latent_channels, ch), ResBlock(dims, ch, ch)]
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                dec.append(ResBlock(dims, ch, w))
                ch = w
            if level > 0:
                dec.append(Upsample(dims, ch))
        dec += [group_norm(ch), nn.SiLU(), conv(dims, ch, channels)]
        self.decoder = nn.Sequential(*dec)

    def check_input(self, x: Tensor) -> None:
        if x.ndim != self.dims + 2 or x.shape[1] != self.channels or any(s % self.factor for s in x.shape[2:]):
            raise ValueError(f"the autoencoder expects [B, {self.channels}, *grid] with {self.dims} grid axes divisible "
                             f"by {self.factor}, got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (clamped to [-30, 20] as in LDM) of the posterior ``q(z | x)``."""
        self.check_input(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def latent_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The latent shape ``[..., latent_channels, *grid / factor]`` of data of ``shape`` ``[..., C, *grid]``."""
        grid = tuple(shape[-self.dims:])
        if len(shape) < self.dims + 1 or shape[-self.dims - 1] != self.channels or any(s % self.factor for s in grid):
            raise ValueError(f"data of shape {tuple(shape)} does not fit an autoencoder of {self.channels} channels "
                             f"and {self.dims} grid axes divisible by {self.factor}")
        return (*shape[:-self.dims - 1], self.latent_channels, *(s // self.factor for s in grid))

    @staticmethod
    def sample_posterior(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw ``mean + exp(logvar / 2) * eps`` (the reparameterisation trick, Kingma & Welling 2014)."""
        eps = torch.randn(mean.shape, generator=generator, device="cpu" if generator is None else generator.device)
        return mean + (0.5 * logvar).exp() * eps.to(mean.device, mean.dtype)

    @staticmethod
    def kl(mean: Tensor, logvar: Tensor) -> Tensor:
        """Per-item ``KL(N(mean, exp(logvar)) || N(0, I))`` summed over the latent (Kingma & Welling 2014, App. B)."""
        return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
