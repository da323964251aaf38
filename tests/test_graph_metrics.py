"""Graph metrics against closed forms and brute force: orbit counts, cycle counts, EMD, MMD, V.U.N., controls."""

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from polydiff.datasets.graphs import generate_community_small, generate_planar
from polydiff.domains.graph.controls import erdos_renyi_control
from polydiff.domains.graph.features import cycle_features, spectral_features
from polydiff.domains.graph.metrics import (
    clustering_mmd,
    degree_mmd,
    evaluate,
    histogram_kernel,
    orbit_counts,
    spectrum_mmd,
    vun,
)

torch.set_num_threads(1)

SHAPES = {  # graphlet -> {degree inside the graphlet: ORCA orbit}
    "p4": (nx.path_graph(4), {1: 4, 2: 5}),
    "star": (nx.star_graph(3), {1: 6, 3: 7}),
    "c4": (nx.cycle_graph(4), {2: 8}),
    "paw": (nx.Graph([(0, 1), (1, 2), (0, 2), (2, 3)]), {1: 9, 2: 10, 3: 11}),
    "diamond": (nx.Graph([(0, 1), (1, 2), (0, 2), (2, 3), (1, 3)]), {2: 12, 3: 13}),
    "k4": (nx.complete_graph(4), {3: 14}),
}


def brute_orbits(g: nx.Graph) -> np.ndarray:
    n = g.number_of_nodes()
    out = np.zeros((n, 15))
    out[:, 0] = [d for _, d in sorted(g.degree())]
    for s in itertools.combinations(range(n), 3):
        h = g.subgraph(s)
        if h.number_of_edges() == 3:
            out[list(s), 3] += 1
        elif h.number_of_edges() == 2:
            for v in s:
                out[v, 1 if h.degree(v) == 1 else 2] += 1
    for s in itertools.combinations(range(n), 4):
        h = g.subgraph(s)
        for shape, orbit_of in SHAPES.values():
            if nx.is_isomorphic(h, shape):
                for v in s:
                    out[v, orbit_of[h.degree(v)]] += 1
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_orbit_counts_match_enumeration(seed):
    g = nx.gnp_random_graph(9, 0.45, seed=seed)
    assert np.array_equal(orbit_counts(g), brute_orbits(g))


def test_cycle_counts_match_enumeration():
    for seed in range(3):
        g = nx.gnp_random_graph(10, 0.4, seed=seed)
        a = torch.tensor(nx.to_numpy_array(g, nodelist=range(10)), dtype=torch.float32)[None]
        node, graph = cycle_features(a)
        cycles = list(nx.simple_cycles(g, length_bound=5))
        for k in (3, 4, 5):
            assert graph[0, k - 3].item() == pytest.approx(sum(len(c) == k for c in cycles), abs=1e-4)
            per = [sum(len(c) == k and v in c for c in cycles) for v in range(10)]
            assert torch.allclose(node[0, :, k - 3], torch.tensor(per, dtype=torch.float32), atol=1e-4)


def test_spectral_features_of_two_components_with_padding():
    g = nx.disjoint_union(nx.path_graph(3), nx.cycle_graph(4))  # Laplacian spectrum: 0, 0, 1, 2, 2, 3, 4
    a = torch.zeros(1, 9, 9)
    a[0, :7, :7] = torch.tensor(nx.to_numpy_array(g), dtype=torch.float32)
    mask = torch.zeros(1, 9)
    mask[0, :7] = 1
    node, graph = spectral_features(a, mask, k=5)
    assert torch.allclose(node[0, :, 0] * 7, torch.tensor([3, 3, 3, 4, 4, 4, 4, 0, 0.0]), atol=1e-4)
    assert torch.allclose(graph[0] * 7, torch.tensor([2, 1, 2, 2, 3, 4.0]), atol=1e-4)


def test_emd_kernel_is_the_1d_wasserstein_distance():
    rng = np.random.default_rng(0)
    p, q = rng.random((1, 12)), rng.random((1, 12))
    p, q = p / p.sum(), q / q.sum()
    w = wasserstein_distance(np.arange(12), np.arange(12), p[0], q[0])
    assert histogram_kernel(p, q, "emd", sigma=1.0)[0, 0] == pytest.approx(np.exp(-(w**2) / 2))
    tv = 0.5 * np.abs(p - q).sum()
    assert histogram_kernel(p, q, "tv", sigma=1.0)[0, 0] == pytest.approx(np.exp(-(tv**2) / 2))


def test_mmd_is_zero_for_identical_sets_and_controls_order_correctly():
    graphs = generate_community_small(60, seed=0)
    train, test = graphs[:40], graphs[40:]
    for fn in (degree_mmd, clustering_mmd, spectrum_mmd):
        assert fn(test, test) == pytest.approx(0.0, abs=1e-12)
    er = erdos_renyi_control(train, [g.number_of_nodes() for g in test], seed=0)
    floor = evaluate(train, test, train, "connected", "emd", orbits=False)
    control = evaluate(er, test, train, "connected", "emd", orbits=False)
    for k in ("degree_mmd", "clustering_mmd", "spectrum_mmd"):
        assert floor[k] < control[k], k
    # copying the training set: novelty 0 (and V.U.N. 0); the control is novel
    assert floor["novel"] == 0.0 and floor["vun"] == 0.0
    assert control["novel"] == 1.0


def test_planar_validity_uniqueness():
    planar = generate_planar(4, seed=0, num_nodes=12)
    k5 = nx.complete_graph(5)
    split = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))  # planar but not connected
    out = vun(planar + [k5, split, planar[0].copy()], train=planar[:1], validity="planar")
    assert out["valid"] == pytest.approx(5 / 7)        # K5 and the disconnected graph are invalid
    assert out["unique"] == pytest.approx(6 / 7)       # the copy of planar[0] repeats it
    assert out["novel"] == pytest.approx(5 / 7)        # planar[0] and its copy are in the training set
    assert out["vun"] == pytest.approx(3 / 7)          # planar[1..3]


def _two_blocks(intra_edges: int, inter_edges: int, seed: int = 0) -> nx.Graph:
    """Two blocks of 10 nodes with exactly these edge counts within each block and between them, connected."""
    rng = np.random.default_rng(seed)
    while True:
        g = nx.Graph()
        g.add_nodes_from(range(20))
        for block in (range(10), range(10, 20)):
            pairs = [(u, v) for u in block for v in block if u < v]
            g.add_edges_from(pairs[i] for i in rng.choice(len(pairs), intra_edges, replace=False))
        between = [(u, v) for u in range(10) for v in range(10, 20)]
        g.add_edges_from(between[i] for i in rng.choice(len(between), inter_edges, replace=False))
        if nx.is_connected(g):
            return g


def test_sbm_validity_follows_the_block_model_test():
    from polydiff.datasets.graphs import generate_sbm
    from polydiff.domains.graph.metrics import is_valid, sbm_pvalue

    # densities exactly at the model's (22.5 of 45 pairs -> 22; 2 of 100 pairs): Wald statistics near 0, p near 1
    exact = _two_blocks(22, 2)
    assert sbm_pvalue(exact) > 0.95 and is_valid(exact, "sbm")
    # dense blocks (40 of 45 pairs): W = (0.89 - 0.5)^2 / (0.89 * 0.11) = 1.55 on the diagonal -> invalid
    assert not is_valid(_two_blocks(40, 2), "sbm")
    assert sbm_pvalue(nx.path_graph(20)) == 0.0  # one long chain: not 2-4 blocks of 8-16 nodes, or far from p_in
    # the data's own graphs mostly pass; Erdős–Rényi graphs of the same density never do (measured: 0.72 and 0)
    train = generate_sbm(60, seed=0)
    rng = np.random.default_rng(1)
    er = [nx.gnp_random_graph(g.number_of_nodes(), nx.density(g), seed=int(rng.integers(2**31))) for g in train]
    assert np.mean([is_valid(g, "sbm") for g in train]) > 0.5
    assert np.mean([is_valid(g, "sbm") for g in er]) == 0.0
