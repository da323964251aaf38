"""What the molecule models need from their DataModules, as structural types (``polydiff.datasets.molecules``'s
``MoleculeGraphDataModule`` and ``MoleculeCloudDataModule`` fit); the models check them in ``connect_data`` and nowhere
else reach into the data."""

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from polydiff.core.utils import PolydiffError


@runtime_checkable
class MoleculeGraphData(Protocol):
    """Molecules as graphs of atom types and bond categories (0 = no bond), hydrogens implicit."""

    #: atom type labels (element, then + / - per formal charge), indexed by the node categories
    atom_types: tuple[str, ...]
    #: largest molecule (heavy atoms)
    max_nodes: int
    #: bond categories including "no bond"
    num_edge_types: int

    def node_count_histogram(self) -> Tensor:
        """Counts of training-molecule sizes ``0..max_nodes``."""
        ...

    def marginals(self) -> tuple[Tensor, Tensor]:
        """Atom-type and bond-category frequencies of the training molecules."""
        ...

    def split_smiles(self, split: str) -> list[str]:
        """Canonical SMILES of ``train``, ``val`` or ``test`` (novelty is checked against ``train``)."""
        ...

    def split_graphs(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """``(atom types [n], bond categories [n, n])`` of every molecule of a split."""
        ...


@runtime_checkable
class MoleculeCloudData(Protocol):
    """Molecules as 3D point clouds: atom types (hydrogens explicit) and coordinates in Å."""

    #: element symbols, indexed by the atom categories
    atom_types: tuple[str, ...]
    #: largest molecule (atoms, hydrogens included)
    max_atoms: int

    def atom_count_histogram(self) -> Tensor:
        """Counts of training-molecule sizes ``0..max_atoms``."""
        ...

    def split_clouds(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """``(atom types [n], positions [n, 3])`` of every molecule of a split."""
        ...

    def split_smiles(self, split: str) -> list[str]:
        """Canonical SMILES (empty where unknown) of a split."""
        ...


def require(datamodule: Any, protocol: type, what: str, fix: str) -> Any:
    """``datamodule`` if it fits ``protocol``, else a clear error."""
    if not isinstance(datamodule, protocol):
        raise PolydiffError(f"the {what} model needs a {protocol.__name__} DataModule, got "
                            f"{type(datamodule).__name__}; use {fix}")
    return datamodule
