"""Multivariate time series cut into windows of K features x L steps, for imputation and forecasting.

Sources:

* the embedded default, ``elnino``: monthly sea-surface temperatures of the Niño 1+2 region, 1950-2010, shipped with
  statsmodels (``statsmodels.datasets.elnino``; NOAA Climate Prediction Center). The table has one row per year and one
  column per month, so K = 12 features (JAN..DEC) and the time axis runs over years. No value is missing; every gap in
  training and evaluation is made by hiding values.
* your own file (``--data.path FILE``): a wide CSV / Parquet table with a time column (``--data.time_column``) and one
  numeric column per feature, rows in time order, empty cells for missing values (:mod:`polydiff.datasets.readers.table`).

Splitting (fixed by ``seed``): the series is cut into consecutive blocks of ``window`` rows; a seeded permutation picks the
validation and test blocks, every other row is training data. Training windows are all windows of ``window`` rows that lie
inside the training rows (stride ``train_stride``); validation and test windows are their blocks, so no value is in two
splits. Each feature is normalised by mean and standard deviation over the training rows only (the model stores them).

A batch is a dict: ``values`` ``[B, K, L]`` in the data's units (0 where missing) and ``observed`` ``[B, K, L]`` (1 where a
value exists).
"""

from typing import Any, Literal, Optional, Sequence

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import PositiveInt
from torch.utils.data import DataLoader, Dataset

from polydiff.core.utils import PolydiffError, training_seed
from polydiff.datasets.readers.table import WideTable, read_wide_table, table_from_frame
from polydiff.datasets.splits import ResumableTraining, evaluation_sampler

EMBEDDED = ("elnino",)


#: the time column of each embedded table
EMBEDDED_TIME_COLUMN = {"elnino": "YEAR"}


def embedded_table(name: str = "elnino") -> WideTable:
    """The embedded default as a wide table (time column ``YEAR``)."""
    if name != "elnino":
        raise PolydiffError(f"unknown embedded time-series data {name!r}; choose one of {EMBEDDED} or pass --data.path")
    from statsmodels.datasets import elnino

    return table_from_frame(elnino.load_pandas().data, EMBEDDED_TIME_COLUMN[name], "statsmodels elnino")


class WindowDataset(Dataset):
    """Windows ``[N, K, L]`` of values (0 where missing) and observed masks."""

    def __init__(self, values: np.ndarray, observed: np.ndarray) -> None:
        self.values = torch.from_numpy(values).float()
        self.observed = torch.from_numpy(observed).float()

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"values": self.values[i], "observed": self.observed[i]}


def split_rows(n_rows: int, window: int, val_fraction: float, test_fraction: float, seed: int,
               source: str = "the series") -> np.ndarray:
    """Split label per row: 0 train, 1 validation, 2 test (see the module docstring)."""
    if window < 2:
        raise PolydiffError(f"data.window must be at least 2 steps (got {window})")
    if n_rows < 6:
        raise PolydiffError(f"{source} has {n_rows} rows; imputation needs at least 6 (three windows of 2 steps for "
                            "training, validation and test): give a longer series")
    if window > n_rows:
        raise PolydiffError(f"data.window ({window} steps) is longer than {source} ({n_rows} rows); lower "
                            f"--data.window to at most {n_rows // 3} so that train, validation and test get windows")
    n_blocks = n_rows // window
    n_val = max(1, round(val_fraction * n_blocks)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n_blocks)) if test_fraction > 0 else 0
    if n_blocks - n_val - n_test < 1:
        raise PolydiffError(f"{source} has {n_rows} rows: only {n_blocks} windows of {window} steps, too few for "
                            f"{n_val} validation and {n_test} test windows plus training; lower --data.window "
                            f"(at most {n_rows // (1 + n_val + n_test)}) or the val/test fractions")
    perm = np.random.default_rng(seed).permutation(n_blocks)
    role = np.zeros(n_rows, dtype=np.int64)
    for b in perm[:n_test]:
        role[b * window:(b + 1) * window] = 2
    for b in perm[n_test:n_test + n_val]:
        role[b * window:(b + 1) * window] = 1
    return role


class TimeSeriesDataModule(ResumableTraining, L.LightningDataModule):
    """Windows of a multivariate series: the embedded El Niño table or your own wide CSV / Parquet file.

    Args:
        path: your own wide table (.csv, .tsv, .parquet); None uses the embedded default ``embedded``.
        embedded: the embedded data set used when ``path`` is None (``elnino``: 61 years x 12 months).
        time_column: name of the time column of your file (the embedded table's is ``YEAR``).
        window: window length L in time steps (rows).
        val_fraction: share of the blocks of ``window`` rows held out for validation (at least one if > 0).
        test_fraction: share of the blocks held out for ``polydiff test`` (at least one if > 0).
        seed: seed of the block split.
        train_stride: step between consecutive training windows.
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        embedded: Literal["elnino"] = "elnino",
        time_column: str = "time",
        window: int = 8,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        train_stride: int = 1,
        batch_size: PositiveInt = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.path = path
        self.embedded = embedded
        self.time_column = time_column
        self.window = window
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.train_stride = train_stride
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.save_hyperparameters()  # checkpoints (and exports) name the data a model was trained on
        self.table: Optional[WideTable] = None

    # ------------------------------------------------------------------ building
    def load_table(self) -> WideTable:
        if self.path is None:
            return embedded_table(self.embedded)
        return read_wide_table(self.path, self.time_column)

    def read_input(self, input: str, time_column: Optional[str] = None,
                   features: Optional[Sequence[str]] = None) -> WideTable:
        """``polydiff sample --input FILE``: a wide table with the model's time column and feature columns (default:
        this data's time column and every other column), gaps allowed (even features without a single value: the model
        fills them from the others)."""
        if time_column is None:
            time_column = self.time_column if self.path is not None else EMBEDDED_TIME_COLUMN[self.embedded]
        return read_wide_table(input, time_column, features=features, allow_empty_features=True)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.table is not None:
            return
        table = self.load_table()
        values = table.values
        if self.train_stride < 1:
            raise PolydiffError(f"data.train_stride must be at least 1 (got {self.train_stride})")
        role = split_rows(len(values), self.window, self.val_fraction, self.test_fraction, self.seed, table.path)
        train_rows = values[role == 0]
        seen = ~np.isnan(train_rows)
        empty = [n for n, ok in zip(table.features, seen.any(0)) if not ok]
        if empty:
            raise PolydiffError(f"{table.path}: feature(s) {empty[:5]} have no value in the training split "
                                f"(seed {self.seed}); change --data.seed or give those features values")
        self.mean = np.nanmean(train_rows, axis=0)
        std = np.nanstd(train_rows, axis=0)
        self.std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        self.role = role
        self.table = table
        length = self.window
        starts = {0: [s for s in range(0, len(values) - length + 1, self.train_stride)
                      if (role[s:s + length] == 0).all()]}
        for r in (1, 2):
            starts[r] = [s for s in range(0, len(values) - length + 1, length) if (role[s:s + length] == r).all()]
        self.datasets = {r: self._windows(values, s) for r, s in starts.items()}
        if len(self.datasets[0]) == 0:
            raise PolydiffError(f"{table.path}: no training window of {length} steps fits between the held-out blocks; "
                                "lower --data.window or the val/test fractions")

    def _windows(self, values: np.ndarray, starts: list[int]) -> WindowDataset:
        k, length = values.shape[1], self.window
        wins = np.stack([values[s:s + length].T for s in starts]) if starts else np.zeros((0, k, length))
        observed = ~np.isnan(wins)
        return WindowDataset(np.nan_to_num(wins).astype(np.float32), observed.astype(np.float32))

    def table_meta(self) -> dict[str, Any]:
        """What the model stores: feature names, time column, window length and the training-split statistics."""
        self.setup()
        assert self.table is not None
        return {"columns": list(self.table.features), "time_column": self.table.time_column, "window": self.window,
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std], "source": self.table.path}

    def model_settings(self) -> dict[str, Any]:
        """Settings a model takes from this data when its own are unset (``null``): the number of feature columns."""
        return {"n_features": self.n_features}

    @property
    def n_features(self) -> int:
        self.setup()
        assert self.table is not None
        return len(self.table.features)

    # ------------------------------------------------------------------ loaders
    def _loader(self, role: int, shuffle: bool) -> DataLoader:
        ds = self.datasets[role]
        if len(ds) == 0:
            name = {1: "validation", 2: "test"}[role]
            flag = "val_fraction" if role == 1 else "test_fraction"
            raise PolydiffError(f"no {name} windows: raise --data.{flag} above 0")
        sampler = evaluation_sampler(ds) if role == 2 else None
        if shuffle:
            sampler = self.train_sampler(len(ds), training_seed())
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers,
                          drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if len(self.datasets[1]) == 0:
            return []  # type: ignore[return-value]
        return self._loader(1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(2, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """``polydiff predict`` imputes the missing values of the test windows."""
        return self.test_dataloader()

