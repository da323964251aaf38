"""Molecule generation, checked with RDKit.

* :class:`MoleculeGraphDiffusion`: 2D graphs of atom and bond types (DiGress on the graph domain's machinery).
* :class:`MoleculeEDM`: 3D coordinates and atom types with an E(n)-equivariant network (EDM for molecules).
* :mod:`.chem`: tensors -> RDKit molecules, EDM's bond rule and stability; :mod:`.metrics`, :mod:`.controls`;
  :mod:`.writers`: SMILES, SDF and PNG grids; :mod:`.api`: sampling from Python.
"""

from polydiff.domains.molecule.egnn import EGNN
from polydiff.domains.molecule.module import MoleculeEDM, MoleculeGraphDiffusion

__all__ = ["EGNN", "MoleculeEDM", "MoleculeGraphDiffusion"]
