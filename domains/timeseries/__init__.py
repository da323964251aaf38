"""Time-series imputation and forecasting with a CSDI-style conditional diffusion model (probabilistic output)."""

from polydiff.domains.timeseries.module import TimeSeriesImputation
from polydiff.domains.timeseries.network import CSDINetwork

__all__ = ["CSDINetwork", "TimeSeriesImputation"]
