"""Audio domain: the periodicity metric and the GLA-Grad consistency projections, against closed forms and controls."""

import math

import pytest
import torch
import torchaudio

from polydiff.core.utils import PolydiffError
from polydiff.domains.audio.consistency import ProjectedDenoiser, griffin_lim_from, linear_magnitude, mel_consistency
from polydiff.domains.audio.features import LogMelFeatures
from polydiff.domains.audio.metrics import log_mel_l1, periodicity, periodicity_error

torch.set_num_threads(1)
SR = 16000


def features():
    return LogMelFeatures(SR, 512, 128, 40, 0.0, 8000.0, 1e-5, -5.0, 2.5)


def voiced(seconds=0.256, f0=150.0):
    """Harmonics 1..10 of f0 with 1/k amplitudes (a steady voiced sound)."""
    t = torch.arange(int(seconds * SR)) / SR
    x = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 11))
    return (0.2 * x)[None, None]


def test_periodicity_of_tone_noise_and_identity():
    g = torch.Generator().manual_seed(0)
    p_tone, _ = periodicity(voiced(), SR)
    p_noise, _ = periodicity(torch.randn(1, 1, 4096, generator=g), SR)
    assert float(p_tone.min()) > 0.95  # a period of 1/150 s is one of the searched lags
    assert float(p_noise.max()) < 0.3
    # a slowly decaying autocorrelation is not a period: a 40 Hz tone (below f_min = 60 Hz) and brown noise
    t = torch.arange(4096) / SR
    p_low, _ = periodicity(torch.sin(2 * math.pi * 40 * t)[None, None], SR)
    p_brown, _ = periodicity(torch.randn(1, 1, 4096, generator=g).cumsum(-1), SR)
    assert float(p_low.max()) < 0.1 and float(p_brown.mean()) < 0.3
    x = voiced()
    assert float(periodicity_error(x, x, SR)) == 0.0
    assert float(periodicity_error(x, torch.randn(x.shape, generator=g), SR)) > 0.6


def test_mel_consistency_fixed_point_and_convergence_from_noise():
    f = features()
    x = voiced()
    target = f.log_mel(x)
    # a waveform whose mel is the target is a fixed point (up to rounding)
    same = mel_consistency(f, x, target, 3)
    assert torch.allclose(same, x, atol=1e-5)
    # from white noise, a few rounds bring the mel far closer to the target than the noise was
    noise = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    before = float(log_mel_l1(f, x, noise))
    after = float(log_mel_l1(f, x, mel_consistency(f, noise, target, 10)))
    assert after < 0.3 * before


def test_griffin_lim_from_the_true_phase_is_a_fixed_point():
    f = features()
    x = voiced()
    window = torch.hann_window(f.n_fft)
    mag = torch.stft(x[:, 0], f.n_fft, f.hop_length, window=window, return_complex=True).abs()
    for momentum in (0.0, 0.99):  # Griffin-Lim and fast Griffin-Lim
        assert torch.allclose(griffin_lim_from(f, x, mag, 5, momentum=momentum), x, atol=1e-5)
    # from noise, fast Griffin-Lim brings the STFT magnitude close to the target
    noise = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    def spectral_convergence(w):
        s = torch.stft(w[:, 0], f.n_fft, f.hop_length, window=window, return_complex=True).abs()
        return float((s - mag).norm() / mag.norm())
    assert spectral_convergence(noise) > 1.0
    ours = spectral_convergence(griffin_lim_from(f, noise, mag, 32))
    torch.manual_seed(0)
    reference = spectral_convergence(torchaudio.transforms.GriffinLim(
        n_fft=f.n_fft, hop_length=f.hop_length, power=1.0, n_iter=32, length=x.shape[-1])(mag)[:, None])
    assert ours < 0.3 and ours < 1.25 * reference  # same algorithm as torchaudio's, other start: measured
    # the mel pseudo-inverse has the STFT's shape and is non-negative
    lin = linear_magnitude(f, f.log_mel(x))
    assert lin.shape == mag.shape and float(lin.min()) >= 0


class _Echo(torch.nn.Module):
    process = object()
    sigma_data = 1.0

    def forward(self, x, logsnr, cond=None):
        return 2 * x


def test_projected_denoiser_projects_the_decoded_estimate():
    den = ProjectedDenoiser(_Echo(), decode=lambda x, c: x + c, encode=lambda w, c: w - c,
                            project=lambda w: w.clamp(max=1.0))
    x = torch.tensor([[0.2, 0.8]], dtype=torch.float64)
    out = den(x, torch.zeros(1), cond=0.5)
    # x0 = 2x = [0.4, 1.6]; decoded [0.9, 2.1]; projected [0.9, 1.0]; encoded [0.4, 0.5]
    assert torch.allclose(out, torch.tensor([[0.4, 0.5]], dtype=torch.float64))
    assert den.process is _Echo.process


def test_vocoder_consistency_knob():
    from polydiff.domains.audio import VocoderModule

    torch.manual_seed(0)
    kw = dict(n_fft=512, hop_length=128, n_mels=40, residual_layers=2, residual_channels=8, dilation_cycle=2,
              upsample_factors=(4, 4), emb_dim=16, squeeze=8, spectral_prior=True)
    with pytest.raises(PolydiffError, match="consistency='foo'"):
        VocoderModule(consistency="foo", **kw)
    model = VocoderModule(**kw).eval()
    f = model.features
    x = torch.cat([voiced(0.256, 150.0), voiced(0.256, 210.0)])
    mel = f(x)
    scores = {}
    for mode in ("none", "griffin_lim", "mel"):
        model.consistency, model.consistency_iters = mode, 3
        est = model.vocode(mel, x.shape[-1], seed=0)
        assert est.shape == x.shape and torch.isfinite(est).all()
        scores[mode] = float(log_mel_l1(f, x, est).mean())
    # an untrained network's samples are mel-coloured noise; both projections pull them towards the mel
    assert scores["mel"] < 0.5 * scores["none"]
    assert scores["griffin_lim"] < scores["none"]
