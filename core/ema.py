"""EMA of the weights with a warm-up, as a Lightning callback.

Lightning's ``EMAWeightAveraging`` averages with a fixed decay from the first update, so the average starts at the
initial (random) weights and keeps ``decay ** n`` of them after ``n`` updates: 37 % after 1000 updates at decay 0.999,
which is most of a CPU-sized run. :class:`EMA` is the same callback (it swaps the averaged weights in for validation,
writes them as the checkpoint's ``state_dict`` and restores both on resume) with the usual warm-up of the decay
(TensorFlow's ``ExponentialMovingAverage(num_updates=...)``, diffusers' ``EMAModel``)::

    decay_n = min(decay, (1 + n) / (10 + n))        # n = updates already averaged

so early averages forget the initial weights quickly and the long-run average is the plain EMA. The averaging function
is a module-level class rather than a closure, so the callback can be pickled, which ``ddp_spawn`` needs (the
2-process test in tests/test_cli.py runs both ``ddp`` and ``ddp_spawn``).

    trainer:
      callbacks:
        - class_path: polydiff.core.ema.EMA
          init_args:
            decay: 0.999
"""

from typing import Optional, Union

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from torch import Tensor

from polydiff.core.utils import PolydiffError


class WarmupEMAUpdate:
    """``multi_avg_fn`` of :class:`torch.optim.swa_utils.AveragedModel`: one EMA update of all averaged tensors.

    Floating-point tensors move towards the current weights by ``1 - decay_n``; integer tensors are copied. (The
    :class:`EMA` callback averages parameters only and copies buffers.)
    """

    def __init__(self, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise PolydiffError(f"EMA decay must be in [0, 1), got {decay}; typical values are 0.99-0.9999")
        self.decay = float(decay)
        self.warmup = bool(warmup)

    def decay_at(self, num_averaged: int) -> float:
        """Decay applied at the update after ``num_averaged`` updates (the first average is a copy)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + num_averaged) / (10.0 + num_averaged))

    def __call__(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        weight = 1.0 - self.decay_at(int(num_averaged))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)


class EMA(EMAWeightAveraging):
    """Lightning's EMA weight-averaging callback with a warm-up of the decay (see the module doc).

    Args:
        decay: long-run decay of the average.
        warmup: ramp the decay as ``min(decay, (1 + n) / (10 + n))`` (False: Lightning's fixed decay from the start).
        device: where the averaged copy lives (default: the model's device; "cpu" saves accelerator memory).
        use_buffers: average the buffers too (False, the default here: buffers are copied from the model at every
            update, because polydiff's buffers are filled from the data (category marginals, node-count histograms,
            a tokenizer) and must stay exactly the data's, not drift from their placeholders).
        update_every_n_steps: update the average every this many optimiser steps.
        update_starting_at_step: first optimiser step that updates the average (None: from the start).
        update_starting_at_epoch: first epoch that updates the average (None: from the start).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, device: Optional[Union[torch.device, str, int]] = None,
                 use_buffers: bool = False, update_every_n_steps: int = 1,
                 update_starting_at_step: Optional[int] = None, update_starting_at_epoch: Optional[int] = None) -> None:
        # WeightAveraging directly: EMAWeightAveraging.__init__ would also install its closure as avg_fn
        WeightAveraging.__init__(self, device=device, use_buffers=use_buffers,
                                 multi_avg_fn=WarmupEMAUpdate(decay, warmup))
        if update_every_n_steps < 1:
            raise PolydiffError(f"update_every_n_steps must be at least 1, got {update_every_n_steps}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self._use_buffers and self._average_model is not None:
            self.copy_buffers(pl_module)

    def copy_buffers(self, pl_module: torch.nn.Module) -> None:
        """The averaged copy's buffers := the model's (same names; a buffer whose size changed, such as a tokenizer
        stored as bytes, is replaced)."""
        average = self._average_model.module
        with torch.no_grad():
            for name, buffer in pl_module.named_buffers():
                mine = average.get_buffer(name)
                if mine.shape == buffer.shape:
                    mine.copy_(buffer)
                else:
                    mine.data = buffer.detach().clone().to(mine.device)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """Restore the average when resuming fit. Outside fit (``polydiff test`` / ``predict`` / ``sample``) there is no
        average to restore: the checkpoint's ``state_dict`` already holds the averaged weights, which is what evaluation
        uses, so Lightning's warning about it is not raised."""
        if self._average_model is None:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def __repr__(self) -> str:
        return f"EMA(decay={self.decay}, warmup={self.warmup})"




def sync_averaged_buffers(pl_module: torch.nn.Module) -> None:
    """After a model fills a buffer from its data once fit has begun (a tokenizer, a latent scale factor), hand it to
    the averaged copy of every :class:`EMA` callback, which was made before and is swapped in for validation."""
    trainer = getattr(pl_module, "_trainer", None)
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, EMA) and callback._average_model is not None:
            callback.copy_buffers(pl_module)


__all__ = ["EMA", "WarmupEMAUpdate", "sync_averaged_buffers"]
