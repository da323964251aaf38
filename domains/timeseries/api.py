"""The imputer's Python API: many imputations of windows or of a whole series, with any core sampler.

:class:`ImputationAPI` is a mixin of :class:`polydiff.domains.timeseries.TimeSeriesImputation`; it relies on the
model's normalisation, stored data statistics and ``generate``.
"""

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError


class ImputationAPI:
    """``impute`` (windows, model scale) and ``impute_series`` (a whole series, data scale)."""

    @torch.no_grad()
    def impute(self, z: Tensor, cond_mask: Tensor, num_samples: int, sampler: Optional[SamplerConfig] = None,
               seed: int = 0) -> Tensor:
        """``num_samples`` imputations ``[N, B, K, L]`` (model scale) of windows ``z`` given the values where ``cond_mask``
        is 1; those values are returned unchanged."""
        b = z.shape[0]
        cond_values = z * cond_mask
        per_call = max(1, self.hparams.max_batch // max(b, 1))
        out = []
        for i, start in enumerate(range(0, num_samples, per_call)):
            n = min(per_call, num_samples - start)
            cond = {"values": cond_values.repeat(n, 1, 1), "cond_mask": cond_mask.repeat(n, 1, 1)}
            x = self.generate((n * b, *z.shape[1:]), cond=cond, sampler=sampler, seed=seed + 7919 * i)
            out.append(x.to(z.dtype).view(n, *z.shape))
        samples = torch.cat(out, dim=0)
        return cond_mask * z + (1 - cond_mask) * samples

    @torch.no_grad()
    def impute_series(self, values: np.ndarray, num_samples: int, sampler: Optional[SamplerConfig] = None,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median, 5 % and 95 % quantile ``[T, K]`` of ``num_samples`` imputations of a whole series ``[T, K]`` (NaN where
        missing; observed values come back unchanged).

        The series is cut into consecutive windows of the training length (the last one aligned with the end, a short
        series padded with missing steps); each window is imputed from its own observed values.
        """
        length = int(self._require_meta()["window"])
        t_total = values.shape[0]
        padded = np.full((max(t_total, length), values.shape[1]), np.nan)
        padded[:t_total] = values
        starts = list(range(0, padded.shape[0] - length + 1, length))
        if starts[-1] + length < padded.shape[0]:
            starts.append(padded.shape[0] - length)
        windows = np.stack([padded[s:s + length].T for s in starts])  # [W, K, L]
        observed = torch.from_numpy(~np.isnan(windows)).to(self.device, torch.float32)
        raw = torch.from_numpy(np.nan_to_num(windows)).to(self.device, torch.float32)
        z = self.normalise(raw, observed)
        samples = self.denormalise(self.impute(z, observed, num_samples, sampler, seed)).double()
        stats = [samples.median(dim=0).values if num_samples % 2 else torch.quantile(samples, 0.5, dim=0),
                 torch.quantile(samples, 0.05, dim=0), torch.quantile(samples, 0.95, dim=0)]
        outputs = []
        for s_all in stats:
            series = np.empty_like(padded)
            for w, s in enumerate(starts):
                series[s:s + length] = s_all[w].T.cpu().numpy()
            series = series[:t_total]
            series[~np.isnan(values)] = values[~np.isnan(values)]
            outputs.append(series)
        return outputs[0], outputs[1], outputs[2]

    def sample_native(self, n: int, sampler: SamplerConfig, seed: int,
                      values: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`polydiff.core.base.PolydiffModule.sample`: median, 5 % and 95 % quantile of ``n`` imputations of the
        series ``values`` ``[T, K]`` (NaN where missing; an imputer needs one)."""
        if values is None:
            raise PolydiffError("an imputer samples the gaps of a series: pass values=<[T, K] array, NaN where missing>")
        return self.impute_series(np.asarray(values, dtype=np.float64), n, sampler, seed)
