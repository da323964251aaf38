"""Small helpers shared by every part of the core."""

from typing import Any

import torch
from torch import Tensor


class PolydiffError(Exception):
    """A user-facing error: the message names the thing that is wrong and how to fix it.

    The CLI prints these as a single line (no traceback) and exits with status 2.
    """


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions so that ``x`` (shape ``[B]``) broadcasts against a tensor of rank ``ndim``.

    Every per-sample scalar in the core (alpha_t, sigma_t, weights) goes through this, so the maths works for data of any
    rank: vectors, images, videos, volumes, padded graphs.
    """
    if x.ndim > ndim:
        raise ValueError(f"append_dims: input has {x.ndim} dims but target rank is {ndim}")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


def batch_scalar(value: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """A ``[batch]`` float64 tensor on ``like``'s device from a Python number or a 0-d / 1-d tensor."""
    t = torch.as_tensor(value, dtype=torch.float64, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    return t


def sum_across_ranks(module: Any, totals: dict[str, float]) -> dict[str, float]:
    """Running sums of a test epoch added over the processes of a distributed run (a copy on one process).

    Under DDP each rank's test loader serves only its shard, so per-rank sums must be added before they become metrics;
    every rank must call this with the same keys (it is a collective).
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size == 1:
        return {k: float(v) for k, v in totals.items()}
    keys = sorted(totals)
    vec = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64, device=module.device)
    vec = trainer.strategy.reduce(vec, reduce_op="sum")
    return dict(zip(keys, vec.cpu().tolist()))


def training_seed() -> int:
    """The seed of the run (``seed_everything`` in the recipe, exported by Lightning as ``PL_GLOBAL_SEED``; 0 without)."""
    import os

    return int(os.environ.get("PL_GLOBAL_SEED", 0) or 0)
