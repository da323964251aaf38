"""Samplers of critically damped Langevin diffusion: Euler-Maruyama and SSCS on the reverse SDE.

Both are pure functions ``(model, u, times, cond, generator) -> u`` over a velocity-score model
``model(u, t, cond) -> eps_v_hat`` (:mod:`polydiff.core.cld_score`) and a decreasing time grid from 1 to ``t_end``,
followed by one noise-free Euler step from ``t_end`` to 0 (CLD-SGM's "denoising" step), so that ``steps`` grid points
cost ``steps`` network evaluations. Arithmetic in float64; noise from the explicit generator.

In reverse time ``tau`` the SDE reads (paper eq. 6, with the score split as ``s = -M^-1 v + (s + M^-1 v)``)::

    dx = -M^-1 v beta dtau
    dv = (x - Gamma M^-1 v) beta dtau + sqrt(2 Gamma beta) dW      <- linear (Ornstein-Uhlenbeck) part
         + 2 Gamma beta (s(u, t) + M^-1 v) dtau                    <- score part

The linear part is the forward CLD with ``x`` negated, so its exact solution is the forward kernel
(:meth:`CriticallyDampedLangevin.transition`). SSCS (symmetric splitting CLD sampler, paper Sec. 3.3 and App. E) takes
an exact half step of the linear part, an Euler step of the score part and another exact half step; only the score
part is discretised. The score is evaluated at the step's start time on the half-stepped state, as in the reference
implementation (CLD-SGM); evaluating it at the midpoint time instead was measured worse on digits (FD 60.1 vs 40.0 at
20 evaluations on the uniform-t grid, docs/benchmarks/cld.md).
"""

from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.core.cld import CriticallyDampedLangevin
from polydiff.core.cld_score import split_state
from polydiff.core.guidance import ClassifierFreeGuidance
from polydiff.core.samplers import _randn_like
from polydiff.core.utils import PolydiffError, append_dims

Callback = Callable[[int, Tensor], None]  # (step index, u)


def _score(model: Any, u: Tensor, t: float, cond: Any) -> Tensor:
    """Velocity score at time ``t`` for every item: ``-ell_t eps_v_hat``."""
    tt = torch.full((u.shape[0],), t, dtype=torch.float64)
    process: CriticallyDampedLangevin = model.process
    return -float(process.ell(tt[:1])) * model(u, tt.to(u.device), cond).double()


def _reverse_drift(process: CriticallyDampedLangevin, x: Tensor, v: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    fx, fv = process.drift(x, v)
    return -fx, -fv + process.diffusion_v**2 * score


def _denoise_step(model: Any, u: Tensor, t: float, cond: Any) -> Tensor:
    """Noise-free Euler step of the reverse SDE from ``t`` to 0 (one network evaluation)."""
    x, v = split_state(u)
    dx, dv = _reverse_drift(model.process, x, v, _score(model, u, t, cond))
    return torch.cat([x + t * dx, v + t * dv], dim=1)


def cld_euler_maruyama(model: Any, u: Tensor, times: Tensor, cond: Any = None,
                       generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Euler-Maruyama on the reverse SDE (paper's baseline): ``u += f_rev(u, t) h + sqrt(2 Gamma beta h) z`` (noise on
    ``v`` only)."""
    process: CriticallyDampedLangevin = model.process
    u = u.double()
    ts = times.tolist()
    for i in range(len(ts) - 1):
        h = ts[i] - ts[i + 1]
        x, v = split_state(u)
        dx, dv = _reverse_drift(process, x, v, _score(model, u, ts[i], cond))
        v = v + h * dv + process.diffusion_v * h**0.5 * _randn_like(v, generator)
        u = torch.cat([x + h * dx, v], dim=1)
        if callback is not None:
            callback(i, u)
    return _denoise_step(model, u, ts[-1], cond)


def _linear_half_step(process: CriticallyDampedLangevin, u: Tensor, h: float,
                      generator: torch.Generator | None) -> Tensor:
    """Exact solution over reverse time ``h`` of the linear part: the forward kernel applied to ``(-x, v)``."""
    x, v = split_state(u)
    B = torch.full((1,), process.beta * h, dtype=torch.float64, device=u.device)  # one step for the whole batch
    mx, mv, cov = process.transition(-x, v, B)
    lxx, lxv, lvv = (append_dims(c, x.ndim) for c in process.cholesky(cov))
    zx, zv = _randn_like(x, generator), _randn_like(v, generator)
    return torch.cat([-(mx + lxx * zx), mv + lxv * zx + lvv * zv], dim=1)


def cld_sscs(model: Any, u: Tensor, times: Tensor, cond: Any = None, generator: torch.Generator | None = None,
             callback: Callback | None = None) -> Tensor:
    """Symmetric splitting CLD sampler (SSCS, paper Alg. 1): exact half step of the linear part, Euler step of the score
    part ``v += 2 Gamma beta (s + M^-1 v) h`` with the score at the step's start time, exact half step."""
    process: CriticallyDampedLangevin = model.process
    u = u.double()
    ts = times.tolist()
    for i in range(len(ts) - 1):
        h = ts[i] - ts[i + 1]
        u = _linear_half_step(process, u, h / 2, generator)
        x, v = split_state(u)
        s = _score(model, u, ts[i], cond)
        v = v + process.diffusion_v**2 * (s + process.m_inv * v) * h
        u = _linear_half_step(process, torch.cat([x, v], dim=1), h / 2, generator)
        if callback is not None:
            callback(i, u)
    return _denoise_step(model, u, ts[-1], cond)


CLD_SAMPLERS: dict[str, Callable[..., Tensor]] = {"cld_em": cld_euler_maruyama, "cld_sscs": cld_sscs}
#: the time grids CLD samplers accept (names shared with the Gaussian grids)
CLD_GRIDS: tuple[str, ...] = ("uniform_t", "uniform_logsnr")


def cld_times(process: CriticallyDampedLangevin, steps: int, kind: str = "uniform_t", t_end: float = 1e-3) -> Tensor:
    """Decreasing times ``1 = t_0 > ... > t_{steps-1} = t_end`` (the last evaluation is the denoising step at
    ``t_end``): uniform in ``t`` (CLD-SGM's linear striding), or uniform in the log-SNR of ``x_t``."""
    if steps < 2:
        raise PolydiffError(f"CLD samplers need steps >= 2 (the last one is the denoising step), got {steps}")
    if not 0 < t_end < 1:
        raise PolydiffError(f"CLD sampling end time must lie in (0, 1), got {t_end}")
    if kind == "uniform_t":
        return torch.linspace(1.0, t_end, steps, dtype=torch.float64)
    if kind == "uniform_logsnr":
        table = torch.logspace(0, torch.log10(torch.tensor(t_end)).item(), 4097, dtype=torch.float64)
        lam = process.logsnr_x(table)  # increasing along the table
        target = torch.linspace(float(lam[0]), float(lam[-1]), steps, dtype=torch.float64)
        idx = torch.searchsorted(lam, target).clamp(1, len(table) - 1)
        w = (target - lam[idx - 1]) / (lam[idx] - lam[idx - 1])
        t = table[idx - 1] + w * (table[idx] - table[idx - 1])
        t[0], t[-1] = 1.0, t_end
        return t
    raise PolydiffError(f"CLD samplers use the grid uniform_t or uniform_logsnr, not {kind!r}; set "
                        "--model.sampler.grid")


@torch.no_grad()
def cld_sample(model: Any, shape: tuple[int, ...], config: Any, cond: Any = None, null_cond: Any = None,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu",
               callback: Callback | None = None) -> Tensor:
    """Draw data samples of ``shape`` (float64) with the CLD sampler named by ``config`` (a
    :class:`~polydiff.core.sampling.SamplerConfig`: ``name``, ``steps``, ``grid``, ``guidance``), ending at the
    process's ``t_end``. The start is the stationary distribution ``x ~ N(0, 1)``, ``v ~ N(0, M)``."""
    if config.name not in CLD_SAMPLERS:
        raise PolydiffError(f"sampler {config.name!r} is not a CLD sampler; choose one of {list(CLD_SAMPLERS)}")
    if config.guidance != 1.0:
        if null_cond is None:
            raise PolydiffError("guidance needs a model trained with condition dropout (no null condition available)")
        model = ClassifierFreeGuidance(model, config.guidance, null_cond)
    process: CriticallyDampedLangevin = model.process
    times = cld_times(process, config.steps, config.grid, process.t_end)
    sx, sv = process.prior_std()
    dev = generator.device if generator is not None else "cpu"
    x = torch.randn(shape, generator=generator, dtype=torch.float64, device=dev) * sx
    v = torch.randn(shape, generator=generator, dtype=torch.float64, device=dev) * sv
    u = torch.cat([x, v], dim=1).to(device)
    u = CLD_SAMPLERS[config.name](model, u, times, cond=cond, generator=generator, callback=callback)
    return split_state(u)[0]

