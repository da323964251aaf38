"""The linear multistep family (LMS, PLMS, DEIS and its corrector) and DPM-Solver-fast: quadrature weights against
closed forms, convergence orders on a Gaussian whose probability-flow ODE is solved in closed form, invariance across
process families, and agreement to 1e-8 with k-diffusion's and diffusers' implementations on the same grid (float64),
when those optional packages are installed (``make bench`` installs them)."""

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.core.grids import make_grid
from polydiff.core.multistep import exp_multistep, lagrange_weights
from polydiff.core.processes import RectifiedFlow, VarianceExploding, VPCosine
from polydiff.core.samplers import SAMPLERS, network_evaluations
from polydiff.core.singlestep import fast_orders
from polydiff.core.utils import append_dims

torch.set_num_threads(1)

MU = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
V = torch.tensor([0.01, 0.1, 1.0, 4.0], dtype=torch.float64)
Z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
NEW = ["lms", "plms", "deis", "deis_2", "deis_pc", "dpm_fast"]


class Gauss:
    """Exact denoiser of N(MU, diag V) under any process, counting its calls."""

    def __init__(self, process):
        self.process, self.sigma_data, self.calls = process, 0.0, 0

    def __call__(self, x, logsnr, cond=None):
        self.calls += 1
        a, s = (append_dims(v, x.ndim) for v in self.process.alpha_sigma(logsnr))
        return MU + a * V * (x - a * MU) / (a * a * V + s * s)


def _error(name, steps):
    """Max error against the closed-form PF-ODE map of N(MU, diag V) in VE coordinates (sigma 20 -> 0.05)."""
    proc = VarianceExploding()
    lam = make_grid(proc, steps, "uniform_logsnr", "min", 0.05, 20.0)
    s0, s1 = math.exp(-float(lam[0]) / 2), math.exp(-float(lam[-1]) / 2)
    x = SAMPLERS[name](Gauss(proc), Z * s0, lam)
    exact = MU + ((V + s1**2) / (V + s0**2)).sqrt() * (Z * s0 - MU)
    return float((x - exact).abs().max())


def test_lagrange_weights_match_closed_forms():
    h, r = 0.7, 0.4
    # one node: int_0^h e^{-(h-u)} du = 1 - e^{-h} (the DDIM / DPM-Solver++ first-order weight)
    (w,) = lagrange_weights([0.0], 0.0, h, lambda u: np.exp(u - h))
    assert w == pytest.approx(-math.expm1(-h), rel=1e-14)
    # two nodes 0 and -r h: P(u) = f0 + (f0 - f1) u / (r h); int e^{-(h-u)} u du = h - (1 - e^{-h})
    w0, w1 = lagrange_weights([0.0, -r * h], 0.0, h, lambda u: np.exp(u - h))
    m0, m1 = -math.expm1(-h), h + math.expm1(-h)
    assert (w0, w1) == pytest.approx((m0 + m1 / (r * h), -m1 / (r * h)), rel=1e-13)
    # plain kernel: Adams-Bashforth 4 on unit steps gives (55, -59, 37, -9) / 24
    assert lagrange_weights([0.0, -1.0, -2.0, -3.0], 0.0, 1.0) == pytest.approx([55 / 24, -59 / 24, 37 / 24, -9 / 24],
                                                                                 rel=1e-13)


def test_fast_orders_spend_the_budget():
    for nfe in range(1, 30):
        assert sum(fast_orders(nfe)) == nfe and all(o in (1, 2, 3) for o in fast_orders(nfe))


@pytest.mark.parametrize("name,order", [("lms", 3), ("plms", 2), ("deis_2", 2), ("deis", 2), ("deis_pc", 3),
                                        ("dpm_fast", 2)])
def test_convergence_order(name, order):
    """Observed global order between 32 and 64 evaluations per unit (48 and 96 for dpm_fast). The warm-up caps the
    multistep methods: DEIS-3 starts with a first-order step (local error O(h^2): global order 2), LMS-4's warm-up in
    sigma~ leaves it at 3; the Adams-Moulton corrector makes DEIS's warm-up second order, so deis_pc reaches 3.
    PLMS's Adams-Bashforth coefficients are those of equal steps in the grid index, second order on this grid.
    DPM-Solver-fast ends with a first-order step when the budget is a multiple of 3 (order 2 overall)."""
    a, b = (48, 96) if name == "dpm_fast" else (32, 64)
    e_a, e_b = _error(name, a), _error(name, b)
    observed = math.log2(e_a / e_b)
    assert order - 0.25 < observed < order + 0.9, (name, e_a, e_b, observed)


def test_exponential_adams_order_one_is_ddim():
    """Order 1 is DDIM, in data and in noise prediction alike (both integrate the linear part exactly)."""
    proc = VarianceExploding()
    lam = make_grid(proc, 12, "karras", "zero", 0.002, 80.0)
    a = exp_multistep(Gauss(proc), Z * 80.0, lam, order=1, prediction="x0")
    torch.testing.assert_close(a, SAMPLERS["ddim"](Gauss(proc), Z * 80.0, lam), rtol=1e-12, atol=1e-12)
    b = exp_multistep(Gauss(proc), Z * 80.0, lam, order=1, prediction="eps")
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)  # DDIM is the same step in either prediction


@pytest.mark.parametrize("name", NEW)
def test_new_samplers_agree_across_process_families(name):
    """Written in (alpha, sigma, lambda) only: the same end point on VE, VP and rectified-flow processes, and the
    number of evaluations network_evaluations promises."""
    lam = make_grid(VarianceExploding(), 10, "karras", "zero", 0.002, 80.0)
    outs = []
    for proc in (VarianceExploding(), VPCosine(), RectifiedFlow()):
        model = Gauss(proc)
        outs.append(SAMPLERS[name](model, Z * proc.alpha_sigma(lam[0])[1], lam))
        assert model.calls == network_evaluations(name, 10)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------- reference implementations
def _mixture():
    means = torch.tensor([[-2.0, 0.0, 1.0, 0.5], [1.5, 1.0, -1.0, 0.0]], dtype=torch.float64)

    def denoise(x, s):  # VE denoiser of a two-component mixture, per-item sigma s
        var = 0.05 + append_dims(torch.as_tensor(s, dtype=torch.float64).expand(len(x)), 2) ** 2
        diff = x[:, None, :] - means[None]
        resp = torch.softmax(-0.5 * (diff**2).sum(-1) / var - 2 * var.log(), 1)
        return (resp[..., None] * (means[None] + diff * (0.05 / var)[:, :, None])).sum(1)

    class M:
        process = VarianceExploding()
        sigma_data = 0.0

        def __call__(self, x, lam, cond=None):
            return denoise(x, torch.exp(-lam / 2))

    return denoise, M()


def _k_sampling():
    if importlib.util.find_spec("k_diffusion") is None:
        pytest.skip("k-diffusion not installed (make bench installs it: pip install --no-deps k-diffusion)")
    pytest.importorskip("torchsde")
    pytest.importorskip("torchdiffeq")
    # k-diffusion's package __init__ imports many optional libraries: load sampling.py on its own
    root = Path(list(importlib.util.find_spec("k_diffusion").submodule_search_locations)[0])
    pkg, utils = types.ModuleType("_kd_ms"), types.ModuleType("_kd_ms.utils")
    pkg.__path__ = [str(root)]
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules.update({"_kd_ms": pkg, "_kd_ms.utils": utils})
    spec = importlib.util.spec_from_file_location("_kd_ms.sampling", root / "sampling.py")
    k = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(k)
    return k


@pytest.mark.parametrize("steps", [6, 20])
def test_lms_matches_k_diffusion_and_diffusers(steps):
    k = _k_sampling()
    denoise, model = _mixture()
    lam = make_grid(VarianceExploding(), steps, "karras", "zero", 0.002, 80.0)
    sig = torch.exp(-lam / 2)
    ours = SAMPLERS["lms"](model, Z * 80.0, lam)
    theirs = k.sample_lms(lambda x, s: denoise(x, s), Z * 80.0, sig, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-8)
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.LMSDiscreteScheduler()
    sched.set_timesteps(steps)
    sched.sigmas, sched.timesteps = sig.clone(), torch.arange(steps - 1, -1, -1).double()
    x = Z * 80.0
    for t in sched.timesteps:
        if sched.step_index is None:
            sched._init_step_index(t)
        s = sched.sigmas[sched.step_index]
        x = sched.step((x - denoise(x, s)) / s, t, x).prev_sample  # eps prediction: (x~ - D) / sigma~
    torch.testing.assert_close(ours, x, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("steps", [6, 20])
def test_dpm_fast_matches_k_diffusion(steps):
    k = _k_sampling()
    denoise, model = _mixture()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # k-diffusion builds its steps with torch.linspace in the default dtype
    try:
        s_min, s_max = torch.tensor(0.002, dtype=torch.float64), torch.tensor(80.0, dtype=torch.float64)
        theirs = k.sample_dpm_fast(lambda x, s: denoise(x, s), Z * 80.0, s_min, s_max, steps, disable=True)
    finally:
        torch.set_default_dtype(old)
    ours = SAMPLERS["dpm_fast"](model, Z * 80.0, make_grid(VarianceExploding(), steps, "karras", "min", 0.002, 80.0))
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-8)
    # a grid to sigma = 0 spends its last evaluation on x0_hat at sigma_min
    ours = SAMPLERS["dpm_fast"](model, Z * 80.0, make_grid(VarianceExploding(), steps + 1, "karras", "zero", 0.002,
                                                           80.0))
    torch.testing.assert_close(ours, denoise(theirs, s_min), rtol=1e-8, atol=1e-8)


def _grid_schedule(sig):
    """diffusers' discrete schedule whose training levels are the grid's sigmas (float64)."""
    ac = 1.0 / (1.0 + sig.flip(0) ** 2)
    betas = 1.0 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    return ac, betas.tolist()


@pytest.mark.parametrize("steps", [5, 12])
def test_plms_matches_diffusers_pndm(steps):
    diffusers = pytest.importorskip("diffusers")
    denoise, model = _mixture()
    lam = make_grid(VarianceExploding(), steps, "karras", "zero", 0.002, 80.0)
    sig = torch.exp(-lam / 2)
    ac, betas = _grid_schedule(sig[:-1])
    sched = diffusers.PNDMScheduler(num_train_timesteps=steps, trained_betas=betas, set_alpha_to_one=True,
                                    timestep_spacing="leading", steps_offset=0, skip_prk_steps=True)
    sched.set_timesteps(steps)
    sched.alphas_cumprod = ac  # float64 (diffusers builds it in float32)
    x, calls = Z * 80.0 / math.sqrt(1 + 80.0**2), 0
    for t in sched.timesteps:
        a = ac[int(t)]
        s = ((1 - a) / a).sqrt()
        xv = x * (1 + s**2).sqrt()
        x = sched.step((xv - denoise(xv, s)) / s, t, x).prev_sample
        calls += 1
    ours = SAMPLERS["plms"](model, Z * 80.0, lam)
    assert calls == network_evaluations("plms", steps) == steps + 1
    torch.testing.assert_close(ours, x, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("order,name", [(2, "deis_2"), (3, "deis")])
@pytest.mark.parametrize("steps", [6, 18])
def test_deis_matches_diffusers(order, name, steps):
    """diffusers' log-rho DEIS cannot step to sigma = 0 (log 0): both walk the same grid down to sigma_min."""
    diffusers = pytest.importorskip("diffusers")
    denoise, model = _mixture()
    lam = make_grid(VarianceExploding(), steps, "karras", "min", 0.002, 80.0)
    sig = torch.exp(-lam / 2)
    sched = diffusers.DEISMultistepScheduler(solver_order=order, lower_order_final=True)
    sched.set_timesteps(steps)
    sched.sigmas, sched.timesteps = sig.clone(), torch.arange(steps - 1, -1, -1)
    x = Z * 80.0 / math.sqrt(1 + 80.0**2)
    for t in sched.timesteps:
        if sched.step_index is None:
            sched._init_step_index(t)
        s = sched.sigmas[sched.step_index]
        xv = x * (1 + s**2).sqrt()
        x = sched.step((xv - denoise(xv, s)) / s, t, x).prev_sample
    theirs = x * (1 + sig[-1] ** 2).sqrt()
    torch.testing.assert_close(SAMPLERS[name](model, Z * 80.0, lam), theirs, rtol=1e-8, atol=1e-8)
