"""A Lightning Trainer with polydiff's defaults and a ``sample`` entry point (``polydiff sample``)."""

from pathlib import Path
from typing import Any, Literal, Optional, Protocol, runtime_checkable

import lightning as L
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from polydiff.core.base import PolydiffModule
from polydiff.core.cld_samplers import CLD_SAMPLERS
from polydiff.core.discrete.sampling import SAMPLERS as CATEGORICAL_SAMPLERS
from polydiff.core.loss_curve import LossCurve
from polydiff.core.prediction_writer import PredictionFiles
from polydiff.core.samplers import SAMPLERS
from polydiff.core.utils import PolydiffError

#: every sampler name ``polydiff sample --sampler`` accepts (Gaussian and categorical registries: the one source);
#: the parser checks it before any checkpoint is read, the model then checks that it fits its kind
AnySamplerName = Literal[tuple(SAMPLERS) + tuple(CLD_SAMPLERS) + tuple(CATEGORICAL_SAMPLERS)]  # type: ignore[valid-type]


@runtime_checkable
class ReadsInput(Protocol):
    """A DataModule that turns ``polydiff sample --input`` (a file, or a text) into what its model's ``write_samples``
    takes: reading the user's files is the data's job, writing native files the domain's. ``options`` are the model's
    ``input_options()`` (e.g. the image size or time column the model was trained with)."""

    def read_input(self, input: str, **options: Any) -> Any: ...


class PolydiffTrainer(L.Trainer):
    """``lightning.Trainer`` that, unless told otherwise, shows a rich progress bar, logs CSV metrics under
    ``default_root_dir/lightning_logs/version_N``, keeps ``last.ckpt`` so an interrupted run resumes with
    ``--ckpt_path last`` (or the file's path), and writes ``polydiff predict``'s outputs as the domain's files
    (:class:`~polydiff.core.prediction_writer.PredictionFiles`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        callbacks = kwargs.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if kwargs.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar(leave=True))
        if kwargs.get("enable_checkpointing", True) and not kwargs.get("fast_dev_run") and not any(
            isinstance(c, ModelCheckpoint) for c in callbacks
        ):
            # written at every training-epoch end, whether or not validation ran in that epoch
            callbacks.append(ModelCheckpoint(save_last=True, save_on_train_epoch_end=True))
        kwargs["callbacks"] = callbacks
        if not any(isinstance(c, LossCurve) for c in callbacks):
            callbacks.append(LossCurve())  # loss_curve.png beside metrics.csv when fit ends
        if not any(isinstance(c, BasePredictionWriter) for c in callbacks):
            # polydiff predict writes the domain's files into <run dir>/predictions
            callbacks.append(PredictionFiles())
        if kwargs.get("logger") in (None, True):
            kwargs["logger"] = CSVLogger(save_dir=kwargs.get("default_root_dir") or ".", name="lightning_logs")
        super().__init__(*args, **kwargs)

    def sample(
        self,
        model: PolydiffModule,
        datamodule: Optional[L.LightningDataModule] = None,
        ckpt_path: Optional[str] = None,
        num_samples: PositiveInt = 16,
        sampler: Optional[AnySamplerName] = None,
        steps: Optional[PositiveInt] = None,
        guidance: Optional[float] = None,
        seed: int = 0,
        out: str = "samples",
        input: Optional[str] = None,
        overwrite: bool = False,
        pretrained: Optional[str] = None,
        prompt: Optional[str] = None,
        prompts: Optional[str] = None,
    ) -> list[Path]:
        """Generate samples from a checkpoint and write them as files native to the domain.

        Args:
            model: the model built from the config (weights come from ``ckpt_path``).
            datamodule: reads ``input`` (its ``read_input``); unused without it.
            ckpt_path: checkpoint written by ``polydiff fit`` (its weights are the EMA weights when EMA was on).
            num_samples: number of samples to write.
            sampler: sampler name (default: the model's ``sampler.name``), e.g. ddim, heun, dpmpp_2m.
            steps: number of sampler steps (default: the model's ``sampler.steps``).
            guidance: classifier-free guidance scale (default: the model's ``sampler.guidance``).
            seed: seed of every random draw.
            out: output folder.
            input: a domain-specific input: a file to impute / vocode / inpaint, or a text with blanks to fill.
            overwrite: write into an ``out`` folder that already holds files (otherwise refused, so that one run's
                files are never mixed with another's).
            pretrained: a folder written by ``polydiff export`` to take the model and weights from instead of a
                checkpoint (``polydiff sample --pretrained DIR`` needs no ``--config``).
            prompt: a text prompt for a text-conditioned model (``num_samples`` images of it).
            prompts: a text file of prompts, one per line, for a text-conditioned model (``num_samples`` images each).
        """
        if ckpt_path is None and pretrained is None:
            raise PolydiffError("polydiff sample needs --ckpt_path <checkpoint written by polydiff fit> or --pretrained "
                                "<folder written by polydiff export>")
        model.resolve_sampler(name=sampler)  # an unknown name fails here, before the checkpoint is read
        out_dir = check_output_folder(Path(out), overwrite)
        model.load_weights(pretrained if pretrained is not None else ckpt_path)
        model.to(self.strategy.root_device)
        model.eval()
        cfg = model.resolve_sampler(name=sampler, steps=steps, guidance=guidance)
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = None
        if prompt is not None or prompts is not None:
            if input is not None:
                raise PolydiffError("pass either --input or --prompt / --prompts, not both")
            payload = read_prompts(prompt, prompts)
        elif input is not None:
            if not isinstance(datamodule, ReadsInput):
                raise PolydiffError(f"--input needs a DataModule that reads input files; "
                                    f"{type(datamodule).__name__} has no read_input: set --data to the recipe's")
            payload = datamodule.read_input(input, **model.input_options())
        with torch.no_grad():
            paths = model.write_samples(out_dir, num_samples, cfg, seed, payload)
        print(f"wrote {len(paths)} files to {out_dir}/ ({cfg.name}, {cfg.steps} steps, guidance {cfg.guidance})")
        return paths


def read_prompts(prompt: Optional[str], prompts_file: Optional[str]) -> list[str]:
    """``--prompt`` and the non-empty lines of ``--prompts FILE``, in that order."""
    out = [] if prompt is None else [prompt]
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise PolydiffError(f"--prompts {prompts_file} is not a file; pass a text file with one prompt per line")
        out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(out) == (prompt is not None):
            raise PolydiffError(f"--prompts {prompts_file} holds no prompt; write one prompt per line")
    return out


def check_output_folder(out: Path, overwrite: bool) -> Path:
    """``out`` if samples may be written there: not a file, and empty unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise PolydiffError(f"--out {out} is a file; pass a folder for the samples")
    if out.is_dir() and not overwrite:
        existing = sum(1 for _ in out.iterdir())
        if existing:
            raise PolydiffError(f"--out {out} already holds {existing} files (an earlier run?); pass a new --out "
                                "folder, or --overwrite true to write into it")
    return out
