"""Molecule readers and conversions: SMILES -> graph -> SMILES on RDKit's NCI file, SDF -> tensors -> SDF on RDKit's
EGFR file, XYZ frames, EDM's stability rule on real QM9 molecules against the reference figures, bad inputs."""

import warnings
from pathlib import Path

import pytest
import torch
from rdkit import Chem, RDConfig

from polydiff.core.utils import PolydiffError
from polydiff.datasets.molecules import MoleculeCloudDataModule, MoleculeGraphDataModule
from polydiff.datasets.readers.molecules import (
    atom_label,
    canonical_smiles,
    mol_to_cloud,
    mol_to_graph,
    read_qm9,
    read_sdf,
    read_smiles_file,
    read_xyz,
    record_mol,
)
from polydiff.domains.molecule.chem import cloud_to_mol, graph_to_mol, infer_bonds, sanitized, smiles_of, stability
from polydiff.domains.molecule.writers import draw_grid, write_sdf, write_smiles

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
EGFR = Path(RDConfig.RDContribDir) / "PBF" / "testData" / "egfr.sdf"


def _dense(x, edge_index, edge_attr):
    bonds = torch.zeros(len(x), len(x), dtype=torch.long)
    bonds[edge_index[0], edge_index[1]] = edge_attr
    return bonds


def test_smiles_graph_smiles_round_trip_on_nci():
    """Every molecule of first_5K.smi that RDKit parses comes back with the same canonical SMILES (no stereo), except
    the one with a dative bond (not a bond category) and the 8 with radicals (hydrogens implicit cannot say that an
    atom has fewer hydrogens than its default valence)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = read_smiles_file(NCI, on_error="skip")
    assert len(records) == 4991
    vocab = sorted({atom_label(a) for r in records for a in r.mol.GetAtoms()})
    same, refused, radicals, other = 0, 0, 0, []
    for r in records:
        try:
            x, ei, ea = mol_to_graph(record_mol(r, kekulize=True), vocab, r.source)
        except PolydiffError:
            refused += 1
            continue
        back = sanitized(graph_to_mol(x, _dense(x, ei, ea), vocab))
        if back is not None and smiles_of(back) == canonical_smiles(r.mol):
            same += 1
        elif any(a.GetNumRadicalElectrons() for a in r.mol.GetAtoms()):
            radicals += 1
        else:
            other.append(r.source)
    assert other == []
    assert (same, refused, radicals) == (4982, 1, 8)


def test_aromatic_bonds_kept_without_kekulization():
    mol = Chem.MolFromSmiles("c1ccncc1O")
    vocab = ["C", "N", "O"]
    x, ei, ea = mol_to_graph(mol, vocab)
    assert (ea == 4).sum() == 12  # 6 aromatic bonds, both directions
    assert smiles_of(sanitized(graph_to_mol(x, _dense(x, ei, ea), vocab))) == canonical_smiles(mol)
    x, ei, ea = mol_to_graph(record_mol(type("R", (), {"mol": mol, "smiles": ""})(), kekulize=True), vocab)
    assert sorted(ea.unique().tolist()) == [1, 2]


def test_sdf_tensors_sdf_round_trip_on_egfr(tmp_path):
    """EGFR's 365 3D molecules with hydrogens: elements and coordinates survive tensors and the SDF writer, and EDM's
    distance rule recovers the file's bond graph for all but one."""
    records = read_sdf(EGFR)
    assert len(records) == 365
    vocab = sorted({a.GetSymbol() for r in records for a in r.mol.GetAtoms()})
    clouds = [mol_to_cloud(r.mol, vocab, r.source) for r in records]
    mols = [cloud_to_mol(t, p, vocab) for t, p in clouds]
    same_graph = sum({frozenset((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in r.mol.GetBonds()}
                     == {frozenset((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in m.GetBonds()}
                     for r, m in zip(records, mols))
    assert same_graph == 364
    path = write_sdf(mols, tmp_path / "out.sdf")
    back = read_sdf(path, sanitize=False)  # bonds from distances: most are not valid molecules
    assert len(back) == 365
    for (t, p), r in zip(clouds, back):
        t2, p2 = mol_to_cloud(r.mol, vocab)
        assert torch.equal(t, t2)
        assert (p - p2).abs().max() < 1e-4  # SDF keeps 4 decimals
    assert draw_grid(mols[:4], tmp_path / "grid.png").stat().st_size > 0


def test_xyz_frames(tmp_path):
    f = tmp_path / "two.xyz"
    f.write_text("3\nwater\nO 0 0 0.1173\nH 0 0.7572 -0.4692\nH 0 -0.7572 -0.4692\n"
                 "2\nhf\nH 0 0 0\nF 0 0 0.917\n")
    recs = read_xyz(f)
    assert [r.name for r in recs] == ["water", "hf"] and recs[0].elements == ["O", "H", "H"]
    assert stability(recs[0].elements, infer_bonds(recs[0].elements, recs[0].positions)) == (3, True)
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\nwater\nO 0 0 0.1173\nH 0 0.7572\nH 0 -0.7572 -0.4692\n")
    with pytest.raises(PolydiffError, match=r"bad.xyz:4: malformed XYZ"):
        read_xyz(bad)


def test_stability_rule_on_real_qm9():
    """EDM's bond rule and valences on 5,000 real QM9 molecules (with hydrogens, DFT coordinates): 99.4 % of atoms and
    95.3 % of molecules stable, 97.6 % RDKit-valid (the reference figures of ANCHORS.md)."""
    records = read_qm9(max_molecules=5000, seed=0, coordinates=True)
    assert len(records) == 5000
    vocab = ["H", "C", "N", "O", "F"]
    stable_atoms = atoms = stable_mols = valid = 0
    for r in records:
        s, ok = stability(r.elements, infer_bonds(r.elements, r.positions))
        stable_atoms, atoms, stable_mols = stable_atoms + s, atoms + len(r.elements), stable_mols + ok
        types = torch.tensor([vocab.index(e) for e in r.elements])
        valid += sanitized(cloud_to_mol(types, torch.as_tensor(r.positions), vocab)) is not None
    assert round(stable_atoms / atoms, 3) == 0.994
    assert round(stable_mols / 5000, 3) == 0.953
    assert round(valid / 5000, 3) == 0.976


def test_bad_smiles_names_file_and_line_stop_or_skip(tmp_path):
    f = tmp_path / "mine.smi"
    f.write_text("smiles\nCCO ethanol\nC1CC bad_ring\nc1ccccc1 benzene\n")
    with pytest.raises(PolydiffError, match=r"mine.smi:3: cannot parse SMILES 'C1CC'.*on_error skip"):
        read_smiles_file(f)
    with pytest.warns(UserWarning, match=r"mine.smi:3"):
        recs = read_smiles_file(f, on_error="skip")
    assert [r.name for r in recs] == ["ethanol", "benzene"]


def test_broken_sdf_record_names_line(tmp_path):
    good = Chem.MolToMolBlock(Chem.AddHs(Chem.MolFromSmiles("CO")))
    broken = "broken\n  junk\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\nM  END\n"
    f = tmp_path / "mine.sdf"
    f.write_text(good + "$$$$\n" + broken + "$$$$\n" + good + "$$$$\n")
    start = len((good + "$$$$\n").splitlines()) + 1
    with pytest.raises(PolydiffError, match=rf"mine.sdf:{start}: broken SDF record"):
        read_sdf(f)
    with pytest.warns(UserWarning, match=rf"mine.sdf:{start}"):
        assert len(read_sdf(f, on_error="skip")) == 2


def test_graph_datamodule_on_own_smiles(tmp_path):
    f = tmp_path / "mine.smi"
    f.write_text("CCO\nc1ccccc1\nCC(=O)[O-].[Na+]\nCCN\nCCC\nOCCO\n")
    dm = MoleculeGraphDataModule(path=str(f), atom_types=("C", "N", "O", "O-"), max_atoms=9, test_fraction=0.2,
                                 val_fraction=0.2)
    with pytest.raises(PolydiffError, match=r"mine.smi:3: atom Na\+ is not among --data.atom_types"):
        dm.setup()
    dm = MoleculeGraphDataModule(path=str(f), atom_types=("C", "N", "O", "O-"), max_atoms=9, on_error="skip",
                                 test_fraction=0.2, val_fraction=0.2)
    with pytest.warns(UserWarning, match="Na"):
        dm.setup()
    assert len(dm.items) == 5
    node, edge = dm.marginals()
    assert torch.isclose(node.sum(), torch.tensor(1.0, dtype=torch.float64)) and edge[4] == 0  # kekulized
    smiles = dm.split_smiles("train") + dm.split_smiles("val") + dm.split_smiles("test")
    assert sorted(smiles) == sorted(["CCO", "c1ccccc1", "CCN", "CCC", "OCCO"])


def test_cloud_datamodule_on_egfr_subset(tmp_path):
    dm = MoleculeCloudDataModule(path=str(EGFR), atom_types=("H", "C", "N", "O", "F", "S", "Cl", "Br", "I"),
                                 max_atoms=40, on_error="skip", test_fraction=0.2, val_fraction=0.1)
    with pytest.warns(UserWarning, match="more than --data.max_atoms=40"):
        dm.setup()
    assert 0 < len(dm.items) < 365
    batch = next(iter(dm.train_dataloader()))
    real = batch["mask"].bool()
    com = (batch["pos"] * batch["mask"].unsqueeze(-1)).sum(1) / batch["mask"].sum(1, keepdim=True)
    assert com.abs().max() < 1e-4 and batch["pos"][~real].abs().max() == 0
    assert write_smiles([Chem.MolFromSmiles("CCO")], tmp_path / "x.smi").read_text().startswith("CCO")
