"""The LightningModule base of every polydiff model, Gaussian or categorical.

:class:`PolydiffModule` holds what both kinds share: the optimiser, the fine-tuning start (``training.init_from``), the
domain tag written into checkpoints and checked when one is read, loading weights (the EMA weights when training used
EMA), ``report_metrics`` (``metrics.json`` in the run directory), the data hook :meth:`PolydiffModule.connect_data`, and
the entry points the ``polydiff sample`` subcommand calls (:meth:`~PolydiffModule.load_weights`,
:meth:`~PolydiffModule.resolve_sampler`, :meth:`~PolydiffModule.write_samples`). The two kinds are subclasses:
:class:`polydiff.core.module.DiffusionModule` (Gaussian diffusion and flow matching) and
:class:`polydiff.core.discrete.module.DiscreteDiffusionModule` (categorical diffusion).
"""

import contextlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator, Optional

import lightning as L
import torch

from polydiff.core.utils import PolydiffError, training_seed


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


torch.serialization.add_safe_globals([TrainingConfig])


class PolydiffModule(L.LightningModule):
    """What every polydiff model shares; subclasses add the diffusion (Gaussian or categorical) and a domain.

    Subclasses set :attr:`domain`, :attr:`sampler_names` (the registry of the samplers they accept),
    ``self.sampler_config`` (a dataclass with at least ``name``, ``steps`` and ``guidance``) and implement
    :meth:`write_samples`; they may override :meth:`connect_data`.
    """

    #: domain name, stored in checkpoints so that a checkpoint of another domain is refused with a clear error
    domain: ClassVar[str] = "generic"
    #: the sampler names this kind of model accepts (a registry's keys)
    sampler_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, sampler: Any, training: TrainingConfig) -> None:
        super().__init__()
        self.sampler_config = sampler
        self.training_config = training

    # ------------------------------------------------------------------ data
    def setup(self, stage: str) -> None:
        """Hand the trainer's DataModule to :meth:`connect_data` (once per stage)."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            self.connect_data(datamodule)

    def connect_data(self, datamodule: L.LightningDataModule) -> None:
        """The one place a model meets its data: check that ``datamodule`` fits the model (sizes, classes, features)
        and take what the model learns from the data (statistics, marginals, a vocabulary). A domain declares what it
        needs as a ``typing.Protocol`` and checks the DataModule against it here; the default needs nothing."""

    # ------------------------------------------------------------------ exact resume
    @contextlib.contextmanager
    def seeded_step(self) -> Iterator[None]:
        """Every random draw of one training step (noise levels, noise, condition dropout, network dropout) from the
        global generators reseeded by ``(seed, global step, rank)``, restored afterwards: a step's randomness depends on
        nothing that happened before it, so a run resumed from a checkpoint repeats the uninterrupted run exactly."""
        seed = (training_seed() * 1_000_003 + int(self.global_step) * 1_009 + int(self.global_rank)) % (2**63 - 1)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type if devices else "cuda"):
            torch.manual_seed(seed)
            yield

    def on_train_start(self) -> None:
        """After a resume, put back the generators' state of the moment the checkpoint was written (what the data
        pipeline draws from: random crops); the sanity check that ran in between drew from them too."""
        state = getattr(self, "_rng_to_restore", None)
        if state is not None:
            set_rng_state(state)
            self._rng_to_restore = None

    # ------------------------------------------------------------------ optimiser and fine-tuning
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
        checkpoint["polydiff_rng"] = get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_domain(checkpoint, self.domain, "<checkpoint>")
        self._rng_to_restore = checkpoint.get("polydiff_rng")

    def load_weights(self, path: str, strict: bool = True) -> list[str]:
        """Load model weights (the EMA weights when training used EMA) from a checkpoint, or from a folder written by
        ``polydiff export``; return skipped keys."""
        if Path(path).is_dir():
            from polydiff.core.export import read_export

            return self.load_checkpoint_dict(read_export(path), path, strict)
        return self.load_checkpoint_dict(read_checkpoint(path), path, strict)

    def load_checkpoint_dict(self, ckpt: dict[str, Any], path: str, strict: bool = True) -> list[str]:
        """:meth:`load_weights` from a checkpoint already read (``path`` names it in errors)."""
        check_checkpoint_domain(ckpt, self.domain, path)
        self.restore_from_checkpoint(ckpt, path)
        own = self.state_dict()
        state = ckpt["state_dict"]
        skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing = [k for k in own if k not in state]
        if strict and (skipped or missing):
            raise PolydiffError(f"checkpoint {path} does not fit this model (mismatched: {skipped[:3]}, missing: "
                                f"{missing[:3]}); use the same --model settings as at training")
        self.load_state_dict({k: v for k, v in state.items() if k in own and k not in skipped}, strict=False)
        return skipped + missing

    def restore_from_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        """Take from a checkpoint what the weights need besides tensors of fixed shape (a tokenizer, data statistics,
        feature settings to check) before :meth:`load_weights` loads them; nothing by default."""

    # ------------------------------------------------------------------ sampling entry points (polydiff sample)
    def resolve_sampler(self, **overrides: Any) -> Any:
        """The model's default sampler with the given non-None fields replaced (an unknown name is a clear error)."""
        cfg = replace(self.sampler_config, **{k: v for k, v in overrides.items() if v is not None})
        if self.sampler_names and cfg.name not in self.sampler_names:
            raise PolydiffError(f"unknown sampler {cfg.name!r} for a {self.domain} model; choose one of "
                                f"{list(self.sampler_names)}")
        return cfg

    def input_options(self) -> dict[str, Any]:
        """What the DataModule's ``read_input`` must know of this model to read ``polydiff sample --input`` for it
        (its image size, sample rate, time column, ...), passed as keyword arguments; nothing by default."""
        return {}

    def sample(self, n: int, sampler: Optional[str] = None, steps: Optional[int] = None,
               guidance: Optional[float] = None, seed: int = 0, **conditions: Any) -> Any:
        """``n`` samples in the domain's own form, with the same arguments in every domain (the Python twin of
        ``polydiff sample``): images ``[n, C, H, W]`` in [0, 1], texts, networkx graphs, ...; ``conditions`` are the
        domain's (``classes=`` for images, ``mel=`` for the vocoder, ``values=`` for the imputer). Every random draw
        comes from ``seed``."""
        return self.sample_native(n, self.resolve_sampler(name=sampler, steps=steps, guidance=guidance), seed,
                                  **conditions)

    def sample_native(self, n: int, sampler: Any, seed: int, **conditions: Any) -> Any:
        """What :meth:`sample` returns, for a resolved sampler configuration (each domain implements it)."""
        raise PolydiffError(f"{type(self).__name__} does not implement sample(); use write_samples")

    def write_predictions(self, prediction: Any, batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        """Write one batch of ``polydiff predict`` (what ``predict_step`` returned) as files native to the domain,
        named ``<prefix>_...``; return their paths (:class:`polydiff.core.prediction_writer.PredictionFiles` calls it).
        The default writes nothing."""
        return []

    def write_samples(self, out_dir: Path, num_samples: int, sampler: Any, seed: int, input: Any = None) -> list[Path]:
        """Generate and write files native to the domain into ``out_dir``; return their paths.

        ``input`` is what the DataModule's ``read_input`` made of ``polydiff sample --input`` (None without it).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ media for loggers that show them
    def log_media(self, tag: str, image: Any = None, audio: Any = None, sample_rate: int = 0) -> None:
        """Send an image ``[C, H, W]`` in [0, 1] and/or a waveform to every logger that can show media (TensorBoard);
        the CSV logger cannot, so nothing happens there (the same media are written as files)."""
        if self._trainer is None:
            return
        for logger in self.trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if image is not None and hasattr(experiment, "add_image"):
                experiment.add_image(tag, image.detach().float().clamp(0, 1).cpu(), self.global_step)
            if audio is not None and hasattr(experiment, "add_audio"):
                experiment.add_audio(tag, audio.detach().float().reshape(1, -1).cpu(), self.global_step, sample_rate)

    def preview_path(self, every: int) -> Path | None:
        """``<run dir>/previews/epoch_NNNN.png`` when this validation epoch should write a preview (every ``every``
        epochs, rank 0, not during the sanity check); None otherwise."""
        t = self.trainer
        if every <= 0 or t.sanity_checking or not t.is_global_zero or (self.current_epoch + 1) % every:
            return None
        path = self.run_dir() / "previews" / f"epoch_{self.current_epoch + 1:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ evaluation
    def run_dir(self) -> Path:
        """The run directory (``lightning_logs/version_N`` of the logger, else ``default_root_dir``)."""
        return Path(self.trainer.log_dir or self.trainer.default_root_dir)

    def report_metrics(self, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> Path | None:
        """Log ``metrics``, write them (and ``extra``) as ``metrics.json`` in the run directory, print the path."""
        for k, v in metrics.items():
            self.log(f"test/{k}", float(v), sync_dist=False)
        if self._trainer is None:
            return None
        # every rank asks: under DDP ``log_dir`` is a broadcast, a collective that rank 0 alone would wait on forever
        run_dir = self.run_dir()
        if not self.trainer.is_global_zero:
            return None
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "metrics.json"
        payload = {"metrics": {k: _json_number(v) for k, v in metrics.items()}, **(extra or {})}
        path.write_text(json.dumps(payload, indent=2))
        print(f"metrics written to {path}")
        return path


def require_data(datamodule: Any, protocol: type, model: str, use: str) -> Any:
    """``datamodule`` when it satisfies the runtime-checkable ``protocol`` (what a domain needs from its data), else
    one clear error naming the members the model needs and the DataModule to use."""
    if not isinstance(datamodule, protocol):
        members = [*getattr(protocol, "__annotations__", {}),
                   *(k for k, v in vars(protocol).items() if callable(v) and not k.startswith("_"))]
        needs = ", ".join(sorted(members)) or protocol.__name__
        raise PolydiffError(f"the {model} model needs a DataModule with {needs}, got {type(datamodule).__name__}; "
                            f"use {use}")
    return datamodule


def get_rng_state() -> dict[str, Any]:
    """The global generators' state (torch CPU, Python, NumPy) in types a safe ``torch.load`` reads back."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


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
        checkpoint = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        first = str(exc).strip().splitlines()[0].split(". ")[0][:120] if str(exc).strip() else ""
        raise PolydiffError(f"checkpoint {path} cannot be read safely ({type(exc).__name__}: {first}); pass a .ckpt "
                            "written by 'polydiff fit' (a truncated copy or another file cannot be used)") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise PolydiffError(f"checkpoint {path} holds no model weights (no 'state_dict'); pass a .ckpt written by "
                            "'polydiff fit'")
    return checkpoint


def check_checkpoint_domain(checkpoint: dict[str, Any], domain: str, path: str) -> None:
    found = checkpoint.get("polydiff_domain")
    if found is None:
        raise PolydiffError(f"checkpoint {path} was not written by polydiff (no 'polydiff_domain'); "
                            "pass a checkpoint from 'polydiff fit'")
    if found != domain:
        raise PolydiffError(f"checkpoint {path} is from the {found!r} domain but the config builds a {domain!r} model; "
                            f"use a {domain} checkpoint or the {found} recipe")
