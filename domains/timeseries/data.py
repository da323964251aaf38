"""What the time-series model needs from its DataModule, as a structural type
(``polydiff.datasets.timeseries.TimeSeriesDataModule`` fits); the model checks it in ``connect_data`` and nowhere else
reaches into the data."""

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TimeSeriesData(Protocol):
    """Windows of a wide table, described by what the model stores in its checkpoints."""

    def table_meta(self) -> dict[str, Any]:
        """``columns`` (feature names), ``time_column``, ``window`` (length), per-feature ``mean`` and ``std`` of the
        training split, ``source``."""
        ...
