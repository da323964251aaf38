"""Closed-form checks of the noise processes: marginals, log-SNR, inverses, shift, posterior."""

import math

import pytest
import torch

from polydiff.core.processes import PROCESSES, RectifiedFlow, VarianceExploding, VPCosine, VPLinear, process_by_name
from polydiff.core.utils import PolydiffError

T = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_logsnr_matches_alpha_sigma_and_inverts(name):
    proc = process_by_name(name, logsnr_shift=0.7)
    lam = proc.logsnr(T)
    alpha, sigma = proc.alpha_sigma(lam)
    torch.testing.assert_close(2 * torch.log(alpha / sigma), lam, rtol=0, atol=1e-9)
    torch.testing.assert_close(proc.t_of_logsnr(lam), T, rtol=0, atol=1e-9)
    assert torch.all(lam[1:] < lam[:-1]), "log-SNR must decrease with t"


def test_vp_linear_matches_ddpm_discrete_alphas_bar():
    # DDPM (Ho et al. 2020): betas linear 1e-4..0.02 over T=1000; alpha_bar_t = prod(1 - beta_i).
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    alpha, _ = VPLinear().marginal(t)
    # the continuous-time VP-SDE is the T -> inf limit; at T = 1000 they agree to ~1e-3 relative in alpha_bar
    torch.testing.assert_close(alpha**2, alpha_bar, rtol=2e-2, atol=1e-4)


def test_family_closed_forms():
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    a, s = VPCosine().marginal(t)
    torch.testing.assert_close(a, torch.cos(math.pi * t / 2))
    torch.testing.assert_close(s, torch.sin(math.pi * t / 2))
    a, s = RectifiedFlow().marginal(t)
    torch.testing.assert_close(a, 1 - t)
    torch.testing.assert_close(s, t)
    a, s = VarianceExploding(sigma_max=80).marginal(t)
    torch.testing.assert_close(a, torch.ones_like(t))
    torch.testing.assert_close(s, 80 * t)


def test_endpoints_are_clean_data_and_pure_noise():
    for proc in (VPCosine(), RectifiedFlow()):
        a0, s0 = proc.marginal(torch.tensor(0.0, dtype=torch.float64))
        a1, s1 = proc.marginal(torch.tensor(1.0, dtype=torch.float64))
        assert float(a0) == 1.0 and float(s0) == 0.0
        assert float(a1) == pytest.approx(0.0, abs=1e-7) and float(s1) == pytest.approx(1.0)


def test_shift_is_constant_in_logsnr_and_equals_sd3_shift():
    s = 3.0
    base, shifted = RectifiedFlow(), RectifiedFlow(logsnr_shift=-2 * math.log(s))
    torch.testing.assert_close(shifted.logsnr(T) - base.logsnr(T), torch.full_like(T, -2 * math.log(s)))
    # SD3 (Esser et al. 2024, eq. 23): t' = s t / (1 + (s - 1) t) has the log-SNR of the shifted schedule at t
    t_sd3 = s * T / (1 + (s - 1) * T)
    torch.testing.assert_close(base.logsnr(t_sd3), shifted.logsnr(T))


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_posterior_matches_bayes_on_scalar_gaussian(name):
    """q(x_s | x_t, x_0) from Gaussian conditioning of the joint (x_s, x_t) given x_0."""
    proc = process_by_name(name)
    lt, ls = proc.logsnr(torch.tensor([0.7])), proc.logsnr(torch.tensor([0.4]))
    a_t, s_t = proc.alpha_sigma(lt)
    a_s, s_s = proc.alpha_sigma(ls)
    x0, xt = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-1.1]], dtype=torch.float64)
    # x_t = (a_t/a_s) x_s + noise of variance s_t^2 - (a_t/a_s)^2 s_s^2 (Markov chain), x_s ~ N(a_s x0, s_s^2)
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    prec = 1 / s_s**2 + a_ts**2 / var_ts
    mean_bayes = (a_s * x0[0] / s_s**2 + a_ts * xt[0] / var_ts) / prec
    mean, std = proc.posterior(xt, x0, lt, ls)
    torch.testing.assert_close(mean[0], mean_bayes, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(std**2, 1 / prec, rtol=1e-9, atol=1e-12)


def test_add_noise_marginal_moments():
    proc = VPLinear()
    lam = proc.logsnr(torch.full((200_000,), 0.3))
    x0 = torch.full((200_000, 1), 2.0)
    xt = proc.add_noise(x0, torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0)), lam)
    a, s = proc.alpha_sigma(lam[:1])
    assert float(xt.mean()) == pytest.approx(2 * float(a), abs=0.01)
    assert float(xt.std()) == pytest.approx(float(s), rel=0.01)


def test_unknown_process_is_a_clear_error():
    with pytest.raises(PolydiffError, match="unknown noise process 'cosine'"):
        process_by_name("cosine")
