"""Time-series recipes through the CLI: fast_dev_run, a CSV with gaps in and imputed out, test metrics, clear errors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from polydiff.core.cli import build_cli, main

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model.channels", "8", "--model.heads", "2", "--model.layers", "1", "--model.time_embedding_dim", "8",
        "--model.feature_embedding_dim", "4", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


def _macro_csv(path: Path, gaps: bool = True) -> pd.DataFrame:
    """Real quarterly US macro data (statsmodels macrodata), 4 features, with gaps, written as a wide CSV."""
    from statsmodels.datasets import macrodata

    raw = macrodata.load_pandas().data
    df = pd.DataFrame({"quarter": [f"{int(y)}Q{int(q)}" for y, q in zip(raw["year"], raw["quarter"])]})
    for c in ("realgdp", "cpi", "unemp", "infl"):
        df[c] = raw[c]
    if gaps:
        rng = np.random.default_rng(0)
        for c in ("realgdp", "cpi", "unemp", "infl"):
            df.loc[rng.random(len(df)) < 0.15, c] = np.nan
        df.loc[50:57, "unemp"] = np.nan  # a block gap
        df.loc[100:103, ["cpi", "infl"]] = np.nan  # a blackout of two features
    df.to_csv(path, index=False)
    return df


def test_elnino_recipe_fast_dev_run(tmp_path):
    """The CSDI output layer starts at zero: the first loss over the hidden targets of v-prediction is
    ``E_t[alpha^2] + E_t[sigma^2] E[z^2]`` with z the normalised values (mean 0, std 1 on the training split, so about
    1); the model also took the training split's statistics from the data."""
    cli = build_cli(["fit", "--config", str(ROOT / "recipes/timeseries/elnino.yaml"), "--trainer.fast_dev_run=1",
                     "--trainer.default_root_dir", str(tmp_path), *TINY])
    assert float(cli.trainer.callback_metrics["train/loss"]) == pytest.approx(1.0, abs=0.35)
    assert cli.model.data_meta["columns"] == cli.datamodule.table_meta()["columns"]
    assert cli.model.data_meta["mean"] == pytest.approx(cli.datamodule.table_meta()["mean"])


def test_csv_recipe_fit_test_and_sample_keep_every_observed_value(tmp_path, capsys):
    csv = tmp_path / "macro.csv"
    df = _macro_csv(csv)
    recipe = str(ROOT / "recipes/timeseries/csv.yaml")
    data = ["--data.path", str(csv), "--data.time_column", "quarter", "--data.window", "16", "--model.n_features", "4"]
    main(["fit", "--config", recipe, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path / "dev"),
          *data, *TINY])
    run = tmp_path / "run"
    # evaluation settings at fit time: with --ckpt_path, Lightning's CLI takes the model settings from the checkpoint
    fast_eval = ["--model.eval_samples", "4", "--model.eval_repeats", "1", "--model.sampler.steps", "3"]
    main(["fit", "--config", recipe, "--trainer.max_steps", "3", "--trainer.default_root_dir", str(run), *data, *TINY,
          *fast_eval])
    ckpt = next(run.rglob("last.ckpt"))
    # polydiff test: the full table of settings x methods
    main(["test", "--config", recipe, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "test"),
          *data, *TINY])
    metrics = json.loads(next((tmp_path / "test").rglob("metrics.json")).read_text())["metrics"]
    for setting in ("random10", "random50", "random90", "block", "forecast"):
        for method in ("model", "mean", "locf", "linear"):
            assert f"{setting}/{method}/mae" in metrics
    # the controls behave as they must on smooth quarterly series: interpolating beats the mean where values are
    # scattered, and the deterministic controls have no interval (their coverage is not a number)
    for setting in ("random10", "random50"):
        assert float(metrics[f"{setting}/linear/mae"]) < float(metrics[f"{setting}/mean/mae"])
    assert metrics["random50/linear/coverage90"] != metrics["random50/linear/coverage90"] or \
        str(metrics["random50/linear/coverage90"]) == "nan"
    # polydiff sample: the checkpoint alone (no --data.path) imputes the file
    out = tmp_path / "out"
    main(["sample", "--config", recipe, "--ckpt_path", str(ckpt), "--input", str(csv), "--out", str(out),
          "--num_samples", "5", "--steps", "3", "--model.n_features", "4", *TINY[:-4]])
    raw_in = pd.read_csv(csv, dtype=str, keep_default_na=False)
    imputed = pd.read_csv(out / "imputed.csv", dtype=str, keep_default_na=False)
    assert list(imputed.columns) == list(raw_in.columns) and len(imputed) == len(raw_in)
    gaps = raw_in == ""
    assert gaps.values.sum() > 50
    assert (imputed.values[~gaps.values] == raw_in.values[~gaps.values]).all()  # observed cells byte for byte
    assert (imputed != "").values.all()
    q05 = pd.read_csv(out / "quantiles_05.csv").drop(columns="quarter").to_numpy()
    q95 = pd.read_csv(out / "quantiles_95.csv").drop(columns="quarter").to_numpy()
    med = pd.read_csv(out / "imputed.csv").drop(columns="quarter").to_numpy()
    g = gaps.drop(columns="quarter").to_numpy()
    assert np.isfinite(med).all() and (q05[g] <= med[g] + 1e-9).all() and (med[g] <= q95[g] + 1e-9).all()
    assert np.array_equal(q05[~g], df.drop(columns="quarter").to_numpy()[~g])
    assert (out / "imputed.png").stat().st_size > 5000
    # forecasting: empty rows appended at the end are filled as well
    future = pd.concat([pd.read_csv(csv), pd.DataFrame({"quarter": ["2009Q4", "2010Q1"]})], ignore_index=True)
    future.to_csv(tmp_path / "future.csv", index=False)
    main(["sample", "--config", recipe, "--ckpt_path", str(ckpt), "--input", str(tmp_path / "future.csv"),
          "--out", str(tmp_path / "fc"), "--num_samples", "3", "--steps", "2", "--model.n_features", "4", *TINY[:-4]])
    fc = pd.read_csv(tmp_path / "fc" / "imputed.csv")
    assert len(fc) == len(df) + 2 and np.isfinite(fc.iloc[-2:, 1:].to_numpy()).all()
    # bad input: a file without the model's columns ends in one clear line
    pd.DataFrame({"quarter": ["a"], "gdp": [1.0]}).to_csv(tmp_path / "wrong.csv", index=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--config", recipe, "--ckpt_path", str(ckpt), "--input", str(tmp_path / "wrong.csv"),
              "--out", str(tmp_path / "bad"), "--model.n_features", "4", *TINY[:-4]])
    assert exc.value.code == 2
    assert "does not have the model's feature columns" in capsys.readouterr().err


def test_cli_errors_for_bad_data_and_settings(tmp_path, capsys):
    csv = tmp_path / "macro.csv"
    _macro_csv(csv, gaps=False)
    recipe = str(ROOT / "recipes/timeseries/csv.yaml")
    cases = [
        (["--data.path", str(csv), "--model.n_features", "3"], "set --model.n_features 4"),
        (["--data.path", str(csv), "--model.n_features", "4"], "no time column 'time'"),
        (["--data.path", str(csv), "--data.time_column", "quarter", "--model.n_features", "4", "--data.window", "500"],
         "longer than"),
    ]
    for extra, message in cases:
        if "--data.time_column" not in extra and "time column" not in message:
            extra = [*extra, "--data.time_column", "quarter"]
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", recipe, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path),
                  *extra, *TINY])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_csv_recipe_reads_the_feature_count_from_the_file(tmp_path, capsys):
    csv = tmp_path / "macro.csv"
    _macro_csv(csv)
    recipe = str(ROOT / "recipes/timeseries/csv.yaml")
    data = ["--data.path", str(csv), "--data.time_column", "quarter", "--data.window", "16"]
    cli = build_cli(["fit", "--config", recipe, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path / "dev"), *data, *TINY])
    assert cli.model.hparams.n_features == 4  # the recipe leaves it null: the file has four feature columns
    with pytest.raises(SystemExit):  # an explicit setting that contradicts the data is an error that says so
        main(["fit", "--config", recipe, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
              str(tmp_path / "dev2"), *data, *TINY, "--model.n_features", "3"])
    assert "--model.n_features 4" in capsys.readouterr().err
