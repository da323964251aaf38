"""Offline vocoder metrics and the Griffin-Lim control.

* log-mel L1: mean absolute difference of natural-log magnitude mels (the vocoder's own feature settings).
* multi-resolution STFT distance: Parallel WaveGAN's auxiliary loss (Yamamoto et al. 2020, eq. 1-4): spectral
  convergence ``|| |S| - |S^| ||_F / || |S| ||_F`` plus log-magnitude L1 ``mean |log |S| - log |S^||``, averaged over
  three (n_fft, hop, win) resolutions.
* periodicity error: mean absolute difference of the per-frame periodicity (the peak of the normalised, unbiased
  autocorrelation over lags of 60-500 Hz pitch periods, 64 ms frames) on the reference's active frames; a vocoder that
  matches magnitudes with noise-like excitation (no harmonics) scores badly here while log-mel L1 may not notice.
  A simple autocorrelation stand-in for CARGAN's periodicity RMSE (Morrison et al. 2022), which needs a pitch network.
* SI-SDR: scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019, eq. 4-5), zero-mean signals.
* wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04-4.64) and STOI (Taal et al. 2011, 0-1): the perceptual and
  intelligibility measures of the field, through torchmetrics (packages ``pesq`` and ``pystoi``). Wide-band PESQ is
  defined at 16 kHz only, so other rates are resampled to 16 kHz for it (STOI resamples to 10 kHz itself).
* Griffin-Lim from the same mel: least-squares inversion of the mel filterbank (torchaudio ``InverseMelScale``) followed
  by 32 iterations of fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99; torchaudio ``GriffinLim``).
"""

import torch
import torchaudio
import torchaudio.functional as AF
from torch import Tensor

from polydiff.core.utils import PolydiffError
from polydiff.domains.audio.consistency import linear_magnitude

#: (n_fft, hop, win) of Parallel WaveGAN's multi-resolution STFT loss
MR_STFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).float()


def log_mel_l1(features, ref: Tensor, est: Tensor) -> Tensor:
    """Per-clip mean |log mel(ref) - log mel(est)| with ``features`` (a :class:`LogMelFeatures`)."""
    return (features.log_mel(ref) - features.log_mel(est)).abs().flatten(1).mean(1)


def stft_magnitude(x: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    window = torch.hann_window(win, device=x.device)
    spec = torch.stft(_flat(x), n_fft, hop, win, window=window, center=True, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def mr_stft_distance(ref: Tensor, est: Tensor, resolutions=MR_STFT_RESOLUTIONS) -> Tensor:
    """Per-clip multi-resolution STFT distance (spectral convergence + log-magnitude L1, mean over resolutions)."""
    total = torch.zeros(ref.shape[0], device=ref.device)
    for n_fft, hop, win in resolutions:
        s, s_hat = stft_magnitude(ref, n_fft, hop, win), stft_magnitude(est, n_fft, hop, win)
        sc = torch.linalg.vector_norm((s - s_hat).flatten(1), dim=1) / torch.linalg.vector_norm(s.flatten(1), dim=1)
        mag = (s.log() - s_hat.log()).abs().flatten(1).mean(1)
        total = total + sc + mag
    return total / len(resolutions)


def si_sdr(ref: Tensor, est: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-clip SI-SDR in dB: ``10 log10(|a s|^2 / |a s - s^|^2)`` with ``a = <s^, s> / |s|^2``."""
    s, s_hat = _flat(ref), _flat(est)
    s = s - s.mean(1, keepdim=True)
    s_hat = s_hat - s_hat.mean(1, keepdim=True)
    a = (s_hat * s).sum(1, keepdim=True) / (s.pow(2).sum(1, keepdim=True) + eps)
    target = a * s
    return 10 * torch.log10(target.pow(2).sum(1) / ((target - s_hat).pow(2).sum(1) + eps) + eps)


def pesq_wb(ref: Tensor, est: Tensor, sample_rate: int) -> Tensor:
    """Per-clip wide-band PESQ of ``est`` against ``ref`` (both ``[B, 1, S]``), resampled to 16 kHz when needed."""
    from torchmetrics.functional.audio import perceptual_evaluation_speech_quality

    ref, est = _flat(ref).cpu(), _flat(est).cpu()
    from pesq import PesqError

    if sample_rate != 16000:
        ref, est = AF.resample(ref, sample_rate, 16000), AF.resample(est, sample_rate, 16000)
    try:
        return perceptual_evaluation_speech_quality(est, ref, 16000, "wb").reshape(-1).to(torch.float64)
    except PesqError as err:
        raise PolydiffError(f"PESQ cannot score these clips ({err}): PESQ needs speech in the reference; evaluate on "
                            "speech recordings (silent or tonal clips have no utterance to score)") from err


def stoi(ref: Tensor, est: Tensor, sample_rate: int) -> Tensor:
    """Per-clip short-time objective intelligibility of ``est`` against ``ref`` (both ``[B, 1, S]``)."""
    from torchmetrics.functional.audio import short_time_objective_intelligibility

    return short_time_objective_intelligibility(_flat(est).cpu(), _flat(ref).cpu(), sample_rate).reshape(-1).to(
        torch.float64)


def griffin_lim(features, log_mel: Tensor, samples: int, n_iter: int = 32, seed: int = 0) -> Tensor:
    """Waveforms ``[B, 1, samples]`` from natural-log magnitude mels ``[B, n_mels, F]`` by mel inversion + Griffin-Lim.
    The least-squares magnitude is floored at ``log_floor`` like the mel it comes from (so that the refiner's zero
    residual, ``exp(log max(pinv, floor))``, is this magnitude exactly)."""
    magnitude = linear_magnitude(features, log_mel).clamp_min(features.log_floor)
    return griffin_lim_magnitude(features, magnitude, samples, n_iter, seed)


def griffin_lim_magnitude(features, magnitude: Tensor, samples: int, n_iter: int = 32, seed: int = 0) -> Tensor:
    """Waveforms ``[B, 1, samples]`` with STFT magnitudes ``[B, n_fft/2+1, F]`` (the features' STFT) by fast
    Griffin-Lim from a seeded random phase."""
    gl = torchaudio.transforms.GriffinLim(n_fft=features.n_fft, n_iter=n_iter, hop_length=features.hop_length,
                                          power=1.0, length=samples).to(magnitude.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # GriffinLim's random initial phase
        wave = gl(magnitude.float())
    return wave.reshape(magnitude.shape[0], 1, -1)


def periodicity(wave: Tensor, sample_rate: int, frame: int = 1024, hop: int = 256, f_min: float = 60.0,
                f_max: float = 500.0) -> tuple[Tensor, Tensor]:
    """Per-frame periodicity in [0, 1] and frame energy, both ``[B, frames]``: the maximum over lags of pitch periods
    between ``1/f_max`` and ``1/f_min``, past the first zero crossing, of the zero-mean frame's unbiased autocorrelation
    divided by its energy (about 1 for a steady voiced tone, about 0.1 for white noise, 0 for a tone below ``f_min`` or
    brown noise). A clip shorter than a frame is zero-padded to one frame."""
    x = _flat(wave)
    if x.shape[1] < frame:
        x = torch.nn.functional.pad(x, (0, frame - x.shape[1]))
    frames = x.unfold(1, frame, hop)
    frames = frames - frames.mean(-1, keepdim=True)
    spec = torch.fft.rfft(frames, n=2 * frame)
    ac = torch.fft.irfft(spec.abs().pow(2), n=2 * frame)[..., :frame]
    ac = ac / (frame - torch.arange(frame, device=x.device))
    lo, hi = int(sample_rate / f_max), min(int(sample_rate / f_min), frame - 1)
    energy = ac[..., 0]
    r = ac[..., :hi + 1] / energy[..., None].clamp_min(1e-12)
    # only lags past the first zero crossing count (as pitch trackers do): a slowly decaying autocorrelation (low
    # rumble, brown noise, a tone below f_min) is not a period; no crossing within the range -> periodicity 0
    crossed = (r <= 0).cumsum(-1) > 0
    lags = torch.arange(hi + 1, device=x.device)
    eligible = crossed & (lags >= lo)
    peak = torch.where(eligible, r, torch.full_like(r, -1.0)).amax(-1)
    return peak.clamp(0.0, 1.0), energy


def periodicity_error(ref: Tensor, est: Tensor, sample_rate: int, active_db: float = -30.0) -> Tensor:
    """Per-clip mean |periodicity(ref) - periodicity(est)| over the frames where the reference's energy is within
    ``active_db`` of its loudest frame."""
    p_ref, e_ref = periodicity(ref, sample_rate)
    p_est, _ = periodicity(est, sample_rate)
    active = (e_ref > e_ref.amax(-1, keepdim=True) * 10 ** (active_db / 10)).float()
    return ((p_ref - p_est).abs() * active).sum(-1) / active.sum(-1).clamp_min(1.0)
