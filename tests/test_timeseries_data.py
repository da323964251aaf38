"""Time-series data: the embedded default, splits and train-only statistics, wide tables, and clear errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from polydiff.core.utils import PolydiffError
from polydiff.datasets.readers.table import read_wide_table
from polydiff.datasets.timeseries import TimeSeriesDataModule, embedded_table, split_rows
from polydiff.domains.timeseries.table import filled_frame

torch.set_num_threads(1)


def test_embedded_elnino_windows_split_and_train_only_statistics():
    dm = TimeSeriesDataModule(window=8, test_fraction=0.3, seed=0)
    dm.setup()
    table = embedded_table()
    assert table.features[0] == "JAN" and table.values.shape == (61, 12)
    assert dm.n_features == 12
    # 7 blocks of 8 years: 1 validation, 2 test; every other row trains
    assert (dm.role == 1).sum() == 8 and (dm.role == 2).sum() == 16
    train = table.values[dm.role == 0]
    np.testing.assert_allclose(dm.mean, train.mean(0))
    np.testing.assert_allclose(dm.std, train.std(0))
    assert not np.allclose(dm.mean, table.values.mean(0))  # held-out rows do not leak into the statistics
    test = dm.datasets[2]
    assert len(test) == 2 and test.values.shape[1:] == (12, 8)
    test_rows = {tuple(np.round(w.T.numpy(), 4).tolist()[0]) for w in test.values}
    for w in dm.datasets[0].values:  # no training window contains a test year
        assert not any(tuple(np.round(r, 4).tolist()) in test_rows for r in w.T.numpy())
    batch = next(iter(dm.train_dataloader()))
    assert batch["values"].shape[1:] == (12, 8) and batch["observed"].min() == 1
    meta = dm.table_meta()
    assert meta["time_column"] == "YEAR" and meta["window"] == 8 and len(meta["std"]) == 12
    # the split is fixed by the seed
    assert np.array_equal(split_rows(61, 8, 0.1, 0.3, 0), dm.role)
    assert not np.array_equal(split_rows(61, 8, 0.1, 0.3, 1), dm.role)


def _frame(n=40, k=3):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"f{i}" for i in range(k)])
    df.insert(0, "time", pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"))
    return df


def test_own_csv_with_gaps_and_parquet(tmp_path):
    df = _frame()
    df.loc[3, "f1"] = np.nan
    df.loc[10:14, "f2"] = np.nan
    path = tmp_path / "s.csv"
    df.to_csv(path, index=False)
    dm = TimeSeriesDataModule(path=str(path), time_column="time", window=5, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    assert dm.n_features == 3
    train = df[["f0", "f1", "f2"]].to_numpy()[dm.role == 0]
    np.testing.assert_allclose(dm.mean, np.nanmean(train, 0))
    obs = torch.cat([dm.datasets[r].observed for r in (0, 1, 2)])
    assert obs.min() == 0  # the gaps reach the windows as unobserved
    t = read_wide_table(path, "time")
    fill = np.full(t.values.shape, 9.5)
    out = filled_frame(t, fill)
    assert out.loc[3, "f1"] == "9.5" and out.loc[2, "f1"] == t.raw.loc[2, "f1"]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        df.to_csv(tmp_path / "s.parquet", index=False)  # any bytes: reading needs the engine first
        with pytest.raises(PolydiffError, match="pyarrow"):
            read_wide_table(tmp_path / "s.parquet", "time")
    else:
        df.to_parquet(tmp_path / "s.parquet")
        pq = read_wide_table(tmp_path / "s.parquet", "time")
        np.testing.assert_array_equal(np.isnan(pq.values), np.isnan(t.values))


@pytest.mark.parametrize("case, message", [
    ("text_column", "column 'f1' is not numeric"),
    ("no_time", "no time column 'time'"),
    ("empty_feature", r"feature column\(s\) \['f2'\] are entirely missing"),
    ("too_short", r"data.window \(50 steps\) is longer than"),
    ("missing_file", "does not exist"),
    ("bad_suffix", "unknown file type '.xlsx'"),
    ("infinite", "infinite value"),
    ("too_few_blocks", "too few"),
    ("unsorted", "not in time order"),
])
def test_bad_inputs_give_clear_errors(tmp_path, case, message):
    df = _frame()
    window = 50 if case == "too_short" else (15 if case == "too_few_blocks" else 5)
    path = tmp_path / ("s.xlsx" if case == "bad_suffix" else "s.csv")
    if case == "text_column":
        df["f1"] = df["f1"].astype(object)
        df.loc[7, "f1"] = "n/a?"
    if case == "no_time":
        df = df.rename(columns={"time": "date"})
    if case == "empty_feature":
        df["f2"] = np.nan
    if case == "unsorted":
        df.loc[[4, 5], "time"] = df.loc[[5, 4], "time"].to_numpy()
    if case == "infinite":
        df.loc[2, "f0"] = np.inf
    if case != "missing_file":
        df.to_csv(path, index=False)
    dm = TimeSeriesDataModule(path=str(path), time_column="time", window=window)
    with pytest.raises(PolydiffError, match=message):
        dm.setup()


def test_imputed_cells_take_the_precision_of_their_column(tmp_path):
    path = tmp_path / "two_decimals.csv"
    path.write_text("time,a,b\n1,2.31,10\n2,,12\n3,2.35,\n4,2.40,15\n")
    t = read_wide_table(path, "time")
    fill = np.full(t.values.shape, 2.3456789)
    out = filled_frame(t, fill)
    assert out.loc[1, "a"] == "2.35" and out.loc[2, "b"] == "2"  # as many decimals as the column's own cells
    assert out.loc[0, "a"] == "2.31" and out.loc[3, "a"] == "2.40"  # observed cells byte for byte
    assert filled_frame(t, fill, full_precision=True).loc[1, "a"] == repr(2.3456789)
