"""Samplers of categorical diffusion over one or several variables (pure functions of a model callable).

A model is ``model_fn(xs, time, index) -> logits``: ``xs`` a tuple of long tensors ``[b, ...]`` (one per variable),
``time`` of shape ``[b]`` in [0, 1] (1 = prior), ``index`` the positions ``[b]`` of these items in the sampled batch (to
select their conditions; the fast sampler evaluates sub-batches), ``logits`` a matching tuple of x0 logits
``[b, ..., K_i]``.

* :func:`ancestral_sample`: ``p(x_s | x_t)`` of D3PM eq. 4 on a grid of ``S <= T`` steps (the step between two grid
  times uses ``Q_{t|s}``, so skipping steps is exact for the forward process and only coarsens the model).
* :func:`absorbing_fast_sample`: the same distribution for absorbing processes, cheaper: whether a masked position is
  revealed between ``t`` and ``s`` does not depend on the model (probability ``(alpha_bar_s - alpha_bar_t) /
  (1 - alpha_bar_t)``, derived from eq. 4 with ``p~(mask) = 0``), so the network is only called for items in which
  something is revealed, and revealed values are drawn from ``p~(x_0 | x_t)``. With ``S = T`` and short sequences most
  steps reveal nothing (cf. the caching sampler of MDLM, Sahoo et al. 2024, sec. 4.2).

Both accept ``fixed`` / ``values``: positions whose category is given (infilling): they hold ``values`` at every step,
so the output keeps them exactly. ``project`` is applied to every intermediate state (e.g. symmetrise edge types of a
graph and reset padding).
"""

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

import torch
from torch import Tensor

from polydiff.core.discrete.processes import CategoricalProcess, sample_categorical
from polydiff.core.utils import PolydiffError

ModelFn = Callable[[tuple[Tensor, ...], Tensor, Tensor], tuple[Tensor, ...]]
Project = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]


def time_grid(train_steps: int, steps: int) -> Tensor:
    """Decreasing times from 1 to 0 (float64, ``steps + 1`` values) on the training grid ``k / T`` when ``T > 0``."""
    if steps < 1:
        raise PolydiffError(f"sampler steps must be >= 1, got {steps}")
    if train_steps > 0:
        if steps > train_steps:
            raise PolydiffError(f"sampler steps {steps} exceed the {train_steps} training steps; pass --steps <= "
                                f"{train_steps}")
        k = torch.linspace(train_steps, 0, steps + 1, dtype=torch.float64).round()
        return k / train_steps
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def _identity(xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return xs


def _apply_fixed(xs: tuple[Tensor, ...], fixed: Optional[Sequence[Optional[Tensor]]],
                 values: Optional[Sequence[Optional[Tensor]]]) -> tuple[Tensor, ...]:
    if fixed is None:
        return xs
    if values is None or len(values) != len(xs) or len(fixed) != len(xs):
        raise PolydiffError("infilling needs one 'fixed' mask and one 'values' tensor per variable")
    return tuple(x if f is None else torch.where(f.bool(), v.to(x.device), x) for x, f, v in zip(xs, fixed, values))


def prior_sample(processes: Sequence[CategoricalProcess], shapes: Sequence[tuple[int, ...]],
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
    """``x_1`` for every variable, drawn from its limit distribution."""
    return tuple(p.sample_limit(shape, generator, device) for p, shape in zip(processes, shapes))


@torch.no_grad()
def ancestral_sample(model_fn: ModelFn, processes: Sequence[CategoricalProcess], x_init: tuple[Tensor, ...],
                     grid: Tensor, generator: torch.Generator | None = None,
                     fixed: Optional[Sequence[Optional[Tensor]]] = None,
                     values: Optional[Sequence[Optional[Tensor]]] = None, project: Project = _identity,
                     callback: Optional[Callable[[int], None]] = None) -> tuple[Tensor, ...]:
    """Reverse process from ``x_init`` (a prior draw) through the times of ``grid`` (D3PM eq. 4 at every step)."""
    xs = project(_apply_fixed(tuple(x_init), fixed, values))
    n = xs[0].shape[0]
    for i in range(len(grid) - 1):
        t, s = grid[i].expand(n), grid[i + 1].expand(n)
        logits = model_fn(xs, t.to(xs[0].device).float(), torch.arange(n, device=xs[0].device))
        new = []
        for proc, x, lg in zip(processes, xs, logits):
            probs = torch.softmax(proc.restrict_logits(lg.float()), -1)
            new.append(sample_categorical(proc.posterior_probs(x, probs, t, s), generator))
        xs = project(_apply_fixed(tuple(new), fixed, values))
        if callback is not None:
            callback(i)
    return xs


@torch.no_grad()
def absorbing_fast_sample(model_fn: ModelFn, processes: Sequence[CategoricalProcess], x_init: tuple[Tensor, ...],
                          grid: Tensor, generator: torch.Generator | None = None,
                          fixed: Optional[Sequence[Optional[Tensor]]] = None,
                          values: Optional[Sequence[Optional[Tensor]]] = None, project: Project = _identity,
                          callback: Optional[Callable[[int], None]] = None,
                          stats: Optional[dict] = None) -> tuple[Tensor, ...]:
    """Exact ancestral sampling of absorbing processes that skips the network for items where nothing is revealed.

    ``stats`` (a dict), if given, receives ``network_calls`` (items evaluated) and ``steps``.
    """
    for p in processes:
        if p.absorbing_index is None:
            raise PolydiffError(f"sampler absorbing_fast needs absorbing processes, got a {p.kind} one; use ancestral")
    xs = project(_apply_fixed(tuple(x_init), fixed, values))
    n, dev = xs[0].shape[0], xs[0].device
    gen_device = generator.device if generator is not None else "cpu"
    calls = 0
    for i in range(len(grid) - 1):
        t, s = grid[i], grid[i + 1]
        reveal = []
        for p, x in zip(processes, xs):
            # posterior probability of leaving the absorbing state between t and s (independent of the network)
            p_reveal = (p.alpha_bar(s) - p.alpha_bar(t)) / (1 - p.alpha_bar(t)).clamp_min(1e-300)
            u = torch.rand(x.shape, generator=generator, device=gen_device, dtype=torch.float64).to(dev)
            reveal.append((x == p.absorbing_index) & (u < float(p_reveal)))
        active = torch.zeros(n, dtype=torch.bool, device=dev)
        for r in reveal:
            active |= r.reshape(n, -1).any(1)
        if active.any():
            idx = active.nonzero().squeeze(1)
            sub = tuple(x[idx] for x in xs)
            logits = model_fn(sub, t.expand(len(idx)).to(dev).float(), idx)
            calls += len(idx)
            new = []
            for p, x, r, lg in zip(processes, xs, reveal, logits):
                draw = sample_categorical(torch.softmax(p.restrict_logits(lg.float()), -1), generator)
                x = x.clone()
                x[idx] = torch.where(r[idx], draw, x[idx])
                new.append(x)
            xs = project(_apply_fixed(tuple(new), fixed, values))
        if callback is not None:
            callback(i)
    if stats is not None:
        stats["network_calls"] = calls
        stats["steps"] = len(grid) - 1
    return xs


SAMPLERS = {"ancestral": ancestral_sample, "absorbing_fast": absorbing_fast_sample}
#: the categorical sampler names, taken from the registry
CategoricalSamplerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]


@dataclass
class CategoricalSamplerConfig:
    """How to sample a categorical diffusion model.

    Args:
        name: ancestral (D3PM reverse process, any transition) or absorbing_fast (same distribution, calls the network
            only when a masked position is revealed; absorbing only).
        steps: number of reverse steps, at most the training steps T (continuous-time models: any number).
        guidance: classifier-free guidance scale; only 1 (no guidance) is supported for categorical models.
    """

    name: CategoricalSamplerName = "ancestral"
    steps: int = 1000
    guidance: float = 1.0




def sample_categorical_diffusion(model_fn: ModelFn, processes: Sequence[CategoricalProcess],
                                 shapes: Sequence[tuple[int, ...]], config: CategoricalSamplerConfig, train_steps: int,
                                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                                 fixed: Optional[Sequence[Optional[Tensor]]] = None,
                                 values: Optional[Sequence[Optional[Tensor]]] = None, project: Project = _identity,
                                 callback: Optional[Callable[[int], None]] = None) -> tuple[Tensor, ...]:
    """Draw samples of the given per-variable ``shapes`` with the sampler of ``config`` (the driver the module uses)."""
    if config.name not in SAMPLERS:
        raise PolydiffError(f"unknown categorical sampler {config.name!r}; choose one of {sorted(SAMPLERS)}")
    if config.guidance != 1.0:
        raise PolydiffError("classifier-free guidance is not implemented for categorical diffusion; use --guidance 1")
    grid = time_grid(train_steps, config.steps)
    x_init = prior_sample(processes, shapes, generator, device)
    return SAMPLERS[config.name](model_fn, processes, x_init, grid, generator, fixed=fixed, values=values,
                                 project=project, callback=callback)


__all__ = ["CategoricalSamplerConfig", "CategoricalSamplerName", "ModelFn", "Project", "SAMPLERS",
           "absorbing_fast_sample", "ancestral_sample",
           "prior_sample", "sample_categorical_diffusion", "time_grid"]
