"""The graph model's Python API: node counts from the training histogram and generated graphs as networkx.

:class:`GraphSamplingAPI` is a mixin of :class:`polydiff.domains.graph.GraphDiffusionModule`; it relies on the model's
``node_counts`` buffer, ``eval_batch_size`` and ``generate``.
"""

from typing import Optional

import networkx as nx
import torch
from torch import Tensor

from polydiff.core.discrete import CategoricalSamplerConfig
from polydiff.core.utils import PolydiffError


def dense_to_nx(nodes: Tensor, edges: Tensor, n: int) -> nx.Graph:
    """One dense graph (categories, first ``n`` nodes real) -> networkx with integer ``type`` attributes."""
    g = nx.Graph()
    for i in range(n):
        g.add_node(i, type=int(nodes[i]))
    e = edges[:n, :n]
    rows, cols = torch.nonzero(torch.triu(e, 1), as_tuple=True)
    for u, v in zip(rows.tolist(), cols.tolist()):
        g.add_edge(u, v, type=int(e[u, v]))
    return g


class GraphSamplingAPI:
    """``sample_node_counts`` and ``sample_graphs``."""

    def sample_node_counts(self, num: int, generator: torch.Generator) -> Tensor:
        """Node counts drawn from the training histogram (DiGress)."""
        probs = self.node_counts.float().cpu()
        if probs.sum() <= 0:
            raise PolydiffError("the model has no node-count histogram; train it (polydiff fit) before sampling")
        return torch.multinomial(probs / probs.sum(), num, replacement=True, generator=generator)

    @torch.no_grad()
    def sample_graphs(self, num: int, sampler: Optional[CategoricalSamplerConfig] = None, seed: int = 0,
                      progress: bool = False) -> list[nx.Graph]:
        """``num`` generated graphs (networkx, ``type`` attributes) from a fixed seed, in batches of eval_batch_size."""
        gen = torch.Generator().manual_seed(seed)
        counts = self.sample_node_counts(num, gen)
        graphs: list[nx.Graph] = []
        for start in range(0, num, self.eval_batch_size):
            sizes = counts[start:start + self.eval_batch_size]
            b, n = len(sizes), int(sizes.max())
            node_mask = (torch.arange(n).unsqueeze(0) < sizes.unsqueeze(1)).float().to(self.device)
            nodes, edges = self.generate([(b, n), (b, n, n)], cond=node_mask, sampler=sampler, seed=seed + start,
                                         progress=progress, mask=(node_mask, None))
            for i in range(b):
                graphs.append(dense_to_nx(nodes[i].cpu(), edges[i].cpu(), int(sizes[i])))
        return graphs

    def sample_native(self, n: int, sampler: CategoricalSamplerConfig, seed: int) -> list[nx.Graph]:
        """:meth:`polydiff.core.base.PolydiffModule.sample`: ``n`` networkx graphs."""
        return self.sample_graphs(n, sampler, seed)
