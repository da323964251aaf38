"""Readers of molecules: SMILES files, SDF and XYZ files, and QM9 from the ``qm9pack`` wheel.

Every reader returns :class:`MoleculeRecord` objects (an RDKit molecule or plain atoms and coordinates, with the file and
line it came from). A record that cannot be read (an unparseable SMILES, a broken SDF block, a malformed XYZ frame) is
reported with its file and line and either stops reading (``on_error="stop"``: a :class:`PolydiffError`) or is skipped
with a warning (``on_error="skip"``); every other record is kept.

The conversions between RDKit molecules and the tensors the models see live here too: :func:`mol_to_graph` (atom types,
bond types, hydrogens implicit: the 2D model's input) and :func:`mol_to_cloud` (atom types with explicit hydrogens and
3D coordinates: the 3D model's input). The inverse conversions, which build RDKit molecules from generated tensors, live
with the molecule domain.
"""

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from polydiff.core.utils import PolydiffError

OnError = Literal["stop", "skip"]

#: bond categories of the 2D graphs; 0 is "no bond"
BOND_TYPES: tuple[str, ...] = ("none", "SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")

SMILES_SUFFIXES = (".smi", ".smiles", ".txt", ".csv")
SDF_SUFFIXES = (".sdf", ".mol")
XYZ_SUFFIXES = (".xyz",)


@dataclass
class MoleculeRecord:
    """One molecule read from a file: an RDKit ``mol`` (SMILES, SDF) or ``elements`` + ``positions`` (XYZ, QM9 rows),
    its ``name`` and where it came from (``source``: ``file:line``)."""

    source: str
    name: str = ""
    mol: object = None
    elements: Optional[list[str]] = None
    positions: Optional[np.ndarray] = None
    smiles: str = ""


def _rdkit():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # the readers report failures themselves, with file and line
    return Chem


def report(message: str, on_error: OnError) -> None:
    """Stop with ``message`` or warn and go on, as the user chose."""
    if on_error == "stop":
        raise PolydiffError(f"{message}; fix or remove it, or set --data.on_error skip to skip bad records")
    warnings.warn(f"skipped: {message}", stacklevel=3)


# ---------------------------------------------------------------------------------------------------- SMILES
def read_smiles_file(path: str | Path, on_error: OnError = "stop") -> list[MoleculeRecord]:
    """One molecule per line: a SMILES, optionally followed by whitespace and a name; blank lines and ``#`` comments are
    ignored, as is a first line ``smiles`` / ``SMILES`` (a header)."""
    Chem = _rdkit()
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolydiffError(f"{p}: cannot be read as a text SMILES file ({type(exc).__name__}); give one SMILES per "
                            "line") from None
    out = []
    for k, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.replace(",", " ").split(None, 1) if p.suffix == ".csv" else text.split(None, 1)
        smi = parts[0]
        if k == 1 and smi.lower() == "smiles":
            continue
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            report(f"{p}:{k}: cannot parse SMILES {smi!r}", on_error)
            continue
        out.append(MoleculeRecord(source=f"{p}:{k}", name=parts[1].strip() if len(parts) > 1 else "", mol=mol,
                                  smiles=smi))
    return out


# ---------------------------------------------------------------------------------------------------- SDF
def read_sdf(path: str | Path, on_error: OnError = "stop", remove_hs: bool = False,
             sanitize: bool = True) -> list[MoleculeRecord]:
    """Every record of an SDF file (blocks ending with ``$$$$``), with 3D coordinates and, unless ``remove_hs``,
    explicit hydrogens. A block RDKit cannot read (or, with ``sanitize``, cannot sanitize) is reported with the line
    it starts on."""
    Chem = _rdkit()
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolydiffError(f"{p}: cannot be read as an SDF text file ({type(exc).__name__})") from None
    out, block, start = [], [], 1
    for k, line in enumerate(lines, 1):
        if not block:
            start = k
        block.append(line)
        if line.strip() == "$$$$" or k == len(lines):
            body = "\n".join(block)
            block = []
            if not body.strip() or body.strip() == "$$$$":
                continue
            mol = Chem.MolFromMolBlock(body, sanitize=sanitize, removeHs=remove_hs and sanitize)
            if mol is None or mol.GetNumAtoms() == 0:
                report(f"{p}:{start}: broken SDF record", on_error)
                continue
            out.append(MoleculeRecord(source=f"{p}:{start}", name=mol.GetProp("_Name") if mol.HasProp("_Name") else "",
                                      mol=mol))
    if not out and on_error == "stop":
        raise PolydiffError(f"{p}: no molecule records; give an SDF file (V2000/V3000 blocks ending with $$$$)")
    return out


# ---------------------------------------------------------------------------------------------------- XYZ
def read_xyz(path: str | Path, on_error: OnError = "stop") -> list[MoleculeRecord]:
    """Every frame of an XYZ file: an atom count line, a comment line (the name), then ``element x y z`` per atom
    (Å). A frame with a wrong count or a malformed atom line is reported with its line."""
    from rdkit.Chem import GetPeriodicTable

    table = GetPeriodicTable()
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolydiffError(f"{p}: cannot be read as an XYZ text file ({type(exc).__name__})") from None
    out, k = [], 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        start = k + 1
        try:
            n = int(lines[k].split()[0])
        except ValueError:
            report(f"{p}:{start}: expected an atom count, found {lines[k].strip()!r}", on_error)
            return out  # the frame boundaries are lost: nothing after it can be read reliably
        atoms = lines[k + 2:k + 2 + n]
        k += 2 + n
        elements, coords, bad = [], [], None
        for j, line in enumerate(atoms):
            parts = line.split()
            try:
                sym = parts[0].capitalize()
                if table.GetAtomicNumber(sym) <= 0:
                    raise ValueError
                xyz = [float(v.replace("*^", "e")) for v in parts[1:4]]
                if len(xyz) != 3:
                    raise ValueError
                coords.append(xyz)
                elements.append(sym)
            except (ValueError, IndexError, RuntimeError):
                bad = start + 2 + j
                break
        if bad is not None or len(elements) != n:
            report(f"{p}:{bad or start}: malformed XYZ frame (expected {n} lines 'element x y z')", on_error)
            continue
        out.append(MoleculeRecord(source=f"{p}:{start}", name=lines[start].strip() if start < len(lines) else "",
                                  elements=elements, positions=np.asarray(coords, dtype=np.float64)))
    if not out and on_error == "stop":
        raise PolydiffError(f"{p}: no XYZ frames; give atom-count / comment / 'element x y z' frames")
    return out


def read_molecule_files(path: str | Path, on_error: OnError = "stop") -> list[MoleculeRecord]:
    """Molecules from a file or a folder of SMILES (``.smi``, ``.smiles``, ``.txt``, ``.csv``), SDF (``.sdf``, ``.mol``)
    and XYZ (``.xyz``) files."""
    p = Path(path)
    if not p.exists():
        raise PolydiffError(f"--data.path {path} does not exist; give a SMILES, SDF or XYZ file or a folder of them")
    files = [p] if p.is_file() else sorted(f for f in p.iterdir()
                                           if f.suffix.lower() in SMILES_SUFFIXES + SDF_SUFFIXES + XYZ_SUFFIXES)
    if not files:
        raise PolydiffError(f"--data.path {path} holds no molecule files (*.smi, *.smiles, *.txt, *.csv, *.sdf, *.mol, "
                            "*.xyz)")
    out: list[MoleculeRecord] = []
    for f in files:
        suffix = f.suffix.lower()
        if suffix in SDF_SUFFIXES:
            out += read_sdf(f, on_error)
        elif suffix in XYZ_SUFFIXES:
            out += read_xyz(f, on_error)
        elif suffix in SMILES_SUFFIXES:
            out += read_smiles_file(f, on_error)
        else:
            raise PolydiffError(f"--data.path {f}: unknown molecule file type {f.suffix!r}; use .smi, .sdf or .xyz")
    return out


# ---------------------------------------------------------------------------------------------------- QM9
def qm9_folder() -> Path:
    """The CSV folder of the installed ``qm9pack`` wheel, found without importing it (its ``import`` needs
    ``pkg_resources``, gone from setuptools >= 81)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise PolydiffError("QM9 needs the qm9pack wheel: pip install qm9pack==1.0.3 (or give --data.path)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (folder / "qm9_part1.csv").is_file():
        raise PolydiffError(f"{folder}: no qm9_part*.csv; reinstall qm9pack==1.0.3")
    return folder


@functools.lru_cache(maxsize=2)
def _qm9_table(coordinates: bool):
    """The rows of the three QM9 CSV files (read once per process: fit, test and sample in one process share it)."""
    import pandas as pd

    folder = qm9_folder()
    cols = ["XYZ_file", "SMILES", "N_atoms", "Stoichiometry"] + (["Elements", "XYZ_Ang"] if coordinates else [])
    frames = []
    for part in (1, 2, 3):
        f = folder / f"qm9_part{part}.csv"
        df = pd.read_csv(f, usecols=cols)
        df["source"] = [f"{f}:{i + 2}" for i in range(len(df))]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def read_qm9(max_atoms: int = 29, max_heavy_atoms: int = 9, max_molecules: int = 0, seed: int = 0,
             coordinates: bool = False) -> list[MoleculeRecord]:
    """QM9 molecules (Ramakrishnan et al. 2014) from ``qm9pack``: at most ``max_atoms`` atoms counting hydrogens and
    ``max_heavy_atoms`` heavy atoms, a fixed random subset of ``max_molecules`` (0: all), with the DFT coordinates when
    ``coordinates``. Records keep the CSV row (``qm9_partK.csv:line``) as their source."""
    df = _qm9_table(coordinates)
    # Stoichiometry is "[H, C, N, O, F]" counts
    counts = np.array([[int(v) for v in s.strip("[]").split(",")] for s in df["Stoichiometry"]])
    keep = (df["N_atoms"].to_numpy() <= max_atoms) & (counts[:, 1:].sum(1) <= max_heavy_atoms)
    df = df[keep]
    if max_molecules and len(df) > max_molecules:
        df = df.sample(n=max_molecules, random_state=seed).sort_index()
    out = []
    for row in df.itertuples(index=False):
        rec = MoleculeRecord(source=row.source, name=str(row.XYZ_file).replace(".xyz", ""), smiles=row.SMILES)
        if coordinates:
            import ast

            rec.elements = list(ast.literal_eval(row.Elements))
            rec.positions = np.asarray(ast.literal_eval(row.XYZ_Ang), dtype=np.float64)
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------------- conversions
def atom_label(atom) -> str:
    """An atom's type label: its element, with ``+`` / ``-`` appended for a formal charge (``N+``, ``O-``)."""
    q = atom.GetFormalCharge()
    return atom.GetSymbol() + ("+" * q if q > 0 else "-" * -q)


def record_mol(record: MoleculeRecord, kekulize: bool = True):
    """The RDKit molecule of a record (parsed from its SMILES for QM9 rows), hydrogens removed, kekulized on request;
    None if it cannot be built."""
    Chem = _rdkit()
    mol = record.mol if record.mol is not None else Chem.MolFromSmiles(record.smiles) if record.smiles else None
    if mol is None:
        return None
    mol = Chem.RemoveHs(Chem.Mol(mol))
    if kekulize:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    return mol


def mol_to_graph(mol, atom_types: Sequence[str], source: str = "<molecule>") -> tuple[Tensor, Tensor, Tensor]:
    """An RDKit molecule (hydrogens implicit) -> ``(atom type indices [n], edge_index [2, 2m], bond types [2m])`` with
    bond types indexing :data:`BOND_TYPES` (1 single, 2 double, 3 triple, 4 aromatic). An atom outside ``atom_types``
    or another bond type is a :class:`PolydiffError` naming ``source``."""
    index = {t: i for i, t in enumerate(atom_types)}
    types = []
    for a in mol.GetAtoms():
        label = atom_label(a)
        if label not in index:
            raise PolydiffError(f"{source}: atom {label} is not among --data.atom_types {list(atom_types)}; add it "
                                "(and to --model.atom_types)")
        types.append(index[label])
    rows, cols, bonds = [], [], []
    for b in mol.GetBonds():
        name = str(b.GetBondType())
        if name not in BOND_TYPES[1:]:
            raise PolydiffError(f"{source}: bond type {name} is not one of {list(BOND_TYPES[1:])}")
        u, v, t = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), BOND_TYPES.index(name)
        rows += [u, v]
        cols += [v, u]
        bonds += [t, t]
    return (torch.tensor(types, dtype=torch.long), torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
            torch.tensor(bonds, dtype=torch.long))


def mol_to_cloud(mol, atom_types: Sequence[str], source: str = "<molecule>") -> tuple[Tensor, Tensor]:
    """An RDKit molecule with a 3D conformer -> ``(atom type indices [n], positions [n, 3] in Å)``, hydrogens as they
    are in the molecule (explicit in SDF files read with ``remove_hs=False``)."""
    if mol.GetNumConformers() == 0:
        raise PolydiffError(f"{source}: the molecule has no coordinates; give SDF/XYZ files with 3D coordinates")
    pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)
    return elements_to_types([a.GetSymbol() for a in mol.GetAtoms()], atom_types, source), pos


def elements_to_types(elements: Sequence[str], atom_types: Sequence[str], source: str = "<molecule>") -> Tensor:
    """Element symbols -> indices into ``atom_types`` (a clear error for one that is not there)."""
    index = {t: i for i, t in enumerate(atom_types)}
    missing = [e for e in elements if e not in index]
    if missing:
        raise PolydiffError(f"{source}: element {missing[0]} is not among --data.atom_types {list(atom_types)}; add it "
                            "(and to --model.atom_types)")
    return torch.tensor([index[e] for e in elements], dtype=torch.long)


def canonical_smiles(mol) -> Optional[str]:
    """RDKit's canonical SMILES without stereochemistry, or None."""
    Chem = _rdkit()
    try:
        return Chem.MolToSmiles(mol, isomericSmiles=False)
    except Exception:  # noqa: BLE001 - any RDKit failure means "no SMILES"
        return None


__all__ = [
    "BOND_TYPES",
    "MoleculeRecord",
    "atom_label",
    "canonical_smiles",
    "elements_to_types",
    "mol_to_cloud",
    "mol_to_graph",
    "qm9_folder",
    "read_molecule_files",
    "read_qm9",
    "read_sdf",
    "read_smiles_file",
    "read_xyz",
    "record_mol",
]
