"""Step grids: the decreasing sequence of noise levels a sampler walks through, as increasing log-SNRs.

A grid of ``steps`` intervals has ``steps + 1`` entries. Its first entry is the start (pure noise); its last is either
``+inf`` (clean data, ``final_step="zero"``: the last step is a first-order step to sigma = 0, as in k-diffusion) or the
smallest noise level ``sigma_min`` (``final_step="min"``, and ``"denoise"``, which then spends one more network evaluation
on ``x0_hat``).
"""

import math
from typing import Literal

import torch
from torch import Tensor

from polydiff.core.processes import LOGSNR_LIMIT, NoiseProcess, logsnr_of_ve_sigma
from polydiff.core.utils import PolydiffError

#: step grid kinds and final-step policies: the one source of these names
GRID_KINDS: tuple[str, ...] = ("karras", "uniform_logsnr", "uniform_t")
FINAL_STEPS: tuple[str, ...] = ("zero", "min", "denoise")
GridKind = Literal[GRID_KINDS]  # type: ignore[valid-type]
FinalStep = Literal[FINAL_STEPS]  # type: ignore[valid-type]


def logsnr_bounds(process: NoiseProcess, sigma_min: float, sigma_max: float | None) -> tuple[float, float]:
    """``(lambda_start, lambda_end)``: the prior end of the process (or ``sigma_max`` in VE units, ``sigma/alpha``) and
    ``sigma_min`` (VE units; EDM's default 0.002)."""
    start = float(process.logsnr(1.0).clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT))
    if sigma_max is not None:
        start = max(start, logsnr_of_ve_sigma(sigma_max))
    end = logsnr_of_ve_sigma(sigma_min)
    if end <= start:
        raise PolydiffError(f"sampling grid is empty: sigma_min={sigma_min} is not below the start of the process")
    return start, end


def make_grid(
    process: NoiseProcess,
    steps: int,
    kind: str = "karras",
    final_step: str = "zero",
    sigma_min: float = 0.002,
    sigma_max: float | None = None,
    rho: float = 7.0,
) -> Tensor:
    """Increasing float64 log-SNRs with ``steps + 1`` entries (see module docstring)."""
    if steps < 1:
        raise PolydiffError(f"steps must be at least 1, got {steps}")
    if final_step not in FINAL_STEPS:
        raise PolydiffError(f"unknown final_step {final_step!r}; choose one of {list(FINAL_STEPS)}")
    if kind not in GRID_KINDS:
        raise PolydiffError(f"unknown step grid {kind!r}; choose one of {list(GRID_KINDS)}")
    lo, hi = logsnr_bounds(process, sigma_min, sigma_max)
    to_zero = final_step == "zero"
    n = steps if to_zero else steps + 1  # finite points
    if kind == "karras":
        # Karras et al. 2022, eq. 5: sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho
        s_max, s_min = math.exp(-lo / 2), math.exp(-hi / 2)
        ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
        sig = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        lam = -2 * torch.log(sig)
    elif kind == "uniform_logsnr":
        lam = torch.linspace(lo, hi, n, dtype=torch.float64) if n > 1 else torch.tensor([lo], dtype=torch.float64)
    else:  # uniform_t
        t_start = float(process.t_of_logsnr(torch.tensor(lo)))
        t_end = 0.0 if to_zero else float(process.t_of_logsnr(torch.tensor(hi)))
        t = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
        lam = process.logsnr(t)
        lam[0] = max(float(lam[0]), -LOGSNR_LIMIT)
        if to_zero:
            lam[-1] = math.inf
        return lam
    if to_zero:
        lam = torch.cat([lam, torch.tensor([math.inf], dtype=torch.float64)])
    return lam
