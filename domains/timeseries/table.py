"""Writing imputed copies of a wide table that keep the input's layout (reading tables is the data's job:
:mod:`polydiff.datasets.readers.table`).

A table here is what the reader returns: ``path``, ``features`` (the feature column names), ``values`` ``[T, K]`` with
NaN where missing, ``frame`` (every column of the file) and ``raw`` (the file's cells as text for CSV input, else None).
"""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _format(x: float) -> str:
    return repr(float(x))


def filled_frame(table: Any, fill: np.ndarray) -> pd.DataFrame:
    """The input table with its missing feature cells replaced by ``fill`` (``[T, K]``).

    Every other cell is kept exactly: for CSV input the original text of each cell, so observed values, the time column
    and any formatting come back unchanged; rows and columns keep the input's order.
    """
    missing = np.isnan(table.values)
    if table.raw is not None:
        out = table.raw.copy()
        for k, name in enumerate(table.features):
            col = out[name].to_numpy(dtype=object)
            idx = np.nonzero(missing[:, k])[0]
            col[idx] = [_format(v) for v in fill[idx, k]]
            out[name] = col
        return out
    out = table.frame.copy()
    for k, name in enumerate(table.features):
        col = out[name].to_numpy(dtype=np.float64, na_value=np.nan).copy()
        col[missing[:, k]] = fill[missing[:, k], k]
        out[name] = col
    return out


def write_filled(table: Any, fill: np.ndarray, path: Path) -> Path:
    """Write :func:`filled_frame` as CSV (the same separator as a CSV input)."""
    sep = "\t" if Path(table.path).suffix.lower() == ".tsv" else ","
    filled_frame(table, fill).to_csv(path, index=False, sep=sep)
    return path
