"""Core helpers for distributed evaluation, checked without a process group."""

from types import SimpleNamespace

import torch

from polydiff.core.utils import sum_across_ranks


def test_sum_across_ranks_adds_per_rank_totals():
    totals = {"nats": 3.5, "count": 2.0, "a": -1.0}
    assert sum_across_ranks(SimpleNamespace(_trainer=None), totals) == totals  # no trainer: a copy
    one = SimpleNamespace(_trainer=SimpleNamespace(world_size=1), device="cpu")
    assert sum_across_ranks(one, totals) == totals
    ranks = [{"nats": 3.5, "count": 2.0, "a": -1.0}, {"nats": 0.5, "count": 7.0, "a": 4.0}]

    class TwoRanks:  # all_reduce(sum) of rank 0's vector with rank 1's, keys in the same (sorted) order on both
        def reduce(self, vec, reduce_op):
            assert reduce_op == "sum"
            return vec + torch.tensor([ranks[1][k] for k in sorted(ranks[1])], dtype=torch.float64)

    module = SimpleNamespace(_trainer=SimpleNamespace(world_size=2, strategy=TwoRanks()), device="cpu")
    assert sum_across_ranks(module, ranks[0]) == {"nats": 4.0, "count": 9.0, "a": 3.0}
