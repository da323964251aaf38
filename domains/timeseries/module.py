"""Probabilistic time-series imputation with a CSDI-style conditional diffusion model (Tashiro et al. 2021).

Training hides part of the observed values of each window (:mod:`.masks`) and teaches the network to denoise them given the
rest; the loss covers the hidden values only. Imputing draws N samples per window with any core sampler, conditioned on
the observed values: the median is the point estimate, quantiles give intervals. Forecasting is imputation of the last H
steps (``forecast`` mask; in a file, empty rows appended at the end).

The model owns the per-feature normalisation (taken from the training split at the start of ``fit``) and stores it,
with the feature names and the window length, in its checkpoints, so ``polydiff sample --input FILE`` needs nothing else.
"""

from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from polydiff.core.base import TrainingConfig, require_data
from polydiff.core.module import DiffusionBatch, DiffusionConfig, DiffusionModule
from polydiff.core.objective import ObjectiveConfig
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError, sum_across_ranks
from polydiff.domains.timeseries import writers
from polydiff.domains.timeseries.api import ImputationAPI
from polydiff.domains.timeseries.controls import CONTROLS
from polydiff.domains.timeseries.data import TimeSeriesData
from polydiff.domains.timeseries.masks import EVAL_SETTINGS, TrainMask, evaluation_hide, training_hide
from polydiff.domains.timeseries.metrics import ImputationScore, sample_quantiles
from polydiff.domains.timeseries.network import CSDINetwork

META_KEY = "polydiff_timeseries"


class TimeSeriesImputation(ImputationAPI, DiffusionModule):
    """CSDI-style imputation and forecasting of multivariate series with probabilistic output.

    Args:
        n_features: number of feature columns K of the data (must match the DataModule); null: the DataModule's
            (``polydiff`` reads it from the file before building the model).
        channels: width of the residual blocks (CSDI: 64).
        layers: number of residual blocks, each with a transformer across time and one across features (CSDI: 4).
        heads: attention heads (CSDI: 8).
        time_embedding_dim: size of the sinusoidal time-step embedding (CSDI: 128).
        feature_embedding_dim: size of the learned feature embedding (CSDI: 16).
        dropout: dropout inside the transformer layers (CSDI: 0.1); small data sets overfit without it.
        train_mask: how training picks targets among the observed values: random, historical (the missing pattern of
            another window), block (gaps and blackouts), forecast (the last steps) or mix (random / block / historical).
        forecast_horizon: steps hidden at the end by the ``forecast`` training mask and evaluation setting (0: a random
            horizon up to half the window at training, a quarter of the window at evaluation).
        eval_samples: samples per window in ``polydiff test`` (CSDI: 100).
        eval_repeats: independent hidden-value masks per test window and setting in ``polydiff test``.
        eval_seed: seed of the evaluation masks and samples.
        max_batch: largest number of windows sent through the network at once when sampling.
        diffusion: forward process and prediction target.
        objective: training noise levels and loss weighting.
        sampler: default sampler for ``polydiff test`` and ``polydiff sample``.
        training: optimiser settings.
    """

    domain = "timeseries"

    def __init__(
        self,
        n_features: Optional[int] = 12,
        channels: int = 64,
        layers: int = 4,
        heads: int = 8,
        time_embedding_dim: int = 128,
        feature_embedding_dim: int = 16,
        dropout: float = 0.1,
        train_mask: TrainMask = "mix",
        forecast_horizon: int = 0,
        eval_samples: int = 50,
        eval_repeats: int = 5,
        eval_seed: int = 0,
        max_batch: int = 2048,
        diffusion: DiffusionConfig = DiffusionConfig(),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(diffusion, objective, sampler, training)
        if n_features is None:
            raise PolydiffError("model.n_features is not set and no DataModule gave it; set --model.n_features to the "
                                "number of feature columns of the data")
        if n_features < 1:
            raise PolydiffError(f"model.n_features must be at least 1 (got {n_features}); set it to the number of "
                                "feature columns of the data")
        if channels % heads:
            raise PolydiffError(f"model.channels ({channels}) must be divisible by model.heads ({heads})")
        self.network = CSDINetwork(n_features, channels, layers, heads, time_embedding_dim, feature_embedding_dim,
                                   dropout=dropout)
        #: columns, time column, window length and normalisation of the training data (saved in checkpoints)
        self.data_meta: Optional[dict[str, Any]] = None
        self._scores: dict[tuple[str, str], ImputationScore] = {}
        self.save_hyperparameters()

    # ------------------------------------------------------------------ data statistics
    def input_options(self) -> dict[str, Any]:
        meta = self._require_meta()
        return {"time_column": meta["time_column"], "features": list(meta["columns"])}

    def connect_data(self, datamodule: Any) -> None:
        """Check the data's feature count; at fit (or when the model has none yet) take its columns and statistics."""
        meta = require_data(datamodule, TimeSeriesData, "timeseries",
                            "polydiff.datasets.timeseries.TimeSeriesDataModule").table_meta()
        if len(meta["columns"]) != self.hparams.n_features:
            raise PolydiffError(f"the data has {len(meta['columns'])} feature columns but the model was built for "
                                f"{self.hparams.n_features}; set --model.n_features {len(meta['columns'])}")
        if self.data_meta is None or self.trainer.state.fn == "fit":
            self.data_meta = meta

    def _require_meta(self) -> dict[str, Any]:
        if self.data_meta is None:
            raise PolydiffError("this model has no data statistics: load a checkpoint written by 'polydiff fit' "
                                "(--ckpt_path)")
        return self.data_meta

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        meta = self._require_meta()
        mean = torch.tensor(meta["mean"], dtype=like.dtype, device=like.device).view(-1, 1)
        std = torch.tensor(meta["std"], dtype=like.dtype, device=like.device).view(-1, 1)
        return mean, std

    def normalise(self, values: Tensor, observed: Tensor) -> Tensor:
        """Raw ``[B, K, L]`` values to the model's scale (training-split mean 0, std 1 per feature); 0 where missing."""
        mean, std = self._stats(values)
        return torch.where(observed > 0, (values - mean) / std, torch.zeros_like(values))

    def denormalise(self, z: Tensor) -> Tensor:
        mean, std = self._stats(z)
        return z * std + mean

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[META_KEY] = self.data_meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.data_meta = checkpoint.get(META_KEY) or self.data_meta

    def restore_from_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        meta = checkpoint.get(META_KEY)
        if meta is not None:
            self.data_meta = meta

    def on_fit_start(self) -> None:
        # fine-tuning (training.init_from) loads weights, but the normalisation stays that of the new training data
        meta = self.data_meta
        super().on_fit_start()
        self.data_meta = meta

    # ------------------------------------------------------------------ training
    def encode(self, batch: dict[str, Tensor]) -> DiffusionBatch:
        values, observed = batch["values"], batch["observed"]
        z = self.normalise(values, observed)
        gen = None if self.training else torch.Generator().manual_seed(0)  # fixed validation targets
        hide = training_hide(observed, self.hparams.train_mask, gen, self.hparams.forecast_horizon)
        cond_mask = observed - hide
        return DiffusionBatch(x0=z, cond={"values": z * cond_mask, "cond_mask": cond_mask}, mask=hide)

    # ------------------------------------------------------------------ imputation (the Python API is api.py)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``polydiff predict``: the batch's windows with every missing value imputed (data scale, ``[B, K, L]``):
        ``median``, ``q05`` and ``q95`` of ``eval_samples`` imputations; observed values come back unchanged."""
        values, observed = batch["values"], batch["observed"]
        z = self.normalise(values, observed)
        samples = self.denormalise(self.impute(z, observed, self.hparams.eval_samples, seed=batch_idx)).double()
        q = torch.quantile(samples, torch.tensor([0.5, 0.05, 0.95], dtype=samples.dtype, device=samples.device), dim=0)
        q = torch.where(observed.bool(), values.to(q.dtype), q)  # observed values exactly as given
        return {"median": q[0].cpu(), "q05": q[1].cpu(), "q95": q[2].cpu(), "observed": observed.cpu()}

    # ------------------------------------------------------------------ evaluation
    def on_test_epoch_start(self) -> None:
        # every (setting, method) exists from the start, so the sums over ranks see the same keys on every rank
        self._scores = defaultdict(ImputationScore)
        for setting in EVAL_SETTINGS:
            for method in ("model", *CONTROLS):
                self._scores[(setting, method)] = ImputationScore()
        dm = self.trainer.datamodule
        if isinstance(dm, TimeSeriesData):
            ours, theirs = self._require_meta()["columns"], dm.table_meta()["columns"]
            if list(ours) != list(theirs):
                raise PolydiffError(f"the test data's feature columns {list(theirs)[:6]} differ from the model's "
                                    f"{list(ours)[:6]}; test on a table with the training columns in the same order")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        values, observed = batch["values"], batch["observed"]
        reps = self.hparams.eval_repeats
        values, observed = values.repeat(reps, 1, 1), observed.repeat(reps, 1, 1)
        z = self.normalise(values, observed)
        zero = torch.zeros(values.shape[1], dtype=z.dtype, device=z.device)
        for si, setting in enumerate(EVAL_SETTINGS):
            seed = evaluation_seed(self.hparams.eval_seed, batch_idx, si)
            hide = evaluation_hide(observed, setting, torch.Generator().manual_seed(seed), self.hparams.forecast_horizon)
            cond = observed - hide
            samples = self.denormalise(self.impute(z, cond, self.hparams.eval_samples, seed=seed))
            quantiles = sample_quantiles(samples)
            median = samples.median(dim=0).values if samples.shape[0] % 2 else torch.quantile(samples, 0.5, dim=0)
            self._scores[(setting, "model")].add(values, hide, median, quantiles)
            for name, control in CONTROLS.items():
                point = self.denormalise(control(z, cond, zero))
                self._scores[(setting, name)].add(values, hide, point, None)

    def on_test_epoch_end(self) -> None:
        # under DDP every rank scored its shard of the test windows: add the running sums over ranks first
        flat = {f"{s}|{m}|{k}": v for (s, m), score in self._scores.items() for k, v in score.totals().items()}
        flat = sum_across_ranks(self, flat)
        for (s, m), score in self._scores.items():
            score.set_totals({k: flat[f"{s}|{m}|{k}"] for k in score.totals()})
        metrics: dict[str, float] = {}
        for (setting, method), score in self._scores.items():
            for k, v in score.result().items():
                metrics[f"{setting}/{method}/{k}"] = v
        table = writers.metrics_table(metrics)
        if self.trainer.is_global_zero:
            print(table)
        self.report_metrics(metrics, extra={
            "table": table,
            "sampler": asdict(self.sampler_config),
            "eval_samples": self.hparams.eval_samples,
            "eval_repeats": self.hparams.eval_repeats,
            "data": {k: v for k, v in (self.data_meta or {}).items() if k not in ("mean", "std")},
        })

    # ------------------------------------------------------------------ files (see writers.py)
    def write_predictions(self, prediction: dict[str, Tensor], batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        return writers.write_predictions(self, prediction, batch, out_dir, prefix)

    def write_samples(self, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                      input: Any = None) -> list[Path]:
        """Impute the gaps of ``input`` (the wide table the DataModule read from ``polydiff sample --input FILE``):
        ``imputed.csv``, ``quantiles_05.csv``, ``quantiles_95.csv``, ``imputed.png``
        (:func:`polydiff.domains.timeseries.writers.write_samples`)."""
        return writers.write_samples(self, out_dir, num_samples, sampler, seed, input)




def evaluation_seed(eval_seed: int, batch_idx: int, setting_idx: int) -> int:
    """Seed of the hidden-value masks (and samples) of one test batch and setting: the same for every method."""
    return eval_seed * 1_000_003 + 10_007 * batch_idx + 101 * setting_idx
