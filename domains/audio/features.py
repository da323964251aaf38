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

    def frames(self, samples: int) -> int:
        """Number of mel frames of a waveform of ``samples`` samples."""
        return samples // self.hop_length + 1
