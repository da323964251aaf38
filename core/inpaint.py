"""Filling in the unknown part of a partially observed sample: RePaint (Lugmayr et al. 2022, Alg. 1).

At every step of an ancestral sampler the *known* entries (``mask == 1``) are replaced by a draw of the forward process
at the new noise level, ``alpha_s x_known + sigma_s z``, and the unknown entries come from the model's reverse step; the
two are then harmonised by ``resample`` rounds of jumping back one step with the forward transition q(x_t | x_s) and
stepping down again. The last step goes to clean data, where the known entries are set exactly. Nothing here depends on
what the data are: any rank, any mask broadcastable to the data.
"""

from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser, require_gaussian
from polydiff.core.grids import make_grid
from polydiff.core.samplers import ddim_step
from polydiff.core.utils import PolydiffError


def forward_transition(process: Any, x_s: Tensor, ls: Tensor, lt: Tensor, generator: torch.Generator | None) -> Tensor:
    """A draw of q(x_t | x_s) for ``lt < ls`` (t noisier): ``x_t = (alpha_t/alpha_s) x_s + sigma_ts z`` with
    ``sigma_ts^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2`` (Kingma et al. 2021, VDM, eq. 2-4)."""
    a_t, s_t = process.alpha_sigma(lt)
    a_s, s_s = process.alpha_sigma(ls)
    ratio = a_t / a_s
    std = (s_t**2 - ratio**2 * s_s**2).clamp_min(0).sqrt()
    z = torch.randn(x_s.shape, generator=generator, dtype=torch.float64,
                    device=generator.device if generator is not None else "cpu").to(x_s.device)
    return ratio.to(x_s.device) * x_s + std.to(x_s.device) * z


@torch.no_grad()
def inpaint(
    model: Denoiser,
    known: Tensor,
    mask: Tensor,
    steps: int = 50,
    resample: int = 5,
    cond: Any = None,
    generator: torch.Generator | None = None,
    grid: str = "uniform_logsnr",
    sigma_min: float = 0.002,
    sigma_max: float | None = 80.0,
) -> Tensor:
    """Samples that agree with ``known`` where ``mask == 1`` (float64, same shape as ``known``).

    Args:
        model: the denoiser (possibly wrapped in classifier-free guidance); the start noise has the marginal variance
            ``alpha^2 sigma_data^2 + sigma^2`` of the first grid level with the denoiser's ``sigma_data`` (as
            :func:`polydiff.core.sampling.sample`).
        known: the observed data in the model's data space; entries under ``mask == 0`` are ignored.
        mask: 1 for known entries, 0 for entries to generate; broadcastable to ``known``.
        steps: number of reverse steps of the ancestral sampler.
        resample: RePaint's U: number of passes through each step (1 = no resampling).
        cond: condition passed to the denoiser.
        generator: source of every random draw.
        grid: step grid kind (see :mod:`polydiff.core.grids`).
        sigma_min: smallest noise level of the grid (VE units).
        sigma_max: largest noise level (VE units; None: the process's prior end).
    """
    require_gaussian(model, "inpainting")
    if resample < 1:
        raise PolydiffError(f"resample must be at least 1, got {resample}")
    device = known.device
    known = known.double()
    mask = mask.to(device=device, dtype=torch.float64).expand_as(known)
    if torch.any((mask != 0) & (mask != 1)):
        raise PolydiffError("the inpainting mask must contain only 0 (generate) and 1 (known)")
    process = model.process
    lams = make_grid(process, steps, grid, "zero", sigma_min, sigma_max)
    gen_device = generator.device if generator is not None else "cpu"
    x = torch.randn(known.shape, generator=generator, dtype=torch.float64, device=gen_device).to(device)
    x = x * process.prior_std(lams[0], model.sigma_data).to(device)
    for i in range(steps):
        lt, ls = lams[i], lams[i + 1]
        passes = 1 if torch.isinf(ls) else resample  # the step to clean data is not resampled
        for u in range(passes):
            x0 = model(x, lt.to(device).expand(x.shape[0]), cond).double()
            unknown = ddim_step(model, x, x0, lt, ls, 1.0, generator)
            if torch.isinf(ls):
                known_s = known
            else:
                a_s, s_s = process.alpha_sigma(ls)
                noise = torch.randn(known.shape, generator=generator, dtype=torch.float64, device=gen_device).to(device)
                known_s = a_s.to(device) * known + s_s.to(device) * noise
            x = mask * known_s + (1 - mask) * unknown
            if u < passes - 1:
                x = forward_transition(process, x, ls, lt, generator)
    return x
