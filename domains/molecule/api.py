"""The molecule models' Python API: sampling graphs / point clouds and turning them into RDKit molecules.

:class:`MoleculeGraphAPI` is a mixin of :class:`polydiff.domains.molecule.MoleculeGraphDiffusion` (it relies on the graph
model's ``sample_node_counts``, ``eval_batch_size``, ``atom_types`` and ``generate``); :class:`MoleculeCloudAPI` of
:class:`polydiff.domains.molecule.MoleculeEDM` (``atom_counts``, ``atom_types``, ``type_scale``, ``eval_batch_size``,
``generate``, ``denoiser``).
"""

from typing import Any, Optional

import torch
from torch import Tensor

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.molecule.chem import cloud_to_mol, graph_to_mol
from polydiff.domains.molecule.geometry import remove_mean


class MoleculeGraphAPI:
    """``sample_graphs_dense`` and ``sample_molecules`` of the 2D model."""

    @torch.no_grad()
    def sample_graphs_dense(self, num: int, sampler: Any = None, seed: int = 0,
                            progress: bool = False) -> list[tuple[Tensor, Tensor]]:
        """``num`` generated graphs ``(atom types [n], bond categories [n, n])`` from a fixed seed, sizes from the
        training histogram, in batches of ``eval_batch_size``."""
        gen = torch.Generator().manual_seed(seed)
        counts = self.sample_node_counts(num, gen)
        out: list[tuple[Tensor, Tensor]] = []
        for start in range(0, num, self.eval_batch_size):
            sizes = counts[start:start + self.eval_batch_size]
            b, n = len(sizes), max(1, int(sizes.max()))
            node_mask = (torch.arange(n).unsqueeze(0) < sizes.unsqueeze(1)).float().to(self.device)
            nodes, edges = self.generate([(b, n), (b, n, n)], cond=node_mask, sampler=sampler, seed=seed + start,
                                         progress=progress, mask=(node_mask, None))
            for i in range(b):
                k = int(sizes[i])
                out.append((nodes[i, :k].cpu(), edges[i, :k, :k].cpu()))
        return out

    def graphs_to_molecules(self, graphs: list[tuple[Tensor, Tensor]]) -> list:
        """Unsanitized RDKit molecules (implicit hydrogens) of dense graphs."""
        return [graph_to_mol(t, b, self.atom_types) for t, b in graphs]

    def sample_molecules(self, num: int, sampler: Any = None, seed: int = 0, progress: bool = False) -> list:
        """``num`` generated molecules as RDKit molecules (unsanitized: pass them to ``Chem.SanitizeMol`` or
        :func:`polydiff.domains.molecule.chem.sanitized` to check validity)."""
        return self.graphs_to_molecules(self.sample_graphs_dense(num, sampler, seed, progress))


    def sample_native(self, n: int, sampler: Any, seed: int) -> list:
        """:meth:`polydiff.core.base.PolydiffModule.sample`: ``n`` generated molecules (RDKit, implicit hydrogens)."""
        return self.sample_molecules(n, sampler, seed)


class ProjectedDenoiser:
    """A denoiser that sees coordinates at zero centre of mass over the real atoms and returns its x0 estimate there
    (padding 0), so the samplers' x0 estimates stay in the subspace whatever noise an ancestral step adds."""

    def __init__(self, inner: Any, mask: Tensor) -> None:
        self.inner, self.mask = inner, mask
        self.process, self.sigma_data = inner.process, inner.sigma_data

    def _project(self, x: Tensor) -> Tensor:
        m = self.mask.to(x.device, x.dtype)
        return torch.cat([remove_mean(x[..., :3], m), x[..., 3:] * m.unsqueeze(-1)], -1)

    def __call__(self, x: Tensor, logsnr: Tensor, cond: Any = None) -> Tensor:
        return self._project(self.inner(self._project(x), logsnr, cond))


class MoleculeCloudAPI:
    """``sample_atom_counts``, ``sample_clouds`` and ``sample_molecules`` of the 3D model."""

    def sample_atom_counts(self, num: int, generator: torch.Generator) -> Tensor:
        """Atom counts drawn from the training histogram (EDM)."""
        probs = self.atom_counts.float().cpu()
        if probs.sum() <= 0:
            raise PolydiffError("the model has no atom-count histogram; train it (polydiff fit) before sampling")
        return torch.multinomial(probs / probs.sum(), num, replacement=True, generator=generator)

    def start_noise(self, mask: Tensor, generator: torch.Generator) -> Tensor:
        """Unit-variance start noise ``[B, N, 3 + K]``: coordinates at zero CoM over the real atoms, padding 0."""
        b, n = mask.shape
        eps = torch.randn(b, n, 3 + len(self.atom_types), generator=generator, dtype=torch.float64)
        m = mask.double().cpu()
        return torch.cat([remove_mean(eps[..., :3], m), eps[..., 3:] * m.unsqueeze(-1)], -1)

    def decode_clouds(self, x: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Generated ``[B, N, 3 + K]`` -> ``(atom types [n], positions [n, 3] at zero CoM)`` per molecule."""
        x = x.double().cpu()
        m = mask.double().cpu()
        pos = remove_mean(x[..., :3], m)
        types = x[..., 3:].argmax(-1)
        out = []
        for i in range(x.shape[0]):
            k = int(m[i].sum())
            out.append((types[i, :k], pos[i, :k]))
        return out

    @torch.no_grad()
    def sample_clouds(self, num: int, sampler: Optional[SamplerConfig] = None, seed: int = 0, progress: bool = False,
                      atom_counts: Optional[Tensor] = None) -> list[tuple[Tensor, Tensor]]:
        """``num`` generated molecules ``(atom types [n], positions [n, 3] in Å)`` from a fixed seed; atom counts from
        the training histogram unless given."""
        gen = torch.Generator().manual_seed(seed)
        counts = atom_counts if atom_counts is not None else self.sample_atom_counts(num, gen)
        out: list[tuple[Tensor, Tensor]] = []
        for start in range(0, num, self.eval_batch_size):
            sizes = counts[start:start + self.eval_batch_size]
            b, n = len(sizes), max(1, int(sizes.max()))
            mask = (torch.arange(n).unsqueeze(0) < sizes.unsqueeze(1)).float()
            x_init = self.start_noise(mask, gen)
            dev_mask = mask.to(self.device)
            x = self.generate((b, n, 3 + len(self.atom_types)), cond=dev_mask, sampler=sampler, seed=seed + start,
                              progress=progress, x_init=x_init, denoiser=ProjectedDenoiser(self.denoiser, dev_mask))
            out += self.decode_clouds(x, mask)
        return out

    def clouds_to_molecules(self, clouds: list[tuple[Tensor, Tensor]]) -> list:
        """Unsanitized RDKit molecules (explicit hydrogens, bonds from EDM's distance rule, a 3D conformer)."""
        return [cloud_to_mol(t, p, self.atom_types) for t, p in clouds]

    def sample_molecules(self, num: int, sampler: Optional[SamplerConfig] = None, seed: int = 0,
                         progress: bool = False) -> list:
        """``num`` generated molecules as RDKit molecules with 3D coordinates."""
        return self.clouds_to_molecules(self.sample_clouds(num, sampler, seed, progress))

    def sample_native(self, n: int, sampler: Any, seed: int) -> list:
        """:meth:`polydiff.core.base.PolydiffModule.sample`: ``n`` generated molecules (RDKit, 3D coordinates)."""
        return self.sample_molecules(n, sampler, seed)
