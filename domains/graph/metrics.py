"""Graph generation metrics: MMD of graph statistics and V.U.N. (validity, uniqueness, novelty).

MMD follows GraphRNN (You et al. 2018, ``eval/stats.py``) as used by GDSS and, with the total-variation kernel, by
SPECTRE / DiGress: every graph becomes a descriptor (a normalised histogram or a vector); the squared MMD between the
generated set X and the reference set Y is the biased estimate

    MMD^2 = mean_{x,x'} k(x, x') + mean_{y,y'} k(y, y') - 2 mean_{x,y} k(x, y)

(all pairs, including i = j, as in the reference code). Kernels on histograms p, q:

* ``emd`` (GraphRNN / GDSS): k = exp(-EMD(p, q)^2 / (2 sigma^2)); for 1-D histograms with ground distance |i - j| / scale
  the earth mover's distance is sum_i |P_i - Q_i| / scale with P, Q the cumulative sums (the closed form of pyemd's
  answer for that distance matrix).
* ``tv`` (SPECTRE / DiGress): k = exp(-TV(p, q)^2 / (2 sigma^2)), TV = sum_i |p_i - q_i| / 2.

Descriptors and sigmas (as in those repositories): degree histogram (sigma 1); clustering coefficients in 100 bins on
[0, 1] (sigma 0.1, EMD scale 100); normalised-Laplacian eigenvalues in 200 bins on [-1e-5, 2] (sigma 1, always the TV
kernel, as SPECTRE / DiGress); 4-node orbit
counts (ORCA's 15 node orbits of graphlets up to 4 nodes, averaged over nodes, Gaussian kernel on vectors, sigma 30).
"""

from itertools import combinations
from typing import Callable, Literal, Sequence

import networkx as nx
import numpy as np
from scipy.spatial.distance import cdist

Kernel = Literal["emd", "tv"]


# ---------------------------------------------------------------------------------------------------- kernels and MMD
def _pad(hists: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(hists), length))
    for i, h in enumerate(hists):
        out[i, : len(h)] = h
    return out


def _normalise(h: np.ndarray) -> np.ndarray:
    s = h.sum(axis=1, keepdims=True)
    return np.divide(h, s, out=np.zeros_like(h), where=s > 0)


def histogram_kernel(a: np.ndarray, b: np.ndarray, kernel: Kernel, sigma: float, scale: float = 1.0) -> np.ndarray:
    """Kernel matrix between rows of normalised histograms ``a`` [N, K] and ``b`` [M, K]."""
    if kernel == "emd":
        d = cdist(np.cumsum(a, axis=1), np.cumsum(b, axis=1), metric="cityblock") / scale
    elif kernel == "tv":
        d = cdist(a, b, metric="cityblock") / 2
    else:
        raise ValueError(f"unknown kernel {kernel!r}; choose emd or tv")
    return np.exp(-(d**2) / (2 * sigma**2))


def gaussian_kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-|x - y|^2 / (2 sigma^2)) between rows of ``a`` and ``b`` (GraphRNN's kernel for orbit counts)."""
    return np.exp(-cdist(a, b, metric="sqeuclidean") / (2 * sigma**2))


def mmd2(x: np.ndarray, y: np.ndarray, kernel_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """Biased squared MMD between descriptor sets ``x`` and ``y`` (rows)."""
    if len(x) == 0 or len(y) == 0:
        return float("nan")
    return float(kernel_fn(x, x).mean() + kernel_fn(y, y).mean() - 2 * kernel_fn(x, y).mean())


# ---------------------------------------------------------------------------------------------------- descriptors
def degree_histograms(graphs: Sequence[nx.Graph]) -> list[np.ndarray]:
    return [np.asarray(nx.degree_histogram(g), dtype=float) for g in graphs]


def clustering_histograms(graphs: Sequence[nx.Graph], bins: int = 100) -> list[np.ndarray]:
    out = []
    for g in graphs:
        c = list(nx.clustering(g).values()) if g.number_of_nodes() else []
        out.append(np.histogram(c, bins=bins, range=(0.0, 1.0))[0].astype(float))
    return out


def spectrum_histograms(graphs: Sequence[nx.Graph], bins: int = 200) -> list[np.ndarray]:
    out = []
    for g in graphs:
        if g.number_of_nodes() == 0:
            out.append(np.zeros(bins))
            continue
        lap = nx.normalized_laplacian_matrix(g, nodelist=sorted(g.nodes())).toarray()
        eig = np.linalg.eigvalsh(lap)
        out.append(np.histogram(eig, bins=bins, range=(-1e-5, 2.0))[0].astype(float))
    return out


_COMBOS: dict[int, np.ndarray] = {}


def _combos(n: int, k: int) -> np.ndarray:
    key = n * 10 + k
    if key not in _COMBOS:
        _COMBOS[key] = np.fromiter((i for c in combinations(range(n), k) for i in c), dtype=np.int32).reshape(-1, k)
    return _COMBOS[key]


def orbit_counts(g: nx.Graph) -> np.ndarray:
    """Per-node counts of the 15 ORCA orbits of graphlets on 2 to 4 nodes (Pržulj 2007 numbering), ``[n, 15]``.

    Orbits: 0 edge; 1 / 2 end / middle of a 3-path; 3 triangle; 4 / 5 end / middle of a 4-path; 6 / 7 leaf / centre of a
    3-star; 8 4-cycle; 9 / 10 / 11 tail end / degree-2 / degree-3 node of a tailed triangle; 12 / 13 degree-2 / degree-3
    node of a diamond; 14 4-clique. Counts are over induced connected subgraphs (exhaustive over node subsets: fine for the
    small graphs here, O(n^4)).
    """
    nodes = sorted(g.nodes())
    n = len(nodes)
    out = np.zeros((n, 15))
    if n == 0:
        return out
    a = nx.to_numpy_array(g, nodelist=nodes).astype(bool)
    out[:, 0] = a.sum(1)
    if n >= 3:
        c = _combos(n, 3)
        e = np.stack([a[c[:, 0], c[:, 1]], a[c[:, 0], c[:, 2]], a[c[:, 1], c[:, 2]]], 1).astype(np.int8)
        m = e.sum(1)
        deg = np.stack([e[:, 0] + e[:, 1], e[:, 0] + e[:, 2], e[:, 1] + e[:, 2]], 1)
        path = m == 2
        for j in range(3):
            np.add.at(out[:, 1], c[path & (deg[:, j] == 1), j], 1)
            np.add.at(out[:, 2], c[path & (deg[:, j] == 2), j], 1)
            np.add.at(out[:, 3], c[m == 3, j], 1)
    if n >= 4:
        c = _combos(n, 4)
        pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
        e = np.stack([a[c[:, i], c[:, j]] for i, j in pairs], 1).astype(np.int8)
        m = e.sum(1)
        deg = np.zeros((len(c), 4), dtype=np.int8)
        for k, (i, j) in enumerate(pairs):
            deg[:, i] += e[:, k]
            deg[:, j] += e[:, k]
        maxd = deg.max(1)
        connected = (m >= 3) & (deg.min(1) > 0)
        path4 = connected & (m == 3) & (maxd == 2)
        star = connected & (m == 3) & (maxd == 3)
        cycle = connected & (m == 4) & (maxd == 2)
        paw = connected & (m == 4) & (maxd == 3)
        diamond = connected & (m == 5)
        clique = m == 6
        for j in range(4):
            d = deg[:, j]
            for orbit, sel in ((4, path4 & (d == 1)), (5, path4 & (d == 2)), (6, star & (d == 1)), (7, star & (d == 3)),
                               (8, cycle), (9, paw & (d == 1)), (10, paw & (d == 2)), (11, paw & (d == 3)),
                               (12, diamond & (d == 2)), (13, diamond & (d == 3)), (14, clique)):
                np.add.at(out[:, orbit], c[sel, j], 1)
    return out


def orbit_descriptors(graphs: Sequence[nx.Graph]) -> np.ndarray:
    """Per-graph mean orbit counts (GraphRNN's ``orbit_stats_all``: sum over nodes / number of nodes)."""
    return np.stack([orbit_counts(g).sum(0) / max(1, g.number_of_nodes()) for g in graphs]) if graphs else np.zeros((0, 15))


# ---------------------------------------------------------------------------------------------------- MMD metrics
def degree_mmd(gen: Sequence[nx.Graph], ref: Sequence[nx.Graph], kernel: Kernel = "emd") -> float:
    h = degree_histograms(gen) + degree_histograms(ref)
    h = _normalise(_pad(h, max(len(x) for x in h)))
    return mmd2(h[: len(gen)], h[len(gen):], lambda a, b: histogram_kernel(a, b, kernel, 1.0))


def clustering_mmd(gen: Sequence[nx.Graph], ref: Sequence[nx.Graph], kernel: Kernel = "emd") -> float:
    h = _normalise(np.stack(clustering_histograms(gen) + clustering_histograms(ref)))
    return mmd2(h[: len(gen)], h[len(gen):], lambda a, b: histogram_kernel(a, b, kernel, 0.1, scale=100.0))


def spectrum_mmd(gen: Sequence[nx.Graph], ref: Sequence[nx.Graph], kernel: Kernel = "tv") -> float:
    h = _normalise(np.stack(spectrum_histograms(gen) + spectrum_histograms(ref)))
    return mmd2(h[: len(gen)], h[len(gen):], lambda a, b: histogram_kernel(a, b, kernel, 1.0, scale=1.0))


def orbit_mmd(gen: Sequence[nx.Graph], ref: Sequence[nx.Graph]) -> float:
    return mmd2(orbit_descriptors(gen), orbit_descriptors(ref), lambda a, b: gaussian_kernel(a, b, 30.0))


# ---------------------------------------------------------------------------------------------------- V.U.N.
#: the SBM validity test's model: the parameters of :func:`polydiff.datasets.graphs.generate_sbm`'s defaults
SBM_TEST = {"p_in": 0.5, "p_out": 0.02, "blocks": (2, 4), "sizes": (8, 16)}


def sbm_pvalue(g: nx.Graph, p_in: float = 0.5, p_out: float = 0.02, blocks: tuple[int, int] = (2, 4),
               sizes: tuple[int, int] = (8, 16), seed: int = 0) -> float:
    """How well ``g`` fits a stochastic block model with these parameters: SPECTRE's test (Martinkus et al. 2022, used
    by DiGress), with Louvain communities (networkx, fixed seed) in place of graph-tool's minimum-description-length
    blocks. 0 when ``g`` is disconnected or the partition has a block count or block size outside the ranges; otherwise
    the mean over the block matrix of ``1 - chi2_1.cdf(W)``, ``W = (p_hat - p)^2 / (p_hat (1 - p_hat) + 1e-6)`` with
    ``p_hat`` the edge density within (diagonal) or between (off-diagonal) blocks. Valid above 0.9."""
    from scipy.stats import chi2

    if g.number_of_nodes() == 0 or not nx.is_connected(g):
        return 0.0
    communities = [sorted(c) for c in nx.community.louvain_communities(g, seed=seed)]
    k = len(communities)
    n = np.array([len(c) for c in communities], dtype=float)
    if not blocks[0] <= k <= blocks[1] or n.min() < sizes[0] or n.max() > sizes[1]:
        return 0.0
    label = {v: i for i, c in enumerate(communities) for v in c}
    edges = np.zeros((k, k))
    for u, v in g.edges():
        a, b = label[u], label[v]
        edges[a, b] += 1
        if a != b:
            edges[b, a] += 1
    pairs = np.outer(n, n)
    np.fill_diagonal(pairs, n * (n - 1) / 2)
    p_hat = edges / pairs
    target = np.full((k, k), p_out)
    np.fill_diagonal(target, p_in)
    wald = (p_hat - target) ** 2 / (p_hat * (1 - p_hat) + 1e-6)
    return float((1 - chi2.cdf(wald, 1)).mean())


def is_valid(g: nx.Graph, validity: Literal["planar", "sbm", "connected", "none"]) -> bool:
    """Planar: connected and planar (DiGress's planar validity). SBM: SPECTRE's block-model test (:func:`sbm_pvalue`
    above 0.9, with :data:`SBM_TEST`). Connected: connected. None: always valid."""
    if validity == "none":
        return True
    if g.number_of_nodes() == 0 or not nx.is_connected(g):
        return False
    if validity == "sbm":
        return sbm_pvalue(g, **SBM_TEST) > 0.9
    return nx.check_planarity(g)[0] if validity == "planar" else True


def _isomorphism_classes(graphs: Sequence[nx.Graph]) -> list[int]:
    """Class id per graph under isomorphism (Weisfeiler-Lehman hash buckets, then exact checks within a bucket)."""
    reps: dict[str, list[tuple[int, nx.Graph]]] = {}
    out, next_id = [], 0
    for g in graphs:
        h = nx.weisfeiler_lehman_graph_hash(g, iterations=3)
        bucket = reps.setdefault(h, [])
        for cid, r in bucket:
            if nx.is_isomorphic(g, r):
                out.append(cid)
                break
        else:
            bucket.append((next_id, g))
            out.append(next_id)
            next_id += 1
    return out


def is_in(g: nx.Graph, pool_by_hash: dict[str, list[nx.Graph]]) -> bool:
    return any(nx.is_isomorphic(g, r) for r in pool_by_hash.get(nx.weisfeiler_lehman_graph_hash(g, iterations=3), []))


def vun(gen: Sequence[nx.Graph], train: Sequence[nx.Graph],
        validity: Literal["planar", "sbm", "connected", "none"]) -> dict[str, float]:
    """Validity, uniqueness (first of each isomorphism class among the generated graphs), novelty (not isomorphic to a
    training graph) and V.U.N. (valid, unique and novel at once; DiGress, Vignac et al. 2023), as fractions."""
    if not gen:
        return {"valid": float("nan"), "unique": float("nan"), "novel": float("nan"), "vun": float("nan")}
    valid = np.array([is_valid(g, validity) for g in gen])
    classes = _isomorphism_classes(gen)
    seen, unique = set(), []
    for c in classes:
        unique.append(c not in seen)
        seen.add(c)
    unique = np.array(unique)
    pool: dict[str, list[nx.Graph]] = {}
    for t in train:
        pool.setdefault(nx.weisfeiler_lehman_graph_hash(t, iterations=3), []).append(t)
    novel = np.array([not is_in(g, pool) for g in gen])
    return {"valid": float(valid.mean()), "unique": float(unique.mean()), "novel": float(novel.mean()),
            "vun": float((valid & unique & novel).mean())}


def evaluate(gen: Sequence[nx.Graph], ref: Sequence[nx.Graph], train: Sequence[nx.Graph],
             validity: Literal["planar", "sbm", "connected", "none"] = "none", kernel: Kernel = "emd",
             orbits: bool = True) -> dict[str, float]:
    """All metrics of ``gen`` against the reference (test) graphs and the training graphs (for novelty)."""
    out = {
        "degree_mmd": degree_mmd(gen, ref, kernel),
        "clustering_mmd": clustering_mmd(gen, ref, kernel),
        "spectrum_mmd": spectrum_mmd(gen, ref, "tv"),  # SPECTRE / DiGress's kernel for the spectrum, for both conventions
    }
    if orbits:
        out["orbit_mmd"] = orbit_mmd(gen, ref)
    out.update(vun(gen, train, validity))
    return out
