"""A diffusion model of the STFT magnitude that Griffin-Lim needs, conditioned on the mel: the refiner vocoder.

Why the magnitude and not the waveform (measured on the embedded corpus, 16 held-out-voice clips; docs/domains/audio.md):
Griffin-Lim from the mel scores wide-band PESQ 2.45; Griffin-Lim from the *true* linear magnitude scores 3.52, and the
mel's least-squares magnitude with the true phase 3.58. Griffin-Lim's loss is not phase retrieval as such but the
magnitude it is given: the mel pseudo-inverse (torchaudio ``InverseMelScale``) smears the harmonics inside every band,
and Griffin-Lim cannot find a consistent phase for a magnitude that no signal has. Learning the waveform itself (DiffWave)
needs about 1 M steps; learning the missing detail of a magnitude is a small, translation-equivariant problem.

So the model diffuses the residual of the log-magnitude against the mel's least-squares magnitude (ResGrad-style, Chen et
al. 2022, who diffuse the residual of a first-stage prediction; Tacotron's CBHG post-net also predicted the linear
spectrogram from the mel for Griffin-Lim, deterministically):

    x0 = (log max(|STFT(wave)|, floor) - log max(pinv(mel), floor)) / magnitude_scale,

conditioned on the normalised ``log max(pinv(mel), floor)``, and vocodes with Griffin-Lim (the control's iterations and
seed) from ``exp(base + magnitude_scale * x)``. With x0-prediction a network whose output is zero predicts a zero residual
at every step, so every deterministic sampler that ends at sigma = 0 returns ``x = 0`` exactly, and the pipeline with an
untrained (or zeroed) network *is* the Griffin-Lim control: the network's contribution is the whole difference.

The network (:class:`MagnitudeNet`) is a stack of gated residual 2-D convolutions over (frequency, frame) with
dilations along frequency, so that one layer stack sees the harmonic spacing of the pitch (100-250 Hz is 6-16 bins).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.embeddings import noise_level_features
from polydiff.core.utils import PolydiffError
from polydiff.domains.audio.consistency import linear_magnitude


class GatedLayer2d(nn.Module):
    """A WaveNet-style gated residual layer on ``[B, C, freq, frames]``: 3x3 convolution dilated along frequency,
    noise-level embedding added before it, ``tanh * sigmoid`` gate, 1x1 output added to the input (scaled by 1/sqrt 2)."""

    def __init__(self, channels: int, emb_dim: int, dilation: int) -> None:
        super().__init__()
        self.noise_proj = nn.Linear(emb_dim, channels)
        self.conv = nn.Conv2d(channels, 2 * channels, 3, padding=(dilation, 1), dilation=(dilation, 1))
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        filt, gate = self.conv(h + self.noise_proj(emb)[:, :, None, None]).chunk(2, dim=1)
        return (h + self.out(torch.tanh(filt) * torch.sigmoid(gate))) / math.sqrt(2.0)


class MagnitudeNet(nn.Module):
    """``network(x [B, freq, frames], c_noise [B], cond [B, freq, frames]) -> [B, freq, frames]``.

    Args:
        layers: gated residual layers.
        channels: width of every layer.
        dilation_cycle: the frequency dilation of layer i is ``2^(i mod dilation_cycle)``.
        emb_dim: width of the noise-level embedding MLP.
    """

    def __init__(self, layers: int = 8, channels: int = 16, dilation_cycle: int = 4, emb_dim: int = 64) -> None:
        super().__init__()
        if layers < 1 or channels < 1 or dilation_cycle < 1:
            raise PolydiffError("magnitude_layers, magnitude_channels and dilation_cycle must be at least 1")
        self.emb_in = 128
        self.embedding = nn.Sequential(nn.Linear(self.emb_in, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())
        self.input_proj = nn.Conv2d(2, channels, 3, padding=1)
        self.layers = nn.ModuleList(GatedLayer2d(channels, emb_dim, 2 ** (i % dilation_cycle)) for i in range(layers))
        self.output_proj = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.output_proj.weight)  # a fresh network predicts a zero residual: the pipeline is Griffin-Lim
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor) -> Tensor:
        if cond is None or cond.shape != x.shape or x.ndim != 3:
            raise PolydiffError(f"the magnitude refiner needs x and its condition as [B, freq, frames] of one shape, got "
                                f"{tuple(x.shape)} and {None if cond is None else tuple(cond.shape)}")
        emb = self.embedding(noise_level_features(c_noise, self.emb_in).to(x.dtype))
        h = F.relu(self.input_proj(torch.stack([x, cond.to(x.dtype)], 1)))
        for layer in self.layers:
            h = layer(h, emb)
        return self.output_proj(h)[:, 0]


class MagnitudeResidual:
    """The encoding of the refiner: waveforms and mels to the diffused log-magnitude residual, and back.

    Args:
        features: the model's :class:`~polydiff.domains.audio.features.LogMelFeatures` (its STFT and mel).
        scale: the residual is divided by this (natural-log units) so that it has about unit variance.
    """

    def __init__(self, features, scale: float) -> None:
        self.features, self.scale = features, float(scale)

    def base(self, mel_norm: Tensor) -> Tensor:
        """``log max(pinv(mel), floor)`` ``[B, freq, frames]``: the magnitude Griffin-Lim gets from the mel alone."""
        mag = linear_magnitude(self.features, self.features.denormalise(mel_norm))
        return mag.clamp_min(self.features.log_floor).log()

    def condition(self, base: Tensor) -> Tensor:
        """The network's condition: the base log-magnitude with the mel's normalisation."""
        return self.features.normalise(base)

    def residual(self, wave: Tensor, base: Tensor) -> Tensor:
        """``x0``: the scaled log-magnitude residual of ``wave`` ``[B, 1, S]`` against ``base``."""
        spec = self.features.mel.spectrogram(wave.reshape(wave.shape[0], -1).float())
        return (spec.clamp_min(self.features.log_floor).log() - base) / self.scale

    def magnitude(self, x: Tensor, base: Tensor) -> Tensor:
        """The linear magnitude of a (generated) residual ``x``: ``exp(base + scale * x)``."""
        return (base + self.scale * x).exp()
