"""The discriminator of the denoising diffusion GAN for data on a grid (sequences, images, volumes: ``[B, C, *grid]``).

``D(x_s, x_t, lambda_t, lambda_s, y)``: is ``x_s`` a real draw of ``q(x_s | x_t)`` (Xiao et al. 2022, Sec. 3.2)? The two
states are concatenated along the channels and read by a small residual convolutional encoder (convolutions of the
grid's rank, LeakyReLU 0.2, average-pool downsampling, as DD-GAN's own discriminator) whose blocks are shifted by an
embedding of both noise levels (the core's sinusoidal features of ``c_noise``); a projection on the class embedding
(Miyato & Koyama 2018) lets it judge class-conditional data. Its inputs are scaled to unit variance with the core's
``c_in`` so the same network serves every process.
"""

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.embeddings import noise_level_features
from polydiff.core.parameterization import c_in, c_noise
from polydiff.core.utils import PolydiffError, append_dims

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class _Block(nn.Module):
    """Residual block: ``conv(act(conv(act h) + shift(emb)))`` plus a 1x1 skip, averaged down by 2 when ``down``."""

    def __init__(self, dims: int, cin: int, cout: int, emb_dim: int, down: bool) -> None:
        super().__init__()
        conv = _CONV[dims]
        self.conv1, self.conv2 = conv(cin, cout, 3, padding=1), conv(cout, cout, 3, padding=1)
        self.shift = nn.Linear(emb_dim, cout)
        self.skip = conv(cin, cout, 1, bias=False)
        self.dims, self.down = dims, down

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        y = self.conv1(F.leaky_relu(h, 0.2)) + append_dims(self.shift(emb), h.ndim)
        y = self.conv2(F.leaky_relu(y, 0.2))
        out = (y + self.skip(h)) / math.sqrt(2)
        return _POOL[self.dims](out, 2) if self.down else out


class GridDiscriminator(nn.Module):
    """DD-GAN's time-conditional discriminator for ``[B, C, *grid]`` data of 1 to 3 grid dimensions.

    Args:
        channels: channels C of the data (the input has 2C: ``x_s`` and ``x_t``).
        dims: number of grid dimensions (1 sequences, 2 images, 3 volumes).
        width: channels of the first block.
        channel_mult: width multipliers of the blocks; every block but the last halves the grid.
        num_classes: > 0: the condition is a class label per item (index ``num_classes``, the null class, is allowed)
            and enters by projection; 0: the condition is ignored.
    """

    def __init__(self, channels: int, dims: int, width: int = 32, channel_mult: Sequence[int] = (1, 2, 2),
                 num_classes: int = 0) -> None:
        super().__init__()
        if dims not in _CONV:
            raise PolydiffError(f"the grid discriminator reads data of 1 to 3 grid dimensions ([B, C, *grid]), got "
                                f"{dims}; DD-GAN needs a discriminator for this domain")
        self.width, self.num_classes = width, num_classes
        emb_dim = 4 * width
        self.noise_mlp = nn.Sequential(nn.Linear(2 * width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = _CONV[dims](2 * channels, width, 3, padding=1)
        chans = [width * m for m in channel_mult]
        self.blocks = nn.ModuleList(_Block(dims, cin, cout, emb_dim, i < len(chans) - 1)
                                    for i, (cin, cout) in enumerate(zip([width] + chans[:-1], chans)))
        self.head = nn.Linear(chans[-1], 1)
        self.class_emb = nn.Embedding(num_classes + 1, chans[-1]) if num_classes > 0 else None

    def forward(self, x_s: Tensor, x_t: Tensor, logsnr_t: Tensor, logsnr_s: Tensor, process: Any,
                sigma_data: float = 1.0, cond: Any = None) -> Tensor:
        """Logit ``[B]`` that ``x_s`` is a real draw of ``q(x_s | x_t)``; ``process`` gives the scales."""
        n = x_t.ndim
        scale_t = c_in(*process.alpha_sigma(logsnr_t), sigma_data)
        scale_s = c_in(*process.alpha_sigma(logsnr_s), sigma_data)
        dtype = self.stem.weight.dtype
        h = torch.cat([x_s * append_dims(scale_s, n).to(x_s.device), x_t * append_dims(scale_t, n).to(x_t.device)],
                      dim=1).to(dtype)
        half = self.width
        emb = self.noise_mlp(torch.cat([noise_level_features(c_noise(logsnr_t).to(h.device), half),
                                        noise_level_features(c_noise(logsnr_s).to(h.device), half)], dim=1))
        h = self.stem(h)
        for block in self.blocks:
            h = block(h, emb)
        h = F.leaky_relu(h, 0.2).flatten(2).sum(2)
        out = self.head(h).squeeze(1)
        if self.class_emb is not None:
            y = (torch.full((h.shape[0],), self.num_classes, dtype=torch.long) if cond is None
                 else torch.as_tensor(cond).long().reshape(-1)).to(h.device)
            if y.numel() != h.shape[0]:
                raise PolydiffError(f"the discriminator's num_classes={self.num_classes} reads one class label per "
                                    f"item; got a condition of {y.numel()} values for {h.shape[0]} items (set the "
                                    "DDGAN callback's num_classes to 0 for conditions that are not class labels)")
            out = out + (self.class_emb(y) * h).sum(1)
        return out
