"""Audio domain: features, envelope, network and metrics against closed forms and baselines."""

import math

import pytest
import torch

from polydiff.core.processes import process_by_name
from polydiff.core.utils import PolydiffError
from polydiff.domains.audio.features import LogMelFeatures, imdct, mdct, mdct_basis
from polydiff.domains.audio.metrics import griffin_lim, log_mel_l1, mr_stft_distance, si_sdr
from polydiff.domains.audio.network import DiffWave, fold, unfold

torch.set_num_threads(1)


def features(**kw):
    args = dict(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, f_min=0.0, f_max=8000.0, log_floor=1e-5,
                mel_mean=-5.0, mel_std=2.5)
    args.update(kw)
    return LogMelFeatures(**args)


def tone(freq=440.0, seconds=0.5, sr=16000, amp=0.3):
    t = torch.arange(int(seconds * sr)) / sr
    return (amp * torch.sin(2 * math.pi * freq * t))[None, None]


def test_diffwave_schedule_is_vp_linear():
    # DiffWave: T = 50, betas linear 1e-4..0.05; continuous VP-linear with beta(t) = T * beta_i
    betas = torch.linspace(1e-4, 0.05, 50, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    proc = process_by_name("vp_linear", beta_min=50 * 1e-4, beta_max=50 * 0.05)
    alpha, _ = proc.marginal(torch.arange(1, 51, dtype=torch.float64) / 50)
    assert torch.allclose(alpha**2, alpha_bar, atol=0.01)
    # options a process does not take are ignored
    assert process_by_name("vp_cosine", beta_min=3.0).name == "vp_cosine"


def test_envelope_tracks_rms_and_floor():
    f = features()
    g = torch.Generator().manual_seed(0)
    for std in (0.02, 0.3):
        x = std * torch.randn(1, 1, 16000, generator=g)
        env = f.envelope(f(x), x.shape[-1])
        assert env.shape == x.shape
        assert env[..., 1000:-1000].mean() == pytest.approx(std, rel=0.2)
    silent = torch.zeros(1, 1, 4096)
    env = f.envelope(f(silent), 4096)
    assert torch.allclose(env, torch.full_like(env, 1e-5 / float(f.white_mel_rms)))


def test_log_mel_normalisation_round_trip_and_frames():
    f = features()
    x = tone()
    lm = f.log_mel(x)
    assert lm.shape == (1, 40, f.frames(x.shape[-1]))
    assert torch.allclose(f.denormalise(f(x)), lm, atol=1e-5)
    # a 440 Hz tone puts its energy in the band whose centre is nearest 440 Hz
    centres = f.mel.mel_scale.fb.argmax(0).float() * 16000 / 512
    assert abs(float(centres[lm[0, :, 10].argmax()]) - 440) < 120


def test_feature_settings_are_checked():
    with pytest.raises(PolydiffError, match="Nyquist"):
        features(f_max=9000.0)
    with pytest.raises(PolydiffError, match="upsample_factors"):
        DiffWave(n_mels=40, hop_length=128, upsample_factors=(16, 16))


def test_diffwave_shapes_and_zero_init():
    net = DiffWave(n_mels=40, hop_length=128, residual_layers=3, residual_channels=8, dilation_cycle=2,
                   upsample_factors=(8, 16), emb_dim=32)
    x = torch.randn(2, 1, 1024)
    mel = torch.randn(2, 40, 1024 // 128 + 1)
    out = net(x, torch.zeros(2), mel)
    assert out.shape == x.shape and out.abs().max() == 0
    assert net.upsampler(mel).shape[-1] == mel.shape[-1] * 128
    with pytest.raises(PolydiffError, match="mel condition"):
        net(x, torch.zeros(2), torch.randn(2, 20, 9))


def test_squeezed_diffwave_folds_samples_into_channels():
    x = torch.arange(24.0).reshape(1, 1, 24)
    h = fold(x, 8)
    assert h.shape == (1, 8, 3) and h[0, 3].tolist() == [3.0, 11.0, 19.0]
    assert torch.equal(unfold(h), x)
    net = DiffWave(n_mels=40, hop_length=128, residual_layers=2, residual_channels=8, dilation_cycle=2,
                   upsample_factors=(4, 4), emb_dim=16, squeeze=8)
    torch.nn.init.normal_(net.output_proj.weight)
    x = torch.randn(2, 1, 1024)
    mel = torch.randn(2, 40, 9)
    out = net(x, torch.zeros(2), mel)
    assert out.shape == x.shape
    # causality of the fold: changing one input sample changes outputs only within the receptive field
    x2 = x.clone()
    x2[..., 0] += 1.0
    diff = (net(x2, torch.zeros(2), mel) - out).abs()[0, 0]
    assert diff[:8].max() > 0 and diff[8 * 8:].max() == 0  # 2 layers, dilations 1, 2: +-3 folded steps
    with pytest.raises(PolydiffError, match="hop_length / squeeze"):
        DiffWave(n_mels=40, hop_length=128, upsample_factors=(16, 8), squeeze=8)


def test_si_sdr_closed_form():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 1, 8000, generator=g)
    s = s - s.mean()
    n = torch.randn(1, 1, 8000, generator=g)
    n = n - n.mean()
    n = n - (n * s).sum() / (s * s).sum() * s  # orthogonal to s
    n = n * (s.norm() / n.norm()) * 0.1  # 20 dB below s
    assert float(si_sdr(s, 3.0 * s + n)) == pytest.approx(20.0 + 20 * math.log10(3.0), abs=0.01)  # |3s|^2 / |n|^2
    assert float(si_sdr(s, 0.5 * s)) > 60


def test_distances_vanish_on_identity_and_rank_controls():
    f = features()
    x = tone() + 0.05 * tone(1200.0)
    assert float(log_mel_l1(f, x, x)) == 0.0
    assert float(mr_stft_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    noise = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    gl = griffin_lim(f, f.log_mel(x), x.shape[-1], n_iter=32)
    # Griffin-Lim from the mel is far closer to the tone than white noise of similar level
    assert float(log_mel_l1(f, x, gl)) < 0.5 * float(log_mel_l1(f, x, noise))
    assert float(mr_stft_distance(x, gl)) < float(mr_stft_distance(x, noise))


def test_vocoder_learns_on_a_fixed_batch():
    from polydiff.domains.audio import VocoderModule

    torch.manual_seed(0)
    model = VocoderModule(n_fft=512, hop_length=128, n_mels=40, residual_layers=3, residual_channels=16,
                          dilation_cycle=3, upsample_factors=(4, 4), emb_dim=32, squeeze=8)
    wave = torch.cat([tone(220.0, 0.128), tone(330.0, 0.128, amp=0.1)])
    batch = model.encode(wave)
    # the PriorGrad envelope makes the diffused signal unit-scale: a sine of any amplitude has RMS 1/sqrt(2)
    assert batch.x0[..., 256:-256].pow(2).mean().sqrt() == pytest.approx(2**-0.5, rel=0.25)
    def fixed_draw_loss():  # the training batch under the same noise and noise levels before and after training
        return sum(float(model.diffusion_loss(batch, torch.Generator().manual_seed(s)).mean()) for s in range(8)) / 8

    before = fixed_draw_loss()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(60):
        loss = model.diffusion_loss(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_draw_loss() < 0.9 * before  # measured: 1.006 -> 0.800


def test_circular_mdct_is_orthogonal():
    basis = mdct_basis(64)
    x = torch.randn(3, 1, 64 * 10, generator=torch.Generator().manual_seed(0))
    coeffs = mdct(x, basis)
    assert coeffs.shape == (3, 64, 10)
    assert torch.allclose(imdct(coeffs, basis), x, atol=1e-5)  # TDAC: perfect reconstruction
    assert float(coeffs.pow(2).sum() / x.pow(2).sum()) == pytest.approx(1.0, abs=1e-5)  # Parseval
    # a cosine at the centre frequency of coefficient 5 puts almost all its energy there
    n = torch.arange(640.0)
    c = mdct(torch.cos(torch.pi / 64 * (n + 0.5 + 32) * 5.5)[None, None], basis)
    assert c[0, 5].pow(2).sum() > 0.75 * c.pow(2).sum()  # measured 0.81 (the rest is time-domain aliasing)


@pytest.mark.parametrize("spectral", [False, True])
def test_mel_priors_whiten_and_invert_exactly(spectral):
    from polydiff.domains.audio import VocoderModule

    model = VocoderModule(n_fft=512, hop_length=128, n_mels=40, residual_layers=1, residual_channels=4,
                          dilation_cycle=1, upsample_factors=(16,), emb_dim=8, squeeze=8, spectral_prior=spectral)
    g = torch.Generator().manual_seed(0)
    for std in (0.01, 0.3):
        x = std * torch.randn(2, 1, 128 * 40, generator=g)
        mel = model.features(x)
        white = model.whiten(x, mel)
        assert float(white.std()) == pytest.approx(1.0, rel=0.25)  # calibrated on white noise
        assert torch.allclose(model.colour(white, mel), x, atol=1e-5 * std)
    if not spectral:
        return
    # with the spectral prior, coloured unit noise takes the spectral shape of the mel (the envelope prior does not)
    low = torch.nn.functional.avg_pool1d(torch.randn(1, 1, 128 * 41, generator=g), 8, 1)[..., :128 * 40]
    mel = model.features(low)
    noise = model.colour(torch.randn(low.shape, generator=g), mel)
    err_prior = float(log_mel_l1(model.features, low, noise))
    err_white = float(log_mel_l1(model.features, low, torch.randn(low.shape, generator=g) * low.std()))
    assert err_prior < 0.5 * err_white


def test_start_noise_has_the_marginal_variance_of_the_first_level():
    from polydiff.core.module import DiffusionConfig
    from polydiff.domains.audio import VocoderModule

    small = dict(residual_layers=1, residual_channels=4, dilation_cycle=1, emb_dim=8)
    diffwave = VocoderModule(**small, diffusion=DiffusionConfig(process="vp_linear", beta_min=0.005, beta_max=2.5))
    from polydiff.core.grids import make_grid

    def start_std(model):
        cfg = model.sampler_config
        lam = make_grid(model.process, cfg.steps, cfg.grid, cfg.final_step, cfg.sigma_min, cfg.sigma_max, cfg.rho)[0]
        return float(model.process.prior_std(lam, model.diffusion_config.sigma_data)), float(model.process.prior_std(lam))

    # DiffWave's schedule ends at alpha_bar = 0.286 (log-SNR -0.916): sigma = sqrt(1 - 0.286), the marginal std is 1
    marginal, sigma = start_std(diffwave)
    assert marginal == pytest.approx(1.0, rel=1e-6) and sigma == pytest.approx(math.sqrt(1 - 0.2858), rel=1e-3)
    cosine = VocoderModule(**small, diffusion=DiffusionConfig(process="vp_cosine"))
    marginal, sigma = start_std(cosine)
    assert marginal == pytest.approx(sigma, abs=1e-3)  # ends at pure noise: nothing to add
