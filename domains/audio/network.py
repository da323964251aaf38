"""The DiffWave network (Kong et al. 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis", Sec. 3 and Fig. 2).

A stack of residual layers over the waveform: each adds a projection of the noise-level embedding, applies a dilated
bidirectional convolution (dilation ``2^(i mod cycle)``), adds the mel condition projected by a 1x1 convolution, and
passes the sum through the gated activation ``tanh(filter) * sigmoid(gate)`` (WaveNet, van den Oord et al. 2016). A 1x1
convolution splits the result into a residual (added to the layer input, scaled by ``1/sqrt 2``) and a skip output; the
skips are summed (scaled by ``1/sqrt(layers)``) and projected to one channel. The mel spectrogram is brought to the
sample rate by transposed 2-D convolutions over (mel, time) whose strides multiply to the hop length (DiffWave's
``SpectrogramUpsampler``). The output projection starts at zero, so a fresh network predicts zeros.

``squeeze`` > 1 folds groups of that many consecutive samples into channels before the residual stack and unfolds them at
the end (WaveGlow's squeeze, Prenger et al. 2019, Sec. 2.1): the stack then runs at ``1/squeeze`` of the sample rate, so
each layer costs ``squeeze`` times less and the receptive field in samples grows ``squeeze``-fold. The upsampler then
stops at ``hop_length / squeeze`` steps per frame.
"""

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.embeddings import noise_level_features
from polydiff.core.utils import PolydiffError


def fold(x: Tensor, squeeze: int) -> Tensor:
    """``[B, 1, S] -> [B, squeeze, S / squeeze]`` with ``out[:, j, n] = x[:, 0, n * squeeze + j]``."""
    return x.reshape(x.shape[0], x.shape[-1] // squeeze, squeeze).transpose(1, 2)


def unfold(h: Tensor) -> Tensor:
    """Inverse of :func:`fold`: ``[B, squeeze, S / squeeze] -> [B, 1, S]``."""
    return h.transpose(1, 2).reshape(h.shape[0], 1, -1)


class MelUpsampler(nn.Module):
    """``[B, n_mels, F] -> [B, n_mels, F * prod(factors)]`` by transposed 2-D convolutions (kernel 3 x 2s, stride 1 x s)
    with leaky ReLU 0.4, as DiffWave's ``SpectrogramUpsampler``."""

    def __init__(self, factors: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2)) for s in factors)

    def forward(self, mel: Tensor) -> Tensor:
        x = mel[:, None]
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.4)
        return x[:, 0]


class ResidualLayer(nn.Module):
    """One DiffWave residual layer (gated dilated convolution with noise-level and mel conditioning)."""

    def __init__(self, channels: int, n_mels: int, emb_dim: int, dilation: int) -> None:
        super().__init__()
        self.dilated = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.noise_proj = nn.Linear(emb_dim, channels)
        self.cond_proj = nn.Conv1d(n_mels, 2 * channels, 1)
        self.out_proj = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, x: Tensor, emb: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        y = self.dilated(x + self.noise_proj(emb)[:, :, None]) + self.cond_proj(cond)
        filt, gate = y.chunk(2, dim=1)
        residual, skip = self.out_proj(torch.tanh(filt) * torch.sigmoid(gate)).chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class DiffWave(nn.Module):
    """DiffWave's network as ``network(x_in [B, 1, S], c_noise [B], mel [B, n_mels, F]) -> [B, 1, S]``.

    Args:
        n_mels: mel bands of the condition.
        hop_length: samples per mel frame; must equal the product of ``upsample_factors``.
        residual_layers: number of residual layers (DiffWave: 30).
        residual_channels: width of the residual stream (DiffWave: 64).
        dilation_cycle: dilations are ``2^(i mod dilation_cycle)`` (DiffWave: 10).
        upsample_factors: strides of the mel upsampler; they multiply to hop_length / squeeze (DiffWave: 16, 16).
        emb_dim: width of the noise-level embedding MLP (DiffWave: 512).
        squeeze: samples folded into channels (1: DiffWave as published).
    """

    def __init__(self, n_mels: int, hop_length: int, residual_layers: int = 30, residual_channels: int = 64,
                 dilation_cycle: int = 10, upsample_factors: Sequence[int] = (16, 16), emb_dim: int = 512,
                 squeeze: int = 1) -> None:
        super().__init__()
        if squeeze < 1 or hop_length % squeeze:
            raise PolydiffError(f"squeeze={squeeze} must be a positive divisor of hop_length={hop_length}")
        if math.prod(upsample_factors) * squeeze != hop_length:
            raise PolydiffError(f"upsample_factors {tuple(upsample_factors)} multiply to {math.prod(upsample_factors)} "
                                f"but hop_length / squeeze is {hop_length // squeeze}; set --model.upsample_factors to "
                                "factors of it")
        self.squeeze = squeeze
        if dilation_cycle < 1 or residual_layers < 1:
            raise PolydiffError("residual_layers and dilation_cycle must be at least 1")
        self.n_mels = n_mels
        self.input_proj = nn.Conv1d(squeeze, residual_channels, 1)
        self.emb_in = 128
        self.embedding = nn.Sequential(nn.Linear(self.emb_in, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())
        self.upsampler = MelUpsampler(upsample_factors)
        self.layers = nn.ModuleList(
            ResidualLayer(residual_channels, n_mels, emb_dim, 2 ** (i % dilation_cycle)) for i in range(residual_layers))
        self.skip_proj = nn.Conv1d(residual_channels, residual_channels, 1)
        self.output_proj = nn.Conv1d(residual_channels, squeeze, 1)
        nn.init.zeros_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor) -> Tensor:
        if cond is None or cond.ndim != 3 or cond.shape[1] != self.n_mels:
            raise PolydiffError(f"the vocoder needs a mel condition of shape [B, {self.n_mels}, frames], got "
                                f"{None if cond is None else tuple(cond.shape)}")
        samples = x.shape[-1]
        if samples % self.squeeze:
            raise PolydiffError(f"waveform length {samples} is not a multiple of squeeze={self.squeeze}; use crops that "
                                "are multiples of the hop length")
        x = fold(x, self.squeeze)
        samples = samples // self.squeeze
        mel = self.upsampler(cond.to(x.dtype))
        if mel.shape[-1] < samples:
            raise PolydiffError(f"mel condition covers {mel.shape[-1]} samples but the waveform has {samples}")
        mel = mel[..., :samples]
        emb = self.embedding(noise_level_features(c_noise, self.emb_in).to(x.dtype))
        h = F.relu(self.input_proj(x))
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h, emb, mel)
            skip = skip + s
        h = F.relu(self.skip_proj(skip / math.sqrt(len(self.layers))))
        return unfold(self.output_proj(h))
