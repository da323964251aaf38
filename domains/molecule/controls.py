"""Controls a molecule generator must beat, drawn with the model's own training statistics.

* 2D: graphs with i.i.d. atom types from the training marginal and i.i.d. bond categories (including "no bond") from the
  training marginal over atom pairs, sizes from the training histogram (about 25 % valid, 5.5 % valid and connected on
  QM9).
* 3D: the true atom types of held-out molecules with Gaussian coordinates at the data's radius (the per-axis standard
  deviation of the real coordinates about their centre of mass), projected to zero centre of mass.
"""

from typing import Sequence

import torch
from torch import Tensor


def iid_marginal_graphs(num: int, node_counts: Tensor, node_marginal: Tensor, edge_marginal: Tensor,
                        seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``num`` graphs ``(atom types [n], bond categories [n, n])`` with i.i.d. marginal types and bonds."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.multinomial(node_counts.float() / node_counts.sum(), num, replacement=True, generator=gen)
    out = []
    for n in sizes.tolist():
        types = torch.multinomial(node_marginal.float(), n, replacement=True, generator=gen)
        bonds = torch.multinomial(edge_marginal.float(), n * n, replacement=True, generator=gen).reshape(n, n)
        bonds = torch.triu(bonds, 1)
        out.append((types, bonds + bonds.T))
    return out


def coordinate_std(clouds: Sequence[tuple[Tensor, Tensor]]) -> float:
    """Per-axis standard deviation of atom coordinates about each molecule's centre of mass."""
    sq = sum(float(((p - p.mean(0)) ** 2).sum()) for _, p in clouds)
    n = sum(len(p) for _, p in clouds)
    return (sq / max(3 * n, 1)) ** 0.5


def gaussian_coordinates(reference: Sequence[tuple[Tensor, Tensor]], std: float,
                         seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """The reference molecules' atom types with i.i.d. Gaussian coordinates of per-axis ``std``, at zero CoM."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for types, pos in reference:
        x = torch.randn(pos.shape, generator=gen, dtype=torch.float64) * std
        out.append((types, x - x.mean(0)))
    return out
