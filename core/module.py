"""The LightningModule of Gaussian diffusion and flow matching, on the shared base :class:`PolydiffModule`.

A domain subclasses :class:`DiffusionModule`, builds its network in ``__init__`` and says how a batch becomes the tensors
to diffuse (:meth:`encode`), what its null condition is (for guidance), what it needs from its data
(:meth:`~PolydiffModule.connect_data`), how to evaluate (``test_step`` / ``on_test_epoch_end`` via ``report_metrics``)
and how to write samples (``write_samples``). Schedules, losses and samplers stay here and in the rest of the core.
"""

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import torch
from torch import Tensor, nn

from polydiff.core import parameterization as P
from polydiff.core.base import PolydiffModule, TrainingConfig
from polydiff.core.cld import CLD_PROCESSES, CriticallyDampedLangevin
from polydiff.core.cld_samplers import CLD_SAMPLERS, cld_sample
from polydiff.core.cld_score import CLDScoreModel, hsm_loss, sample_cld_times
from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.latent_input import LatentInput, latent_draws_from
from polydiff.core.objective import ObjectiveConfig, denoising_loss, sample_logsnr
from polydiff.core.parameterization import Prediction
from polydiff.core.processes import PROCESSES, process_by_name
from polydiff.core.samplers import SAMPLERS
from polydiff.core.sampling import SamplerConfig, sample
from polydiff.core.utils import PolydiffError

#: every process a config accepts: the Gaussian ones and critically damped Langevin diffusion (augmented state)
ProcessName = Literal[tuple(PROCESSES) + tuple(CLD_PROCESSES)]  # type: ignore[valid-type]


@dataclass
class DiffusionConfig:
    """The forward process and what the network predicts.

    Args:
        process: noise process: vp_linear (DDPM), vp_cosine, edm (variance exploding), flow (rectified flow), cld
            (critically damped Langevin diffusion: data and velocity, hybrid score matching, samplers cld_em and
            cld_sscs; prediction must be eps, read as the velocity noise).
        logsnr_shift: constant added to the schedule's log-SNR (SD3 shift s equals -2 ln s); can differ at sampling.
        prediction: network target: eps, x0, v, velocity (flow matching) or edm (EDM preconditioning).
        sigma_data: standard deviation of the data (input scaling, EDM preconditioning).
        beta_min: vp_linear only: continuous-time beta(0). A discrete DDPM schedule of T linear betas b_1..b_T is
            beta_min = T b_1, beta_max = T b_T (DDPM: 0.1, 20; DiffWave's T = 50, 1e-4..0.05: 0.005, 2.5).
        beta_max: vp_linear only: continuous-time beta(1).
        cld_beta: cld only: constant time scale beta of the SDE (Dockhorn et al. 2022: 4).
        cld_m_inv: cld only: inverse mass M^-1 (paper: 4); the friction is critical, Gamma = 2 sqrt(M).
        cld_gamma: cld only: initial velocity variance in units of M (paper: 0.04).
        latent_dim: size of a latent input z of the network (0: none), drawn afresh at every network call: the
            generator of a denoising diffusion GAN (polydiff.core.fewstep.DDGAN). z enters through a zero-initialised
            mapping added to the network's noise embedding (polydiff.core.latent_input), so the network starts as
            the one it is initialised from (training.init_from).
        latent_into: the network's submodule whose output is the noise embedding that z is added to (noise_mlp in the
            image and medical U-Nets and in CSDI, embedding in DiffWave).
    """

    process: ProcessName = "vp_cosine"
    logsnr_shift: float = 0.0
    prediction: Prediction = "eps"
    sigma_data: float = 1.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    cld_beta: float = 4.0
    cld_m_inv: float = 4.0
    cld_gamma: float = 0.04
    latent_dim: int = 0
    latent_into: str = "noise_mlp"


@dataclass
class DiffusionBatch:
    """What a domain hands to the core for one batch.

    ``x0``: the data to diffuse (any rank). ``cond``: anything the network takes besides ``x_t`` (None: unconditional).
    ``mask``: 1 where the loss counts (targets of imputation, real nodes of padded graphs); None means everywhere.
    """

    x0: Tensor
    cond: Any = None
    mask: Optional[Tensor] = None


# checkpoints store these dataclasses in their hyper-parameters; allow them in torch.load(weights_only=True)
torch.serialization.add_safe_globals([DiffusionConfig, ObjectiveConfig, SamplerConfig])


class DiffusionModule(PolydiffModule):
    """Training, validation and sampling for Gaussian diffusion / flow matching (the rest is :class:`PolydiffModule`).

    Subclasses set ``self.network`` (``network(x_in, c_noise, cond) -> out``) and call ``self.save_hyperparameters()``.

    Args:
        diffusion: forward process and prediction target.
        objective: training-time noise-level distribution, loss weighting and condition dropout.
        sampler: default sampler for validation previews, ``polydiff test`` and ``polydiff sample``.
        training: optimiser settings and fine-tuning start point.
    """

    sampler_names: ClassVar[tuple[str, ...]] = tuple(SAMPLERS) + tuple(CLD_SAMPLERS)

    def __init__(
        self,
        diffusion: DiffusionConfig = DiffusionConfig(),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(sampler, training)
        self.diffusion_config = diffusion
        self.objective = objective
        P.check_prediction(diffusion.prediction)
        #: critically damped Langevin diffusion: its own loss (HSM), score model and samplers (core/cld*.py)
        self.is_cld = diffusion.process in CLD_PROCESSES
        if self.is_cld:
            if diffusion.prediction != "eps" or objective.time_sampling != "uniform" or objective.weighting != "native":
                raise PolydiffError("process cld trains the velocity noise by hybrid score matching with uniform times: "
                                    "set --model.diffusion.prediction eps, --model.objective.time_sampling uniform and "
                                    "--model.objective.weighting native")
            self.process = CriticallyDampedLangevin(diffusion.cld_beta, diffusion.cld_m_inv, diffusion.cld_gamma)
        else:
            self.process = process_by_name(diffusion.process, diffusion.logsnr_shift, beta_min=diffusion.beta_min,
                                           beta_max=diffusion.beta_max)
        self.network: nn.Module | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # a latent input z (DD-GAN generators) joins the network the moment a domain sets it, so that the parameters
        # exist before any checkpoint is loaded and keep the network's own names (a teacher loads as is)
        cfg = self.__dict__.get("diffusion_config")
        if name == "network" and isinstance(value, nn.Module) and cfg is not None and cfg.latent_dim > 0:
            value.add_module("latent_input", LatentInput(value, cfg.latent_dim, cfg.latent_into))

    # ------------------------------------------------------------------ hooks for domains
    def encode(self, batch: Any) -> DiffusionBatch:
        """Turn a batch from the DataModule into the tensors to diffuse."""
        raise NotImplementedError

    def null_condition(self, cond: Any) -> Any:
        """The null condition matching ``cond`` (for condition dropout and guidance); None if the model has none."""
        return None

    def drop_condition(self, cond: Any, drop: Tensor) -> Any:
        """Replace the condition of items where ``drop`` is True by the null condition."""
        raise PolydiffError(f"{type(self).__name__} has no null condition; set objective.cond_dropout to 0")

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noise for the forward process (domains with constraints, e.g. zero centre of mass, override this)."""
        # draw on the generator's device (CPU for the fixed validation noise), then move: same numbers on any accelerator
        device = generator.device if generator is not None else x0.device
        return torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)

    def decode(self, x: Tensor) -> Any:
        """Map generated tensors back to the domain's representation (identity by default)."""
        return x

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """``polydiff predict``: one generated sample per item of ``batch``, with that item's condition."""
        b = self.encode(batch)
        return self.decode(self.generate(tuple(b.x0.shape), cond=b.cond, seed=batch_idx))

    # ------------------------------------------------------------------ the denoiser
    @property
    def denoiser(self) -> NetworkDenoiser | CLDScoreModel:
        """The network as the samplers see it: a :class:`NetworkDenoiser` (``x0_hat``), or for CLD a
        :class:`CLDScoreModel` (the velocity noise ``eps_v_hat`` of the state ``(x, v)``)."""
        if self.network is None:
            raise PolydiffError(f"{type(self).__name__} did not build a network")
        if getattr(self, "_denoiser", None) is None or self._denoiser.network is not self.network:
            cfg = self.diffusion_config
            model = (CLDScoreModel(self.network, self.process, cfg.sigma_data) if self.is_cld else
                     NetworkDenoiser(self.network, self.process, cfg.prediction, cfg.sigma_data))
            object.__setattr__(self, "_denoiser", model)
        return self._denoiser

    # ------------------------------------------------------------------ training
    def diffusion_loss(self, batch: DiffusionBatch, generator: torch.Generator | None = None) -> Tensor:
        """Per-item weighted loss of one batch (see :mod:`polydiff.core.objective`)."""
        x0, cond = batch.x0, batch.cond
        n = x0.shape[0]
        obj = self.objective
        if self.is_cld:
            t = sample_cld_times(self.process, n, generator)
        else:
            lam = sample_logsnr(self.process, n, obj.time_sampling, obj.time_loc, obj.time_scale, generator, x0.device)
        if obj.cond_dropout > 0 and cond is not None:
            drop = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
            cond = self.drop_condition(cond, (drop < obj.cond_dropout).to(x0.device))
        noise = self.sample_noise(x0, generator)
        if self.is_cld:
            return hsm_loss(self.denoiser, x0, t.to(x0.device), noise, self.sample_noise(x0, generator), cond,
                            batch.mask)
        return denoising_loss(self.denoiser, x0, noise, lam, cond, batch.mask, obj.weighting, obj.min_snr_gamma)

    def training_loss(self, batch: DiffusionBatch) -> Tensor:
        """Per-item loss of one training batch: the denoising loss, or the loss of a few-step objective that a callback
        installed as ``self.training_objective`` (distillation from a teacher, :mod:`polydiff.core.fewstep`)."""
        objective = getattr(self, "training_objective", None)
        return self.diffusion_loss(batch) if objective is None else objective.loss(self, batch)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        with self.seeded_step():
            loss = self.training_loss(self.encode(batch)).mean()
        if not torch.isfinite(loss):
            raise PolydiffError(f"training loss is {loss.item()} at step {self.global_step}: lower --model.training.lr "
                                "or check the data for NaN/inf values")
        self.log("train/loss", loss, prog_bar=True, batch_size=self._batch_size(batch))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        # fixed noise and noise levels (a CPU generator per batch): the validation loss is comparable across epochs
        gen = torch.Generator().manual_seed(1234 + batch_idx)
        loss = self.diffusion_loss(self.encode(batch), gen).mean()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=self._batch_size(batch))
        return loss

    @staticmethod
    def _batch_size(batch: Any) -> int:
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(first, dict):
            first = next(iter(first.values()))
        return int(getattr(first, "shape", [1])[0]) if hasattr(first, "shape") else 1

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, shape: tuple[int, ...], cond: Any = None, sampler: SamplerConfig | None = None,
                 seed: int = 0, progress: bool = False, x_init: Tensor | None = None,
                 denoiser: Any = None) -> Tensor:
        """Samples of ``shape`` (in the diffused space; domains decode them) from a fixed seed.

        ``denoiser`` replaces :attr:`denoiser` for this call, e.g. a wrapper that projects its ``x0`` estimate onto a
        measurement constraint.
        """
        cfg = sampler or self.sampler_config
        gen = torch.Generator().manual_seed(seed)
        null = self.null_condition(cond) if cond is not None else None
        was_training = self.training
        self.eval()
        if self.is_cld != (cfg.name in CLD_SAMPLERS):
            raise PolydiffError(f"sampler {cfg.name!r} does not fit process {self.diffusion_config.process!r}: CLD models "
                                f"sample with {list(CLD_SAMPLERS)}, the others with {list(SAMPLERS)}")
        if self.is_cld and x_init is not None:
            raise PolydiffError("CLD samplers start from their own (x, v) prior; x_init is not supported")
        try:
            model = denoiser if denoiser is not None else self.denoiser
            # a network with a latent input draws z at each call: those draws come from the seed too
            with latent_draws_from(seed) if self.diffusion_config.latent_dim > 0 else contextlib.nullcontext():
                if self.is_cld:
                    x = cld_sample(model, shape, cfg, cond=cond, null_cond=null, generator=gen, device=self.device)
                else:
                    x = sample(model, shape, cfg, cond=cond, null_cond=null, generator=gen, device=self.device,
                               progress=progress, x_init=x_init)
        finally:
            self.train(was_training)
        return x.float()
