"""Consistency of a waveform with its conditioning mel: projections used inside the reverse process (GLA-Grad).

GLA-Grad (Liu et al. 2024, "GLA-Grad: A Griffin-Lim Extended Waveform Generation Diffusion Model") runs a few iterations
of phase retrieval on the clean-signal estimate at each reverse step of an already trained vocoder, so that the sample
stays consistent with the mel it is conditioned on; it needs no retraining. Two projections are offered:

* ``griffin_lim``: fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99) towards the linear magnitude that the mel
  pseudo-inverse (torchaudio ``InverseMelScale``) implies, starting from the phase of the current estimate (GLA-Grad).
* ``mel``: rescale the current STFT so that its mel matches the target (multiplicative per-band gains spread back
  through the filterbank, keeping the estimate's structure inside each band), then make it consistent again
  (iSTFT -> STFT). It never replaces the magnitude by the band-smoothed pseudo-inverse, so harmonics inside a band survive.

Both are projections in waveform space; :class:`ProjectedDenoiser` applies one to the denoiser's ``x0`` estimate in the
vocoder's diffused (whitened) space, so every sampler of the core uses it unchanged.
"""

from typing import Any, Callable

import torch
import torchaudio
from torch import Tensor, nn

from polydiff.core.utils import PolydiffError

CONSISTENCY_MODES = ("none", "griffin_lim", "mel")


def check_mode(mode: str) -> str:
    if mode not in CONSISTENCY_MODES:
        raise PolydiffError(f"consistency={mode!r} is not one of {', '.join(CONSISTENCY_MODES)}; set "
                            "--model.consistency accordingly")
    return mode


class _Stft:
    """The features' STFT (Hann window of n_fft, hop, centred, reflect padding) and its least-squares inverse."""

    def __init__(self, features, device: torch.device) -> None:
        self.n_fft, self.hop = features.n_fft, features.hop_length
        self.window = torch.hann_window(self.n_fft, device=device)

    def __call__(self, wave: Tensor) -> Tensor:
        return torch.stft(wave.reshape(wave.shape[0], -1).float(), self.n_fft, self.hop, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)

    def inverse(self, spec: Tensor, samples: int) -> Tensor:
        return torch.istft(spec, self.n_fft, self.hop, window=self.window, length=samples)[:, None]


def linear_magnitude(features, log_mel: Tensor) -> Tensor:
    """Least-squares linear STFT magnitude ``[B, n_fft/2+1, F]`` of natural-log mels (torchaudio ``InverseMelScale``)."""
    tf = features.mel
    inv = torchaudio.transforms.InverseMelScale(
        n_stft=features.n_fft // 2 + 1, n_mels=features.n_mels, sample_rate=features.sample_rate, f_min=tf.f_min,
        f_max=tf.f_max, norm="slaney", mel_scale="slaney").to(log_mel.device)
    return inv(log_mel.float().exp())


def griffin_lim_from(features, wave: Tensor, magnitude: Tensor, iters: int, momentum: float = 0.99) -> Tensor:
    """Fast Griffin-Lim towards ``magnitude`` starting from the phase of ``wave`` ``[B, 1, S]`` (torchaudio's update;
    ``momentum=0`` is the original Griffin-Lim, for which a consistent ``wave`` with this magnitude is a fixed point)."""
    stft = _Stft(features, wave.device)
    samples = wave.shape[-1]
    momentum = momentum / (1 + momentum)  # torchaudio's parameterisation of the FGLA step
    angles = stft(wave)
    angles = angles / (angles.abs() + 1e-16)
    prev = None
    for _ in range(iters):
        rebuilt = stft(stft.inverse(magnitude * angles, samples))
        angles = rebuilt if prev is None else rebuilt - momentum * prev
        angles = angles / (angles.abs() + 1e-16)
        prev = rebuilt
    return stft.inverse(magnitude * angles, samples)


def band_gains(features, magnitude: Tensor, target: Tensor) -> Tensor:
    """Per-bin gains ``[B, freq, F]`` that move the mel of the linear magnitude ``magnitude`` towards the magnitude mel
    ``target`` ``[B, n_mels, F]``: the per-band ratios ``target / mel`` spread back to linear frequency by the normalised
    filterbank; bins that no band sees (DC, above f_max) get gain 1."""
    fb = features.mel.mel_scale.fb.to(magnitude.device)  # [freq, mels]
    spread = fb / fb.sum(1, keepdim=True).clamp_min(1e-8)
    uncovered = (fb.sum(1) <= 0).float()[None, :, None]
    mel = torch.einsum("bft,fm->bmt", magnitude, fb).clamp_min(features.log_floor)
    return torch.einsum("fm,bmt->bft", spread, target / mel) + uncovered


def mel_consistency(features, wave: Tensor, log_mel: Tensor, iters: int) -> Tensor:
    """``iters`` rounds of: scale the STFT of ``wave`` by the :func:`band_gains` towards the target mel, then iSTFT.
    A waveform whose mel already equals the target is a fixed point (up to the STFT round trip)."""
    stft = _Stft(features, wave.device)
    samples = wave.shape[-1]
    target = log_mel.float().exp().clamp_min(features.log_floor)
    out = wave
    for _ in range(iters):
        spec = stft(out)
        out = stft.inverse(spec * band_gains(features, spec.abs(), target), samples)
    return out


def mel_consistent_magnitude(features, magnitude: Tensor, log_mel: Tensor, iters: int) -> Tensor:
    """``iters`` rounds of :func:`band_gains` applied to a linear magnitude ``[B, freq, F]`` itself (no STFT round
    trip): the band energies move onto the target mel, the structure inside each band stays."""
    target = log_mel.float().exp().clamp_min(features.log_floor)
    for _ in range(iters):
        magnitude = magnitude * band_gains(features, magnitude, target)
    return magnitude


def projection(features, mode: str, iters: int, log_mel: Tensor) -> Callable[[Tensor], Tensor] | None:
    """The waveform projection ``wave -> wave`` of ``mode`` towards ``log_mel`` (None for ``none`` or 0 iterations)."""
    check_mode(mode)
    if mode == "none" or iters <= 0:
        return None
    if mode == "griffin_lim":
        magnitude = linear_magnitude(features, log_mel)
        return lambda wave: griffin_lim_from(features, wave, magnitude, iters)
    return lambda wave: mel_consistency(features, wave, log_mel, iters)


class ProjectedDenoiser(nn.Module):
    """A denoiser whose ``x0`` estimate is decoded to a waveform, projected, and encoded back (GLA-Grad).

    Args:
        denoiser: the trained denoiser (``x_t, logsnr, cond -> x0`` in the diffused space).
        decode: diffused space -> waveform (the vocoder's ``colour``), called with the condition.
        encode: waveform -> diffused space (the vocoder's ``whiten``), called with the condition.
        project: waveform -> waveform (:func:`projection`).
    """

    def __init__(self, denoiser: nn.Module, decode: Callable[[Tensor, Any], Tensor],
                 encode: Callable[[Tensor, Any], Tensor], project: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.process = denoiser.process
        self.sigma_data = denoiser.sigma_data
        self.decode, self.encode, self.project = decode, encode, project

    def forward(self, x: Tensor, logsnr: Tensor, cond: Any = None) -> Tensor:
        x0 = self.denoiser(x, logsnr, cond)
        wave = self.project(self.decode(x0.float(), cond))
        return self.encode(wave, cond).to(x0.dtype)
