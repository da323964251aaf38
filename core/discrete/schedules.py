"""Keep-probability schedules ``alpha_bar(t)`` of categorical processes, for continuous time ``t`` in [0, 1].

``alpha_bar(t)`` is the probability that a category has not yet been resampled from the prior by time ``t``:
``alpha_bar(0) = 1`` (data) and ``alpha_bar(1) = 0`` (prior). A discrete-time process with ``T`` steps uses the times
``k / T``; its one-step keep probability is ``a_k = alpha_bar(k/T) / alpha_bar((k-1)/T)``.

* ``linear``: ``alpha_bar(t) = 1 - t``. With ``T`` steps this is exactly D3PM's absorbing schedule
  ``beta_k = 1 / (T - k + 1)`` (Austin et al. 2021, sec. 4 / appendix A.2) and MDLM's linear schedule (Sahoo et al. 2024).
* ``cosine``: ``alpha_bar(t) = cos(pi/2 (t + s) / (1 + s))^2 / cos(pi/2 s / (1 + s))^2`` with ``s = 0.008``
  (Nichol & Dhariwal 2021, eq. 17), which D3PM uses for its uniform transitions (Austin et al. 2021, sec. 4);
  clamped to exactly 0 at ``t = 1``.
"""

import math
from typing import Literal

import torch
from torch import Tensor

from polydiff.core.utils import PolydiffError

ScheduleName = Literal["linear", "cosine"]
SCHEDULES = ("linear", "cosine")
_COSINE_S = 0.008


def alpha_bar(schedule: str, t: Tensor | float) -> Tensor:
    """Keep probability ``alpha_bar(t)`` (float64) of the named schedule."""
    t = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        f = torch.cos((t + _COSINE_S) / (1 + _COSINE_S) * math.pi / 2) ** 2
        f0 = math.cos(_COSINE_S / (1 + _COSINE_S) * math.pi / 2) ** 2
        return torch.where(t >= 1.0, torch.zeros_like(t), (f / f0).clamp(0.0, 1.0))
    raise PolydiffError(f"unknown categorical schedule {schedule!r}; choose one of {list(SCHEDULES)}")


def alpha_bar_derivative(schedule: str, t: Tensor | float) -> Tensor:
    """``d alpha_bar / dt`` (float64, non-positive), for the continuous-time (MDLM) objective."""
    t = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
    if schedule == "linear":
        return -torch.ones_like(t)
    if schedule == "cosine":
        u = (t + _COSINE_S) / (1 + _COSINE_S) * math.pi / 2
        f0 = math.cos(_COSINE_S / (1 + _COSINE_S) * math.pi / 2) ** 2
        return -torch.sin(2 * u) * (math.pi / 2) / (1 + _COSINE_S) / f0
    raise PolydiffError(f"unknown categorical schedule {schedule!r}; choose one of {list(SCHEDULES)}")
