"""Probabilistic imputation metrics, accumulated over batches.

Point errors (MAE, RMSE) are of the median of the samples, as in CSDI. CRPS is CSDI's quantile-loss approximation
(Tashiro et al. 2021, eq. 11 and appendix E; code ``calc_quantile_CRPS``): for the quantile levels
a = 0.05, 0.10, ..., 0.95 the quantile loss ``QL_a(q, y) = 2 |(y - q)(1[y <= q] - a)|`` summed over the hidden values and
divided by ``sum |y|``, averaged over the levels. For a deterministic imputation every quantile equals the point value
and the CRPS reduces to ``sum |y - q| / sum |y|`` (the normalised MAE). Coverage is the share of hidden values inside the
[5 %, 95 %] sample interval (undefined, reported as NaN, for deterministic controls).
"""

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

#: CSDI's quantile levels for the CRPS
QUANTILE_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def quantile_loss(target: Tensor, q: Tensor, level: float, mask: Tensor) -> Tensor:
    """``2 sum |(y - q)(1[y <= q] - a)|`` over ``mask`` (CSDI ``quantile_loss``)."""
    return 2 * torch.sum(torch.abs((q - target) * mask * ((target <= q).to(target.dtype) - level)))


def sample_quantiles(samples: Tensor, levels: tuple[float, ...] = QUANTILE_LEVELS) -> Tensor:
    """Quantiles of ``samples`` ``[N, ...]`` over the sample axis: ``[len(levels), ...]`` (linear interpolation)."""
    lv = torch.tensor(levels, dtype=samples.dtype, device=samples.device)
    return torch.quantile(samples, lv, dim=0)


@dataclass
class ImputationScore:
    """Running sums for MAE, RMSE, CRPS and 90 % coverage over many batches."""

    abs_err: float = 0.0
    sq_err: float = 0.0
    count: float = 0.0
    abs_target: float = 0.0
    qloss: list[float] = field(default_factory=lambda: [0.0] * len(QUANTILE_LEVELS))
    covered: float = 0.0
    probabilistic: bool = True

    def add(self, target: Tensor, mask: Tensor, point: Tensor, quantiles: Tensor | None) -> None:
        """Add one batch: ``point`` the point estimate, ``quantiles`` ``[19, ...]`` at QUANTILE_LEVELS (None: deterministic,
        every quantile equals ``point``)."""
        target, mask, point = target.double(), mask.double(), point.double()
        err = (point - target) * mask
        self.abs_err += float(err.abs().sum())
        self.sq_err += float((err**2).sum())
        self.count += float(mask.sum())
        self.abs_target += float((target * mask).abs().sum())
        for i, a in enumerate(QUANTILE_LEVELS):
            q = point if quantiles is None else quantiles[i].double()
            self.qloss[i] += float(quantile_loss(target, q, a, mask))
        if quantiles is None:
            self.probabilistic = False
        else:
            lo, hi = quantiles[0].double(), quantiles[-1].double()
            self.covered += float((((target >= lo) & (target <= hi)).double() * mask).sum())

    def totals(self) -> dict[str, float]:
        """The running sums by name (to add them over the processes of a distributed test)."""
        return {"abs_err": self.abs_err, "sq_err": self.sq_err, "count": self.count, "abs_target": self.abs_target,
                "covered": self.covered, **{f"qloss{i}": q for i, q in enumerate(self.qloss)}}

    def set_totals(self, totals: dict[str, float]) -> None:
        """Replace the running sums by ``totals`` (as :meth:`totals` names them)."""
        self.abs_err, self.sq_err, self.count = totals["abs_err"], totals["sq_err"], totals["count"]
        self.abs_target, self.covered = totals["abs_target"], totals["covered"]
        self.qloss = [totals[f"qloss{i}"] for i in range(len(self.qloss))]

    def result(self) -> dict[str, float]:
        n = max(self.count, 1.0)
        denom = self.abs_target if self.abs_target > 0 else float("nan")
        return {
            "mae": self.abs_err / n,
            "rmse": math.sqrt(self.sq_err / n),
            "crps": sum(self.qloss) / len(self.qloss) / denom,
            "coverage90": self.covered / n if self.probabilistic else float("nan"),
            "n_hidden": self.count,
        }
