"""Molecule data: QM9 (from the ``qm9pack`` wheel) or your own SMILES / SDF / XYZ files, as 2D graphs or 3D point clouds.

* :class:`MoleculeGraphDataModule` (2D, the molecule domain's graph model): every molecule becomes a torch-geometric
  ``Data`` with ``x`` = atom type indices into ``atom_types`` (labels ``C``, ``N+``, ``O-``: element and formal
  charge), ``edge_index`` (both directions) and ``edge_attr`` = bond categories 1 single, 2 double, 3 triple,
  4 aromatic (0 is "no bond"); hydrogens implicit; kekulized by default, so aromatic bonds become single / double.
* :class:`MoleculeCloudDataModule` (3D, the EDM-style model): every molecule becomes atom type indices (elements,
  hydrogens explicit) and coordinates in Å centred at their mean; batches are padded dicts ``types [B, N]``,
  ``pos [B, N, 3]``, ``mask [B, N]``.

A CPU-sized subset is a setting (``max_atoms``, ``max_heavy_atoms``, ``max_molecules``). A record that cannot be read or
converted (an unparseable SMILES, a broken SDF block, an atom outside ``atom_types``, more atoms than ``max_atoms``)
stops with its file and line (``on_error: stop``) or is skipped with a warning (``on_error: skip``).
"""

import warnings
from typing import Literal, Optional

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader as TorchLoader
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from polydiff.core.utils import PolydiffError, training_seed
from polydiff.datasets.readers.molecules import (
    BOND_TYPES,
    MoleculeRecord,
    OnError,
    canonical_smiles,
    elements_to_types,
    mol_to_cloud,
    mol_to_graph,
    read_molecule_files,
    read_qm9,
    record_mol,
    report,
)
from polydiff.datasets.splits import ResumableTraining, SplitLoaders, evaluation_sampler

QM9_ATOMS_2D = ("C", "N", "O", "F", "N+", "O-")
QM9_ATOMS_3D = ("H", "C", "N", "O", "F")


def split_indices(num: int, seed: int, test_fraction: float, val_fraction: float) -> tuple[list[int], list[int], list[int]]:
    """Fixed random split (train, val, test) of ``num`` items; each part keeps at least one item."""
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, int(round(num * test_fraction)))
    n_val = max(1, int(round(num * val_fraction)))
    if num - n_test - n_val < 1:
        raise PolydiffError(f"only {num} molecules: too few to split into train / val / test; give at least 3")
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


class _MoleculeSplits(ResumableTraining, SplitLoaders, L.LightningDataModule):
    """Shared reading, splitting and SMILES of both molecule DataModules."""

    source_name = "molecules"

    def _init_common(self, path: Optional[str], max_atoms: int, max_heavy_atoms: int, max_molecules: int,
                     on_error: OnError, test_fraction: float, val_fraction: float, batch_size: int, seed: int,
                     num_workers: int) -> None:
        self.path = path
        self.max_atoms = max_atoms
        self.max_heavy_atoms = max_heavy_atoms
        self.max_molecules = max_molecules
        self.on_error = on_error
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.items: Optional[list] = None
        self.smiles: list[str] = []
        self.splits: dict[str, list[int]] = {}

    def _records(self, coordinates: bool) -> list[MoleculeRecord]:
        if self.path:
            recs = read_molecule_files(self.path, self.on_error)
            if self.max_molecules and len(recs) > self.max_molecules:
                keep = sorted(torch.randperm(len(recs), generator=torch.Generator().manual_seed(self.seed))
                              [: self.max_molecules].tolist())
                recs = [recs[i] for i in keep]
            return recs
        return read_qm9(self.max_atoms if coordinates else 29, self.max_heavy_atoms, self.max_molecules, self.seed,
                        coordinates)

    def _convert(self, record: MoleculeRecord) -> tuple[object, str]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.items is not None:
            return
        items, smiles = [], []
        # skipped records are gathered into one warning (QM9 alone has dozens of rare charged atoms)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for rec in self._records(coordinates=isinstance(self, MoleculeCloudDataModule)):
                try:
                    item, smi = self._convert(rec)
                except PolydiffError as exc:
                    report(str(exc), self.on_error)
                    continue
                items.append(item)
                smiles.append(smi)
        skipped = [str(w.message) for w in caught if str(w.message).startswith("skipped: ")]
        for w in caught:
            if not str(w.message).startswith("skipped: "):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if skipped:
            more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
            warnings.warn(f"skipped {len(skipped)} molecules: " + "; ".join(m[len("skipped: "):] for m in skipped[:3])
                          + more, stacklevel=2)
        if len(items) < 3:
            raise PolydiffError(f"{self.path or 'QM9'}: only {len(items)} usable molecules; give at least 3 (check "
                                "--data.atom_types, --data.max_atoms)")
        self.items, self.smiles = items, smiles
        tr, va, te = split_indices(len(items), self.seed, self.test_fraction, self.val_fraction)
        self.splits = {"train": tr, "val": va, "test": te}

    def _split(self, split: str) -> list[int]:
        self.setup()
        if split not in self.splits:
            raise PolydiffError(f"unknown split {split!r}; choose one of {list(self.splits)}")
        return self.splits[split]

    def split_smiles(self, split: str) -> list[str]:
        """Canonical SMILES (no stereochemistry, hydrogens implicit; empty where unknown) of a split."""
        return [self.smiles[i] for i in self._split(split)]


# ---------------------------------------------------------------------------------------------------- 2D
class MoleculeGraphDataModule(_MoleculeSplits):
    """Molecules as graphs of atom and bond types (hydrogens implicit) for the 2D molecule model.

    Args:
        path: your own molecules: a SMILES file (one per line, optional name), an SDF file, or a folder of them.
            None: QM9 from the qm9pack wheel.
        atom_types: atom type labels (element, then + / - per formal charge); the model's must be the same.
        max_atoms: largest molecule in heavy atoms (the model's max_atoms must be at least this).
        max_heavy_atoms: QM9 only: keep molecules of at most this many heavy atoms (QM9 has at most 9).
        max_molecules: a fixed random subset of this many molecules (0: all).
        kekulize: write aromatic rings as alternating single / double bonds (DiGress on QM9); false keeps the aromatic
            bond category.
        on_error: an unreadable record or one that does not fit (unknown atom, too many atoms): stop (an error naming
            file and line) or skip (a warning).
        test_fraction: share of molecules held out for polydiff test.
        val_fraction: share of molecules for validation.
        batch_size: molecules per batch.
        seed: seed of the subset and of the split.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        atom_types: tuple[str, ...] = QM9_ATOMS_2D,
        max_atoms: int = 9,
        max_heavy_atoms: int = 9,
        max_molecules: int = 0,
        kekulize: bool = True,
        on_error: Literal["stop", "skip"] = "stop",
        test_fraction: float = 0.1,
        val_fraction: float = 0.05,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.atom_types = tuple(atom_types)
        self.kekulize = kekulize
        self._init_common(path, max_atoms, max_heavy_atoms, max_molecules, on_error, test_fraction, val_fraction,
                          batch_size, seed, num_workers)

    # what the 2D model reads (polydiff.domains.molecule.data.MoleculeGraphData)
    @property
    def max_nodes(self) -> int:
        return self.max_atoms

    @property
    def num_node_types(self) -> int:
        return len(self.atom_types)

    @property
    def num_edge_types(self) -> int:
        return len(BOND_TYPES)

    def _convert(self, record: MoleculeRecord) -> tuple[Data, str]:
        mol = record_mol(record, self.kekulize)
        if mol is None:
            raise PolydiffError(f"{record.source}: cannot build the molecule")
        if mol.GetNumAtoms() > self.max_atoms:
            raise PolydiffError(f"{record.source}: {mol.GetNumAtoms()} heavy atoms, more than --data.max_atoms="
                                f"{self.max_atoms}; raise it (and --model.max_atoms)")
        x, edge_index, edge_attr = mol_to_graph(mol, self.atom_types, record.source)
        original = record.mol if record.mol is not None else record_mol(record, kekulize=False)
        return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, num_nodes=len(x)), canonical_smiles(original) or ""

    def node_count_histogram(self) -> Tensor:
        """Counts of training-molecule sizes (heavy atoms) ``0..max_atoms``."""
        hist = torch.zeros(self.max_atoms + 1)
        for i in self._split("train"):
            hist[int(self.items[i].num_nodes)] += 1
        return hist

    def marginals(self) -> tuple[Tensor, Tensor]:
        """Frequencies of atom types over atoms and of bond categories (0 = no bond) over atom pairs (training split)."""
        node = torch.zeros(self.num_node_types, dtype=torch.float64)
        edge = torch.zeros(self.num_edge_types, dtype=torch.float64)
        for i in self._split("train"):
            d = self.items[i]
            n = int(d.num_nodes)
            node += torch.bincount(d.x, minlength=self.num_node_types).double()
            upper = d.edge_index[0] < d.edge_index[1]
            counts = torch.bincount(d.edge_attr[upper], minlength=self.num_edge_types).double()
            counts[0] = n * (n - 1) / 2 - counts[1:].sum()
            edge += counts
        return node / node.sum(), edge / edge.sum()

    def split_graphs(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """``(atom types [n], bond categories [n, n])`` of every molecule of a split."""
        out = []
        for i in self._split(split):
            d = self.items[i]
            n = int(d.num_nodes)
            bonds = torch.zeros(n, n, dtype=torch.long)
            bonds[d.edge_index[0], d.edge_index[1]] = d.edge_attr
            out.append((d.x, bonds))
        return out

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = [self.items[i] for i in self._split(split)]
        sampler = evaluation_sampler(data) if split == "test" else None
        if shuffle:  # the order is a function of (seed, pass): fit --ckpt_path resumes on the same batches
            sampler = self.train_sampler(len(data), training_seed())
        return DataLoader(data, batch_size=self.batch_size, num_workers=self.num_workers,
                          drop_last=shuffle and len(data) > self.batch_size, sampler=sampler)


# ---------------------------------------------------------------------------------------------------- 3D
def pad_clouds(items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Molecules ``(types [n], pos [n, 3])`` -> ``types [B, N]``, ``pos [B, N, 3]``, ``mask [B, N]`` (padding 0)."""
    n = max(len(t) for t, _ in items)
    b = len(items)
    types = torch.zeros(b, n, dtype=torch.long)
    pos = torch.zeros(b, n, 3)
    mask = torch.zeros(b, n)
    for i, (t, p) in enumerate(items):
        types[i, : len(t)] = t
        pos[i, : len(t)] = p.float()
        mask[i, : len(t)] = 1.0
    return {"types": types, "pos": pos, "mask": mask}


class MoleculeCloudDataModule(_MoleculeSplits):
    """Molecules as 3D point clouds (atom types with explicit hydrogens, coordinates in Å) for the 3D molecule model.

    Args:
        path: your own molecules: an SDF file (3D coordinates; hydrogens kept as written), an XYZ file (one or more
            frames), or a folder of them. None: QM9 from the qm9pack wheel (DFT coordinates, hydrogens explicit).
        atom_types: element symbols; the model's must be the same.
        max_atoms: largest molecule in atoms counting hydrogens (QM9: at most 29); larger ones are left out of QM9 and
            an error (or skipped) for your files.
        max_heavy_atoms: QM9 only: keep molecules of at most this many heavy atoms.
        max_molecules: a fixed random subset of this many molecules (0: all).
        on_error: an unreadable record or one that does not fit (unknown element, too many atoms): stop (an error
            naming file and line) or skip (a warning).
        test_fraction: share of molecules held out for polydiff test.
        val_fraction: share of molecules for validation.
        batch_size: molecules per batch.
        seed: seed of the subset and of the split.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        atom_types: tuple[str, ...] = QM9_ATOMS_3D,
        max_atoms: int = 29,
        max_heavy_atoms: int = 9,
        max_molecules: int = 0,
        on_error: Literal["stop", "skip"] = "stop",
        test_fraction: float = 0.1,
        val_fraction: float = 0.05,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.atom_types = tuple(atom_types)
        self._init_common(path, max_atoms, max_heavy_atoms, max_molecules, on_error, test_fraction, val_fraction,
                          batch_size, seed, num_workers)

    def _convert(self, record: MoleculeRecord) -> tuple[tuple[Tensor, Tensor], str]:
        if record.mol is not None:
            types, pos = mol_to_cloud(record.mol, self.atom_types, record.source)
            smiles = canonical_smiles(record_mol(record, kekulize=False)) or ""
        else:
            if record.positions is None:
                raise PolydiffError(f"{record.source}: no 3D coordinates (a SMILES file?); the 3D model needs SDF or XYZ")
            types = elements_to_types(record.elements, self.atom_types, record.source)
            pos = torch.as_tensor(record.positions, dtype=torch.float64)
            mol = record_mol(record, kekulize=False) if record.smiles else None
            smiles = canonical_smiles(mol) if mol is not None else ""
        if len(types) > self.max_atoms:
            raise PolydiffError(f"{record.source}: {len(types)} atoms, more than --data.max_atoms={self.max_atoms}; "
                                "raise it (and --model.max_atoms)")
        return (types, (pos - pos.mean(0, keepdim=True)).float()), smiles or ""

    def atom_count_histogram(self) -> Tensor:
        """Counts of training-molecule sizes (atoms, hydrogens included) ``0..max_atoms``."""
        hist = torch.zeros(self.max_atoms + 1)
        for i in self._split("train"):
            hist[len(self.items[i][0])] += 1
        return hist

    def split_clouds(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """``(atom types [n], positions [n, 3] centred)`` of every molecule of a split."""
        return [self.items[i] for i in self._split(split)]

    def _loader(self, split: str, shuffle: bool) -> TorchLoader:
        data = [self.items[i] for i in self._split(split)]
        sampler = evaluation_sampler(data) if split == "test" else None
        if shuffle:
            sampler = self.train_sampler(len(data), training_seed())
        return TorchLoader(data, batch_size=self.batch_size, num_workers=self.num_workers,
                           drop_last=shuffle and len(data) > self.batch_size, collate_fn=pad_clouds, sampler=sampler)


__all__ = ["MoleculeCloudDataModule", "MoleculeGraphDataModule", "pad_clouds", "split_indices"]
