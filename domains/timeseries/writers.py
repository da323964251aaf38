"""Files the imputer writes for ``polydiff sample --input FILE``: the table with its gaps filled (median, 5 % and
95 % quantiles, in the input's own layout) and a plot; and the Markdown table ``polydiff test`` prints."""

from dataclasses import replace
from pathlib import Path
from typing import Any

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.timeseries.controls import CONTROLS
from polydiff.domains.timeseries.masks import EVAL_SETTINGS
from polydiff.domains.timeseries.plot import plot_imputation
from polydiff.domains.timeseries.table import write_filled

#: the rows of the test table: the model, then each control
METHODS = ("model", *CONTROLS)


def with_model_columns(model: Any, table: Any) -> Any:
    """``table`` with its feature columns in the model's order (an error naming the file when they differ)."""
    columns = list(model._require_meta()["columns"])
    missing = [c for c in columns if c not in table.features]
    extra = [c for c in table.features if c not in columns]
    if missing or extra:
        raise PolydiffError(f"{table.path} does not have the model's feature columns: missing {missing[:5]}, "
                            f"unexpected {extra[:5]}; the model was trained on {columns}")
    order = [table.features.index(c) for c in columns]
    return replace(table, features=columns, values=table.values[:, order])


def write_samples(model: Any, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                  input: Any = None) -> list[Path]:
    """Impute the gaps of ``input`` (the wide table with the training columns that the DataModule read from
    ``polydiff sample --input FILE``) from ``num_samples`` samples.

    Writes ``imputed.csv`` (the input with gaps filled by the median), ``quantiles_05.csv`` / ``quantiles_95.csv`` (the
    same layout, gaps filled by the 5 % / 95 % quantiles, observed cells unchanged) and ``imputed.png``.
    """
    if input is None:
        raise PolydiffError("the timeseries model imputes a file: pass --input FILE.csv (a wide table with the "
                            "training columns and empty cells where values are missing)")
    if num_samples < 1:
        raise PolydiffError(f"--num_samples must be at least 1 (got {num_samples}); 100 gives stable 90 % intervals")
    table = with_model_columns(model, input)
    median, low, high = model.impute_series(table.values, num_samples, sampler, seed)
    out_dir = Path(out_dir)
    # imputed.csv in the input's own precision; the quantile files keep every digit, and so does imputed_full.csv
    paths = [write_filled(table, median, out_dir / "imputed.csv"),
             write_filled(table, median, out_dir / "imputed_full.csv", full_precision=True),
             write_filled(table, low, out_dir / "quantiles_05.csv", full_precision=True),
             write_filled(table, high, out_dir / "quantiles_95.csv", full_precision=True)]
    paths.append(plot_imputation(out_dir / "imputed.png", table.values, median, low, high, table.features,
                                 time_label=table.time_column, times=table.frame[table.time_column].tolist()))
    return paths


def metrics_table(metrics: dict[str, float]) -> str:
    """Markdown table of ``{setting}/{method}/{metric}`` values: one row per setting and method."""
    lines = ["| setting | method | MAE | RMSE | CRPS | 90 % coverage | hidden values |",
             "|---|---|---|---|---|---|---|"]
    settings = [s for s in EVAL_SETTINGS if f"{s}/model/mae" in metrics]
    for s in settings:
        for m in METHODS:
            if f"{s}/{m}/mae" not in metrics:
                continue
            cov = metrics[f"{s}/{m}/coverage90"]
            cov_txt = "–" if cov != cov else f"{cov:.3f}"
            name = "**CSDI (polydiff)**" if m == "model" else m
            lines.append(f"| {s} | {name} | {metrics[f'{s}/{m}/mae']:.4f} | {metrics[f'{s}/{m}/rmse']:.4f} | "
                         f"{metrics[f'{s}/{m}/crps']:.4f} | {cov_txt} | {int(metrics[f'{s}/{m}/n_hidden'])} |")
    return "\n".join(lines)


def write_predictions(model: Any, prediction: dict, batch: Any, out_dir: Path, prefix: str) -> list[Path]:
    """``polydiff predict``: ``<prefix>.csv``, one row per window, feature and step: the value where observed, the
    median and the 5 % / 95 % quantiles of the imputations (equal to the value where observed)."""
    import csv

    columns = list(model.data_meta["columns"]) if model.data_meta else None
    median, q05, q95 = prediction["median"], prediction["q05"], prediction["q95"]
    observed = prediction["observed"].bool()
    values = batch["values"]
    path = out_dir / f"{prefix}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["window", "feature", "step", "observed", "value", "median", "q05", "q95"])
        b, k, steps = median.shape
        for i in range(b):
            for j in range(k):
                name = columns[j] if columns else str(j)
                for s in range(steps):
                    seen = bool(observed[i, j, s])
                    w.writerow([i, name, s, int(seen), repr(float(values[i, j, s])) if seen else "",
                                repr(float(median[i, j, s])), repr(float(q05[i, j, s])), repr(float(q95[i, j, s]))])
    return [path]
