"""Deterministic imputation controls: per-feature mean, last observation carried forward, linear interpolation.

Each takes a batch of windows ``values [B, K, L]`` and ``cond [B, K, L]`` (1 where a value may be used) and returns a full
``[B, K, L]`` imputation that equals ``values`` where ``cond`` is 1. They see exactly what the model sees: the window.
A feature with no usable value in a window falls back to ``fallback`` (the training mean).
"""

import numpy as np
import torch
from torch import Tensor


def _per_series(values: Tensor, cond: Tensor, fallback: Tensor, fill) -> Tensor:
    v = values.detach().cpu().double().numpy()
    c = cond.detach().cpu().numpy() > 0.5
    fb = fallback.detach().cpu().double().numpy()
    out = np.empty_like(v)
    t = np.arange(v.shape[-1])
    for b in range(v.shape[0]):
        for k in range(v.shape[1]):
            known = c[b, k]
            out[b, k] = fb[k] if not known.any() else fill(t, v[b, k], known)
    return torch.from_numpy(out).to(values.device, values.dtype)


def mean_impute(values: Tensor, cond: Tensor, fallback: Tensor) -> Tensor:
    """Every gap gets the feature's mean over the training split (``fallback``)."""
    fb = fallback.to(values.dtype).view(1, -1, 1).expand_as(values)
    return torch.where(cond > 0.5, values, fb)


def _locf(t: np.ndarray, v: np.ndarray, known: np.ndarray) -> np.ndarray:
    idx = np.where(known, t, -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.argmax(known))
    idx[idx < 0] = first  # leading gaps take the first observation (next observation carried backward)
    return v[idx]


def locf_impute(values: Tensor, cond: Tensor, fallback: Tensor) -> Tensor:
    """Last observation carried forward within the window (leading gaps: next observation carried backward)."""
    return _per_series(values, cond, fallback, _locf)


def _linear(t: np.ndarray, v: np.ndarray, known: np.ndarray) -> np.ndarray:
    return np.interp(t, t[known], v[known])


def linear_impute(values: Tensor, cond: Tensor, fallback: Tensor) -> Tensor:
    """Linear interpolation in time between the nearest known values (constant beyond the first / last one)."""
    return _per_series(values, cond, fallback, _linear)


CONTROLS = {"mean": mean_impute, "locf": locf_impute, "linear": linear_impute}
