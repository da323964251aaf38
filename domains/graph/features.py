"""Structural features of the noisy graph, given to the denoiser as extra inputs (DiGress, Vignac et al. 2023, Sec. 4.2).

A message-passing or attention network alone cannot count cycles or see the spectrum; DiGress adds them, computed on the
noisy adjacency at every step. All features here are permutation-equivariant (node features) or invariant (graph
features), so the denoiser stays equivariant:

* cycle counts through each node (3-, 4-, 5-cycles) and in the graph, from traces of adjacency powers;
* the combinatorial Laplacian spectrum: the number of connected components and the first ``k`` non-zero
  eigenvalues; per node, the size of its connected component, read from the projector onto the Laplacian's null space
  (independent of the eigenvector basis, unlike raw eigenvectors whose signs are arbitrary).
"""

import torch
from torch import Tensor


def _diag(m: Tensor) -> Tensor:
    return torch.diagonal(m, dim1=-2, dim2=-1)


def cycle_features(adj: Tensor) -> tuple[Tensor, Tensor]:
    """Cycle counts of a batch of symmetric 0/1 adjacency matrices ``[B, n, n]`` (padding rows/columns all zero).

    Returns per-node counts ``[B, n, 3]`` of the 3-, 4- and 5-cycles through each node and per-graph counts ``[B, 3]``.
    Closed walks minus the non-simple ones (Harary & Manvel 1971; Alon, Yuster & Zwick 1997), with d the degrees,
    T = diag(A^3) and t = A * A^2 (elementwise: triangles on each edge):
    c3 = T / 2; c4 = (diag(A^4) - d (d - 1) - A d) / 2; c5 = (diag(A^5) - 2 T d - 2 t d - A T + 5 T) / 2. The c5 form
    sums to Harary & Manvel's 10 C5 = tr A^5 - 5 sum_i (d_i - 1) T_i; tests check all three against enumeration. Graph
    totals divide the node sums by 3, 4 and 5.
    """
    a = adj.double()
    a2 = a @ a
    a3 = a2 @ a
    a4 = a3 @ a
    a5 = a4 @ a
    d = a.sum(-1)
    t = _diag(a3)
    c3 = t / 2
    c4 = (_diag(a4) - d * (d - 1) - (a @ d.unsqueeze(-1)).squeeze(-1)) / 2
    tri_edges = a * a2
    c5 = (_diag(a5) - 2 * t * d - 2 * (tri_edges @ d.unsqueeze(-1)).squeeze(-1) - (a @ t.unsqueeze(-1)).squeeze(-1)
          + 5 * t) / 2
    node = torch.stack([c3, c4, c5], -1)
    graph = torch.stack([c3.sum(-1) / 3, c4.sum(-1) / 4, c5.sum(-1) / 5], -1)
    return node.to(adj.dtype if adj.is_floating_point() else torch.float32), graph.to(
        adj.dtype if adj.is_floating_point() else torch.float32)


def spectral_features(adj: Tensor, mask: Tensor, k: int = 5, tol: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Laplacian features of ``adj`` ``[B, n, n]`` with node ``mask`` ``[B, n]``.

    Returns per-node ``[B, n, 1]`` (size of the node's connected component / number of nodes) and per-graph ``[B, 1 + k]``
    (number of connected components / number of nodes, then the first ``k`` non-zero Laplacian eigenvalues / number of
    nodes, zero-padded). Padding nodes get a large diagonal so their eigenvalues sort last (as in DiGress).
    """
    b, n, _ = adj.shape
    m = mask.double()
    a = adj.double() * m.unsqueeze(1) * m.unsqueeze(2)
    lap = torch.diag_embed(a.sum(-1)) - a
    lap = lap + torch.diag_embed((1 - m) * 2.0 * n + (1 - m) * torch.arange(n, dtype=torch.float64, device=adj.device))
    evals, evecs = torch.linalg.eigh(lap)
    num = m.sum(-1).clamp(min=1)
    zero = (evals.abs() < tol * n) & (torch.arange(n, device=adj.device) < num.unsqueeze(-1))
    components = zero.sum(-1).double()
    # projector onto the null space: P_ii = 1 / |component of i|; basis-free, so degenerate eigenvalues do not matter
    proj = (evecs * zero.unsqueeze(1)) @ evecs.transpose(-1, -2)
    comp_size = torch.where(m > 0, 1.0 / _diag(proj).clamp(min=1e-6), torch.zeros_like(m))
    node = (comp_size / num.unsqueeze(-1)).unsqueeze(-1)
    # the first k non-zero eigenvalues of the real nodes
    idx = torch.arange(n, device=adj.device)
    real_nonzero = (~zero) & (idx < num.unsqueeze(-1))
    order = torch.where(real_nonzero, idx.expand(b, n).double(), torch.full_like(evals, float("inf"))).argsort(-1)
    picked = evals.gather(-1, order[:, :k]) if n >= k else torch.cat(
        [evals.gather(-1, order), evals.new_zeros(b, k - n)], -1)
    valid = real_nonzero.gather(-1, order[:, :k]) if n >= k else torch.cat(
        [real_nonzero.gather(-1, order), real_nonzero.new_zeros(b, k - n)], -1)
    picked = torch.where(valid, picked, torch.zeros_like(picked)) / num.unsqueeze(-1)
    graph = torch.cat([(components / num).unsqueeze(-1), picked], -1)
    dtype = adj.dtype if adj.is_floating_point() else torch.float32
    return node.to(dtype), graph.to(dtype)


def structural_features(adj: Tensor, mask: Tensor, k_eigenvalues: int = 5) -> tuple[Tensor, Tensor]:
    """All structural features: per node ``[B, n, 5]`` (cycles scaled by 1/10, degree / n, component share) and per graph
    ``[B, 4 + k]`` (cycles / 10, components and eigenvalues). Padding nodes get zeros."""
    m = mask.to(adj.dtype if adj.is_floating_point() else torch.float32)
    a = adj.float() * m.unsqueeze(1) * m.unsqueeze(2)
    num = m.sum(-1, keepdim=True).clamp(min=1)
    cyc_node, cyc_graph = cycle_features(a)
    spec_node, spec_graph = spectral_features(a, mask, k_eigenvalues)
    node = torch.cat([cyc_node / 10, (a.sum(-1) / num).unsqueeze(-1), spec_node], -1) * m.unsqueeze(-1)
    graph = torch.cat([cyc_graph / 10, spec_graph], -1)
    return node, graph


NUM_NODE_FEATURES = 5


def num_graph_features(k_eigenvalues: int) -> int:
    return 3 + 1 + k_eigenvalues
