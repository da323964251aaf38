"""Denoising diffusion GAN (Xiao, Kreis & Vahdat 2022, "Tackling the generative learning trilemma with denoising diffusion
GANs", Alg. 1).

A Gaussian reverse step is only accurate for small steps; with T = 2-4 large steps the true ``q(x_{t-1} | x_t)`` is
multimodal. DD-GAN keeps the posterior form of the reverse step but lets the x0 in it be a sample: the generator
predicts ``x0 = G(x_t, t, z)`` with a latent ``z`` and ``x_{t-1} ~ q(x_{t-1} | x_t, x0)`` (the core's
:meth:`~polydiff.core.processes.NoiseProcess.posterior`); a discriminator ``D(x_{t-1}, x_t, t)`` tells these from real
pairs (``x_t ~ q(x_t | x0)``, ``x_{t-1} ~ q(x_{t-1} | x_t, x0)`` of a data point), trained with the non-saturating loss
and the R1 penalty on real samples (Mescheder et al. 2018).

In polydiff the generator is the domain's own model with a latent input (``--model.diffusion.latent_dim``,
:mod:`polydiff.core.latent_input`), initialised from the teacher (``--model.training.init_from``): at the start it is
the teacher's x0-predictor. Its sampler is the core's ``ddpm`` (each step draws from ``q(x_s | x_t, x0_hat)``, exactly
DD-GAN's Alg. 2) on the model's own step grid, so the student is sampled by ``polydiff sample --steps 1|2|4`` and
tested by ``polydiff test`` like its teacher.

Optimisation: the generator keeps the module's optimiser and Lightning's automatic optimisation (gradient clipping, EMA,
checkpoints, exact resume stay the module's own); the discriminator and its Adam belong to this callback (saved in the
checkpoint's callback state), and each training step first updates the discriminator on the step's real pairs and
the generator's detached fakes, then returns the generator's loss on the same fakes through the updated discriminator.
"""

from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.fewstep.discriminator import GridDiscriminator
from polydiff.core.fewstep.objective import FewStepObjective
from polydiff.core.grids import make_grid
from polydiff.core.processes import NoiseProcess
from polydiff.core.utils import PolydiffError, append_dims


def posterior_draw(process: NoiseProcess, x_t: Tensor, x0: Tensor, logsnr_t: Tensor, logsnr_s: Tensor,
                   noise: Tensor) -> Tensor:
    """``x_s = mean + std * noise``: a draw of the process's posterior ``q(x_s | x_t, x0)`` (per-item log-SNRs; at
    ``logsnr_s = +inf`` it is ``x0``). Differentiable in ``x0``."""
    mean, std = process.posterior(x_t, x0, logsnr_t, logsnr_s)
    return mean + append_dims(std.to(mean.device), mean.ndim) * noise.double()


def step_pairs(process: NoiseProcess, steps: list[int], grid: str, sigma_min: float, sigma_max: Optional[float],
               rho: float) -> Tensor:
    """The ``(lambda_t, lambda_s)`` of every step of the sampling grids of ``steps`` intervals (``[P, 2]``, float64):
    the transitions the student takes when sampled with ``--steps`` one of ``steps``."""
    pairs = []
    for n in steps:
        lam = make_grid(process, n, grid, "zero", sigma_min, sigma_max, rho)
        pairs += [(float(lam[i]), float(lam[i + 1])) for i in range(n)]
    return torch.tensor(sorted(set(pairs)), dtype=torch.float64)


class DDGAN(FewStepObjective):
    """Train the model as a DD-GAN generator on the transitions of its own ``steps``-step sampling grids.

    The model needs a latent input (``--model.diffusion.latent_dim``, e.g. 32) and a start
    (``--model.training.init_from``, the teacher); it is sampled with ``ddpm`` on the grid it was trained on (the
    model's ``sampler.grid``, ``sigma_min``, ``sigma_max``). Each training item draws one transition uniformly from the
    steps of all the grids.

    Args:
        steps: the step counts the student is trained for (the grids' transitions are pooled; Xiao et al.: T = 4).
        r1_gamma: weight gamma of the R1 penalty ``gamma/2 |grad_{x_s} D(x_s, x_t)|^2`` on real pairs (Xiao et al.:
            0.02 on CIFAR-10, 1 on CelebA-HQ).
        lr: the discriminator's Adam learning rate (the generator's is the model's ``training.lr``).
        betas: the discriminator's Adam betas (Xiao et al.: 0.5, 0.9; set the model's ``training.betas`` alike).
        width: channels of the discriminator's first block.
        channel_mult: the discriminator's width multipliers per block (every block but the last halves the grid).
        num_classes: > 0: the condition is a class label and the discriminator projects on it (the image domain's
            ``num_classes``); 0: the discriminator ignores the condition.
        warmup_steps: the discriminator trains alone for this many steps (the generator's loss is multiplied by 0):
            a generator started from the teacher is already good, and an untrained discriminator's gradients would
            only move it at random.
    """

    uses_teacher = False

    def __init__(self, steps: tuple[int, ...] = (4,), r1_gamma: float = 0.05, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.9), width: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2, 2),
                 num_classes: int = 0, warmup_steps: int = 0) -> None:
        super().__init__()
        if not steps or min(steps) < 1:
            raise PolydiffError(f"DDGAN steps must be positive step counts, got {steps}")
        self.steps, self.r1_gamma, self.lr, self.betas = list(steps), float(r1_gamma), float(lr), tuple(betas)
        self.width, self.channel_mult, self.num_classes = int(width), list(channel_mult), int(num_classes)
        self.warmup_steps = int(warmup_steps)
        self.discriminator: Optional[GridDiscriminator] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._pending: Optional[dict[str, Any]] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if pl_module.diffusion_config.latent_dim < 1:
            raise PolydiffError("DDGAN trains a generator with a latent input: set --model.diffusion.latent_dim "
                                "(e.g. 32)")
        cfg = pl_module.sampler_config
        self.pairs = step_pairs(pl_module.process, self.steps, cfg.grid, cfg.sigma_min, cfg.sigma_max, cfg.rho)

    # ------------------------------------------------------------------ the discriminator and its optimiser
    def build(self, x0: Tensor) -> GridDiscriminator:
        """The discriminator for data like ``x0`` (built at the first batch; a resumed run loads its state)."""
        if self.discriminator is None:
            d = GridDiscriminator(x0.shape[1], x0.ndim - 2, self.width, self.channel_mult, self.num_classes)
            self.discriminator = d.to(x0.device)
            self.optimizer = torch.optim.Adam(d.parameters(), lr=self.lr, betas=self.betas)
            if self._pending is not None:
                d.load_state_dict(self._pending["discriminator"])
                self.optimizer.load_state_dict(self._pending["optimizer"])
                self._pending = None
        return self.discriminator

    def state_dict(self) -> dict[str, Any]:
        if self.discriminator is None:
            return {}
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict or None

    # ------------------------------------------------------------------ one step
    def loss(self, model: Any, batch: Any) -> Tensor:
        x0, cond, mask = batch.x0, batch.cond, batch.mask
        d = self.build(x0)
        process, sd = model.process, model.diffusion_config.sigma_data
        k = torch.randint(0, len(self.pairs), (x0.shape[0],))
        lam_t, lam_s = self.pairs[k, 0].to(x0.device), self.pairs[k, 1].to(x0.device)
        x_t = process.add_noise(x0, model.sample_noise(x0), lam_t).double()
        real = posterior_draw(process, x_t, x0, lam_t, lam_s, model.sample_noise(x0))
        fake = posterior_draw(process, x_t, model.denoiser(x_t, lam_t, cond), lam_t, lam_s, model.sample_noise(x0))
        if mask is not None:  # only where the loss counts (imputation targets, real nodes)
            m = mask.to(real.dtype).expand_as(real)
            real, fake, x_t = real * m, fake * m, x_t * m

        def judge(x_s: Tensor) -> Tensor:
            return d(x_s, x_t, lam_t, lam_s, process, sd, cond)

        # discriminator: non-saturating loss, R1 on the real pairs (Xiao et al. 2022, Alg. 1)
        d.requires_grad_(True)
        real = real.float().requires_grad_(True)
        with torch.enable_grad():
            d_real, d_fake = judge(real), judge(fake.detach().float())
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.square().flatten(1).sum(1).mean()
            d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean() + self.r1_gamma / 2 * r1
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # generator: non-saturating loss through the updated discriminator (no gradient into it)
        d.requires_grad_(False)
        g_logit = judge(fake.float())
        model.log_dict({"ddgan/d_loss": d_loss.detach(), "ddgan/r1": r1.detach(),
                        "ddgan/d_real": d_real.detach().mean(), "ddgan/d_fake": d_fake.detach().mean()},
                       prog_bar=False, batch_size=x0.shape[0])
        g_loss = F.softplus(-g_logit)
        return g_loss * 0.0 if model.global_step < self.warmup_steps else g_loss
