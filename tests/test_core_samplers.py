"""The common harness every sampler passes: a Gaussian target whose exact denoiser is known in closed form.

For x0 ~ N(mu, Sigma) and x_t = alpha x0 + sigma eps,
E[x0 | x_t] = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 (x_t - alpha mu).
A correct sampler driven by this denoiser reproduces mu and Sigma; the tolerance is stated per sampler order.
"""

import pytest
import torch
from torch import nn

from polydiff.core import parameterization as P
from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.grids import make_grid
from polydiff.core.processes import PROCESSES, process_by_name
from polydiff.core.samplers import SAMPLERS, network_evaluations
from polydiff.core.sampling import SamplerConfig, sample
from polydiff.core.utils import PolydiffError

MU = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
_L = torch.tensor([[0.5, 0, 0], [0.8, 1.5, 0], [-0.3, 0.2, 0.1]], dtype=torch.float64)
COV = _L @ _L.T


_W, _V = torch.linalg.eigh(COV)


def exact_x0(x, alpha, sigma, mu=MU):
    """Tweedie's E[x0 | x_t] for N(mu, COV), in COV's eigenbasis: gain a w / (a^2 w + s^2) per eigenvalue w."""
    a, s = alpha[:, None], sigma[:, None]
    gain = a * _W / (a * a * _W + s * s)
    return mu + ((x - a * mu) @ _V) * gain @ _V.T


class GaussianDenoiser:
    def __init__(self, process, sigma_data=0.0):
        self.process = process
        self.sigma_data = sigma_data

    def __call__(self, x, logsnr, cond=None):
        a, s = self.process.alpha_sigma(logsnr)
        return exact_x0(x, a, s)


class ExactNetwork(nn.Module):
    """A 'network' that outputs the exact target of its parameterisation from (c_in x, c_noise): it undoes the
    input scaling and the noise conditioning, so the whole NetworkDenoiser chain is exercised."""

    def __init__(self, process, kind, sigma_data):
        super().__init__()
        self.process, self.kind, self.sd = process, kind, sigma_data
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x_in, c_noise, cond):
        lam = -8 * c_noise.double()
        a, s = self.process.alpha_sigma(lam)
        x = x_in.double() / P.append_dims(P.c_in(a, s, self.sd), x_in.ndim)
        x0 = exact_x0(x, a, s)
        eps = P.eps_from_x0(x0, x, a, s)
        return P.target(self.kind, x0, eps, a, s, self.sd).to(x_in.dtype)


# steps at which each sampler is within tolerance on a uniform log-SNR grid starting at the exact prior
STEPS = {"ddpm": 800, "ddim": 300, "euler": 300, "flow_euler": 300, "heun": 80, "dpmpp_2m": 50, "dpmpp_2m_sde": 200,
         "dpmpp_3m": 50, "dpmpp_3m_sde": 200, "unipc": 50,
         "dpmpp_3m_unic": 50, "unipc_1": 50, "unipc_3": 50,
         "lms": 50, "plms": 50, "deis": 50, "deis_2": 50, "deis_pc": 50, "dpm_fast": 50}


def _psd_sqrt(m):
    w, v = torch.linalg.eigh(m)
    return v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T


def expected_moments(process, logsnr_start, sigma_data=0.0):
    """Moments of the exact probability-flow map applied to the sampler's prior N(0, sigma_T^2 I).

    For Gaussian data the PF-ODE is affine: x0 = mu + Sigma^1/2 C_T^-1 (x_T - alpha_T mu) with
    C_T = (alpha_T^2 Sigma + sigma_T^2 I)^1/2. A grid that starts where alpha_T > 0 (VP-linear, VE at sigma_max)
    therefore misses a known amount of the mean; processes with a pure-noise end (cosine, flow) do not.
    """
    a, s = (float(v) for v in process.alpha_sigma(torch.as_tensor(logsnr_start, dtype=torch.float64)))
    m = _psd_sqrt(COV) @ torch.linalg.inv(_psd_sqrt(a * a * COV + s * s * torch.eye(3, dtype=torch.float64)))
    start_var = a * a * sigma_data**2 + s * s  # the sampler's prior N(0, start_var I)
    return MU - a * (m @ MU), start_var * (m @ m.T)


def _moments_close(x, mean_tol=0.03, cov_tol=0.04, mu=MU, cov=COV):
    err_mean = float((x.mean(0) - mu).abs().max())
    err_cov = float(torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov))
    assert err_mean < mean_tol and err_cov < cov_tol, f"mean error {err_mean:.4f}, relative covariance error {err_cov:.4f}"


# samplers of few-step students, not solvers of the diffusion's ODE or SDE (tests/test_fewstep.py checks them)
FEW_STEP = {"consistency"}


def test_every_sampler_is_in_the_harness():
    """A sampler added to the registry must be added here with the steps at which it passes."""
    assert set(STEPS) | FEW_STEP == set(SAMPLERS)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_sampler_reproduces_gaussian_moments(name):
    torch.set_num_threads(1)
    cfg = SamplerConfig(name=name, steps=STEPS[name], grid="uniform_logsnr", sigma_max=None)
    x = sample(GaussianDenoiser(process_by_name("vp_cosine")), (20_000, 3), cfg,
               generator=torch.Generator().manual_seed(0))
    _moments_close(x)


@pytest.mark.parametrize("process", sorted(PROCESSES))
@pytest.mark.parametrize("kind", P.PREDICTIONS)
def test_any_process_and_parameterisation_through_the_network_chain(process, kind):
    proc = process_by_name(process)
    model = NetworkDenoiser(ExactNetwork(proc, kind, 0.7), proc, kind, sigma_data=0.7)
    cfg = SamplerConfig(name="dpmpp_2m", steps=60, grid="uniform_logsnr", sigma_max=None)
    x = sample(model, (20_000, 3), cfg, generator=torch.Generator().manual_seed(1))
    mu, cov = expected_moments(proc, make_grid(proc, 60, "uniform_logsnr", sigma_max=None)[0])
    _moments_close(x, mu=mu, cov=cov)


@pytest.mark.parametrize("name", ["lms", "plms", "deis", "deis_2", "deis_pc", "dpm_fast"])
@pytest.mark.parametrize("process", sorted(PROCESSES))
@pytest.mark.parametrize("kind", P.PREDICTIONS)
def test_multistep_samplers_through_the_network_chain(process, kind, name):
    """The linear multistep samplers and DPM-Solver-fast on every process and prediction target: through the network
    chain (input scaling, noise conditioning, parameterisation, float32 network) they give the end points of the
    exact denoiser (whose moments test_sampler_reproduces_gaussian_moments checks). From sigma~ = 80, the default
    start: from the pure-noise end of vp_cosine (sigma~ = e^10), the noise-prediction forms of PLMS's and the
    corrector's higher-order first step amplify the float32 network's rounding to ~1e-3 (data prediction does not)."""
    proc = process_by_name(process)
    model = NetworkDenoiser(ExactNetwork(proc, kind, 0.7), proc, kind, sigma_data=0.7)
    cfg = SamplerConfig(name=name, steps=20, grid="karras", sigma_max=80.0)
    x = sample(model, (256, 3), cfg, generator=torch.Generator().manual_seed(3))
    ref = sample(GaussianDenoiser(proc, 0.7), (256, 3), cfg, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(x).all() and float((x - ref).abs().max()) < 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize("sigma_data", [0.0, 1.3])
def test_start_noise_is_the_marginal_of_a_grid_that_ends_short_of_pure_noise(sigma_data):
    """A grid starting at sigma~ = 2 (alpha^2 = 0.2 on VP-cosine): with ``sigma_data`` the start noise has the marginal
    variance alpha^2 sd^2 + sigma^2, and the exact ODE maps it to the closed-form moments."""
    proc = process_by_name("vp_cosine")
    cfg = SamplerConfig(name="dpmpp_2m", steps=60, grid="uniform_logsnr", sigma_max=2.0)
    x = sample(GaussianDenoiser(proc, sigma_data), (20_000, 3), cfg, generator=torch.Generator().manual_seed(4))
    mu, cov = expected_moments(proc, make_grid(proc, 60, "uniform_logsnr", sigma_max=2.0)[0], sigma_data)
    _moments_close(x, mu=mu, cov=cov)
    if sigma_data:  # and the two priors give measurably different samples (relative covariance 0.26 apart)
        _, cov0 = expected_moments(proc, make_grid(proc, 60, "uniform_logsnr", sigma_max=2.0)[0], 0.0)
        assert float(torch.linalg.norm(cov - cov0) / torch.linalg.norm(cov)) > 0.1


@pytest.mark.parametrize("name", ["ddim", "heun", "dpmpp_2m", "euler"])
def test_samplers_work_on_any_rank(name):
    """Diagonal Gaussian data of rank 4 ([B, 2, 3, 2]): per-element means and variances are reproduced."""
    mu = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(2, 3, 2)
    var = torch.linspace(0.2, 2.0, 12, dtype=torch.float64).reshape(2, 3, 2)

    class Diag:
        process = process_by_name("flow")
        sigma_data = 0.0

        def __call__(self, x, logsnr, cond=None):
            a, s = (P.append_dims(v, x.ndim) for v in self.process.alpha_sigma(logsnr))
            return mu + a * var / (a * a * var + s * s) * (x - a * mu)

    cfg = SamplerConfig(name=name, steps=STEPS[name], grid="uniform_logsnr", sigma_max=None)
    x = sample(Diag(), (8_000, 2, 3, 2), cfg, generator=torch.Generator().manual_seed(2))
    assert x.shape == (8_000, 2, 3, 2)
    torch.testing.assert_close(x.mean(0), mu, atol=0.06, rtol=0)
    torch.testing.assert_close(x.var(0), var, atol=0.0, rtol=0.08)


def test_seeded_generator_makes_samples_reproducible():
    model = GaussianDenoiser(process_by_name("vp_linear"))
    cfg = SamplerConfig(name="dpmpp_2m_sde", steps=10)
    a = sample(model, (8, 3), cfg, generator=torch.Generator().manual_seed(5))
    b = sample(model, (8, 3), cfg, generator=torch.Generator().manual_seed(5))
    c = sample(model, (8, 3), cfg, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_grids_are_monotone_with_the_requested_ends():
    proc = process_by_name("vp_cosine")
    for kind in ("karras", "uniform_logsnr", "uniform_t"):
        for final in ("zero", "min", "denoise"):
            lam = make_grid(proc, 10, kind, final)
            assert len(lam) == 11 and torch.all(lam[1:] > lam[:-1])
            assert torch.isinf(lam[-1]) == (final == "zero")
    sig = torch.exp(-make_grid(proc, 5, "karras", "zero", sigma_min=0.002, sigma_max=80.0)[:-1] / 2)
    torch.testing.assert_close(sig[[0, -1]], torch.tensor([80.0, 0.002], dtype=torch.float64))
    assert network_evaluations("heun", 10) == 19 and network_evaluations("ddim", 10, "denoise") == 11


class Shift:
    """A denoiser whose x0 is the condition (0 for None): guidance mixes constants."""

    process = process_by_name("vp_cosine")
    sigma_data = 0.0

    def __call__(self, x, logsnr, cond=None):
        return torch.zeros_like(x) + (0.0 if cond is None else cond)


def test_guidance_interpolates_and_needs_a_null_condition():
    cfg = SamplerConfig(name="ddim", steps=4, guidance=3.0)
    # D_w = D(null) + w (D(c) - D(null)) with D(c) = 1, D(null) = 0: the final x0 is 3
    x = sample(Shift(), (4, 2), cfg, cond=1.0, null_cond=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, torch.full_like(x, 3.0))
    with pytest.raises(PolydiffError, match="guidance"):
        sample(Shift(), (4, 2), cfg, cond=1.0, null_cond=None)


def test_unknown_names_are_clear_errors():
    with pytest.raises(PolydiffError, match="unknown sampler"):
        sample(GaussianDenoiser(process_by_name("flow")), (2, 3), SamplerConfig(name="euler_ancestral"))
    with pytest.raises(PolydiffError, match="unknown step grid"):
        make_grid(process_by_name("flow"), 4, "cosine")


def test_guidance_in_a_limited_interval_guides_only_the_noisy_levels():
    """``guidance_sigma_min``: guided where sigma / alpha >= sigma_min (per item), the conditional model below."""
    from polydiff.core.guidance import ClassifierFreeGuidance

    guided = ClassifierFreeGuidance(Shift(), 3.0, 0.0, sigma_min=1.0)  # sigma / alpha >= 1 <=> logsnr <= 0
    out = guided(torch.zeros(4, 2), torch.tensor([-2.0, -1e-6, 1e-6, 3.0]), 1.0)
    torch.testing.assert_close(out[:, 0], torch.tensor([3.0, 3.0, 1.0, 1.0]))
    gen = torch.Generator().manual_seed(0)
    # no level of the grid is as noisy as 1e6: the conditional model throughout, its x0 = 1 is the sample
    cfg = SamplerConfig(name="ddim", steps=4, guidance=3.0, guidance_sigma_min=1e6)
    torch.testing.assert_close(sample(Shift(), (4, 2), cfg, cond=1.0, null_cond=0.0, generator=gen),
                               torch.ones(4, 2, dtype=torch.float64))
