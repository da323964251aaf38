"""``polydiff predict`` writes files: a Lightning prediction writer that hands each batch's predictions to the model's
``write_predictions`` (the domain's writers of native files: PNG, WAV, CSV, text, GraphML, ...)."""

from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionFiles(BasePredictionWriter):
    """Write every predicted batch as files native to the domain, into ``out_dir`` (default: ``predictions/`` in the
    run directory). File names carry the process rank and batch index, so processes never overwrite each other.

    Args:
        out_dir: folder for the files (None: ``<run dir>/predictions``).
    """

    def __init__(self, out_dir: Optional[str] = None) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = out_dir
        self.written: list[Path] = []

    def folder(self, trainer: L.Trainer) -> Path:
        if self.out_dir is not None:
            return Path(self.out_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions"

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._folder = self.folder(trainer)  # log_dir is a broadcast under DDP: every rank asks, once
        self.written = []

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Optional[Sequence[int]], batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        write = getattr(pl_module, "write_predictions", None)
        if write is None:
            return  # a plain LightningModule: nothing polydiff knows how to write
        folder = self._folder
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"rank{trainer.global_rank}_batch{batch_idx:05d}" if trainer.world_size > 1 else f"batch{batch_idx:05d}"
        self.written += list(write(prediction, batch, folder, prefix))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.written and trainer.is_global_zero:
            print(f"polydiff predict wrote {len(self.written)} files to {self._folder}/")
