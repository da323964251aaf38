"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Alg. 2).

A consistency function maps any point of a probability-flow trajectory to its end: ``f(x_sigma, sigma) = x_eps`` with the
boundary condition ``f(x, eps) = x``. The student learns it by making its outputs at two neighbouring levels of a Karras
grid agree, where the less noisy point is one ODE step of the teacher from the noisier one and the target is computed
by an exponential moving average of the student (the target network, decay ``mu``). Sampled with the core's
``consistency`` sampler (Alg. 1): one evaluation, or a few with re-noising in between.
"""

import math
from typing import Any, Literal, Optional

import lightning as L
import torch
from torch import Tensor

from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.fewstep.objective import FewStepObjective, copy_network, take
from polydiff.core.grids import make_grid
from polydiff.core.objective import masked_mse
from polydiff.core.samplers import SAMPLERS
from polydiff.core.utils import append_dims


def consistency_function(denoiser: Any, x: Tensor, logsnr: Tensor, cond: Any, sigma_min: float) -> Tensor:
    """The consistency function of a denoiser of any parameterisation, with Song et al.'s boundary scalings.

    In VE units (``s = sigma/alpha``, ``x~ = x/alpha``, data std ``sd``) Song et al. (2023, App. C) write
    ``f = c_skip(s) x~ + c_out(s) F`` with ``c_skip = sd^2 / ((s - eps)^2 + sd^2)`` and
    ``c_out = (s - eps) sd / sqrt(s^2 + sd^2)``: EDM's scalings (Karras et al. 2022, Table 1) with ``s`` shifted by
    ``eps = sigma_min`` so that ``f(x, eps) = x`` exactly. ``F`` is the network output in EDM's frame, read off the
    denoiser's ``x0_hat = D`` as ``F = (D - c_skip^EDM x~) / c_out^EDM``; since ``c_out / c_out^EDM = 1 - eps/s``,
    ``f = (1 - eps/s) D + (c_skip - (1 - eps/s) c_skip^EDM) x~``, which differs from ``D`` by O(eps/s).
    """
    alpha, sigma = denoiser.process.alpha_sigma(logsnr.double())
    s = append_dims((sigma / alpha).to(x.device), x.ndim)
    x_ve = x.double() / append_dims(alpha.to(x.device), x.ndim)
    sd2 = denoiser.sigma_data**2
    shrink = 1 - sigma_min / s
    skip = sd2 / ((s - sigma_min) ** 2 + sd2) - shrink * sd2 / (s**2 + sd2)
    return shrink * denoiser(x, logsnr, cond).double() + skip * x_ve


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """Per-item ``sqrt(|a - b|^2 + c^2) - c`` (Song & Dhariwal 2023, "Improved techniques for training consistency
    models", eq. 7): quadratic for small errors, linear for large ones (outliers weigh less than with L2)."""
    sq = (a.double() - b.double()).square().flatten(1).sum(1)
    return torch.sqrt(sq + c * c) - c


class ConsistencyDistillation(FewStepObjective):
    """Distil the teacher's probability-flow ODE into a consistency model (Song et al. 2023, Alg. 2).

    Each step draws, per group of the batch, a grid index n: ``x_{n+1} = alpha x0 + sigma z`` at the noisier level, one
    teacher ODE step gives ``x_n``, and the loss is ``d(f_theta(x_{n+1}), f_target(x_n))``.

    Args:
        teacher: teacher checkpoint (None: the model's ``training.init_from``).
        guidance: the teacher's classifier-free guidance scale (the student learns the guided ODE).
        num_levels: N, the number of levels of the Karras grid (Song et al.: 18 on CIFAR-10).
        sigma_min: the boundary level epsilon in VE units (sigma/alpha); 0.002.
        sigma_max: the top level T in VE units; 80.
        rho: Karras grid exponent; 7.
        solver: the teacher's ODE step: heun (2 evaluations, Song et al.'s choice) or ddim (Euler in flow coordinates).
        target_decay: mu, the EMA decay of the target network (Song et al. CD: 0.95).
        distance: pseudo_huber (Song & Dhariwal 2023; LPIPS needs downloaded weights) or l2 (mean squared error).
        huber_c: c of the pseudo-Huber distance; None: 0.00054 sqrt(d) for items of d elements.
        groups: the batch is split into this many groups, each with its own grid index (the teacher step takes one
            level pair per call).
    """

    def __init__(self, teacher: Optional[str] = None, guidance: float = 1.0, num_levels: int = 18,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 solver: Literal["heun", "ddim"] = "heun", target_decay: float = 0.95,
                 distance: Literal["pseudo_huber", "l2"] = "pseudo_huber", huber_c: Optional[float] = None,
                 groups: int = 4) -> None:
        super().__init__(teacher, guidance)
        if num_levels < 2:
            raise ValueError(f"num_levels must be at least 2, got {num_levels}")
        self.num_levels, self.sigma_min, self.sigma_max, self.rho = num_levels, sigma_min, sigma_max, rho
        self.solver, self.target_decay, self.distance = solver, target_decay, distance
        self.huber_c, self.groups = huber_c, max(1, groups)
        self.target: Optional[NetworkDenoiser] = None
        self._target_state: Optional[dict[str, Tensor]] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        # N levels from sigma_max (index 0) to sigma_min (index N-1): increasing log-SNR
        self.levels = make_grid(pl_module.process, self.num_levels - 1, "karras", "min", self.sigma_min,
                                self.sigma_max, self.rho)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the model's own on_fit_start has loaded the teacher's weights into the student (training.init_from)
        network = copy_network(pl_module.network)
        if self._target_state is not None:
            network.load_state_dict(self._target_state)
            self._target_state = None
        self.target = NetworkDenoiser(network, pl_module.process, pl_module.diffusion_config.prediction,
                                      pl_module.diffusion_config.sigma_data)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # theta- <- stopgrad(mu theta- + (1 - mu) theta)
        for t, s in zip(self.target.network.parameters(), pl_module.network.parameters()):
            t.lerp_(s.detach(), 1 - self.target_decay)
        for t, s in zip(self.target.network.buffers(), pl_module.network.buffers()):
            t.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.network.state_dict()} if self.target is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._target_state = state_dict.get("target")

    def loss(self, model: Any, batch: Any) -> Tensor:
        x0, cond = batch.x0, batch.cond
        b = x0.shape[0]
        levels = self.levels
        group = torch.arange(b) % self.groups
        n_of_group = torch.randint(0, len(levels) - 1, (self.groups,))
        n = n_of_group[group]
        lam_hi, lam_lo = levels[n].to(x0.device), levels[n + 1].to(x0.device)
        x_hi = model.process.add_noise(x0, model.sample_noise(x0), lam_hi).double()
        x_lo = torch.empty_like(x_hi)
        step = SAMPLERS[self.solver]
        with torch.no_grad():
            for g in range(self.groups):
                idx = (group == g).nonzero().flatten()
                if len(idx) == 0:
                    continue
                k = int(n_of_group[g])
                c = take(cond, idx)
                x_lo[idx.to(x0.device)] = step(self.teacher_denoiser(c), x_hi[idx.to(x0.device)], levels[k:k + 2], c)
            target = consistency_function(self.target, x_lo, lam_lo, cond, self.sigma_min)
        pred = consistency_function(model.denoiser, x_hi, lam_hi, cond, self.sigma_min)
        if batch.mask is not None:  # only where the loss counts (the targets of imputation, real nodes)
            mask = batch.mask.to(pred.dtype).expand_as(pred)
            pred, target = pred * mask, target * mask
        if self.distance == "l2":
            return masked_mse(pred, target, batch.mask)
        c = self.huber_c if self.huber_c is not None else 0.00054 * math.sqrt(x0[0].numel())
        return pseudo_huber(pred, target, c).float()
