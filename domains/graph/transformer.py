"""A permutation-equivariant graph transformer over dense node, edge and graph features (DiGress, Vignac et al. 2023,
Sec. 4.2 and App. B.2, after Dwivedi & Bresson 2021).

Every layer updates three streams together:

* nodes X ``[B, n, dx]``: attention over the other nodes, whose per-feature scores ``Q_i * K_j / sqrt(d)`` are modulated by
  the edge features (FiLM: ``score * (E1 + 1) + E2``), then FiLM by the graph features;
* edges E ``[B, n, n, de]``: the modulated scores themselves, FiLM by the graph features;
* graph y ``[B, dy]``: its own MLP plus pooled node and edge statistics (mean, min, max, std over real nodes / pairs).

All operations act per node, per pair, or pool over nodes with the mask, so relabelling the nodes relabels the output
identically (tests check this); edge outputs are symmetrised ``(E + E^T) / 2`` for undirected graphs.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.domains.graph.features import NUM_NODE_FEATURES, num_graph_features, structural_features


def _pool(x: Tensor, mask: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Mean, min, max and std of ``x`` over ``dims`` where ``mask`` (broadcastable, 1 = real) is set (zeros if none)."""
    m = mask.to(x.dtype)
    real = m.sum(dims)
    cnt = real.clamp(min=1)
    mean = (x * m).sum(dims) / cnt
    has = (real > 0).to(x.dtype)
    mn = torch.where(m > 0, x, torch.full_like(x, 1e4)).amin(dims) * has
    mx = torch.where(m > 0, x, torch.full_like(x, -1e4)).amax(dims) * has
    centred = x - mean.reshape(mean.shape[0], *([1] * len(dims)), mean.shape[-1])
    var = (centred**2 * m).sum(dims) / cnt
    return torch.cat([mean, mn, mx, (var + 1e-8).sqrt()], -1)


class GraphTransformerLayer(nn.Module):
    """One node / edge / graph update (DiGress's ``XEyTransformerLayer``) with residuals, LayerNorm and feed-forwards."""

    def __init__(self, dx: int, de: int, dy: int, heads: int, ffn_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if dx % heads:
            raise ValueError(f"hidden_nodes {dx} must be divisible by heads {heads}")
        self.heads, self.df = heads, dx // heads
        self.q, self.k, self.v = nn.Linear(dx, dx), nn.Linear(dx, dx), nn.Linear(dx, dx)
        self.e_mul, self.e_add = nn.Linear(de, dx), nn.Linear(de, dx)
        self.y_e_mul, self.y_e_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.y_x_mul, self.y_x_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.x_out, self.e_out = nn.Linear(dx, dx), nn.Linear(dx, de)
        self.y_self = nn.Linear(dy, dy)
        self.y_from_x, self.y_from_e = nn.Linear(4 * dx, dy), nn.Linear(4 * de, dy)
        self.y_out = nn.Sequential(nn.Linear(dy, dy), nn.ReLU(), nn.Linear(dy, dy))
        self.norm_x1, self.norm_x2 = nn.LayerNorm(dx), nn.LayerNorm(dx)
        self.norm_e1, self.norm_e2 = nn.LayerNorm(de), nn.LayerNorm(de)
        self.norm_y1, self.norm_y2 = nn.LayerNorm(dy), nn.LayerNorm(dy)
        self.ff_x = nn.Sequential(nn.Linear(dx, ffn_mult * dx), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dx, dx))
        self.ff_e = nn.Sequential(nn.Linear(de, ffn_mult * de), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_mult * de, de))
        self.ff_y = nn.Sequential(nn.Linear(dy, ffn_mult * dy), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dy, dy))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, e: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, dx = x.shape
        xm = mask.unsqueeze(-1).to(x.dtype)                     # [B, n, 1]
        em = (xm.unsqueeze(2) * xm.unsqueeze(1))                 # [B, n, n, 1]
        q = (self.q(x) * xm).reshape(b, n, self.heads, self.df)
        k = (self.k(x) * xm).reshape(b, n, self.heads, self.df)
        v = (self.v(x) * xm).reshape(b, n, self.heads, self.df)
        scores = q.unsqueeze(2) * k.unsqueeze(1) / math.sqrt(self.df)        # [B, n, n, h, df]
        e1 = (self.e_mul(e) * em).reshape(b, n, n, self.heads, self.df)
        e2 = (self.e_add(e) * em).reshape(b, n, n, self.heads, self.df)
        scores = scores * (e1 + 1) + e2
        # new edges: the modulated scores, FiLM by the graph features
        new_e = scores.flatten(3)
        new_e = self.y_e_add(y)[:, None, None] + (self.y_e_mul(y)[:, None, None] + 1) * new_e
        new_e = self.e_out(new_e) * em
        # attention over j (masked), per head and feature
        key_mask = mask[:, None, :, None, None].bool()
        attn = torch.softmax(scores.masked_fill(~key_mask, float("-inf")), dim=2)
        attn = torch.nan_to_num(attn) * xm.unsqueeze(-1).unsqueeze(-1)
        wv = (attn * v.unsqueeze(1)).sum(2).flatten(2)                      # [B, n, dx]
        new_x = self.y_x_add(y).unsqueeze(1) + (self.y_x_mul(y).unsqueeze(1) + 1) * wv
        new_x = self.x_out(new_x) * xm
        new_y = self.y_out(self.y_self(y) + self.y_from_x(_pool(x, xm, (1,))) + self.y_from_e(_pool(e, em, (1, 2))))
        x = self.norm_x1(x + self.drop(new_x))
        e = self.norm_e1(e + self.drop(new_e))
        y = self.norm_y1(y + self.drop(new_y))
        x = self.norm_x2(x + self.drop(self.ff_x(x))) * xm
        e = self.norm_e2(e + self.drop(self.ff_e(e))) * em
        y = self.norm_y2(y + self.drop(self.ff_y(y)))
        return x, e, y


class GraphTransformer(nn.Module):
    """x0 predictor of node and edge categories from a noisy graph.

    Inputs: noisy node categories ``[B, n]`` and edge categories ``[B, n, n]`` (long; 0 = no edge), the time ``[B]`` in
    [0, 1], the node mask ``[B, n]``. Structural features (cycle counts, Laplacian spectrum, degrees, component sizes) are
    computed from the noisy adjacency (any edge category > 0). Outputs x0 logits ``[B, n, K_nodes]`` and symmetric
    ``[B, n, n, K_edges]``.

    Args:
        num_node_types: node categories.
        num_edge_types: edge categories including "no edge" (category 0).
        max_nodes: largest graph (the node count enters the graph features as n / max_nodes).
        hidden_nodes: node feature width (divisible by ``heads``).
        hidden_edges: edge feature width.
        hidden_graph: graph feature width.
        heads: attention heads.
        layers: transformer layers.
        k_eigenvalues: Laplacian eigenvalues given as graph features.
        dropout: dropout in the layers.
    """

    def __init__(self, num_node_types: int, num_edge_types: int, max_nodes: int, hidden_nodes: int = 64,
                 hidden_edges: int = 32, hidden_graph: int = 64, heads: int = 4, layers: int = 4, k_eigenvalues: int = 5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_node_types, self.num_edge_types = num_node_types, num_edge_types
        self.max_nodes, self.k_eigenvalues = max_nodes, k_eigenvalues
        self.in_x = nn.Sequential(nn.Linear(num_node_types + NUM_NODE_FEATURES, hidden_nodes), nn.ReLU(),
                                  nn.Linear(hidden_nodes, hidden_nodes))
        self.in_e = nn.Sequential(nn.Linear(num_edge_types, hidden_edges), nn.ReLU(), nn.Linear(hidden_edges, hidden_edges))
        dy_in = 2 + num_graph_features(k_eigenvalues)
        self.in_y = nn.Sequential(nn.Linear(dy_in, hidden_graph), nn.ReLU(), nn.Linear(hidden_graph, hidden_graph))
        self.layers = nn.ModuleList(GraphTransformerLayer(hidden_nodes, hidden_edges, hidden_graph, heads, 2, dropout)
                                    for _ in range(layers))
        self.out_x = nn.Sequential(nn.Linear(hidden_nodes, hidden_nodes), nn.ReLU(), nn.Linear(hidden_nodes, num_node_types))
        self.out_e = nn.Sequential(nn.Linear(hidden_edges, hidden_edges), nn.ReLU(), nn.Linear(hidden_edges, num_edge_types))

    def forward(self, nodes: Tensor, edges: Tensor, time: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b, n = nodes.shape
        maskf = mask.float()
        x_onehot = F.one_hot(nodes, self.num_node_types).float() * maskf.unsqueeze(-1)
        pair = maskf.unsqueeze(1) * maskf.unsqueeze(2) * (1 - torch.eye(n, device=nodes.device))
        e_onehot = F.one_hot(edges, self.num_edge_types).float() * pair.unsqueeze(-1)
        adj = (edges > 0).float() * pair
        node_feat, graph_feat = structural_features(adj, maskf, self.k_eigenvalues)
        y = torch.cat([time.float().unsqueeze(-1), (maskf.sum(-1) / self.max_nodes).unsqueeze(-1), graph_feat], -1)
        x = self.in_x(torch.cat([x_onehot, node_feat], -1)) * maskf.unsqueeze(-1)
        e = self.in_e(e_onehot)
        e = (e + e.transpose(1, 2)) / 2 * pair.unsqueeze(-1)
        y = self.in_y(y)
        for layer in self.layers:
            x, e, y = layer(x, e, y, maskf)
        x_logits = self.out_x(x) + x_onehot          # skip connection of the input categories (as DiGress)
        e_logits = self.out_e(e) + e_onehot
        e_logits = (e_logits + e_logits.transpose(1, 2)) / 2
        return x_logits, e_logits
