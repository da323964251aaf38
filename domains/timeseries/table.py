"""Writing imputed copies of a wide table that keep the input's layout (reading tables is the data's job:
:mod:`polydiff.datasets.readers.table`).

A table here is what the reader returns: ``path``, ``features`` (the feature column names), ``values`` ``[T, K]`` with
NaN where missing, ``frame`` (every column of the file) and ``raw`` (the file's cells as text for CSV input, else None).
"""

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd


def _format(x: float, decimals: int | None = None) -> str:
    return repr(float(x)) if decimals is None else f"{float(x):.{decimals}f}"


def input_decimals(cells: Sequence[str]) -> int | None:
    """The most decimals written in a column's observed cells (``2.31`` -> 2); None when a cell is in exponent form or
    written with every digit of a float (the full value is written then)."""
    most = 0
    for cell in cells:
        text = str(cell).strip()
        if not text:
            continue
        if "e" in text.lower():
            return None
        most = max(most, len(text.split(".", 1)[1]) if "." in text else 0)
    return most if most <= 12 else None  # a float written in full: write the full value too


def filled_frame(table: Any, fill: np.ndarray, full_precision: bool = False) -> pd.DataFrame:
    """The input table with its missing feature cells replaced by ``fill`` (``[T, K]``).

    Every other cell is kept exactly: for CSV input the original text of each cell, so observed values, the time column
    and any formatting come back unchanged; rows and columns keep the input's order. Filled cells of a CSV input are
    written with as many decimals as the column's own cells have (``full_precision``: every digit of the float).
    """
    missing = np.isnan(table.values)
    if table.raw is not None:
        out = table.raw.copy()
        for k, name in enumerate(table.features):
            col = out[name].to_numpy(dtype=object)
            idx = np.nonzero(missing[:, k])[0]
            decimals = None if full_precision else input_decimals(col[np.nonzero(~missing[:, k])[0]])
            col[idx] = [_format(v, decimals) for v in fill[idx, k]]
            out[name] = col
        return out
    out = table.frame.copy()
    for k, name in enumerate(table.features):
        col = out[name].to_numpy(dtype=np.float64, na_value=np.nan).copy()
        col[missing[:, k]] = fill[missing[:, k], k]
        out[name] = col
    return out


def write_filled(table: Any, fill: np.ndarray, path: Path, full_precision: bool = False) -> Path:
    """Write :func:`filled_frame` as CSV (the same separator as a CSV input)."""
    sep = "\t" if Path(table.path).suffix.lower() == ".tsv" else ","
    filled_frame(table, fill, full_precision).to_csv(path, index=False, sep=sep)
    return path
