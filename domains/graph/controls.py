"""Controls a graph generator must beat: density-matched Erdős–Rényi graphs."""

from typing import Sequence

import networkx as nx
import numpy as np


def density(graphs: Sequence[nx.Graph]) -> float:
    """Mean edge density 2m / (n (n - 1)) of graphs (the Erdős–Rényi control's p)."""
    vals = [nx.density(g) for g in graphs if g.number_of_nodes() > 1]
    return float(np.mean(vals)) if vals else 0.0


def erdos_renyi_control(reference: Sequence[nx.Graph], sizes: Sequence[int], seed: int) -> list[nx.Graph]:
    """Density-matched Erdős–Rényi graphs (G(n, p) with p the reference's mean density, n from ``sizes``): the control a
    generative model must beat."""
    p = density(reference)
    rng = np.random.default_rng(seed)
    return [nx.gnp_random_graph(int(n), p, seed=int(rng.integers(2**31))) for n in sizes]
