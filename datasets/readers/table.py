"""Wide tables of time series: reading them with clear errors (writing imputed copies is the time-series domain's
:mod:`polydiff.domains.timeseries.table`).

A wide table has one time column and one numeric column per feature, one row per time step, in time order. Empty cells
(and the usual NaN spellings: ``NaN``, ``NA``, ``nan``, ...) mean "missing". CSV (``.csv``, ``.txt``, ``.tsv``) and Parquet
(``.parquet``, ``.pq``) files are read.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from polydiff.core.utils import PolydiffError

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class WideTable:
    """A table read from a file.

    ``values``: ``[T, K]`` float64 with NaN where missing. ``raw``: the file's cells as text (CSV) or None (Parquet),
    used to write observed cells back byte for byte. ``frame``: every column of the file, in the file's order.
    """

    path: str
    time_column: str
    features: list[str]
    values: np.ndarray
    frame: pd.DataFrame
    raw: Optional[pd.DataFrame] = None

    @property
    def observed(self) -> np.ndarray:
        return ~np.isnan(self.values)


def _read_frame(path: Path, as_text: bool) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        sep = "\t" if suffix == ".tsv" else ","
        try:
            if as_text:
                return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
            return pd.read_csv(path, sep=sep)
        except pd.errors.EmptyDataError:
            raise PolydiffError(f"{path} is empty; a wide table needs a header row (time column + features) and "
                                "one row per time step") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise PolydiffError(f"{path} is not a readable CSV ({type(exc).__name__}: {str(exc).strip()}); "
                                "write one header row and comma-separated values") from None
    if suffix in PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise PolydiffError(f"reading {path} needs a Parquet engine: pip install pyarrow (or save the table as "
                                "CSV)") from None
        except Exception as exc:  # noqa: BLE001 - any engine failure means the file is not a Parquet table
            raise PolydiffError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    raise PolydiffError(f"{path}: unknown file type {suffix!r}; give a wide table as .csv, .tsv or .parquet")


def read_wide_table(path: str | Path, time_column: str, features: Optional[Sequence[str]] = None,
                    allow_empty_features: bool = False) -> WideTable:
    """Read a wide table and check it.

    Args:
        path: CSV or Parquet file.
        time_column: name of the column holding the time stamps (any type; only its presence and order matter).
        features: expected feature columns (a trained model's); None takes every column but the time column.
        allow_empty_features: accept features without a single value (imputing a file: the model fills them from the
            other features); training data must have at least one value per feature.

    Raises ``PolydiffError`` naming the file and the fix for: a missing file, an unknown type, a missing time column,
    non-numeric feature columns, features that are entirely missing, and columns that differ from ``features``.
    """
    p = Path(path)
    if not p.is_file():
        raise PolydiffError(f"time-series file {path} does not exist; pass a CSV or Parquet wide table "
                            f"(a '{time_column}' column and one numeric column per feature)")
    frame = _read_frame(p, as_text=False)
    table = table_from_frame(frame, time_column, str(p), features, allow_empty_features)
    if p.suffix.lower() in CSV_SUFFIXES:
        raw = _read_frame(p, as_text=True)
        raw.columns = [str(c) for c in raw.columns]
        table.raw = raw
    return table


def table_from_frame(frame: pd.DataFrame, time_column: str, source: str, features: Optional[Sequence[str]] = None,
                     allow_empty_features: bool = False) -> WideTable:
    """Check a DataFrame in wide form (see :func:`read_wide_table`; ``source`` names it in errors)."""
    path = source
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    if time_column not in frame.columns:
        raise PolydiffError(f"{path} has no time column {time_column!r} (columns: {list(frame.columns)[:10]}); "
                            "name the time column with --data.time_column NAME, or add one")
    if len(frame) == 0:
        raise PolydiffError(f"{path} has a header but no rows; add one row per time step")
    _check_time_order(frame[time_column], path, time_column)
    names = [c for c in frame.columns if c != time_column]
    if features is not None:
        missing = [c for c in features if c not in names]
        extra = [c for c in names if c not in features]
        if missing or extra:
            raise PolydiffError(f"{path} does not have the model's feature columns: missing {missing[:5]}, "
                                f"unexpected {extra[:5]}; the model was trained on {list(features)}")
        names = list(features)
    if not names:
        raise PolydiffError(f"{path} has only the time column {time_column!r}; add one numeric column per feature")
    columns = []
    for name in names:
        col = frame[name]
        if col.dtype == bool or not (pd.api.types.is_numeric_dtype(col) or col.isna().all()):
            numeric = pd.to_numeric(col, errors="coerce")
            bad = col[numeric.isna() & col.notna()]
            if len(bad):
                raise PolydiffError(f"{path}: column {name!r} is not numeric (data row {int(bad.index[0]) + 1} holds "
                                    f"{bad.iloc[0]!r}); leave missing values empty, and drop or move text columns "
                                    "out of the table")
            col = numeric
        columns.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
    values = np.stack(columns, axis=1)
    infinite = np.isinf(values)
    if infinite.any():
        row, k = np.argwhere(infinite)[0]
        raise PolydiffError(f"{path}: column {names[k]!r} holds an infinite value (data row {row + 1}); "
                            "leave missing values empty instead")
    if not allow_empty_features:
        empty = [n for n, ok in zip(names, (~np.isnan(values)).any(0)) if not ok]
        if empty:
            raise PolydiffError(f"{path}: feature column(s) {empty[:5]} are entirely missing; drop them or give "
                                "them some values")
    return WideTable(source, time_column, names, values, frame, None)


def _check_time_order(times: pd.Series, path: str, time_column: str) -> None:
    """Rows must be in time order: checked when the time column is numeric or holds dates (other labels are trusted)."""
    parsed = pd.to_numeric(times, errors="coerce")
    if parsed.isna().any():
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = pd.to_datetime(times, errors="coerce")
        except (ValueError, TypeError):
            return
    if parsed.isna().any():
        return
    steps = np.diff(parsed.to_numpy())
    bad = np.nonzero(~(steps > steps.dtype.type(0)))[0] if len(steps) else []
    if len(bad):
        i = int(bad[0])
        raise PolydiffError(f"{path}: the rows are not in time order ({time_column} {times.iloc[i]!r} is followed by "
                            f"{times.iloc[i + 1]!r}, data rows {i + 1}-{i + 2}); sort the table by {time_column!r} and "
                            "merge repeated time stamps")
