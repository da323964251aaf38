"""Files the molecule models write: SMILES files (2D), SDF files with 3D coordinates (3D) and a PNG grid of RDKit
depictions. A molecule RDKit cannot sanitize is still written (its SMILES line is commented ``# invalid``; its SDF block
is written unsanitized), so nothing generated is lost."""

from pathlib import Path
from typing import Sequence

from polydiff.domains.molecule.chem import _chem, sanitized, smiles_of


def write_smiles(mols: Sequence, path: Path) -> Path:
    """One canonical SMILES per line (``# invalid <raw SMILES>`` for molecules RDKit refuses)."""
    Chem = _chem()
    lines = []
    for i, m in enumerate(mols):
        s = sanitized(m)
        if s is not None:
            lines.append(f"{smiles_of(s)} gen_{i:04d}")
        else:
            lines.append(f"# invalid {Chem.MolToSmiles(m, canonical=False)} gen_{i:04d}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sdf(mols: Sequence, path: Path) -> Path:
    """All molecules in one SDF file (3D coordinates when they have a conformer; hydrogens as generated)."""
    Chem = _chem()
    blocks = []
    for i, m in enumerate(mols):
        s = sanitized(m)
        mol = Chem.Mol(s if s is not None else m)
        mol.SetProp("_Name", f"gen_{i:04d}" + ("" if s is not None else " invalid"))
        blocks.append(Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(blocks))
    return path


def draw_grid(mols: Sequence, path: Path, columns: int = 6, max_mols: int = 36) -> Path:
    """A PNG grid of 2D depictions of the first ``max_mols`` molecules (hydrogens hidden; invalid ones drawn as
    built, captioned ``invalid``)."""
    Chem = _chem()
    from rdkit.Chem import AllChem, Draw

    shown, legends = [], []
    for i, m in enumerate(list(mols)[:max_mols]):
        s = sanitized(m)
        mol = Chem.Mol(s if s is not None else m)
        if s is not None:
            mol = Chem.RemoveHs(mol)
        else:
            mol.UpdatePropertyCache(strict=False)
        mol.RemoveAllConformers()
        AllChem.Compute2DCoords(mol)
        shown.append(mol)
        legends.append(f"{i}" + ("" if s is not None else " invalid"))
    img = Draw.MolsToGridImage(shown or [Chem.Mol()], molsPerRow=max(1, min(columns, len(shown) or 1)),
                               subImgSize=(200, 200), legends=legends or [""])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(str(path))
    return path
