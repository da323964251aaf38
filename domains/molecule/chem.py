"""Generated tensors -> RDKit molecules: 2D graphs (atom and bond categories) and 3D point clouds (atom types and
coordinates, bonds inferred from distances with EDM's rule).

The bond rule and the valences of atom / molecule stability are those of EDM for molecules (Hoogeboom et al. 2022,
``qm9/bond_analyze.py``): a pair bonds when its distance is below the tabulated single-bond length plus 10 pm, is a
double bond below the double-bond length plus 5 pm and a triple bond below the triple-bond length plus 3 pm (bond
lengths in pm from standard tables); an atom is stable when the sum of its bond orders equals its element's valence
(H 1, C 4, N 3, O 2, F 1; S 4, Cl 1, Br 1, I 1, P 3 as in EDM for the heavier elements), a molecule when all its atoms are.

The reverse conversion (RDKit -> tensors) is on the data side (``polydiff.datasets.readers.molecules``).
"""

from typing import Optional, Sequence

import numpy as np
from torch import Tensor

#: bond categories of the 2D graphs (index = category; 0 is "no bond"); the data side uses the same order
BOND_TYPES: tuple[str, ...] = ("none", "SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")

# EDM's single / double / triple bond lengths in pm for the QM9 elements (symmetric tables)
_SINGLE = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("O", "O"): 148, ("O", "F"): 142, ("F", "F"): 142,
    # heavier elements of drug-like molecules (SDF files)
    ("H", "S"): 134, ("H", "Cl"): 127, ("H", "Br"): 141, ("H", "I"): 161, ("H", "P"): 144,
    ("C", "S"): 182, ("C", "Cl"): 177, ("C", "Br"): 194, ("C", "I"): 214, ("C", "P"): 184,
    ("N", "S"): 168, ("N", "Cl"): 175, ("N", "Br"): 214, ("N", "I"): 222, ("N", "P"): 177,
    ("O", "S"): 151, ("O", "Cl"): 164, ("O", "Br"): 172, ("O", "I"): 194, ("O", "P"): 163,
    ("F", "S"): 158, ("F", "Cl"): 166, ("F", "Br"): 178, ("F", "I"): 187, ("F", "P"): 156,
    ("S", "S"): 204, ("S", "Cl"): 207, ("S", "Br"): 225, ("S", "I"): 234, ("S", "P"): 210,
    ("Cl", "Cl"): 199, ("Cl", "Br"): 214, ("Cl", "P"): 203, ("Br", "Br"): 228, ("Br", "P"): 222,
    ("P", "P"): 221, ("I", "I"): 266,
}
_DOUBLE = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125, ("N", "O"): 121, ("O", "O"): 121,
           ("C", "S"): 160, ("O", "P"): 150, ("P", "S"): 186}
_TRIPLE = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}
#: margins in pm added to the single / double / triple lengths
MARGINS = (10, 5, 3)
#: valences of the stability rule
VALENCES = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "S": 4, "Cl": 1, "Br": 1, "I": 1, "P": 3}


def _length(table: dict, a: str, b: str) -> Optional[int]:
    return table.get((a, b), table.get((b, a)))


def bond_order(a: str, b: str, distance: float) -> int:
    """EDM's bond order (0-3) between elements ``a`` and ``b`` at ``distance`` Å."""
    d = 100.0 * distance
    single = _length(_SINGLE, a, b)
    if single is None or d >= single + MARGINS[0]:
        return 0
    double = _length(_DOUBLE, a, b)
    if double is None or d >= double + MARGINS[1]:
        return 1
    triple = _length(_TRIPLE, a, b)
    if triple is not None and d < triple + MARGINS[2]:
        return 3
    return 2


def infer_bonds(elements: Sequence[str], positions: np.ndarray) -> np.ndarray:
    """Bond-order matrix ``[n, n]`` of a 3D molecule from its pairwise distances (EDM's rule, :func:`bond_order`,
    evaluated for all pairs at once)."""
    n = len(elements)
    pos = np.asarray(positions, dtype=np.float64)
    dist = 100.0 * np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    kinds = sorted(set(elements))
    idx = np.array([kinds.index(e) for e in elements])
    # thresholds (length + margin, pm) per pair of element kinds; -inf where the table has no such bond
    limits = np.full((3, len(kinds), len(kinds)), -np.inf)
    for a, ea in enumerate(kinds):
        for b, eb in enumerate(kinds):
            for k, table in enumerate((_SINGLE, _DOUBLE, _TRIPLE)):
                length = _length(table, ea, eb)
                if length is not None:
                    limits[k, a, b] = length + MARGINS[k]
    lim = limits[:, idx[:, None], idx[None, :]]                       # [3, n, n]
    single = dist < lim[0]
    double = single & (dist < lim[1])
    triple = double & (dist < lim[2])
    orders = single.astype(np.int64) + double + triple
    np.fill_diagonal(orders, 0)
    return orders if n else np.zeros((0, 0), dtype=np.int64)


def stability(elements: Sequence[str], orders: np.ndarray) -> tuple[int, bool]:
    """(number of stable atoms, whether the molecule is stable) under EDM's valence rule; an element without a
    tabulated valence is never stable."""
    valence = orders.sum(1)
    stable = [VALENCES.get(e, -1) == int(v) for e, v in zip(elements, valence)]
    return int(sum(stable)), all(stable)


# ---------------------------------------------------------------------------------------------------- RDKit molecules
def _chem():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # invalid generated molecules are counted, not printed
    return Chem


def _parse_label(label: str) -> tuple[str, int]:
    """``"N+"`` -> ("N", 1), ``"O-"`` -> ("O", -1), ``"C"`` -> ("C", 0)."""
    element = label.rstrip("+-")
    rest = label[len(element):]
    return element, rest.count("+") - rest.count("-")


def build_mol(labels: Sequence[str], orders: np.ndarray, positions: Optional[np.ndarray] = None):
    """An unsanitized RDKit molecule from atom labels (``C``, ``N+``, ...), a bond matrix of categories (1 single,
    2 double, 3 triple, 4 aromatic) and optional coordinates (a conformer)."""
    Chem = _chem()
    rw = Chem.RWMol()
    for lab in labels:
        element, charge = _parse_label(lab)
        atom = Chem.Atom(element)
        atom.SetFormalCharge(charge)
        rw.AddAtom(atom)
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE, 4: Chem.BondType.AROMATIC}
    n = len(labels)
    for i in range(n):
        for j in range(i + 1, n):
            k = int(orders[i][j])
            if k > 0:
                rw.AddBond(i, j, kinds[k])
    mol = rw.GetMol()
    if positions is not None:
        conf = Chem.Conformer(n)
        for i, p in enumerate(np.asarray(positions, dtype=np.float64)):
            conf.SetAtomPosition(i, [float(v) for v in p])
        mol.AddConformer(conf, assignId=True)
    return mol


def sanitized(mol):
    """A sanitized copy of ``mol``, or None when RDKit refuses it (a valence error, an impossible aromatic ring)."""
    Chem = _chem()
    m = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(m)
    except Exception:  # noqa: BLE001 - any sanitization failure means "invalid"
        return None
    return m


def largest_fragment(mol):
    """The fragment of ``mol`` with most atoms (EDM computes validity on it)."""
    Chem = _chem()
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(frags, key=lambda m: m.GetNumAtoms()) if frags else mol


def num_fragments(mol) -> int:
    return len(_chem().GetMolFrags(mol))


def smiles_of(mol) -> Optional[str]:
    """Canonical SMILES (no stereochemistry, hydrogens implicit) of a sanitized molecule."""
    Chem = _chem()
    try:
        return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
    except Exception:  # noqa: BLE001
        return None


def graph_to_mol(types: Tensor, bonds: Tensor, atom_types: Sequence[str]):
    """A dense generated graph (atom categories ``[n]``, bond categories ``[n, n]``, real atoms only) -> an unsanitized
    RDKit molecule with implicit hydrogens."""
    labels = [atom_types[int(t)] for t in types.tolist()]
    return build_mol(labels, bonds.cpu().numpy())


def cloud_to_mol(types: Tensor, positions: Tensor, atom_types: Sequence[str]):
    """A generated point cloud (atom categories ``[n]``, coordinates ``[n, 3]`` in Å, explicit hydrogens) -> an
    unsanitized RDKit molecule with bonds from EDM's distance rule and the coordinates as a conformer."""
    labels = [atom_types[int(t)] for t in types.tolist()]
    pos = positions.double().cpu().numpy()
    return build_mol(labels, infer_bonds([_parse_label(x)[0] for x in labels], pos), pos)
