"""The one LightningModule every domain builds on.

A domain subclasses :class:`DiffusionModule`, builds its network in ``__init__`` and says how a batch becomes the tensors
to diffuse (:meth:`encode`), what its null condition is (for guidance), how to evaluate (``test_step`` /
``on_test_epoch_end`` via :meth:`report_metrics`) and how to write samples (:meth:`write_samples`). Schedules, losses and
samplers stay here and in the rest of the core.
"""

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

import lightning as L
import torch
from torch import Tensor, nn

from polydiff.core import parameterization as P
from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.objective import ObjectiveConfig, loss_weight, masked_mse, sample_logsnr
from polydiff.core.processes import process_by_name
from polydiff.core.sampling import SamplerConfig, sample
from polydiff.core.utils import PolydiffError


@dataclass
class DiffusionConfig:
    """The forward process and what the network predicts.

    Args:
        process: noise process: vp_linear (DDPM), vp_cosine, edm (variance exploding), flow (rectified flow).
        logsnr_shift: constant added to the schedule's log-SNR (SD3 shift s equals -2 ln s); can differ at sampling.
        prediction: network target: eps, x0, v, velocity (flow matching) or edm (EDM preconditioning).
        sigma_data: standard deviation of the data (input scaling, EDM preconditioning).
        beta_min: vp_linear only: continuous-time beta(0). A discrete DDPM schedule of T linear betas b_1..b_T is
            beta_min = T b_1, beta_max = T b_T (DDPM: 0.1, 20; DiffWave's T = 50, 1e-4..0.05: 0.005, 2.5).
        beta_max: vp_linear only: continuous-time beta(1).
    """

    process: Literal["vp_linear", "vp_cosine", "edm", "flow"] = "vp_cosine"
    logsnr_shift: float = 0.0
    prediction: Literal["eps", "x0", "v", "velocity", "edm"] = "eps"
    sigma_data: float = 1.0
    beta_min: float = 0.1
    beta_max: float = 20.0


@dataclass
class TrainingConfig:
    """Optimiser and start of training.

    Args:
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear learning-rate warm-up.
        init_from: fine-tuning: a checkpoint whose weights initialise the model (optimiser and step count start fresh;
            tensors whose shapes differ, e.g. a class embedding for another number of classes, are left as initialised).
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    init_from: Optional[str] = None


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
torch.serialization.add_safe_globals([DiffusionConfig, TrainingConfig, ObjectiveConfig, SamplerConfig])


class DiffusionModule(L.LightningModule):
    """Shared training, validation, sampling and checkpoint logic for Gaussian diffusion / flow matching.

    Subclasses set ``self.network`` (``network(x_in, c_noise, cond) -> out``) and call ``self.save_hyperparameters()``.

    Args:
        diffusion: forward process and prediction target.
        objective: training-time noise-level distribution, loss weighting and condition dropout.
        sampler: default sampler for validation previews, ``polydiff test`` and ``polydiff sample``.
        training: optimiser settings and fine-tuning start point.
    """

    #: domain name, stored in checkpoints so that a checkpoint of another domain is refused with a clear error
    domain: str = "generic"

    def __init__(
        self,
        diffusion: DiffusionConfig = DiffusionConfig(),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__()
        self.diffusion_config = diffusion
        self.objective = objective
        self.sampler_config = sampler
        self.training_config = training
        self.process = process_by_name(diffusion.process, diffusion.logsnr_shift, beta_min=diffusion.beta_min,
                                       beta_max=diffusion.beta_max)
        P.check_prediction(diffusion.prediction)
        self.network: nn.Module | None = None

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

    def write_samples(self, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                      input: Optional[str] = None) -> list[Path]:
        """Generate and write files native to the domain into ``out_dir``; return their paths."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the denoiser
    @property
    def denoiser(self) -> NetworkDenoiser:
        if self.network is None:
            raise PolydiffError(f"{type(self).__name__} did not build a network")
        if getattr(self, "_denoiser", None) is None or self._denoiser.network is not self.network:
            object.__setattr__(self, "_denoiser", NetworkDenoiser(
                self.network, self.process, self.diffusion_config.prediction, self.diffusion_config.sigma_data))
        return self._denoiser

    # ------------------------------------------------------------------ training
    def diffusion_loss(self, batch: DiffusionBatch, generator: torch.Generator | None = None) -> Tensor:
        """Per-item weighted loss of one batch (see :mod:`polydiff.core.objective`)."""
        x0, cond = batch.x0, batch.cond
        n = x0.shape[0]
        obj = self.objective
        lam = sample_logsnr(self.process, n, obj.time_sampling, obj.time_loc, obj.time_scale, generator, x0.device)
        if obj.cond_dropout > 0 and cond is not None:
            drop = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
            cond = self.drop_condition(cond, (drop < obj.cond_dropout).to(x0.device))
        noise = self.sample_noise(x0, generator)
        x_t = self.process.add_noise(x0, noise, lam)
        out = self.denoiser.network_output(x_t, lam, cond)
        alpha, sigma = self.process.alpha_sigma(lam)
        cfg = self.diffusion_config
        tgt = P.target(cfg.prediction, x0, noise, alpha, sigma, cfg.sigma_data)
        w = loss_weight(obj.weighting, lam, cfg.prediction, cfg.sigma_data, obj.min_snr_gamma)
        return masked_mse(out, tgt, batch.mask) * w.to(out.dtype)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(self.encode(batch)).mean()
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

    def configure_optimizers(self) -> Any:
        cfg = self.training_config
        opt = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))
        if cfg.warmup_steps <= 0:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / cfg.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self) -> None:
        cfg = self.training_config
        if cfg.init_from and self.global_step == 0:
            self.load_weights(cfg.init_from, strict=False)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["polydiff_domain"] = self.domain
        checkpoint["polydiff_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_domain(checkpoint, self.domain, "<checkpoint>")

    def load_weights(self, path: str, strict: bool = True) -> list[str]:
        """Load model weights (the EMA weights when training used EMA) from a checkpoint; return skipped keys."""
        ckpt = read_checkpoint(path)
        check_checkpoint_domain(ckpt, self.domain, path)
        own = self.state_dict()
        state = ckpt["state_dict"]
        skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing = [k for k in own if k not in state]
        if strict and (skipped or missing):
            raise PolydiffError(f"checkpoint {path} does not fit this model (mismatched: {skipped[:3]}, missing: "
                                f"{missing[:3]}); use the same --model settings as at training")
        self.load_state_dict({k: v for k, v in state.items() if k in own and k not in skipped}, strict=False)
        return skipped + missing

    # ------------------------------------------------------------------ sampling
    def resolve_sampler(self, **overrides: Any) -> SamplerConfig:
        """The model's default sampler with the given non-None fields replaced."""
        return replace(self.sampler_config, **{k: v for k, v in overrides.items() if v is not None})

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
        try:
            model = denoiser if denoiser is not None else self.denoiser
            x = sample(model, shape, cfg, cond=cond, null_cond=null, generator=gen, device=self.device,
                       progress=progress, x_init=x_init, sigma_data=self.diffusion_config.sigma_data)
        finally:
            self.train(was_training)
        return x.float()

    # ------------------------------------------------------------------ evaluation
    def report_metrics(self, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> Path | None:
        """Log ``metrics``, write them (and ``extra``) as ``metrics.json`` in the run directory, print the path."""
        for k, v in metrics.items():
            self.log(f"test/{k}", float(v), sync_dist=False)
        if self.trainer is None:
            return None
        # every rank asks: under DDP ``log_dir`` is a broadcast, a collective that rank 0 alone would wait on forever
        run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        if not self.trainer.is_global_zero:
            return None
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "metrics.json"
        payload = {"metrics": {k: _json_number(v) for k, v in metrics.items()}, **(extra or {})}
        path.write_text(json.dumps(payload, indent=2))
        print(f"metrics written to {path}")
        return path


def _json_number(v: Any) -> Any:
    v = float(v)
    return v if math.isfinite(v) else str(v)


def read_checkpoint(path: str) -> dict[str, Any]:
    """Load a checkpoint file, with a clear error for a missing or unreadable one."""
    p = Path(path)
    if not p.is_file():
        raise PolydiffError(f"checkpoint {path} does not exist; pass the .ckpt written by 'polydiff fit' "
                            "(runs/<domain>/<recipe>/lightning_logs/version_N/checkpoints/)")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise PolydiffError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                            "is it a polydiff .ckpt file?") from None


def check_checkpoint_domain(checkpoint: dict[str, Any], domain: str, path: str) -> None:
    found = checkpoint.get("polydiff_domain")
    if found is None:
        raise PolydiffError(f"checkpoint {path} was not written by polydiff (no 'polydiff_domain'); "
                            "pass a checkpoint from 'polydiff fit'")
    if found != domain:
        raise PolydiffError(f"checkpoint {path} is from the {found!r} domain but the config builds a {domain!r} model; "
                            f"use a {domain} checkpoint or the {found} recipe")
