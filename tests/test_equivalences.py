"""The equivalences of diffusion and flow matching, checked numerically.

1. DDIM (eta = 0) gives the same samples for (alpha_t, sigma_t) and (c_t alpha_t, c_t sigma_t).
2. DDIM (eta = 0) equals flow-matching Euler after reparameterisation.
3. One DDPM step equals a DDIM step over twice the log-SNR increment followed by forward re-noising, in distribution.
4. The SD3 timestep shift with factor s equals a log-SNR shift of -2 log s.
5. EDM preconditioning equals an x0-parameterisation with the corresponding scalings.

The denoiser is the exact one of a small Gaussian mixture (non-linear in x), written in VE coordinates
``x~ = x / alpha``, ``s = sigma / alpha`` so that it is the same function for every process.
"""

import math

import torch
from torch import nn

from polydiff.core import parameterization as P
from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.grids import make_grid
from polydiff.core.processes import (
    RectifiedFlow,
    VarianceExploding,
    VPCosine,
    VPLinear,
    process_by_name,
    sd3_shift_to_logsnr_shift,
)
from polydiff.core.samplers import ddim, ddim_step, ddpm, flow_euler
from polydiff.core.utils import append_dims

torch.set_num_threads(1)

MEANS = torch.tensor([[-1.5, 0.5, 0.0], [1.0, -0.5, 0.8]], dtype=torch.float64)
VAR = 0.2  # isotropic component variance
LOGW = torch.tensor([0.3, 0.7], dtype=torch.float64).log()


def mixture_denoise(x_ve: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + s n = x~] for the two-component mixture above (Bishop 2006, eq. 2.116 and 9.13)."""
    s2 = append_dims(s, 2) ** 2
    var = VAR + s2  # [B, 1]
    diff = x_ve[:, None, :] - MEANS[None]  # [B, K, d]
    logp = -0.5 * (diff**2).sum(-1) / var - 0.5 * MEANS.shape[1] * var.log() + LOGW
    resp = torch.softmax(logp, 1)
    post = MEANS[None] + diff * (VAR / var)[:, :, None]
    return (resp[..., None] * post).sum(1)


class MixtureModel:
    """Exact denoiser as a polydiff Denoiser of ``process``."""

    def __init__(self, process):
        self.process = process
        self.sigma_data = 0.0

    def __call__(self, x, logsnr, cond=None):
        a, s = self.process.alpha_sigma(logsnr)
        return mixture_denoise(x.double() / append_dims(a, 2), s / a)


class ScaledProcess:
    """(c_t alpha_t, c_t sigma_t) with a log-SNR dependent c_t: the same log-SNR, another scale."""

    def __init__(self, base, c):
        self.base, self.c = base, c

    def alpha_sigma(self, logsnr):
        a, s = self.base.alpha_sigma(logsnr)
        c = self.c(torch.as_tensor(logsnr, dtype=torch.float64))
        return c * a, c * s


def _start(n=512, seed=0):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# 1 ---------------------------------------------------------------------------------------------------------------
def test_ddim_invariant_to_rescaling_alpha_sigma():
    base = VPCosine()
    scaled = ScaledProcess(base, lambda lam: 3.0 * torch.exp(0.05 * lam.clamp(-20, 20)) + 0.5 * torch.sigmoid(lam))
    lam = make_grid(base, 12, "karras", "zero", 0.002, 80.0)
    z = _start()
    states = {}
    for name, proc in (("base", base), ("scaled", scaled)):
        x_start = z * proc.alpha_sigma(lam[0])[1]  # pure noise in that process's scale
        trace = []
        out = ddim(MixtureModel(proc), x_start, lam, callback=lambda i, x, x0: trace.append((x.clone(), x0.clone())))  # noqa: B023
        states[name] = (out, trace)
    out_b, tr_b = states["base"]
    out_s, tr_s = states["scaled"]
    # intermediate states differ exactly by c_t; predictions and end points are identical
    for i, ((xb, x0b), (xs, x0s)) in enumerate(zip(tr_b, tr_s)):
        ratio = float(scaled.c(lam[i]))
        torch.testing.assert_close(xs, ratio * xb, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(x0s, x0b, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(out_s, out_b, rtol=1e-11, atol=1e-11)
    # and the samples are not trivial: they moved away from the noise towards the modes
    assert float(out_b.std()) > 0.5


def test_ddim_same_samples_across_process_families():
    """VP, VE and rectified flow are rescalings of one another at equal log-SNR: DDIM end points coincide."""
    z = _start(seed=1)
    lam = make_grid(VarianceExploding(), 10, "karras", "zero", 0.002, 80.0)
    outs = []
    for proc in (VarianceExploding(), VPLinear(), RectifiedFlow()):
        outs.append(ddim(MixtureModel(proc), z * proc.alpha_sigma(lam[0])[1], lam))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-10, atol=1e-10)


# 2 ---------------------------------------------------------------------------------------------------------------
def test_ddim_equals_flow_matching_euler():
    """Hand-written Euler on dx_f/dt_f = u with x_f = x/(alpha+sigma), t_f = sigma/(alpha+sigma) (Lipman et al. 2022)."""
    for proc in (VPCosine(), VPLinear(), RectifiedFlow()):
        model = MixtureModel(proc)
        lam = make_grid(proc, 9, "uniform_t", "min", 0.002, None)
        x = _start(seed=2) * proc.alpha_sigma(lam[0])[1]
        xf_state = x.clone()
        for i in range(len(lam) - 1):
            a, s = proc.alpha_sigma(lam[i])
            a2, s2 = proc.alpha_sigma(lam[i + 1])
            x0 = model(xf_state, lam[i].expand(x.shape[0]))
            x_f, t_f, t_next = xf_state / (a + s), s / (a + s), s2 / (a2 + s2)
            u = (x_f - x0) / t_f  # flow-matching velocity eps - x0 expressed through x0_hat
            xf_state = (x_f + (t_next - t_f) * u) * (a2 + s2)
        out_ddim = ddim(model, x, lam)
        out_flow = flow_euler(model, x, lam)
        torch.testing.assert_close(out_ddim, xf_state, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(out_flow, xf_state, rtol=1e-11, atol=1e-11)
        assert float((out_ddim - x).abs().mean()) > 0.1  # the steps did something


def test_flow_euler_is_plain_euler_on_rectified_flow():
    """For the rectified-flow process the reparameterisation is the identity: x_{t'} = x_t + (t' - t)(eps_hat - x0_hat)."""
    proc = RectifiedFlow()
    model = MixtureModel(proc)
    t = torch.linspace(1.0 - 1e-4, 0.01, 8, dtype=torch.float64)
    lam = proc.logsnr(t)
    x = _start(seed=3) * float(t[0])
    ref = x.clone()
    for i in range(len(t) - 1):
        x0 = model(ref, lam[i].expand(x.shape[0]))
        eps = (ref - (1 - t[i]) * x0) / t[i]
        ref = ref + (t[i + 1] - t[i]) * (eps - x0)
    torch.testing.assert_close(ddim(model, x, lam), ref, rtol=1e-11, atol=1e-11)


# 3 ---------------------------------------------------------------------------------------------------------------
def test_ddpm_step_equals_ddim_double_increment_then_renoise_in_distribution():
    """x_s ~ q(x_s | x_t, x0_hat) has the law of: DDIM to lambda_u = lambda_t + 2 (lambda_s - lambda_t), then forward
    noising from lambda_u to lambda_s. Checked by the first two moments on a Gaussian target, both against each other
    and against the closed form of the DDPM step."""
    proc = VPCosine()
    mu, v = torch.tensor([0.7, -1.2], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)

    class Gauss:
        process = proc
        sigma_data = 0.0

        def __call__(self, x, logsnr, cond=None):
            a, s = proc.alpha_sigma(logsnr)
            a, s = append_dims(a, 2), append_dims(s, 2)
            # E[x0 | x_t] for x0 ~ N(mu, diag v): mu + a v (x - a mu) / (a^2 v + s^2)
            return mu + a * v * (x - a * mu) / (a**2 * v + s**2)

    model = Gauss()
    lt, ls = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    lu = lt + 2 * (ls - lt)
    n = 200_000
    g = torch.Generator().manual_seed(4)
    a_t, s_t = proc.alpha_sigma(lt)
    x_t = a_t * (mu + v.sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)) + s_t * torch.randn(
        n, 2, generator=g, dtype=torch.float64)
    # DDPM: one ancestral step (the library's sampler over the grid [lt, ls])
    x_ddpm = ddpm(model, x_t, torch.stack([lt, ls]), generator=torch.Generator().manual_seed(5))
    # DDIM over twice the increment, then forward re-noising with the process's transition q(x_s | x_u)
    x0 = model(x_t, lt.expand(n))
    x_u = ddim_step(model, x_t, x0, lt, lu, 0.0, None)
    a_u, s_u = proc.alpha_sigma(lu)
    a_s, s_s = proc.alpha_sigma(ls)
    ratio = a_s / a_u
    x_alt = ratio * x_u + (s_s**2 - ratio**2 * s_u**2).sqrt() * torch.randn(
        n, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    # closed form: x_s = A x_t + B + c z with A, B from the linear denoiser and c = sigma_s sqrt(1 - e^{lt - ls})
    k = a_t * v / (a_t**2 * v + s_t**2)
    r = torch.exp(lt - ls)
    coef_x0 = a_s - s_s * r.sqrt() * a_t / s_t
    A = s_s * r.sqrt() / s_t + coef_x0 * k
    B = coef_x0 * (mu - k * a_t * mu)
    c2 = s_s**2 * (1 - r)
    var_t = a_t**2 * v + s_t**2
    mean_cf, var_cf = A * a_t * mu + B, A**2 * var_t + c2
    for xs in (x_ddpm, x_alt):
        se_mean = (var_cf / n).sqrt()
        assert torch.all((xs.mean(0) - mean_cf).abs() < 5 * se_mean), (xs.mean(0), mean_cf)
        se_var = var_cf * math.sqrt(2 / n)
        assert torch.all((xs.var(0) - var_cf).abs() < 5 * se_var), (xs.var(0), var_cf)
    # the re-noising matters: without it the variance is clearly different (the test can fail)
    assert torch.all(((ratio * x_u).var(0) - var_cf).abs() > 20 * var_cf * math.sqrt(2 / n))
    # and pathwise: same mean given x_t, same conditional variance
    torch.testing.assert_close(ratio * x_u, a_s * x0 + s_s * r.sqrt() * (x_t - a_t * x0) / s_t, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(s_s**2 - ratio**2 * s_u**2, c2, rtol=1e-12, atol=1e-14)


# 4 ---------------------------------------------------------------------------------------------------------------
def sd3_shift(t: torch.Tensor, s: float) -> torch.Tensor:
    """SD3's timestep shift (Esser et al. 2024, eq. 23): t' = s t / (1 + (s - 1) t)."""
    return s * t / (1 + (s - 1) * t)


def test_sd3_shift_is_logsnr_shift():
    t = torch.linspace(0.001, 0.999, 101, dtype=torch.float64)
    for s in (0.5, 1.0, 3.0, 6.0):
        shifted = RectifiedFlow(logsnr_shift=sd3_shift_to_logsnr_shift(s))
        torch.testing.assert_close(shifted.logsnr(t), RectifiedFlow().logsnr(sd3_shift(t, s)), rtol=1e-12, atol=1e-12)
        assert math.isclose(sd3_shift_to_logsnr_shift(s), -2 * math.log(s), abs_tol=1e-15)
        # the marginals agree: (alpha, sigma) of the shifted process at t are (1 - t', t')
        a, sig = shifted.marginal(t)
        torch.testing.assert_close(sig, sd3_shift(t, s), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a, 1 - sd3_shift(t, s), rtol=1e-12, atol=1e-12)


def test_sd3_shifted_sampling_equals_logsnr_shifted_grid():
    """Euler on the SD3-shifted uniform time grid == polydiff's uniform_t grid of the log-SNR-shifted process."""
    s = 3.0
    proc = process_by_name("flow", logsnr_shift=sd3_shift_to_logsnr_shift(s))
    lam = make_grid(proc, 8, "uniform_t", "zero", 0.002, None)
    t = torch.linspace(float(proc.t_of_logsnr(lam[0])), 0.0, 9, dtype=torch.float64)
    lam_sd3 = RectifiedFlow().logsnr(sd3_shift(t, s))
    lam_sd3[0] = lam[0]
    torch.testing.assert_close(lam[:-1], lam_sd3[:-1], rtol=1e-10, atol=1e-10)
    assert math.isinf(float(lam[-1])) and math.isinf(float(lam_sd3[-1]))
    model = MixtureModel(RectifiedFlow())
    x = _start(seed=7) * RectifiedFlow().alpha_sigma(lam[0])[1]
    torch.testing.assert_close(flow_euler(model, x, lam), flow_euler(model, x, lam_sd3), rtol=1e-10, atol=1e-10)


# 5 ---------------------------------------------------------------------------------------------------------------
class Raw(nn.Module):
    """An arbitrary non-linear 'network' F(x_in, c_noise)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.w = nn.Parameter(torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, x, c_noise, cond=None):
        return torch.tanh(x @ self.w) + 0.3 * append_dims(c_noise.double(), x.ndim) * x


class Raw0(Raw):
    """The same network with the output set to zero (D reduces to c_skip x~)."""

    def forward(self, x, c_noise, cond=None):
        return torch.zeros_like(x)


class EdmAsX0(nn.Module):
    """x0-network built from F with Karras et al. 2022, Table 1: D = c_skip x~ + c_out F(c_in x~, c_noise), where the
    network sees ``x_in = c_in x~`` and the noise level is recovered from ``c_noise = ln(sigma~)/4``."""

    def __init__(self, raw, sigma_data):
        super().__init__()
        self.raw, self.sd = raw, sigma_data

    def forward(self, x_in, c_noise, cond=None):
        sig = append_dims(torch.exp(4 * c_noise.double()), x_in.ndim)
        c_in = 1 / (sig**2 + self.sd**2).sqrt()
        c_skip = self.sd**2 / (sig**2 + self.sd**2)
        c_out = sig * self.sd / (sig**2 + self.sd**2).sqrt()
        x_ve = x_in / c_in
        return c_skip * x_ve + c_out * self.raw(x_in, c_noise, cond)


def test_edm_preconditioning_is_x0_parameterisation():
    sd = 0.5
    raw = Raw()
    x = _start(64, seed=9) * 3
    lam = torch.linspace(-8, 10, 64, dtype=torch.float64)
    for proc in (VarianceExploding(), VPCosine(), RectifiedFlow()):
        edm = NetworkDenoiser(raw, proc, "edm", sd)
        x0net = NetworkDenoiser(EdmAsX0(raw, sd), proc, "x0", sd)
        a, _ = proc.alpha_sigma(lam)
        x_t = x * append_dims(a, 2)
        # c_noise reaches networks in float32, so the x0 network recovers sigma to ~1e-7 relative
        torch.testing.assert_close(edm(x_t, lam), x0net(x_t, lam), rtol=1e-6, atol=1e-6)
        # and it is not the identity: the raw network's output does matter
        assert float((edm(x_t, lam) - NetworkDenoiser(EdmAsX0(Raw0(), sd), proc, "x0", sd)(x_t, lam)).abs().max()) > 0.1


def test_edm_loss_is_weighted_x0_loss():
    """|F - F*|^2 c_out^2 = |D - x0|^2: EDM's loss is an x0 loss with weight 1/c_out^2 = (s^2 + sd^2)/(s sd)^2 (eq. 8)."""
    sd = 0.5
    proc = VarianceExploding()
    g = torch.Generator().manual_seed(10)
    x0 = torch.randn(32, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(32, 3, generator=g, dtype=torch.float64)
    lam = torch.linspace(-6, 8, 32, dtype=torch.float64)
    a, s = proc.alpha_sigma(lam)
    x_t = append_dims(a, 2) * x0 + append_dims(s, 2) * eps
    out = torch.randn(32, 3, generator=g, dtype=torch.float64)
    d = P.to_x0("edm", out, x_t, a, s, sd)
    f_err = ((out - P.target("edm", x0, eps, a, s, sd)) ** 2).sum(1)
    c_out = s * sd / (s**2 + sd**2).sqrt()
    torch.testing.assert_close(f_err * c_out**2, ((d - x0) ** 2).sum(1), rtol=1e-10, atol=1e-12)
    w_edm = (s**2 + sd**2) / (s * sd) ** 2
    torch.testing.assert_close(f_err, w_edm * ((d - x0) ** 2).sum(1), rtol=1e-10, atol=1e-12)
