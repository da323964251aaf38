"""An E(n)-equivariant graph network over padded molecules (EGNN, Satorras et al. 2021; as used by EDM for molecules,
Hoogeboom et al. 2022, App. B).

Every layer updates invariant node features ``h`` from messages ``m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, d0_ij)`` gated by
an attention weight, and moves the coordinates along the differences ``x_i - x_j`` (normalised by ``|x_i - x_j| + 1``)
by the scalar ``tanh(phi_x(m_ij)) * coords_range`` summed over the other real atoms. Only distances enter the scalars,
so rotations, reflections and translations of the input act the same way on the coordinate output, the features are
invariant, and relabelling the atoms relabels the output (tests check all four in float64).

As a denoiser network: ``network(x_in, c_noise, cond) -> out`` with ``x_in`` ``[B, N, 3 + K]`` (coordinates, then the
scaled one-hot atom types), ``c_noise`` ``[B]`` and ``cond`` the node mask ``[B, N]``. The coordinate output is the
displacement of the final coordinates from the input ones, at zero centre of mass over the real atoms (padding 0): an
eps (or x0 - x) prediction in the zero-CoM subspace. The feature output is a per-atom vector of width K.
"""

import torch
from torch import Tensor, nn

from polydiff.domains.molecule.geometry import remove_mean


class EquivariantLayer(nn.Module):
    """One message-passing layer: feature update (with attention on the messages), then coordinate update."""

    def __init__(self, hidden: int, edge_features: int, coords_range: float, normalization: float) -> None:
        super().__init__()
        # the first layer of each pair MLP acting on [h_i, h_j, |x_i - x_j|^2, d0_ij] is split into per-atom
        # projections of h_i and h_j plus a projection of the two distances: the same function, computed per atom
        # instead of per pair
        self.edge_i, self.edge_j = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden, bias=False)
        self.edge_d = nn.Linear(edge_features, hidden, bias=False)
        self.edge_mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.attention = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)  # coordinates start nearly unchanged (EDM)
        self.coord_i, self.coord_j = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden, bias=False)
        self.coord_d = nn.Linear(edge_features, hidden, bias=False)
        self.coord_mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.coords_range = coords_range
        self.normalization = normalization

    def forward(self, h: Tensor, x: Tensor, d0: Tensor, mask: Tensor, pair: Tensor) -> tuple[Tensor, Tensor]:
        diff = x.unsqueeze(2) - x.unsqueeze(1)                       # [B, n, n, 3]: x_i - x_j
        radial = (diff**2).sum(-1, keepdim=True)                     # [B, n, n, 1]
        dist = torch.cat([radial, d0], -1)
        m = self.edge_mlp(self.edge_i(h).unsqueeze(2) + self.edge_j(h).unsqueeze(1) + self.edge_d(dist))
        m = m * self.attention(m) * pair.unsqueeze(-1)
        agg = m.sum(2) / self.normalization
        h = (h + self.node_mlp(torch.cat([h, agg], -1))) * mask.unsqueeze(-1)
        # coordinates: the same pair inputs with the updated features (EDM's EquivariantUpdate)
        pre = self.coord_i(h).unsqueeze(2) + self.coord_j(h).unsqueeze(1) + self.coord_d(dist)
        scale = torch.tanh(self.coord_mlp(pre)) * self.coords_range
        unit = diff / ((radial + 1e-8).sqrt() + 1.0)
        x = x + (unit * scale * pair.unsqueeze(-1)).sum(2) / self.normalization
        return h, x * mask.unsqueeze(-1)


class EGNN(nn.Module):
    """E(3)-equivariant network on padded molecules: coordinates and atom-type features in, their predictions out.

    Args:
        num_features: per-atom feature width K besides the 3 coordinates (the atom-type one-hot).
        hidden: width of the invariant features and messages.
        layers: message-passing layers.
        coords_range: largest coordinate move per message (EDM: 15).
        normalization: divisor of the sums over neighbours (EDM: 1 on QM9; larger for big molecules).
    """

    def __init__(self, num_features: int, hidden: int = 64, layers: int = 4, coords_range: float = 15.0,
                 normalization: float = 1.0) -> None:
        super().__init__()
        self.num_features = num_features
        self.embed = nn.Linear(num_features + 1, hidden)       # features and the noise level
        self.layers = nn.ModuleList(EquivariantLayer(hidden, 2, coords_range / layers, normalization)
                                    for _ in range(layers))
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, num_features))

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor) -> Tensor:
        mask = cond.to(x_in.dtype)
        b, n, _ = x_in.shape
        pos = remove_mean(x_in[..., :3], mask)                  # translation invariance: work at zero CoM
        feats = x_in[..., 3:] * mask.unsqueeze(-1)
        t = c_noise.to(x_in.dtype).reshape(b, 1, 1).expand(b, n, 1)
        h = self.embed(torch.cat([feats, t], -1)) * mask.unsqueeze(-1)
        eye = torch.eye(n, dtype=x_in.dtype, device=x_in.device)
        pair = mask.unsqueeze(1) * mask.unsqueeze(2) * (1 - eye)
        d0 = ((pos.unsqueeze(2) - pos.unsqueeze(1)) ** 2).sum(-1, keepdim=True)   # distances of the input, kept
        x = pos
        for layer in self.layers:
            h, x = layer(h, x, d0, mask, pair)
        coords = remove_mean(x - pos, mask)
        return torch.cat([coords, self.out(h) * mask.unsqueeze(-1)], -1)
