"""Round trips of the prediction targets and the implicit weights of their MSEs."""

import pytest
import torch

from polydiff.core import parameterization as P
from polydiff.core.objective import loss_weight, sample_logsnr
from polydiff.core.processes import PROCESSES, process_by_name

G = torch.Generator().manual_seed(0)


def _setup(name):
    proc = process_by_name(name)
    lam = torch.linspace(-8, 8, 16, dtype=torch.float64)
    a, s = proc.alpha_sigma(lam)
    x0 = torch.randn(16, 3, 4, generator=G, dtype=torch.float64)
    eps = torch.randn(16, 3, 4, generator=G, dtype=torch.float64)
    xt = P.append_dims(a, 3) * x0 + P.append_dims(s, 3) * eps
    return lam, a, s, x0, eps, xt


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("kind", P.PREDICTIONS)
def test_target_round_trips_to_x0(name, kind):
    lam, a, s, x0, eps, xt = _setup(name)
    out = P.target(kind, x0, eps, a, s, sigma_data=0.5)
    torch.testing.assert_close(P.to_x0(kind, out, xt, a, s, sigma_data=0.5), x0, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("kind", P.PREDICTIONS)
def test_implicit_weight_is_the_ratio_of_errors(name, kind):
    """|out_hat - out|^2 = w(lambda) |eps_hat - eps|^2 for a perturbed x0 prediction at fixed x_t."""
    lam, a, s, x0, eps, xt = _setup(name)
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=G, dtype=torch.float64)
    eps_hat = P.eps_from_x0(x0_hat, xt, a, s)
    out_hat = P.target(kind, x0_hat, eps_hat, a, s, sigma_data=0.5)
    out = P.target(kind, x0, eps, a, s, sigma_data=0.5)
    ratio = ((out_hat - out) ** 2).flatten(1).sum(1) / ((eps_hat - eps) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(torch.log(ratio), P.implicit_log_weight(kind, lam, 0.5), rtol=1e-6, atol=1e-6)


def test_score_is_tweedie():
    lam, a, s, x0, eps, xt = _setup("vp_cosine")
    torch.testing.assert_close(P.score_from_x0(x0, xt, a, s), -eps / P.append_dims(s, 3))


def test_native_weighting_is_one_and_min_snr_closed_form():
    lam = torch.linspace(-20, 20, 41, dtype=torch.float64)
    for kind in P.PREDICTIONS:
        torch.testing.assert_close(loss_weight("native", lam, kind, 0.5, 5.0), torch.ones_like(lam))
    # Min-SNR-5 for an eps network: min(SNR, 5) / SNR (Hang et al. 2023)
    snr = lam.exp()
    torch.testing.assert_close(loss_weight("min_snr", lam, "eps", 1.0, 5.0), torch.clamp(snr, max=5.0) / snr)
    # EDM weighting with EDM preconditioning is the plain MSE of F (Karras et al. 2022, eq. 8 with c_out^2 lambda = 1)
    torch.testing.assert_close(loss_weight("edm", lam, "edm", 0.5, 5.0), torch.ones_like(lam))
    # velocity-MSE for an eps network: |u_hat - u|^2 = (1 + e^{-lambda/2})^2 |eps_hat - eps|^2 (VP, alpha + sigma
    # over sigma), finite at both ends
    w = loss_weight("velocity", lam, "eps", 1.0, 5.0)
    torch.testing.assert_close(w, (1 + torch.exp(-lam / 2)) ** 2)
    assert torch.isfinite(w).all()


def test_edm_preconditioning_matches_karras_table_1():
    sd = 0.5
    sig = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=torch.float64)
    skip, out = P.edm_skip_out(torch.ones_like(sig), sig, sd)
    torch.testing.assert_close(skip, sd**2 / (sig**2 + sd**2))
    torch.testing.assert_close(out, sig * sd / torch.sqrt(sig**2 + sd**2))
    torch.testing.assert_close(P.c_in(torch.ones_like(sig), sig, sd), 1 / torch.sqrt(sig**2 + sd**2))


def test_log_normal_time_sampling_has_edm_moments():
    lam = sample_logsnr(process_by_name("edm"), 200_000, "log_normal", -1.2, 1.2, torch.Generator().manual_seed(1))
    ln_sigma = -lam / 2
    assert float(ln_sigma.mean()) == pytest.approx(-1.2, abs=0.01)
    assert float(ln_sigma.std()) == pytest.approx(1.2, abs=0.01)


def test_uniform_time_sampling_is_stratified_uniform():
    proc = process_by_name("flow")
    lam = sample_logsnr(proc, 1000, "uniform", 0, 1, torch.Generator().manual_seed(2))
    t = proc.t_of_logsnr(lam).sort().values
    # one draw per stratum [i/n, (i+1)/n)
    assert torch.all((t * 1000).floor() == torch.arange(1000, dtype=torch.float64))
