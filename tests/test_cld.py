"""Critically damped Langevin diffusion: the closed-form kernel against simulation, the mixed score against the exact
Gaussian score, hybrid score matching, SSCS and Euler-Maruyama on a Gaussian target, and the digits recipe."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from polydiff.core.cld import CriticallyDampedLangevin
from polydiff.core.cld_samplers import _linear_half_step, cld_sample, cld_times
from polydiff.core.cld_score import CLDScoreModel, hsm_loss, sample_cld_times
from polydiff.core.cli import build_cli
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "image" / "digits_cld.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def simulate_forward(process, x0: torch.Tensor, v0: torch.Tensor, t: float, steps: int, gen) -> tuple:
    """Euler-Maruyama on the forward SDE with ``steps`` small steps."""
    x, v = x0.clone(), v0.clone()
    h = t / steps
    for _ in range(steps):
        fx, fv = process.drift(x, v)
        z = torch.randn(v.shape, generator=gen, dtype=torch.float64)
        x, v = x + h * fx, v + h * fv + process.diffusion_v * math.sqrt(h) * z
    return x, v


def moments(x: torch.Tensor, v: torch.Tensor) -> tuple[float, ...]:
    xc, vc = x - x.mean(), v - v.mean()
    return float(x.mean()), float(v.mean()), float((xc**2).mean()), float((xc * vc).mean()), float((vc**2).mean())


@pytest.mark.parametrize("t", [0.05, 0.3])
def test_kernel_mean_and_covariance_match_simulation_of_the_forward_sde(t):
    """HSM's kernel p(u_t | x_0) (v_0 ~ N(0, gamma M)) against 40 000 simulated paths of 1500 Euler steps each; the
    tolerance is 5 Monte-Carlo standard errors plus the Euler bias (O(h))."""
    p = CriticallyDampedLangevin()
    gen = torch.Generator().manual_seed(0)
    n, x0 = 40_000, 0.7
    xs = torch.full((n,), x0, dtype=torch.float64)
    vs = torch.randn(n, generator=gen, dtype=torch.float64) * math.sqrt(p.gamma * p.mass)
    x, v = simulate_forward(p, xs, vs, t, 1500, gen)
    mx, mv, _ = p.transition(torch.tensor([[x0]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                             p.integrated_beta(torch.tensor([t])))
    sxx, sxv, svv = (float(c) for c in p.kernel_cov(torch.tensor([t])))
    sim = moments(x, v)
    closed = (float(mx), float(mv), sxx, sxv, svv)
    # standard errors of the sample moments of a Gaussian
    se = (math.sqrt(sxx / n), math.sqrt(svv / n), sxx * math.sqrt(2 / n), math.sqrt((sxx * svv + sxv**2) / n),
          svv * math.sqrt(2 / n))
    for name, a, b, s in zip(("E x", "E v", "Var x", "Cov xv", "Var v"), sim, closed, se):
        assert abs(a - b) < 5 * s + 2e-3 * max(abs(b), 0.05), (name, a, b, s)
    # and the kernel is not trivially near its start or its end here (the comparison can fail)
    assert 0.01 < sxx < 0.9 and abs(float(mx) - x0) + abs(float(mv)) > 0.1


def test_kernel_reaches_the_stationary_distribution_and_starts_at_the_data():
    p = CriticallyDampedLangevin(numerical_eps=0.0)
    sxx, sxv, svv = p.kernel_cov(torch.tensor([1.0]))  # B = 4: within 1e-5 of the stationary N(0, 1) x N(0, M)
    assert float(sxx) == pytest.approx(1.0, abs=1e-3) and float(svv) == pytest.approx(p.mass, abs=1e-3)
    sxx0, sxv0, svv0 = p.kernel_cov(torch.tensor([0.0]))
    assert float(sxx0) == 0.0 and float(sxv0) == 0.0 and float(svv0) == pytest.approx(p.gamma * p.mass)
    # at large B the stationary distribution is reached exactly
    _, _, (a, b, c) = p.transition(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([60.0]))
    assert (float(a), float(b), float(c)) == pytest.approx((1.0, 0.0, p.mass), abs=1e-9)
    lam = p.logsnr_x(torch.linspace(1e-3, 1, 50, dtype=torch.float64))
    assert bool((lam[1:] < lam[:-1]).all())  # the network's noise level is monotone in t


def test_linear_half_step_of_sscs_is_the_exact_solution_of_the_reverse_linear_sde():
    """The reverse SDE's linear part, ``dx = -M^-1 v beta, dv = (x - Gamma M^-1 v) beta + noise``, simulated finely,
    against the kernel-based step used by SSCS."""
    p = CriticallyDampedLangevin()
    gen = torch.Generator().manual_seed(1)
    n, h = 40_000, 0.2
    u0 = torch.tensor([[0.8, -0.3]], dtype=torch.float64).expand(n, 2)
    step = _linear_half_step(p, u0, h, gen)
    x, v = u0[:, 0].clone(), u0[:, 1].clone()
    k = 1500
    dt = h / k
    for _ in range(k):
        z = torch.randn(n, generator=gen, dtype=torch.float64)
        x, v = (x - dt * p.beta * p.m_inv * v,
                v + dt * p.beta * (x - p.friction * p.m_inv * v) + p.diffusion_v * math.sqrt(dt) * z)
    a, b = moments(step[:, 0], step[:, 1]), moments(x, v)
    for i in range(5):
        assert abs(a[i] - b[i]) < 0.012, (i, a, b)


def test_mixed_score_of_an_untrained_network_is_the_exact_score_of_gaussian_data():
    """With a zero network the model's velocity score is the gradient of the log density of the Gaussian marginal of
    (x_t, v_t) for data N(0, sd^2), computed here by autograd of a MultivariateNormal."""
    p, sd = CriticallyDampedLangevin(), 0.6
    model = CLDScoreModel(ZeroNet(), p, sd)
    gen = torch.Generator().manual_seed(2)
    for t in (0.01, 0.2, 0.9):
        tt = torch.full((5,), t, dtype=torch.float64)
        u = torch.randn(5, 2, generator=gen, dtype=torch.float64)
        sxx, sxv, svv = (float(c) for c in p.kernel_cov(torch.tensor([t]), sd**2))
        dist = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                      torch.tensor([[sxx, sxv], [sxv, svv]], dtype=torch.float64))
        uu = u.clone().requires_grad_(True)
        grad = torch.autograd.grad(dist.log_prob(uu).sum(), uu)[0][:, 1:]
        assert torch.allclose(model.score(u, tt), grad, rtol=1e-6, atol=1e-8)


class ZeroNet(nn.Module):
    """A network that outputs zeros of the data's width (the state is twice as wide)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        return torch.zeros_like(u[:, : u.shape[1] // 2]) * self.w


class TinyMLP(nn.Module):
    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        return self.net(torch.cat([u, c_noise[:, None].to(u.dtype)], dim=1))


def test_hybrid_score_matching_loss_is_finite_and_decreases_on_a_tiny_run():
    """Two well-separated clusters in 2-D (not Gaussian, so the mixed score's Gaussian part is not the answer): 300 Adam
    steps lower the HSM loss, measured at fixed times and noise, by more than 20 %."""
    torch.manual_seed(0)
    p = CriticallyDampedLangevin()
    model = CLDScoreModel(TinyMLP(2), p, sigma_data=1.0)
    gen = torch.Generator().manual_seed(3)

    def data(n: int) -> torch.Tensor:
        sign = torch.randint(0, 2, (n, 1), generator=gen).double() * 2 - 1
        return sign * torch.tensor([1.0, -1.0], dtype=torch.float64) + 0.05 * torch.randn(n, 2, generator=gen,
                                                                                           dtype=torch.float64)

    eval_x0 = data(2048)
    eval_t = sample_cld_times(p, 2048, gen)
    eval_nx, eval_nv = torch.randn(2048, 2, generator=gen), torch.randn(2048, 2, generator=gen)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(hsm_loss(model, eval_x0, eval_t, eval_nx, eval_nv).mean())

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        x0 = data(256)
        loss = hsm_loss(model, x0, sample_cld_times(p, 256, gen), torch.randn(256, 2, generator=gen),
                        torch.randn(256, 2, generator=gen)).mean()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert math.isfinite(before) and after < 0.8 * before, (before, after)


@pytest.mark.parametrize("grid", ["uniform_t", "uniform_logsnr"])
def test_sscs_and_euler_maruyama_converge_on_a_gaussian_target_and_sscs_is_closer(grid):
    """Data N(0, 0.5^2) in 1-D, whose exact score the zero network gives (the mixed score): the error of the sample
    standard deviation shrinks with the number of evaluations for both samplers, and at 10, 20 and 50 evaluations
    SSCS's error is below Euler-Maruyama's. 100 000 samples: Monte-Carlo error of the std about 0.0011."""
    sd = 0.5
    model = CLDScoreModel(ZeroNet(), CriticallyDampedLangevin(), sd)
    errors = {}
    for name in ("cld_em", "cld_sscs"):
        for steps in (10, 20, 50, 400):
            out = cld_sample(model, (100_000, 1), SamplerConfig(name=name, steps=steps, grid=grid),
                             generator=torch.Generator().manual_seed(4))
            errors[name, steps] = abs(float(out.std()) - sd) + abs(float(out.mean()))
    for steps in (10, 20, 50):
        assert errors["cld_sscs", steps] < errors["cld_em", steps], errors
    for name in ("cld_em", "cld_sscs"):
        assert errors[name, 400] < 0.01 and errors[name, 400] < errors[name, 10], errors


def test_time_grids_run_from_one_to_the_end_time():
    p = CriticallyDampedLangevin()
    for kind in ("uniform_t", "uniform_logsnr"):
        t = cld_times(p, 12, kind, 1e-3)
        assert len(t) == 12 and float(t[0]) == 1.0 and float(t[-1]) == pytest.approx(1e-3)
        assert bool((t[1:] < t[:-1]).all())
    lam = p.logsnr_x(cld_times(p, 12, "uniform_logsnr", 1e-3))
    assert torch.allclose(lam.diff(), lam.diff().mean().expand(11), rtol=1e-3)
    with pytest.raises(PolydiffError, match="uniform_t or uniform_logsnr"):
        cld_times(p, 12, "karras")


def test_digits_cld_recipe_fast_dev_run_and_sampling(tmp_path):
    """The recipe trains one step through the CLI; the U-Net sees 2 channels and outputs 1; the first loss is the
    closed-form loss of the zero-output network (the mixed score of Gaussian data of std sigma_data, in eps units),
    averaged over uniform times; both CLD samplers then draw digits in [0, 1]."""
    cli = build_cli(["fit", "--config", RECIPE, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path)] + QUIET)
    model = cli.model
    assert model.network.input_conv.in_channels == 2 and model.network.out_conv.out_channels == 1
    first = float(cli.trainer.callback_metrics["train/loss"])
    p, sd = model.process, model.diffusion_config.sigma_data
    ex2 = float((cli.datamodule.split_tensors("train")[0] ** 2).mean())
    t = torch.linspace(p.t_min, 1, 4001, dtype=torch.float64)
    B = p.integrated_beta(t)
    e = torch.exp(-p.k * B)
    m_x, m_v = e * (1 + p.k * B), -e * B  # the weights of x_0 in the kernel's mean
    lxx, lxv, lvv = p.cholesky(p.kernel_cov(t))
    sxx, sxv, svv = p.kernel_cov(t, sd**2)
    det = sxx * svv - sxv**2
    a, b = sxv / det, -sxx / det  # s_gauss = a x + b v
    c0, c1, c2 = -lvv * (a * m_x + b * m_v), -lvv * (a * lxx + b * lxv), -lvv * b * lvv
    expected = float((c0**2 * ex2 + c1**2 + (c2 - 1) ** 2).mean())
    assert first == pytest.approx(expected, rel=0.1), (first, expected)
    for name in ("cld_sscs", "cld_em"):
        images = model.sample(4, sampler=name, steps=3, classes=[0, 1, 2, 3])
        assert images.shape == (4, 1, 16, 16) and float(images.min()) >= 0 and float(images.max()) <= 1
    with pytest.raises(PolydiffError, match="does not fit process"):
        model.sample(2, sampler="ddim", steps=3)


def test_cld_refuses_other_prediction_targets_and_gaussian_processes_refuse_cld_samplers():
    from polydiff.core.module import DiffusionConfig
    from polydiff.domains.image import ImageDiffusion

    with pytest.raises(PolydiffError, match="prediction eps"):
        ImageDiffusion(model_channels=16, channel_mult=(1, 2), attention_resolutions=(),
                       diffusion=DiffusionConfig(process="cld", prediction="v"))
    vp = ImageDiffusion(model_channels=16, channel_mult=(1, 2), attention_resolutions=())
    with pytest.raises(PolydiffError, match="does not fit process"):
        vp.sample(2, sampler="cld_sscs", steps=3)


def test_inpainting_and_likelihood_refuse_a_cld_model_with_a_clear_error():
    from polydiff.core.module import DiffusionConfig
    from polydiff.domains.image import ImageDiffusion

    cld = ImageDiffusion(model_channels=16, channel_mult=(1, 2), attention_resolutions=(),
                         diffusion=DiffusionConfig(process="cld"))
    with pytest.raises(PolydiffError, match="the ELBO needs a Gaussian process"):
        cld.bits_per_dim(torch.zeros(2, 1, 16, 16))
    with pytest.raises(PolydiffError, match="inpainting needs a Gaussian process"):
        cld.inpaint(torch.zeros(2, 1, 16, 16), torch.ones(1, 1, 16, 16))
