"""Log-mel features and the mel-derived amplitude envelope of the audio domain.

The vocoder computes its own conditioning from waveforms with this module, at training, at test and in
``polydiff sample``, so a model always sees exactly the features it was trained on; the settings are hyper-parameters of
the :class:`~polydiff.domains.audio.module.VocoderModule` and therefore stored in every checkpoint (the DiffWave issue
"mel normalisation mismatch" cannot happen silently: loading a checkpoint into a model with other settings is an error).

Features: the magnitude mel spectrogram (torchaudio ``MelSpectrogram``, Hann window, centred frames, Slaney mel scale
and area normalisation as librosa / HiFi-GAN), ``log(max(mel, log_floor))``, then normalised with fixed constants
``(log_mel - mel_mean) / mel_std``.

Envelope (PriorGrad, Lee et al. 2022, Sec. 3.2: a data-dependent prior whose variance follows the mel energy): the
frame RMS implied by the mel, calibrated on white noise, floored at the amplitude whose mel sits at ``log_floor``,
max-pooled over neighbouring frames and interpolated linearly to the sample rate. Diffusing ``wave / envelope`` with a
standard Gaussian is the same model as PriorGrad's diffusion with prior N(0, diag(envelope^2)); its eps-MSE is
PriorGrad's Sigma^-1-weighted loss (their eq. 6).

Spectral gains (a SpecGrad-like prior, Koizumi et al. 2022, made exactly invertible): the amplitude of each coefficient
of an orthogonal circular MDCT of size ``hop`` (sine window, TDAC), read from the mel interpolated to linear frequency.
Whitening ``M^T (M x / G)`` and colouring ``M^T (M x G)`` are exact inverses because ``M`` is orthogonal, unlike
STFT-domain filtering, whose inverse is only approximate.
"""

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from polydiff.core.utils import PolydiffError


class LogMelFeatures(nn.Module):
    """Normalised log-mel spectrogram ``[B, n_mels, samples // hop + 1]`` of waveforms ``[B, 1, samples]``.

    Args:
        sample_rate: audio sample rate in Hz.
        n_fft: FFT size (also the window length).
        hop_length: samples between frames.
        n_mels: mel bands.
        f_min: lowest mel frequency (Hz).
        f_max: highest mel frequency (Hz).
        log_floor: magnitudes below this are clamped before the log.
        mel_mean: normalisation offset of the log-mel.
        mel_std: normalisation scale of the log-mel.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float,
                 log_floor: float, mel_mean: float, mel_std: float) -> None:
        super().__init__()
        if f_max > sample_rate / 2:
            raise PolydiffError(f"f_max={f_max} is above the Nyquist frequency {sample_rate / 2} of sample_rate="
                                f"{sample_rate}; lower --model.f_max")
        if hop_length > n_fft:
            raise PolydiffError(f"hop_length={hop_length} exceeds n_fft={n_fft}; choose hop_length <= n_fft")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.log_floor, self.mel_mean, self.mel_std = float(log_floor), float(mel_mean), float(mel_std)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, f_min=f_min, f_max=f_max, n_mels=n_mels,
            power=1.0, center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")
        # RMS calibration: mel RMS of unit-variance white noise (deterministic: fixed seed, computed at construction)
        noise = torch.randn(1, 1, 64 * hop_length + n_fft, generator=torch.Generator().manual_seed(0))
        self.register_buffer("white_mel_rms", self._mel_rms(self.mel(noise)).mean(), persistent=False)
        # spectral prior: MDCT of size hop; coefficient k sits at (k + 1/2) sr / (2 hop) = FFT bin (k + 1/2) n_fft / (2 hop)
        k = torch.arange(hop_length, dtype=torch.float64)
        bins = torch.round((k + 0.5) * n_fft / (2 * hop_length)).long().clamp(1, n_fft // 2)
        self.register_buffer("mdct_bins", bins, persistent=False)
        self.register_buffer("mdct_basis", mdct_basis(hop_length), persistent=False)
        self.register_buffer("white_lin", self._linear(self.mel(noise[:, 0])[..., 4:-4]).mean(), persistent=False)

    @staticmethod
    def _mel_rms(mel: Tensor) -> Tensor:
        return mel.pow(2).mean(-2).sqrt()

    def log_mel(self, wave: Tensor) -> Tensor:
        """Natural-log magnitude mel ``log(max(mel, log_floor))`` of ``[B, 1, S]`` (or ``[B, S]``) -> ``[B, n_mels, F]``."""
        wave = wave.reshape(wave.shape[0], -1).float()
        return torch.log(self.mel(wave).clamp_min(self.log_floor))

    def normalise(self, log_mel: Tensor) -> Tensor:
        return (log_mel - self.mel_mean) / self.mel_std

    def denormalise(self, mel_norm: Tensor) -> Tensor:
        return mel_norm * self.mel_std + self.mel_mean

    def forward(self, wave: Tensor) -> Tensor:
        return self.normalise(self.log_mel(wave))

    def envelope(self, mel_norm: Tensor, samples: int) -> Tensor:
        """Amplitude envelope ``[B, 1, samples]`` implied by normalised log-mels ``[B, n_mels, F]`` (see module doc)."""
        mel = self.denormalise(mel_norm.float()).exp()
        frame_rms = self._mel_rms(mel) / self.white_mel_rms  # [B, F]
        floor = self.log_floor / float(self.white_mel_rms)
        frame_rms = F.max_pool1d(frame_rms.clamp_min(floor)[:, None], 3, stride=1, padding=1)
        # frame i is centred on sample i * hop: linear interpolation between centres
        n_frames = frame_rms.shape[-1]
        env = F.interpolate(frame_rms, size=(n_frames - 1) * self.hop_length + 1, mode="linear", align_corners=True)
        if env.shape[-1] < samples:
            env = F.pad(env, (0, samples - env.shape[-1]), mode="replicate")
        return env[..., :samples]

    def spectral_gains(self, mel_norm: Tensor) -> Tensor:
        """Per-coefficient amplitudes ``[B, hop, F - 1]`` of the circular MDCT (size ``hop``) implied by normalised
        log-mels ``[B, n_mels, F]``: the mel interpolated to linear frequency (filter-weighted average of the bands
        covering each frequency), calibrated so that white noise of unit variance gets gains of about 1, floored at
        the amplitude whose mel sits at ``log_floor``. MDCT frame t is centred on mel frame t + 1; the last frame wraps
        around (end and start of the signal) and takes the larger gains of the last and the first mel frame."""
        gains = self._linear(self.denormalise(mel_norm.float()).exp()) / self.white_lin
        gains = torch.cat([gains[..., 1:-1], torch.maximum(gains[..., -1:], gains[..., :1])], -1)
        return gains.clamp_min(self.log_floor / float(self.white_mel_rms))

    def _linear(self, mel: Tensor) -> Tensor:
        fb = self.mel.mel_scale.fb[self.mdct_bins]  # [hop, n_mels]
        return torch.einsum("fm,bmt->bft", fb, mel) / fb.sum(1).clamp_min(1e-8)[None, :, None]

    def frames(self, samples: int) -> int:
        """Number of mel frames of a waveform of ``samples`` samples."""
        return samples // self.hop_length + 1


def mdct_basis(n: int) -> Tensor:
    """Orthonormal MDCT basis ``[n, 2n]`` with the sine window (Princen & Bradley 1986; Malvar 1990):
    ``C[k, j] = sqrt(2/n) w[j] cos(pi/n (j + 1/2 + n/2)(k + 1/2))``, ``w[j] = sin(pi (j + 1/2) / 2n)``."""
    j = torch.arange(2 * n, dtype=torch.float64)
    k = torch.arange(n, dtype=torch.float64)[:, None]
    w = torch.sin(torch.pi * (j + 0.5) / (2 * n))
    return (torch.sqrt(torch.tensor(2.0 / n)) * w * torch.cos(torch.pi / n * (j + 0.5 + n / 2) * (k + 0.5))).float()


def mdct(x: Tensor, basis: Tensor) -> Tensor:
    """Circular MDCT of ``[B, 1, S]`` (S a multiple of n) -> ``[B, n, S / n]``; frame t covers samples [t n, t n + 2n)
    (wrapping around), so the transform is square and orthogonal: :func:`imdct` inverts it exactly (TDAC)."""
    n = basis.shape[0]
    x = x.reshape(x.shape[0], -1)
    frames = torch.cat([x, x[:, :n]], 1).unfold(1, 2 * n, n)  # [B, T, 2n]
    return torch.einsum("btj,kj->bkt", frames, basis)


def imdct(coeffs: Tensor, basis: Tensor) -> Tensor:
    """Inverse (= transpose) of :func:`mdct`: ``[B, n, T] -> [B, 1, T n]`` by circular overlap-add."""
    n = basis.shape[0]
    frames = torch.einsum("bkt,kj->btj", coeffs, basis)  # [B, T, 2n]
    first, second = frames[..., :n], frames[..., n:]
    out = first + torch.roll(second, 1, dims=1)  # samples [t n, (t+1) n) get frame t's first half, frame t-1's second
    return out.reshape(coeffs.shape[0], 1, -1)
