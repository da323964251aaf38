"""Likelihood against closed forms: on Gaussian data with the exact denoiser, the PF-ODE NLL equals the Gaussian's
log-density (exact trace within 1 %, Hutchinson within two standard errors) and the ELBO bounds it from above."""

import math

import pytest
import torch

from polydiff.core.likelihood import bits_per_dim, elbo_nll, ode_nll
from polydiff.core.processes import process_by_name

SCALES = torch.tensor([0.5, 1.0, 2.0, 0.8], dtype=torch.float64)
# data ~ N(0, C) with C = Q diag(SCALES^2) Q^T: correlated, so the denoiser's Jacobian is not diagonal (on a diagonal
# one Rademacher probes would give the exact trace and Hutchinson's estimator would not be tested)
Q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64))[0]
COV = Q @ torch.diag(SCALES**2) @ Q.T


class ExactGaussian:
    """``E[x0 | x_t] = alpha C (alpha^2 C + sigma^2 I)^{-1} x_t`` for x0 ~ N(0, C), under any process."""

    def __init__(self, process: str) -> None:
        self.process = process_by_name(process)
        self.sigma_data = 0.0

    def __call__(self, x, logsnr, cond=None):
        a, s = self.process.alpha_sigma(logsnr.double())
        out = []
        for ai, si, xi in zip(a, s, x.double()):
            out.append(ai * COV @ torch.linalg.solve(ai**2 * COV + si**2 * torch.eye(4, dtype=torch.float64), xi))
        return torch.stack(out)


def exact_nll(x):
    prec = torch.linalg.inv(COV)
    return 0.5 * ((x @ prec) * x).sum(1) + 0.5 * torch.logdet(2 * math.pi * COV)


def _data(n=256, seed=0):
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * SCALES @ Q.T


@pytest.mark.parametrize("process", ["vp_cosine", "flow", "edm"])
def test_ode_nll_with_exact_trace_matches_the_gaussian_density(process):
    x = _data(64)
    got = ode_nll(ExactGaussian(process), x, steps=48, divergence="exact", sigma_max=200.0)
    want = exact_nll(x)
    rel = float((got.mean() - want.mean()).abs() / want.mean().abs())
    assert rel < 0.01, (float(got.mean()), float(want.mean()))
    assert torch.allclose(got, want, atol=0.05)  # per item too


def test_ode_nll_with_hutchinson_is_within_two_standard_errors():
    x = _data(200, seed=1)
    got = ode_nll(ExactGaussian("vp_cosine"), x, steps=48, divergence="hutchinson", sigma_max=200.0,
                  generator=torch.Generator().manual_seed(2))
    want = exact_nll(x)
    diff = got - want
    se = float(diff.std() / math.sqrt(len(diff)))
    assert abs(float(diff.mean())) < 2 * se + 1e-3, (float(diff.mean()), se)
    assert float(diff.std()) > 0.01  # the probes do add noise: this is the estimator, not the exact trace


def test_elbo_bounds_the_nll_from_above_and_is_tight_for_the_exact_denoiser():
    x = _data(256, seed=3)
    gen = torch.Generator().manual_seed(4)
    bound = elbo_nll(ExactGaussian("vp_cosine"), x, num_times=32, generator=gen)
    want = exact_nll(x)
    gap = float(bound.mean() - want.mean())
    se = float((bound - want).std() / math.sqrt(len(x)))
    assert gap > -2 * se  # an upper bound (in expectation)
    assert gap < 0.02 * float(want.abs().mean()) + 3 * se  # and tight for the exact denoiser
    # a worse denoiser has a larger bound
    class Shrunk(ExactGaussian):
        def __call__(self, x, logsnr, cond=None):
            return 0.7 * super().__call__(x, logsnr, cond)

    worse = elbo_nll(Shrunk("vp_cosine"), x, num_times=32, generator=torch.Generator().manual_seed(4))
    assert float(worse.mean()) > float(bound.mean()) + 0.1


def test_bits_per_dim_of_dequantised_pixels():
    nll = torch.tensor([100.0], dtype=torch.float64)
    assert float(bits_per_dim(nll, 10)) == pytest.approx(100 / (10 * math.log(2)))
    # 8-bit pixels in [-1, 1]: bins of 2/255; a uniform density over [-1, 1] gives exactly 8 bits per pixel
    uniform = torch.tensor([10 * math.log(2.0)], dtype=torch.float64)
    # (density 1/2 per dimension: nll = 10 ln 2; each of 255 bins of width 2/255 has probability 1/255)
    assert float(bits_per_dim(uniform, 10, bin_width=2 / 255)) == pytest.approx(math.log2(255), rel=1e-9)
