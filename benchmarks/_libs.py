"""Drive diffusers' schedulers and k-diffusion's samplers with the exact mixture denoiser, on a given sigma grid.

Conventions are converted at the edges: every library gets the same VE noise levels ``sigma~ = sigma / alpha`` (a Karras
grid ending in 0), the same start noise ``z``, and the same denoiser. diffusers' VP schedulers (DDIM, DPMSolverMultistep,
UniPCMultistep) carry ``x_vp = x~ / sqrt(1 + sigma~^2)``; its Euler and Heun schedulers carry ``x~`` and ask the model for
``x_vp``. Every model receives an eps prediction computed exactly from the x0 prediction. NFE are counted by the denoiser.

diffusers and k-diffusion are optional (``make bench`` installs them: the ``[bench]`` extra plus k-diffusion without
its dependencies); nothing here is imported by polydiff itself.
"""

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


def k_samplers() -> dict[str, tuple[Callable, dict, bool]]:
    """name -> (function, extra kwargs, deterministic)."""
    K = load_k_sampling()
    return {
        "euler": (K.sample_euler, {}, True),
        "heun": (K.sample_heun, {}, True),
        "dpm_2": (K.sample_dpm_2, {}, True),
        "dpmpp_2m": (K.sample_dpmpp_2m, {}, True),
        "dpmpp_3m_sde(eta=0)": (K.sample_dpmpp_3m_sde, {"eta": 0.0}, True),
        "dpmpp_2m_sde": (K.sample_dpmpp_2m_sde, {"eta": 1.0}, False),
        "dpmpp_3m_sde": (K.sample_dpmpp_3m_sde, {"eta": 1.0}, False),
    }


def steps_for_nfe(name: str, nfe: int) -> int:
    """Grid intervals that use at most ``nfe`` evaluations (2 per step for Heun / DPM-2, 1 on the step to zero)."""
    two_per_step = any(k in name for k in ("heun", "dpm_2"))
    return max(1, (nfe + 1) // 2) if two_per_step else nfe


def run_k(name: str, gmm: GaussianMixture, sigmas: np.ndarray, z: Tensor, gen: torch.Generator) -> tuple[Tensor, int]:
    fn, kw, _ = k_samplers()[name]
    model = CountingVE(gmm)
    sig = torch.tensor(sigmas, dtype=torch.float64)
    kw = dict(kw)
    if "eta" in kw:
        kw["noise_sampler"] = lambda s, s_next: torch.randn(z.shape, generator=gen, dtype=torch.float64)
    x = fn(model, z * sig[0], sig, disable=True, **kw)
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

    def ddim(n, s):
        # the training schedule *is* the grid: alphas_cumprod[k] = 1 / (1 + sigma_{n-1-k}^2), all n timesteps used
        ac = 1.0 / (1.0 + np.asarray(s[:-1], dtype=np.float64)[::-1] ** 2)
        betas = 1.0 - ac / np.concatenate([[1.0], ac[:-1]])
        return D.DDIMScheduler(num_train_timesteps=n, trained_betas=betas.tolist(), set_alpha_to_one=True,
                               timestep_spacing="leading", steps_offset=0, clip_sample=False)

    return {
        "DDIM": (ddim, True),
        "Euler": (lambda n, s: D.EulerDiscreteScheduler(), True),
        "Heun": (lambda n, s: D.HeunDiscreteScheduler(), True),
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
    if name == "Heun":
        sched.sigmas = torch.cat([sig[:1], sig[1:-1].repeat_interleave(2), sig[-1:]])
        sched.timesteps = torch.cat([ts[:1], ts[1:].repeat_interleave(2)]).float()
    else:
        sched.sigmas = sig
        sched.timesteps = ts.float() if name == "Euler" else ts
    sched.num_inference_steps = n


def run_diffusers(name: str, gmm: GaussianMixture, sigmas: np.ndarray, z: Tensor,
                  gen: torch.Generator) -> tuple[Tensor, int]:
    factory, _ = diffusers_schedulers()[name]
    n = len(sigmas) - 1
    sched = factory(n, sigmas)
    sched.set_timesteps(n)
    if name != "DDIM":
        _override_sigmas(sched, name, sigmas)
        ve_state = name in ("Euler", "Heun")
    else:
        ve_state = False
    s0 = float(sigmas[0])
    x = z * s0 if ve_state else z * s0 / (1 + s0**2) ** 0.5
    model = CountingVE(gmm)
    for t in sched.timesteps:
        if name == "DDIM":
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
    return x.double(), model.calls
