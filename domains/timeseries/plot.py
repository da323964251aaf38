"""A PNG of imputed series: observed points, the median of the samples in the gaps and the 90 % band."""

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def time_axis(times: Sequence[Any] | None, n: int) -> np.ndarray | Sequence[Any]:
    """x positions: the time column if it is numeric or parses as dates, else the row number."""
    import pandas as pd

    if times is None or len(times) != n:
        return np.arange(n)
    col = pd.Series(list(times))
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().all():
        return num.to_numpy(dtype=float)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "could not infer format": irrelevant for an axis
            dates = pd.to_datetime(col, errors="coerce")
    except (ValueError, TypeError):
        return np.arange(n)
    return dates.to_numpy() if dates.notna().all() else np.arange(n)


def plot_imputation(path: Path, values: np.ndarray, median: np.ndarray, low: np.ndarray, high: np.ndarray,
                    names: Sequence[str], time_label: str = "time step", max_features: int = 4,
                    times: Sequence[Any] | None = None) -> Path:
    """Plot up to ``max_features`` features (those with the most gaps first); arrays are ``[T, K]``, ``values`` has NaN
    in the gaps; ``times`` (the time column) labels the x axis when it is numeric or holds dates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = np.isnan(values)
    order = np.argsort(-missing.sum(0), kind="stable")[:max_features]
    fig, axes = plt.subplots(len(order), 1, figsize=(9, 2.2 * len(order)), sharex=True, squeeze=False)
    t = time_axis(times, values.shape[0])
    for ax, k in zip(axes[:, 0], order):
        ax.fill_between(t, low[:, k], high[:, k], color="tab:blue", alpha=0.25, linewidth=0, label="90 % interval")
        ax.plot(t, median[:, k], color="tab:blue", linewidth=1.0, label="median")
        obs = ~missing[:, k]
        ax.plot(t[obs], values[obs, k], "o", color="black", markersize=2.5, label="observed")
        gaps = missing[:, k]
        ax.plot(t[gaps], median[gaps, k], "x", color="tab:red", markersize=3.5, label="imputed")
        ax.set_ylabel(str(names[k]))
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel(time_label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
