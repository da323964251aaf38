"""Training objectives and the exact variational bound of categorical diffusion, for one or several variables.

Per position and in nats (Austin et al. 2021, D3PM, eq. 1 and 5; Sahoo et al. 2024, MDLM, eq. 10):

* :func:`vb_term`: the step ``k`` term of the bound, ``KL(q(x_{k-1} | x_k, x_0) || p(x_{k-1} | x_k))`` for ``k >= 2`` and
  ``-log p(x_0 | x_1)`` for ``k = 1`` (times ``k / T``).
* :func:`ce_term`: ``-log p~(x_0 | x_t)`` of the network's x0 prediction (the auxiliary loss of the hybrid objective).
* :func:`prior_term`: ``KL(q(x_1 | x_0) || m)`` (zero when ``alpha_bar(1) = 0``, as for every schedule here).
* :func:`mdlm_term`: the continuous-time absorbing bound ``-alpha_bar'(t) / (1 - alpha_bar(t)) [x_t = mask] (-log p~)``.

The hybrid loss is ``L_vb + lambda CE`` with ``L_vb = T * vb_term`` at a uniformly drawn step: an unbiased estimate of the
whole bound ``sum_k vb_k`` (so it reads directly as nats per position and is comparable across ``T``).
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.discrete.processes import CategoricalProcess, safe_log
from polydiff.core.discrete.schedules import ScheduleName, alpha_bar_derivative
from polydiff.core.utils import PolydiffError, append_dims


@dataclass
class CategoricalConfig:
    """The categorical forward process and the training objective.

    Args:
        transition: uniform (D3PM), absorbing ([MASK], D3PM) or marginal (towards the data's category frequencies,
            DiGress).
        schedule: keep-probability schedule alpha_bar(t): linear (1 - t; D3PM absorbing) or cosine (D3PM uniform).
        steps: number of diffusion steps T of training and of the bound; 0 means continuous time (loss "mdlm" only).
            Samplers may use any number of steps up to T.
        loss: hybrid (D3PM: L_vb + ce_weight * CE) or mdlm (continuous-time absorbing bound, absorbing only).
        ce_weight: lambda of the hybrid loss (D3PM: 0.01 for absorbing text); 0 trains on the bound alone.
        bound_times: steps per held-out item at which ``polydiff test`` evaluates the bound: 0 = all T steps (the exact
            sum), n > 0 = n stratified steps weighted T / n (an unbiased estimate, T / n times cheaper); continuous-time
            models: n stratified times of the MDLM integral (100 when 0).
    """

    transition: Literal["uniform", "absorbing", "marginal"] = "absorbing"
    schedule: ScheduleName = "linear"
    steps: int = 1000
    loss: Literal["hybrid", "mdlm"] = "hybrid"
    ce_weight: float = 0.01
    bound_times: int = 0


def check_config(cfg: CategoricalConfig) -> None:
    """Clear errors for impossible combinations."""
    if cfg.steps < 0:
        raise PolydiffError(f"diffusion.steps must be >= 0 (0 = continuous time), got {cfg.steps}")
    if cfg.loss == "mdlm" and cfg.transition != "absorbing":
        raise PolydiffError("diffusion.loss 'mdlm' is the continuous-time *absorbing* bound; set diffusion.transition "
                            "to absorbing or diffusion.loss to hybrid")
    if cfg.loss == "hybrid" and cfg.steps == 0:
        raise PolydiffError("diffusion.loss 'hybrid' needs discrete steps; set diffusion.steps > 0 (e.g. 1000)")


def make_process(cfg: CategoricalConfig, num_categories: int, marginals: Tensor | None = None) -> CategoricalProcess:
    """The process of one variable from the config (``marginals`` for the marginal transition)."""
    if cfg.transition == "uniform":
        return CategoricalProcess.uniform(num_categories, cfg.schedule)
    if cfg.transition == "absorbing":
        return CategoricalProcess.absorbing(num_categories, cfg.schedule)
    if cfg.transition == "marginal":
        if marginals is None:
            raise PolydiffError("transition 'marginal' needs category frequencies (the domain computes them from data)")
        if marginals.numel() != num_categories:
            raise PolydiffError(f"{marginals.numel()} marginals given for {num_categories} categories")
        return CategoricalProcess.marginal(marginals, cfg.schedule)
    raise PolydiffError(f"unknown transition {cfg.transition!r}; choose uniform, absorbing or marginal")


def draw_times(n: int, steps: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Training times ``(t, s)`` (float64, ``[n]``), stratified over the batch for a lower-variance estimate.

    Discrete (``steps = T > 0``): ``k`` uniform on ``1..T``, ``t = k / T``, ``s = (k - 1) / T``. Continuous (``T = 0``):
    ``t`` uniform on (0, 1], ``s = t``.
    """
    u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n
    u = u[torch.randperm(n, generator=generator)]
    if steps > 0:
        k = (u * steps).floor().clamp(0, steps - 1) + 1
        return k / steps, (k - 1) / steps
    t = (1.0 - u).clamp_min(1e-4)
    return t, t


def vb_term(process: CategoricalProcess, x0: Tensor, x_t: Tensor, x0_logits: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """Step term of the bound per position (nats): KL of posterior vs model step, or ``-log p(x_0 | x_t)`` at ``s = 0``."""
    log_p = process.posterior_logits(x_t, x0_logits.float(), t, s)
    onehot = F.one_hot(x0, process.num_categories).to(log_p.dtype)
    q = process.posterior_probs(x_t, onehot, t, s)
    kl = (q * (safe_log(q) - log_p)).sum(-1)
    nll = -log_p.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    last = append_dims((s <= 0).to(x0.device), x0.ndim)
    return torch.where(last, nll, kl)


def ce_term(process: CategoricalProcess, x0: Tensor, x0_logits: Tensor) -> Tensor:
    """``-log p~(x_0 | x_t)`` per position (nats)."""
    logp = torch.log_softmax(process.restrict_logits(x0_logits.float()), -1)
    return -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)


def prior_term(process: CategoricalProcess, x0: Tensor) -> Tensor:
    """``KL(q(x_1 | x_0) || m)`` per position (nats)."""
    onehot = F.one_hot(x0, process.num_categories).double()
    q = process.marginal_probs(onehot, torch.ones(x0.shape[0], dtype=torch.float64))
    m = process.limit.to(x0.device)
    return (q * (safe_log(q) - safe_log(m))).sum(-1).float()


def mdlm_term(process: CategoricalProcess, x0: Tensor, x_t: Tensor, x0_logits: Tensor, t: Tensor) -> Tensor:
    """Continuous-time absorbing bound per position (MDLM eq. 10): ``w(t) [x_t = mask] CE`` with
    ``w(t) = -alpha_bar'(t) / (1 - alpha_bar(t))`` (``1 / t`` for the linear schedule)."""
    if process.absorbing_index is None:
        raise PolydiffError("the mdlm objective needs an absorbing process")
    w = -alpha_bar_derivative(process.schedule, t) / (1 - process.alpha_bar(t)).clamp_min(1e-8)
    w = append_dims(w.float(), x0.ndim).to(x0.device)
    masked = (x_t == process.absorbing_index).float()
    return w * masked * ce_term(process, x0, x0_logits)


def masked_sum(values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per-item sum of ``values`` ``[B, ...]`` over positions where ``mask`` is nonzero, and the count of positions."""
    flat = values.reshape(values.shape[0], -1)
    if mask is None:
        return flat.sum(1), torch.full((flat.shape[0],), flat.shape[1], dtype=flat.dtype, device=flat.device)
    m = mask.reshape(mask.shape[0], -1).to(flat.dtype)
    return (flat * m).sum(1), m.sum(1)
