"""Drive diffusers' schedulers and k-diffusion's samplers with the exact mixture denoiser, on a given sigma grid.

Conventions are converted at the edges: every library gets the same VE noise levels ``sigma~ = sigma / alpha`` (a Karras
grid ending in 0), the same start noise ``z``, and the same denoiser. diffusers' VP schedulers (DDIM, DPMSolverMultistep,
UniPCMultistep) carry ``x_vp = x~ / sqrt(1 + sigma~^2)``; its Euler and Heun schedulers carry ``x~`` and ask the model for
``x_vp``. Every model receives an eps prediction computed exactly from the x0 prediction. NFE are counted by the denoiser.

diffusers and k-diffusion are optional (``make bench`` installs them: the ``[bench]`` extra plus k-diffusion without
its dependencies); nothing here is imported by polydiff itself.
"""

import contextlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from _gmm import GaussianMixture
from torch import Tensor


class CountingVE:
    """``D(x~, sigma~)`` with a call counter, as k-diffusion's model signature ``model(x, sigma[B])``."""

    def __init__(self, gmm: GaussianMixture):
        self.gmm, self.calls = gmm, 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        return self.gmm.denoise(x, sigma).to(x.dtype)


# ------------------------------------------------------------------------------------------------ k-diffusion
def load_k_sampling():
    """k-diffusion's ``sampling.py`` without its package ``__init__`` (which imports many optional libraries)."""
    if "k_diffusion_sampling" in sys.modules:
        return sys.modules["k_diffusion_sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion (as make bench does)")
    root = Path(list(spec.submodule_search_locations)[0])
    pkg = types.ModuleType("_kdiff_pkg")
    pkg.__path__ = [str(root)]
    utils = types.ModuleType("_kdiff_pkg.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["_kdiff_pkg"], sys.modules["_kdiff_pkg.utils"] = pkg, utils
    s = importlib.util.spec_from_file_location("_kdiff_pkg.sampling", root / "sampling.py")
    mod = importlib.util.module_from_spec(s)
    sys.modules["_kdiff_pkg.sampling"] = mod
    s.loader.exec_module(mod)
    sys.modules["k_diffusion_sampling"] = mod
    return mod


#: k-diffusion's deterministic samplers that take their own grid: DPM-Solver-fast (Lu et al. 2022, the order-3 singlestep
#: DPM-Solver with the evaluations split as k-diffusion does) on its own uniform log-SNR grid from sigma_max to sigma_min,
#: and DPM-Solver-23 with adaptive steps, whose NFE is measured. Both stop at sigma_min; the "+x0" variants spend one of
#: the budget's evaluations on the final x0 = D(x, sigma_min), as every sampler on the Karras grid does.
K_OWN_GRID = ("dpm_fast", "dpm_fast+x0")
#: (rtol, atol) sweep for sample_dpm_adaptive: its NFE is whatever the tolerance makes it; the benchmark counts each run
#: at the budget that its measured NFE fits
ADAPTIVE_TOLS = ((0.5, 0.2), (0.3, 0.1), (0.2, 0.05), (0.1, 0.02), (0.05, 0.0078), (0.02, 0.003), (0.01, 0.001))


@contextlib.contextmanager
def float64_defaults():
    """k-diffusion's DPM-Solver builds its step grid with ``torch.linspace`` in the default dtype (float32): run it in
    float64, as every other sampler here runs (otherwise its grid alone moves the end point by ~1e-4)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def k_samplers() -> dict[str, tuple[Callable, dict, bool]]:
    """name -> (function, extra kwargs, deterministic). Every deterministic sampler of the installed k-diffusion
    (0.1.1.post1 has no sample_ipndm / sample_deis; they are picked up here if a newer version has them)."""
    K = load_k_sampling()
    extra = {name: (getattr(K, f"sample_{name}"), {}, True) for name in ("ipndm", "ipndm_v", "deis")
             if hasattr(K, f"sample_{name}")}
    return {
        "euler": (K.sample_euler, {}, True),
        "heun": (K.sample_heun, {}, True),
        "dpm_2": (K.sample_dpm_2, {}, True),
        "lms": (K.sample_lms, {}, True),
        "dpm_fast": (K.sample_dpm_fast, {}, True),
        "dpm_fast+x0": (K.sample_dpm_fast, {}, True),
        "dpmpp_2m": (K.sample_dpmpp_2m, {}, True),
        **extra,
        "dpmpp_3m_sde(eta=0)": (K.sample_dpmpp_3m_sde, {"eta": 0.0}, True),
        "dpmpp_2m_sde": (K.sample_dpmpp_2m_sde, {"eta": 1.0}, False),
        "dpmpp_3m_sde": (K.sample_dpmpp_3m_sde, {"eta": 1.0}, False),
    }


def run_k(name: str, gmm: GaussianMixture, sigmas: np.ndarray, z: Tensor, gen: torch.Generator) -> tuple[Tensor, int]:
    fn, kw, _ = k_samplers()[name]
    model = CountingVE(gmm)
    sig = torch.tensor(sigmas, dtype=torch.float64)
    if name in K_OWN_GRID:  # the budget is len(sigmas) - 1; sigma_min is the last finite grid level
        s_min, s_max = sig[-2], sig[0]  # float64 tensors: k-diffusion keeps their dtype
        final = name.endswith("+x0")
        with float64_defaults():
            x = fn(model, z * s_max, s_min, s_max, len(sigmas) - 1 - final, disable=True)
        if final:
            x = model(x, torch.full((len(x),), s_min, dtype=torch.float64))
        return x, model.calls
    kw = dict(kw)
    if "eta" in kw:
        kw["noise_sampler"] = lambda s, s_next: torch.randn(z.shape, generator=gen, dtype=torch.float64)
    x = fn(model, z * sig[0], sig, disable=True, **kw)
    return x, model.calls


def run_k_adaptive(gmm: GaussianMixture, s_min: float, s_max: float, z: Tensor, rtol: float,
                   atol: float) -> tuple[Tensor, int]:
    """k-diffusion's sample_dpm_adaptive (DPM-Solver-23) from s_max to s_min, then x0 = D(x, s_min); NFE measured."""
    model = CountingVE(gmm)
    s_min, s_max = torch.tensor(s_min, dtype=torch.float64), torch.tensor(s_max, dtype=torch.float64)
    with float64_defaults():
        x = load_k_sampling().sample_dpm_adaptive(model, z * s_max, s_min, s_max, rtol=rtol, atol=atol, disable=True)
    x = model(x, torch.full((len(x),), s_min, dtype=torch.float64))
    return x, model.calls


# ------------------------------------------------------------------------------------------------ diffusers
def diffusers_schedulers() -> dict[str, tuple[Callable[[int, np.ndarray], object], bool]]:
    """name -> (factory(steps, sigmas) returning a configured scheduler, deterministic)."""
    import diffusers as D

    def dpm(order, algo="dpmsolver++", solver_type="midpoint"):
        return lambda n, s: D.DPMSolverMultistepScheduler(solver_order=order, algorithm_type=algo,
                                                          solver_type=solver_type, final_sigmas_type="zero",
                                                          lower_order_final=True)

    def unipc(order, variant):
        return lambda n, s: D.UniPCMultistepScheduler(solver_order=order, solver_type=variant, final_sigmas_type="zero",
                                                      lower_order_final=True)

    def grid_betas(s):
        # the training schedule *is* the grid: alphas_cumprod[k] = 1 / (1 + sigma_{n-1-k}^2), all n timesteps used
        ac = 1.0 / (1.0 + np.asarray(s[:-1], dtype=np.float64)[::-1] ** 2)
        return (1.0 - ac / np.concatenate([[1.0], ac[:-1]])).tolist()

    def ddim(n, s):
        return D.DDIMScheduler(num_train_timesteps=n, trained_betas=grid_betas(s), set_alpha_to_one=True,
                               timestep_spacing="leading", steps_offset=0, clip_sample=False)

    def pndm(n, s):  # PLMS (Liu et al. 2022, pseudo linear multistep; diffusers' PNDM with skip_prk_steps)
        return D.PNDMScheduler(num_train_timesteps=n, trained_betas=grid_betas(s), set_alpha_to_one=True,
                               timestep_spacing="leading", steps_offset=0, skip_prk_steps=True)

    def deis(order):
        # log-rho DEIS cannot step to sigma = 0 (log 0): it walks the finite grid and the caller takes x0 = D(x, sigma_min)
        return lambda n, s: D.DEISMultistepScheduler(solver_order=order, lower_order_final=True)

    def singlestep(order):
        return lambda n, s: D.DPMSolverSinglestepScheduler(solver_order=order, algorithm_type="dpmsolver++",
                                                           final_sigmas_type="zero", lower_order_final=True)

    return {
        "DDIM": (ddim, True),
        "Euler": (lambda n, s: D.EulerDiscreteScheduler(), True),
        "Heun": (lambda n, s: D.HeunDiscreteScheduler(), True),
        "LMSDiscrete": (lambda n, s: D.LMSDiscreteScheduler(), True),
        "PNDM(PLMS)": (pndm, True),
        "DEISMultistep(2)": (deis(2), True),
        "DEISMultistep(3)": (deis(3), True),
        "DPMSolverSinglestep(2S)": (singlestep(2), True),
        "DPMSolverSinglestep(3S)": (singlestep(3), True),
        "DPMSolverMultistep(2M)": (dpm(2), True),
        "DPMSolverMultistep(3M)": (dpm(3), True),
        "UniPC(bh1,2)": (unipc(2, "bh1"), True),
        "UniPC(bh2,2)": (unipc(2, "bh2"), True),
        "UniPC(bh1,3)": (unipc(3, "bh1"), True),
        "UniPC(bh2,3)": (unipc(3, "bh2"), True),
        "DPMSolverMultistep(SDE,2M)": (dpm(2, "sde-dpmsolver++"), False),
    }


def _override_sigmas(sched, name: str, sigmas: np.ndarray) -> None:
    """Replace the scheduler's grid by ``sigmas`` (VE, ending in 0) after ``set_timesteps``."""
    n = len(sigmas) - 1
    sig = torch.tensor(sigmas, dtype=torch.float64)
    ts = torch.arange(n - 1, -1, -1)
    if name.startswith("DEIS"):  # the finite part of the grid: its last level is sigma_min
        n -= 1
        sig, ts = sig[:-1], ts[1:]
    if name == "Heun":
        sched.sigmas = torch.cat([sig[:1], sig[1:-1].repeat_interleave(2), sig[-1:]])
        sched.timesteps = torch.cat([ts[:1], ts[1:].repeat_interleave(2)]).float()
    else:
        sched.sigmas = sig
        sched.timesteps = ts.float() if name in ("Euler", "LMSDiscrete") else ts
    sched.num_inference_steps = n
    if name.startswith("DPMSolverSinglestep"):
        sched.order_list = sched.get_order_list(n)


def run_diffusers(name: str, gmm: GaussianMixture, sigmas: np.ndarray, z: Tensor,
                  gen: torch.Generator) -> tuple[Tensor, int]:
    factory, _ = diffusers_schedulers()[name]
    n = len(sigmas) - 1
    sched = factory(n, sigmas)
    discrete = name == "DDIM" or name.startswith("PNDM")  # grid given as the training schedule (see grid_betas)
    sched.set_timesteps(n)
    if discrete:  # the schedule in float64 (diffusers builds it in float32 from the betas)
        sched.alphas_cumprod = torch.tensor(1.0 / (1.0 + np.asarray(sigmas[:-1], dtype=np.float64)[::-1] ** 2))
    else:
        _override_sigmas(sched, name, sigmas)
    ve_state = name in ("Euler", "Heun", "LMSDiscrete")
    s0 = float(sigmas[0])
    x = z * s0 if ve_state else z * s0 / (1 + s0**2) ** 0.5
    model = CountingVE(gmm)
    for t in sched.timesteps:
        if discrete:
            ac = sched.alphas_cumprod[int(t)].double()
            s = ((1 - ac) / ac).sqrt()
        else:
            if sched.step_index is None:
                sched._init_step_index(t)
            s = sched.sigmas[sched.step_index].double()
        x_in = sched.scale_model_input(x, t)  # x_vp
        xv = x_in.double() * (1 + s**2).sqrt()  # x~ = x_vp / alpha
        d = model(xv, s.expand(x.shape[0]))
        eps = (xv - d) / s
        kw = {"generator": gen} if "SDE" in name else {}
        x = sched.step(eps.to(x.dtype), t, x, **kw).prev_sample
    if name.startswith("DEIS"):  # the final step from sigma_min to 0: x0 = D(x~, sigma_min)
        s = float(sigmas[-2])
        x = model(x.double() * (1 + s**2) ** 0.5, torch.full((len(x),), s, dtype=torch.float64))
    return x.double(), model.calls
