"""The frame every few-step student shares: a callback that loads the frozen teacher and installs a training loss.

The student is the model being fitted (the domain's own module). At fit start the callback reads the teacher
checkpoint (``teacher``, or else the model's ``training.init_from``, which also initialises the student's weights),
builds a second instance of the model's class from the checkpoint's own hyper-parameters, freezes it, and sets itself
as ``model.training_objective``; the model's training step then calls :meth:`FewStepObjective.loss` instead of the
denoising loss. Validation, previews, checkpoints, ``polydiff test`` and ``polydiff sample`` stay the model's own.
"""

from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor

from polydiff.core.base import read_checkpoint
from polydiff.core.guidance import ClassifierFreeGuidance
from polydiff.core.utils import PolydiffError


def frozen_teacher(model: Any, path: str) -> Any:
    """The teacher: an instance of ``model``'s class with ``model``'s settings (the network must be the same) and the
    weights of the checkpoint at ``path`` (EMA weights when training used EMA), in eval mode, without gradients, on
    ``model``'s device."""
    import copy

    ckpt = read_checkpoint(path)
    diffusion = (ckpt.get("hyper_parameters") or {}).get("diffusion")
    process = diffusion.get("process") if isinstance(diffusion, dict) else getattr(diffusion, "process", None)
    if process is not None and process != model.diffusion_config.process:
        raise PolydiffError(f"teacher {path} uses the {process!r} process but the student "
                            f"{model.diffusion_config.process!r}; set --model.diffusion.process to the teacher's")
    teacher = type(model)(**_init_arguments(type(model), copy.deepcopy(dict(model.hparams))))
    teacher.load_checkpoint_dict(ckpt, path)
    teacher.to(model.device).eval().requires_grad_(False)
    return teacher


def _init_arguments(cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` as arguments of ``cls``: LightningCLI stores dataclass arguments as dicts; build them back."""
    import dataclasses
    import inspect
    import typing

    hints = typing.get_type_hints(cls.__init__)
    accepted = inspect.signature(cls.__init__).parameters
    out = {}
    for k, v in hparams.items():
        if k not in accepted:
            continue
        kind = hints.get(k)
        out[k] = kind(**v) if isinstance(v, dict) and dataclasses.is_dataclass(kind) else v
    return out


def take(cond: Any, index: Tensor) -> Any:
    """The items ``index`` of a batch's condition: None, a tensor, or a dict / list / tuple of them."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return cond[index.to(cond.device)]
    if isinstance(cond, dict):
        return {k: take(v, index) for k, v in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(take(v, index) for v in cond)
    raise PolydiffError(f"few-step objectives need a condition made of tensors (or dicts/lists of them), got "
                        f"{type(cond).__name__}")


class FewStepObjective(L.Callback):
    """Base of the few-step students: the frozen teacher and the installed loss.

    Args:
        teacher: the teacher checkpoint (a Gaussian polydiff model of the same domain and class); None: the model's
            ``training.init_from``, from which the student also starts.
        guidance: classifier-free guidance scale of the teacher that is distilled (the student is then sampled at 1).
    """

    #: whether the objective evaluates the frozen teacher (False: the checkpoint only initialises the student)
    uses_teacher: bool = True

    def __init__(self, teacher: Optional[str] = None, guidance: float = 1.0) -> None:
        self.teacher_path = teacher
        self.guidance = float(guidance)
        self.teacher: Any = None

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "denoiser") or not hasattr(pl_module, "training_loss"):
            raise PolydiffError(f"{type(self).__name__} trains Gaussian diffusion models (DiffusionModule); "
                                f"{type(pl_module).__name__} is not one")
        path = self.teacher_path or pl_module.training_config.init_from
        if not path:
            raise PolydiffError(f"{type(self).__name__} needs a teacher checkpoint: set --model.training.init_from "
                                "(the student starts from it) or the callback's teacher")
        if self.uses_teacher:
            self.teacher = frozen_teacher(pl_module, path)
        pl_module.training_objective = self

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.training_objective = None

    # ------------------------------------------------------------------ for subclasses
    def teacher_denoiser(self, cond: Any, model: Any = None) -> Any:
        """The teacher's denoiser (``model``'s when given) with this objective's guidance for condition ``cond``."""
        source = model if model is not None else self.teacher
        denoiser = source.denoiser
        if self.guidance == 1.0 or cond is None:
            return denoiser
        null = source.null_condition(cond)
        if null is None:
            raise PolydiffError(f"guidance {self.guidance} needs a teacher trained with condition dropout; set the "
                                "callback's guidance to 1")
        return ClassifierFreeGuidance(denoiser, self.guidance, null)

    def loss(self, model: Any, batch: Any) -> Tensor:
        """Per-item training loss of the student ``model`` on one encoded batch (a ``DiffusionBatch``)."""
        raise NotImplementedError


@torch.no_grad()
def copy_network(network: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of a network (targets and teachers made from the student)."""
    import copy

    return copy.deepcopy(network).eval().requires_grad_(False)
