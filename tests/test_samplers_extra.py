"""The higher-order samplers (DPM-Solver++ 3M, UniPC and its variants): convergence orders on a Gaussian target whose
probability-flow ODE has a closed-form solution, identities between them, and agreement with k-diffusion and diffusers
when those optional packages are installed (``make bench`` installs them: the ``[bench]`` extra plus k-diffusion without
its dependencies)."""

import math

import pytest
import torch

from polydiff.core.grids import make_grid
from polydiff.core.processes import RectifiedFlow, VarianceExploding, VPCosine
from polydiff.core.samplers import SAMPLERS, _final_denoise, dpmpp_2m, dpmpp_3m, unipc
from polydiff.core.sampling import SamplerConfig, sample
from polydiff.core.utils import append_dims

torch.set_num_threads(1)

MU = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
V = torch.tensor([0.01, 0.1, 1.0, 4.0], dtype=torch.float64)  # per-axis variances: a stiff and a wide direction


class Gauss:
    """Exact denoiser of N(MU, diag V) under any process: E[x0 | x_t] = MU + a V (x - a MU) / (a^2 V + s^2)."""

    def __init__(self, process):
        self.process = process
        self.sigma_data = 0.0
        self.calls = 0

    def __call__(self, x, logsnr, cond=None):
        self.calls += 1
        a, s = self.process.alpha_sigma(logsnr)
        a, s = append_dims(a, x.ndim), append_dims(s, x.ndim)
        return MU + a * V * (x - a * MU) / (a * a * V + s * s)


def exact_ode(x_start, s0, s1):
    """PF-ODE of N(MU, diag V) in VE coordinates: x(s1) = MU + sqrt((V + s1^2)/(V + s0^2)) (x(s0) - MU)."""
    return MU + ((V + s1**2) / (V + s0**2)).sqrt() * (x_start - MU)


Z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _error(name, steps, **kw):
    proc = VarianceExploding()
    lam = make_grid(proc, steps, "uniform_logsnr", "min", 0.05, 20.0)
    s0, s1 = math.exp(-float(lam[0]) / 2), math.exp(-float(lam[-1]) / 2)
    fn = SAMPLERS[name] if not kw else (lambda *a: unipc(*a, **kw))
    x = fn(Gauss(proc), Z * s0, lam)
    return float((x - exact_ode(Z * s0, s0, s1)).abs().max())


@pytest.mark.parametrize("name,order", [("ddim", 1), ("dpmpp_2m", 2), ("heun", 2), ("unipc_1", 2), ("unipc", 3),
                                        ("dpmpp_3m_unic", 3)])
def test_convergence_order(name, order):
    """Observed global order between 32 and 64 steps. Multistep methods start with a first-order step whose local
    error O(h^2) caps the global order of a UniP-3 / 3M predictor at 2; with the UniC corrector the warm-up step is
    second order, so UniPC-2 and 3M+UniC reach 3."""
    e32, e64 = _error(name, 32), _error(name, 64)
    observed = math.log2(e32 / e64)
    assert observed > order - 0.25, (name, e32, e64, observed)
    assert observed < order + 0.6, (name, e32, e64, observed)


def test_third_order_predictors_beat_second_order():
    e2 = _error("dpmpp_2m", 64)
    for name in ("dpmpp_3m", "unipc_3"):
        assert _error(name, 64) < 0.35 * e2, name


def test_corrector_raises_accuracy_and_unip2_is_dpmpp_2m():
    """UniP-2 with B(h) = e^h - 1 is DPM-Solver++(2M) (Zhao et al. 2023, Sec. 3.3); UniC makes it third order."""
    proc = VPCosine()
    lam = make_grid(proc, 12, "karras", "zero", 0.002, 80.0)
    x = Z * proc.alpha_sigma(lam[0])[1]
    a = unipc(Gauss(proc), x, lam, order=2, variant="bh2", corrector=False)
    torch.testing.assert_close(a, dpmpp_2m(Gauss(proc), x, lam), rtol=1e-12, atol=1e-12)
    assert _error("unipc", 32) < 0.3 * _error("dpmpp_2m", 32)


@pytest.mark.parametrize("name", ["dpmpp_3m", "unipc", "dpmpp_3m_unic", "unipc_1", "unipc_3"])
def test_new_samplers_agree_across_process_families(name):
    """Written in (alpha, sigma, lambda) only: the same end point on VE, VP and rectified-flow processes."""
    lam = make_grid(VarianceExploding(), 10, "karras", "zero", 0.002, 80.0)
    outs = []
    for proc in (VarianceExploding(), VPCosine(), RectifiedFlow()):
        model = Gauss(proc)
        outs.append(SAMPLERS[name](model, Z * proc.alpha_sigma(lam[0])[1], lam))
        assert model.calls == 10  # one network evaluation per step
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-9, atol=1e-9)


def test_final_corrector_step_is_the_denoiser_at_the_corrected_point():
    """The final-step policy replaces D(x_corrected) by D(x_eval) + (x_corrected - x_eval)/alpha; at sigma_min the
    difference is (sigma^2/V) |dx|, three orders of magnitude below the correction itself."""
    proc = VarianceExploding()
    lam = torch.tensor(-2 * math.log(0.002), dtype=torch.float64)
    model = Gauss(proc)
    x_eval = MU + torch.randn(16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_corr = x_eval + 0.05 * torch.randn(16, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x0 = model(x_eval, lam.expand(16))
    approx = _final_denoise(x_corr, x_eval, x0, 1.0)
    exact = model(x_corr, lam.expand(16))
    assert float((approx - exact).abs().max()) < 1e-3 * float((x_corr - x_eval).abs().max())
    assert float((x0 - exact).abs().max()) > 0.5 * float((x_corr - x_eval).abs().max())


@pytest.mark.parametrize("name", ["dpmpp_3m", "dpmpp_3m_sde", "unipc"])
def test_sample_driver_accepts_new_names(name):
    proc = VPCosine()
    x = sample(Gauss(proc), (4000, 4), SamplerConfig(name=name, steps=50), generator=torch.Generator().manual_seed(3))
    assert torch.all((x.mean(0) - MU).abs() < 0.1 + 4 * (V / 4000).sqrt())
    assert torch.all((x.var(0) / V - 1).abs() < 0.1)


def test_sde_needs_no_corrector():
    with pytest.raises(ValueError, match="ODE"):
        dpmpp_3m(Gauss(VPCosine()), Z, make_grid(VPCosine(), 4), eta=1.0, corrector=True)


# ----------------------------------------------------------------------------------------- reference implementations
def _mixture_model_ve():
    means = torch.tensor([[-2.0, 0.0, 1.0, 0.5], [1.5, 1.0, -1.0, 0.0]], dtype=torch.float64)

    def denoise(x, s):
        s2 = append_dims(s, 2) ** 2
        var = 0.05 + s2
        diff = x[:, None, :] - means[None]
        resp = torch.softmax(-0.5 * (diff**2).sum(-1) / var, 1)
        return (resp[..., None] * (means[None] + diff * (0.05 / var)[:, :, None])).sum(1)

    return denoise


def test_dpmpp_3m_matches_k_diffusion():
    import importlib.util
    import sys
    import types
    from pathlib import Path

    # k-diffusion's package __init__ imports many optional libraries: load sampling.py on its own
    if importlib.util.find_spec("k_diffusion") is None:
        pytest.skip("k-diffusion not installed (make bench installs it: pip install --no-deps k-diffusion)")
    pytest.importorskip("torchsde")
    pytest.importorskip("torchdiffeq")
    root = Path(list(importlib.util.find_spec("k_diffusion").submodule_search_locations)[0])
    pkg, utils = types.ModuleType("_kd_test"), types.ModuleType("_kd_test.utils")
    pkg.__path__ = [str(root)]
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules.update({"_kd_test": pkg, "_kd_test.utils": utils})
    spec = importlib.util.spec_from_file_location("_kd_test.sampling", root / "sampling.py")
    K = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(K)

    denoise = _mixture_model_ve()
    proc = VarianceExploding()

    class M:
        process = proc
        sigma_data = 0.0

        def __call__(self, x, lam, cond=None):
            return denoise(x, torch.exp(-lam / 2))

    for steps in (8, 20):
        lam = make_grid(proc, steps, "karras", "zero", 0.002, 80.0)
        sig = torch.exp(-lam / 2)
        x = Z * 80.0
        ours = dpmpp_3m(M(), x, lam, lower_order_final=False)
        theirs = K.sample_dpmpp_3m_sde(lambda x, s: denoise(x, s), x, sig, eta=0.0, disable=True)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        ours = dpmpp_3m(M(), x, lam, eta=1.0, lower_order_final=False, generator=g1)
        theirs = K.sample_dpmpp_3m_sde(lambda x, s: denoise(x, s), x, sig, eta=1.0, disable=True,
                                       noise_sampler=lambda a, b: torch.randn(x.shape, generator=g2).double())  # noqa: B023
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order,variant", [(2, "bh2"), (3, "bh2"), (3, "bh1")])
def test_unipc_matches_diffusers(order, variant):
    diffusers = pytest.importorskip("diffusers")
    denoise = _mixture_model_ve()
    proc = VarianceExploding()

    class M:
        process = proc
        sigma_data = 0.0

        def __call__(self, x, lam, cond=None):
            return denoise(x, torch.exp(-lam / 2))

    steps = 12
    lam = make_grid(proc, steps, "karras", "min", 0.002, 80.0)  # diffusers' bh1 breaks on a step to sigma = 0
    sig = torch.exp(-lam / 2)
    sched = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=variant, final_sigmas_type="sigma_min",
                                              lower_order_final=True)
    sched.set_timesteps(steps)
    sched.sigmas, sched.timesteps = sig.clone(), torch.arange(steps, -1, -1)[:steps]
    # diffusers walks sigmas[0..steps-1] -> sigmas[steps]; feed it a grid of steps + 1 finite points
    x = Z * float(sig[0]) / math.sqrt(1 + float(sig[0]) ** 2)
    for t in sched.timesteps:
        if sched.step_index is None:
            sched._init_step_index(t)
        s = sched.sigmas[sched.step_index]
        xv = x * (1 + s**2).sqrt()
        x = sched.step((xv - denoise(xv, s.expand(len(x)))) / s, t, x).prev_sample
    theirs = x * (1 + sig[-1] ** 2).sqrt()
    ours = unipc(M(), Z * float(sig[0]), lam, order=order, variant=variant)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
