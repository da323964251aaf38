"""Molecule generation metrics: RDKit validity (whole molecule and EDM's largest fragment), connectedness, uniqueness,
novelty, atom and molecule stability (EDM's valence rule on bonds inferred from distances), and the Jensen-Shannon
divergence of pairwise-distance histograms.

Conventions (DiGress / EDM): ``valid`` is the share of generated molecules RDKit sanitizes as a whole;
``valid_largest_fragment`` sanitizes only the largest fragment (EDM's figure, higher); ``connected`` is one fragment;
``valid_connected`` both. ``unique`` is the share of distinct canonical SMILES among the valid molecules, ``novel`` the
share of those distinct SMILES absent from the training set.
"""

from typing import Iterable, Optional, Sequence

import numpy as np
from torch import Tensor

from polydiff.domains.molecule.chem import (
    _parse_label,
    infer_bonds,
    largest_fragment,
    num_fragments,
    sanitized,
    smiles_of,
    stability,
)

#: pairwise-distance histogram: bins of 0.1 Å on [0, 12] Å
DISTANCE_BINS = np.linspace(0.0, 12.0, 121)


def rdkit_metrics(mols: Sequence, train_smiles: Iterable[str]) -> dict[str, float]:
    """Validity, connectedness, uniqueness and novelty of unsanitized RDKit molecules."""
    if not mols:
        return {k: float("nan") for k in ("valid", "valid_largest_fragment", "connected", "valid_connected", "unique",
                                          "novel")}
    train = {s for s in train_smiles if s}
    valid, valid_frag, connected, smiles = [], [], [], []
    for m in mols:
        s = sanitized(m)
        valid.append(s is not None)
        connected.append(num_fragments(m) == 1 if m.GetNumAtoms() else False)
        valid_frag.append(sanitized(largest_fragment(m)) is not None if m.GetNumAtoms() else False)
        if s is not None:
            smi = smiles_of(s)
            if smi:
                smiles.append(smi)
    valid_a, conn_a = np.array(valid), np.array(connected)
    distinct = set(smiles)
    return {
        "valid": float(valid_a.mean()),
        "valid_largest_fragment": float(np.mean(valid_frag)),
        "connected": float(conn_a.mean()),
        "valid_connected": float((valid_a & conn_a).mean()),
        "unique": len(distinct) / len(smiles) if smiles else 0.0,
        "novel": len(distinct - train) / len(distinct) if distinct else 0.0,
    }


def stability_metrics(clouds: Sequence[tuple[Tensor, Tensor]], atom_types: Sequence[str]) -> dict[str, float]:
    """Atom and molecule stability (EDM) of 3D molecules ``(types [n], positions [n, 3])``."""
    stable_atoms = total_atoms = stable_mols = 0
    for types, pos in clouds:
        elements = [_parse_label(atom_types[int(t)])[0] for t in types.tolist()]
        s, ok = stability(elements, infer_bonds(elements, pos.double().cpu().numpy()))
        stable_atoms += s
        total_atoms += len(elements)
        stable_mols += ok
    return {"atom_stable": stable_atoms / max(total_atoms, 1), "mol_stable": stable_mols / max(len(clouds), 1)}


def distance_histogram(clouds: Sequence[tuple[Tensor, Tensor]], bins: Optional[np.ndarray] = None) -> np.ndarray:
    """Normalised histogram of all intra-molecular pairwise distances."""
    bins = DISTANCE_BINS if bins is None else bins
    counts = np.zeros(len(bins) - 1)
    for _, pos in clouds:
        p = pos.double().cpu().numpy()
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)[np.triu_indices(len(p), 1)]
        counts += np.histogram(np.clip(d, bins[0], bins[-1] - 1e-9), bins)[0]
    return counts / max(counts.sum(), 1.0)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (natural log) of two histograms."""
    p = p / max(p.sum(), 1e-300)
    q = q / max(q.sum(), 1e-300)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / b[nz])).sum())

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def distance_js(gen: Sequence[tuple[Tensor, Tensor]], ref: Sequence[tuple[Tensor, Tensor]]) -> float:
    """JS divergence between the pairwise-distance histograms of generated and reference molecules."""
    return js_divergence(distance_histogram(gen), distance_histogram(ref))
