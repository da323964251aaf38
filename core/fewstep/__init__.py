"""Few-step generation from a trained Gaussian model (the teacher): students that sample in 1 to 4 network evaluations.

Each student is a Lightning callback that installs its loss as the model's training objective
(:meth:`polydiff.core.module.DiffusionModule.training_loss`): the model being trained is the domain's own module
(same network, same data, initialised from the teacher with ``--model.training.init_from``), so a student checkpoint is
sampled by ``polydiff sample --steps 1|2|4`` and evaluated by ``polydiff test`` exactly like its teacher.

* :class:`ConsistencyDistillation` (Song et al. 2023), sampled with the ``consistency`` sampler;
* :class:`ProgressiveDistillation` (Salimans & Ho 2022), sampled with ``ddim`` on a uniform-t grid;
* :class:`Reflow` (Liu et al. 2022): flow matching on (noise, teacher ODE end point) pairs cached on disk;
  :func:`straightness` measures how straight a model's ODE paths are;
* :class:`DDGAN` (Xiao et al. 2022), the denoising diffusion GAN: a generator with a latent input (started from the
  teacher) and a discriminator of (x_{t-1}, x_t, t), sampled with ``ddpm`` on its own 1-4 step grid.
"""

from polydiff.core.fewstep.consistency import ConsistencyDistillation, consistency_function
from polydiff.core.fewstep.ddgan import DDGAN, posterior_draw, step_pairs
from polydiff.core.fewstep.discriminator import GridDiscriminator
from polydiff.core.fewstep.objective import FewStepObjective, frozen_teacher
from polydiff.core.fewstep.progressive import ProgressiveDistillation, progressive_target
from polydiff.core.fewstep.reflow import PairCache, Reflow, straightness

__all__ = ["ConsistencyDistillation", "DDGAN", "FewStepObjective", "GridDiscriminator", "PairCache",
           "ProgressiveDistillation", "Reflow", "consistency_function", "frozen_teacher", "posterior_draw",
           "progressive_target", "step_pairs", "straightness"]
