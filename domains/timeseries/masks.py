"""Which observed values to hide: self-supervised training targets and evaluation gaps.

All masks are float tensors of the window's shape ``[B, K, L]`` (features x time steps) with 1 where a value is kept as
conditioning (``cond``) or hidden as a target (``hide``). A target is always an observed value: the model can only be taught,
and scored, where the truth is known.

Training strategies follow CSDI (Tashiro et al. 2021, sec. 4.3 and appendix B.1) and SSSD (Alcaraz & Strodthoff 2022):

* ``random``: per window a ratio r ~ U(0, 1); each observed value is hidden with probability r.
* ``historical``: the missing pattern of another window of the batch is laid over this one (CSDI's "historical" mask),
  falling back to ``random`` when that hides nothing (data without missing values).
* ``block``: contiguous gaps: either one run per feature (SSSD's "missing not at random") or a blackout of every feature
  over a run of time steps (SSSD's "blackout"; at the window's end it is a forecast).
* ``forecast``: the last ``horizon`` time steps of every feature (forecasting as imputation).
* ``mix``: per window one of random (1/2), block (1/4) and historical (1/4).
"""

import math
from typing import Literal, Optional

import torch
from torch import Tensor

from polydiff.core.utils import PolydiffError

TrainMask = Literal["random", "historical", "block", "forecast", "mix"]
EVAL_SETTINGS = ("random10", "random50", "random90", "block", "forecast")


def _uniform(shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator).to(device)


def random_hide(observed: Tensor, generator: Optional[torch.Generator] = None,
                ratio: Optional[float] = None) -> Tensor:
    """Hide each observed value with probability r (r ~ U(0, 1) per window when ``ratio`` is None)."""
    b = observed.shape[0]
    r = _uniform((b,), generator, observed.device) if ratio is None else torch.full((b,), ratio, device=observed.device)
    u = _uniform(tuple(observed.shape), generator, observed.device)
    return (u < r.view(b, 1, 1)).to(observed.dtype) * observed


def exact_hide(observed: Tensor, ratio: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Hide exactly ``round(ratio * n_observed)`` (at least one) observed values of each window, chosen at random.

    The evaluation mask of CSDI (``missing_ratio`` of the observed values is hidden in every test window).
    """
    b = observed.shape[0]
    flat = observed.reshape(b, -1)
    score = _uniform(tuple(flat.shape), generator, observed.device).masked_fill(flat == 0, -1.0)
    n_obs = flat.sum(1)
    k = torch.clamp(torch.round(n_obs * ratio), min=1).minimum(n_obs).long()
    order = score.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    hide = (rank < k[:, None]).to(observed.dtype) * flat
    return hide.reshape(observed.shape)


def block_hide(observed: Tensor, generator: Optional[torch.Generator] = None, blackout_prob: float = 0.5,
               max_fraction: float = 0.5) -> Tensor:
    """Contiguous gaps: with probability ``blackout_prob`` one run of time steps hidden for every feature, otherwise one
    run per feature; run lengths are uniform in ``[1, max(1, max_fraction * L)]``."""
    b, k, length = observed.shape
    longest = max(1, int(max_fraction * length))
    t = torch.arange(length, device=observed.device)
    run = 1 + (_uniform((b, k), generator, observed.device) * longest).long().clamp(max=longest - 1)
    start = (_uniform((b, k), generator, observed.device) * (length - run + 1)).long()
    blackout = _uniform((b,), generator, observed.device) < blackout_prob
    # a blackout uses the first feature's run for every feature
    run = torch.where(blackout[:, None], run[:, :1].expand(b, k), run)
    start = torch.where(blackout[:, None], start[:, :1].expand(b, k), start)
    hide = (t >= start[..., None]) & (t < (start + run)[..., None])
    return hide.to(observed.dtype) * observed


def fixed_block_hide(observed: Tensor, generator: Optional[torch.Generator] = None, fraction: float = 0.25) -> Tensor:
    """Evaluation block gaps: every feature loses one run of ``ceil(fraction * L)`` steps at a random start."""
    b, k, length = observed.shape
    run = max(1, math.ceil(fraction * length))
    start = (_uniform((b, k), generator, observed.device) * (length - run + 1)).long()
    t = torch.arange(length, device=observed.device)
    hide = (t >= start[..., None]) & (t < (start + run)[..., None])
    return hide.to(observed.dtype) * observed


def forecast_hide(observed: Tensor, horizon: int) -> Tensor:
    """Hide the last ``horizon`` time steps of every feature."""
    length = observed.shape[-1]
    if not 1 <= horizon < length:
        raise PolydiffError(f"forecast horizon {horizon} must be between 1 and the window length - 1 ({length - 1}); "
                            "set --model.forecast_horizon")
    hide = torch.zeros_like(observed)
    hide[..., length - horizon:] = 1
    return hide * observed


def historical_hide(observed: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """CSDI's historical mask: hide what another window of the batch is missing; ``random`` where that hides nothing."""
    other = observed.roll(1, dims=0)
    hide = observed * (1 - other)
    empty = hide.flatten(1).sum(1) == 0
    if empty.any():
        hide = torch.where(empty[:, None, None], random_hide(observed, generator), hide)
    return hide


def training_hide(observed: Tensor, strategy: str, generator: Optional[torch.Generator] = None,
                  horizon: int = 0) -> Tensor:
    """The targets of one training batch under ``strategy`` (see the module docstring)."""
    if strategy == "random":
        return random_hide(observed, generator)
    if strategy == "historical":
        return historical_hide(observed, generator)
    if strategy == "block":
        return block_hide(observed, generator)
    if strategy == "forecast":
        length = observed.shape[-1]
        if horizon > 0:
            return forecast_hide(observed, horizon)
        h = 1 + int(_uniform((1,), generator, observed.device).item() * max(1, length // 2))
        return forecast_hide(observed, min(h, length - 1))
    if strategy == "mix":
        choice = _uniform((observed.shape[0],), generator, observed.device)
        rnd = random_hide(observed, generator)
        blk = block_hide(observed, generator)
        hist = historical_hide(observed, generator)
        sel = choice[:, None, None]
        return torch.where(sel < 0.5, rnd, torch.where(sel < 0.75, blk, hist))
    raise PolydiffError(f"unknown training mask {strategy!r}; choose random, historical, block, forecast or mix")


def evaluation_hide(observed: Tensor, setting: str, generator: Optional[torch.Generator] = None,
                    horizon: int = 0) -> Tensor:
    """The hidden values of an evaluation setting: ``random10`` / ``random50`` / ``random90`` (that share of the observed
    values), ``block`` (one gap of a quarter of the window per feature), ``forecast`` (the last ``horizon`` steps, a
    quarter of the window when 0)."""
    if setting.startswith("random"):
        return exact_hide(observed, int(setting[len("random"):]) / 100, generator)
    if setting == "block":
        return fixed_block_hide(observed, generator)
    if setting == "forecast":
        length = observed.shape[-1]
        return forecast_hide(observed, horizon if horizon > 0 else max(1, math.ceil(length / 4)))
    raise PolydiffError(f"unknown evaluation setting {setting!r}; choose from {EVAL_SETTINGS}")
