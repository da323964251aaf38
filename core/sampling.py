"""The sampling driver: a sampler configuration, a denoiser and a shape in, samples out."""

import inspect
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from polydiff.core.cld_samplers import CLD_SAMPLERS
from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import FinalStep, GridKind, make_grid
from polydiff.core.guidance import ClassifierFreeGuidance
from polydiff.core.samplers import SAMPLERS
from polydiff.core.utils import PolydiffError

#: the sampler names, taken from the registry (the one source: a sampler added there is a valid config value here)
SamplerName = Literal[tuple(SAMPLERS) + tuple(CLD_SAMPLERS)]  # type: ignore[valid-type]


@dataclass
class SamplerConfig:
    """How to sample.

    Args:
        name: sampler: ddpm, ddim, euler, heun, dpmpp_2m, dpmpp_2m_sde, flow_euler, dpmpp_3m, dpmpp_3m_sde,
            unipc (UniPC-2 bh2 with UniC corrector), dpmpp_3m_unic (DPM-Solver++ 3M with the UniC-3 corrector),
            unipc_1 (the DDIM step with UniC-1, bh1: best below ~8 evaluations), unipc_3 (UniPC-3, bh2),
            lms (k-diffusion's linear multistep in sigma), plms (PNDM), deis / deis_2 (DEIS, orders 3 / 2), deis_pc
            (DEIS-3 with an Adams-Moulton corrector), dpm_fast (DPM-Solver-fast: its own uniform log-SNR steps in the
            grid's range); which at which budget: docs/benchmarks/samplers.md;
            consistency (multistep consistency sampling of a few-step student, polydiff.core.fewstep); for the cld
            process: cld_em (Euler-Maruyama) and cld_sscs (symmetric splitting CLD sampler), on the grids uniform_t or
            uniform_logsnr (of x_t), whose last step is a denoising step.
        steps: number of grid intervals (network evaluations for all but heun, which uses 2 steps - 1, and plms,
            which uses steps + 1).
        grid: step grid: karras (rho-spaced sigmas), uniform_logsnr, uniform_t.
        final_step: zero (last step to sigma = 0), min (stop at sigma_min), denoise (stop at sigma_min, return x0_hat).
        eta: stochasticity of ddim / dpmpp_2m_sde (None: the sampler's default: 0 for ddim, 1 for the SDE).
        guidance: classifier-free guidance scale (1 = plain conditional model).
        guidance_sigma_min: guidance only at noise levels sigma / alpha >= this (VE units, as sigma_min), the
            conditional model alone below (0: at every level; Kynkäänniemi et al. 2024, guidance in a limited interval).
        s_churn: EDM churn for euler / heun (0 = deterministic).
        s_tmin: EDM churn applies for sigma in [s_tmin, s_tmax].
        s_tmax: see s_tmin.
        s_noise: EDM noise inflation for churn.
        sigma_min: smallest noise level of the grid, in VE units sigma / alpha (EDM: 0.002).
        sigma_max: largest noise level in VE units (EDM: 80; the start is the process's prior end if that is lower;
            None: the prior end itself, which is pure noise for VP-cosine and flow processes).
        rho: Karras grid exponent (EDM: 7).
    """

    name: SamplerName = "dpmpp_2m"
    steps: int = 20
    grid: GridKind = "karras"
    final_step: FinalStep = "zero"
    eta: Optional[float] = None
    guidance: float = 1.0
    guidance_sigma_min: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    sigma_min: float = 0.002
    sigma_max: Optional[float] = 80.0
    rho: float = 7.0


def sampler_options(config: SamplerConfig) -> dict[str, Any]:
    """The options of ``config`` that its sampler function accepts."""
    if config.name not in SAMPLERS:
        raise PolydiffError(f"unknown sampler {config.name!r}; choose one of {sorted(SAMPLERS)}")
    accepted = inspect.signature(SAMPLERS[config.name]).parameters
    opts = {k: getattr(config, k) for k in ("s_churn", "s_tmin", "s_tmax", "s_noise") if k in accepted}
    if "eta" in accepted and config.eta is not None:
        opts["eta"] = config.eta
    return opts


@torch.no_grad()
def sample(
    model: Denoiser,
    shape: tuple[int, ...],
    config: SamplerConfig,
    cond: Any = None,
    null_cond: Any = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    x_init: Tensor | None = None,
) -> Tensor:
    """Draw samples of ``shape`` from ``model`` with the sampler described by ``config`` (float64 result).

    ``null_cond`` is required when ``config.guidance != 1``. ``x_init`` (unit-variance noise) replaces the draw of the
    start noise, e.g. to compare samplers from the same noise. The start is scaled to the marginal of x_t at the first grid
    level for data of the denoiser's ``sigma_data`` (see ``NoiseProcess.prior_std``).
    """
    if config.guidance != 1.0:
        if null_cond is None:
            raise PolydiffError("guidance needs a model trained with condition dropout (no null condition available)")
        model = ClassifierFreeGuidance(model, config.guidance, null_cond, config.guidance_sigma_min)
    opts = sampler_options(config)
    grid = make_grid(model.process, config.steps, config.grid, config.final_step, config.sigma_min, config.sigma_max,
                     config.rho)
    fn = SAMPLERS[config.name]
    if x_init is None:
        gen_device = generator.device if generator is not None else "cpu"
        x_init = torch.randn(shape, generator=generator, dtype=torch.float64, device=gen_device)
    x = x_init.to(device=device, dtype=torch.float64) * model.process.prior_std(grid[0], model.sigma_data).to(device)
    callback = None
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
        task = bar.add_task(f"sampling ({config.name}, {config.steps} steps)", total=config.steps)
        bar.start()

        def callback(i: int, _x: Tensor, _x0: Tensor) -> None:
            bar.update(task, completed=i + 1)

    try:
        x = fn(model, x, grid, cond=cond, generator=generator, callback=callback, **opts)
        if config.final_step == "denoise":
            x = model(x, grid[-1].to(x.device).expand(x.shape[0]), cond).double()
    finally:
        if bar is not None:
            bar.stop()
    return x
