"""Progressive distillation (Salimans & Ho 2022, "Progressive distillation for fast sampling of diffusion models", Alg. 2).

A student of N DDIM steps learns to do in one step what its teacher does in two: for ``x_t`` on the student's grid the
teacher takes two DDIM steps ``t -> t' -> t''``, and the student's x0 target is the one whose single DDIM step from
``t`` lands exactly on the teacher's ``x_t''``. After a round the student becomes the teacher and N halves.
"""

from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor

from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.fewstep.objective import FewStepObjective, copy_network, take
from polydiff.core.grids import make_grid
from polydiff.core.objective import masked_mse
from polydiff.core.samplers import ddim
from polydiff.core.utils import PolydiffError, append_dims


def progressive_target(x_t: Tensor, x_s: Tensor, alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor,
                       sigma_s: Tensor) -> Tensor:
    """The x0 for which one DDIM step from ``x_t`` to level s gives ``x_s`` (Salimans & Ho 2022, Alg. 2):
    ``(x_s - (sigma_s/sigma_t) x_t) / (alpha_s - (sigma_s/sigma_t) alpha_t)``; at ``sigma_s = 0`` it is ``x_s``."""
    n = x_t.ndim
    ratio = append_dims(sigma_s / sigma_t, n)
    return (x_s.double() - ratio * x_t.double()) / (append_dims(alpha_s, n) - ratio * append_dims(alpha_t, n))


class ProgressiveDistillation(FewStepObjective):
    """Halve the number of DDIM steps ``rounds`` times, ``steps_per_round`` training steps each.

    The grid is the model's sampler grid (``sampler.grid``, ``sigma_min``, ``sigma_max``) with ``start_steps``
    intervals in the first round; the teacher walks the grid of twice as many (nested: every other level is the
    student's). The loss is the x0 error weighted by ``max(SNR, 1)`` ("truncated SNR", Salimans & Ho 2022, eq. 10).
    The learning rate falls linearly to 0 within each round (as in the paper). At the end of each round the student is
    written to ``<run dir>/checkpoints/progressive_<N>steps.ckpt`` (test it with ``--model.sampler.steps N``) and becomes
    the next round's teacher (unguided: it already carries the guidance).

    Args:
        teacher: teacher checkpoint (None: the model's ``training.init_from``).
        guidance: the first teacher's classifier-free guidance scale.
        start_steps: DDIM steps of the first round's student (its teacher takes twice as many).
        rounds: number of halvings; the last student takes ``start_steps / 2**(rounds - 1)`` steps.
        steps_per_round: optimiser steps per round.
        groups: the batch is split into this many groups, each with its own grid index.
    """

    def __init__(self, teacher: Optional[str] = None, guidance: float = 1.0, start_steps: int = 32, rounds: int = 5,
                 steps_per_round: int = 400, groups: int = 4) -> None:
        super().__init__(teacher, guidance)
        if start_steps % 2 ** (rounds - 1):
            raise PolydiffError(f"start_steps={start_steps} cannot be halved {rounds - 1} times; use a power of two")
        self.start_steps, self.rounds, self.steps_per_round, self.groups = start_steps, rounds, steps_per_round, groups
        self.round = 0
        self._teacher_state: Optional[dict[str, Tensor]] = None
        self.student_teacher: Optional[NetworkDenoiser] = None

    def student_steps(self, round_: int) -> int:
        return self.start_steps // 2**round_

    def _round_at(self, step: int) -> int:
        return min(step // self.steps_per_round, self.rounds - 1)

    def _grid(self, model: Any, steps: int) -> Tensor:
        cfg = model.sampler_config
        return make_grid(model.process, steps, cfg.grid, "zero", cfg.sigma_min, cfg.sigma_max, cfg.rho)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.round = self._round_at(trainer.global_step)
        if self.round > 0:  # resumed in a later round: its teacher is the checkpointed one
            if self._teacher_state is None:
                raise PolydiffError("resuming progressive distillation after round 1 needs the checkpoint's callback state")
            self._set_student_teacher(pl_module, self._teacher_state)

    def _set_student_teacher(self, pl_module: Any, state: Optional[dict[str, Tensor]] = None) -> None:
        network = copy_network(pl_module.network)
        if state is not None:
            network.load_state_dict(state)
        self.student_teacher = NetworkDenoiser(network, pl_module.process, pl_module.diffusion_config.prediction,
                                               pl_module.diffusion_config.sigma_data)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = trainer.global_step
        new_round = self._round_at(step)
        if new_round != self.round:
            self._save_round(trainer)
            self.round = new_round
            self._set_student_teacher(pl_module)
        into = (step - self.round * self.steps_per_round) / self.steps_per_round
        lr = pl_module.training_config.lr * max(0.0, 1.0 - into)
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_round(trainer)

    def _save_round(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"progressive_{self.student_steps(self.round)}steps.ckpt"
        trainer.save_checkpoint(path)
        print(f"progressive distillation: the {self.student_steps(self.round)}-step student is {path}")

    def state_dict(self) -> dict[str, Any]:
        if self.student_teacher is None:
            return {}
        return {"teacher": self.student_teacher.network.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._teacher_state = state_dict.get("teacher")

    def loss(self, model: Any, batch: Any) -> Tensor:
        x0, cond = batch.x0, batch.cond
        b = x0.shape[0]
        n_steps = self.student_steps(self.round)
        fine = self._grid(model, 2 * n_steps)  # the student's level i is the teacher's level 2i
        group = torch.arange(b) % self.groups
        i_of_group = torch.randint(0, n_steps, (self.groups,))
        i = i_of_group[group]
        lam_t, lam_s = fine[2 * i].to(x0.device), fine[2 * i + 2].to(x0.device)
        x_t = model.process.add_noise(x0, model.sample_noise(x0), lam_t).double()
        x_s = torch.empty_like(x_t)
        with torch.no_grad():
            for g in range(self.groups):
                idx = (group == g).nonzero().flatten().to(x0.device)
                if len(idx) == 0:
                    continue
                k = 2 * int(i_of_group[g])
                c = take(cond, idx)
                teacher = self.teacher_denoiser(c) if self.round == 0 else self.student_teacher
                x_s[idx] = ddim(teacher, x_t[idx], fine[k:k + 3], c)
        a_t, s_t = model.process.alpha_sigma(lam_t)
        a_s, s_s = model.process.alpha_sigma(lam_s)
        target = progressive_target(x_t, x_s, a_t, s_t, a_s, s_s)
        pred = model.denoiser(x_t, lam_t, cond)
        weight = torch.exp(lam_t.clamp_min(0))  # max(SNR, 1)
        return masked_mse(pred, target, batch.mask) * weight.float()
