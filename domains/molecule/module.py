"""The molecule LightningModules: 2D graphs of atom and bond types (DiGress on the graph domain's machinery) and 3D
E(n)-equivariant generation of coordinates and atom types (EDM for molecules).

* :class:`MoleculeGraphDiffusion`: the graph domain's :class:`~polydiff.domains.graph.GraphDiffusionModule` (marginal
  categorical diffusion of node and edge categories, graph transformer with structural features) with atom types as node
  categories and bond categories none / single / double / triple / aromatic as edge categories, hydrogens implicit
  (DiGress on QM9, Vignac et al. 2023).
* :class:`MoleculeEDM`: Gaussian diffusion of ``x0 = [coordinates, type_scale * one-hot types]`` ``[B, N, 3 + K]`` for
  padded molecules with an :class:`~polydiff.domains.molecule.egnn.EGNN` (Hoogeboom et al. 2022). The coordinate noise,
  the network's coordinate output and the samples live at zero centre of mass over the real atoms; atom counts come
  from the training histogram (a buffer, stored in checkpoints). Bonds of generated molecules are inferred from
  distances with EDM's rule (:mod:`.chem`) and handed to RDKit.

``polydiff test`` reports, beside the model's figures, those of a control (2D: i.i.d. marginal atom and bond types,
``iid_*``; 3D: Gaussian coordinates at the data's radius with true atom types, ``gauss_*``) and of the held-out data
(``data_*``).
"""

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.base import TrainingConfig
from polydiff.core.discrete import CategoricalConfig, CategoricalSamplerConfig
from polydiff.core.module import DiffusionBatch, DiffusionConfig, DiffusionModule
from polydiff.core.objective import ObjectiveConfig
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError, sum_across_ranks
from polydiff.domains.graph import GraphDiffusionModule
from polydiff.domains.molecule.api import MoleculeCloudAPI, MoleculeGraphAPI
from polydiff.domains.molecule.chem import BOND_TYPES
from polydiff.domains.molecule.controls import coordinate_std, gaussian_coordinates, iid_marginal_graphs
from polydiff.domains.molecule.data import MoleculeCloudData, MoleculeGraphData, require
from polydiff.domains.molecule.egnn import EGNN
from polydiff.domains.molecule.geometry import remove_mean
from polydiff.domains.molecule.metrics import distance_js, rdkit_metrics, stability_metrics
from polydiff.domains.molecule.writers import draw_grid, write_sdf, write_smiles

QM9_ATOMS_2D = ("C", "N", "O", "F", "N+", "O-")
QM9_ATOMS_3D = ("H", "C", "N", "O", "F")


def _check_atom_types(model_types: tuple[str, ...], data_types: tuple[str, ...]) -> None:
    if tuple(model_types) != tuple(data_types):
        raise PolydiffError(f"--data.atom_types {list(data_types)} differ from --model.atom_types "
                            f"{list(model_types)}; set them equal")


class MoleculeGraphDiffusion(MoleculeGraphAPI, GraphDiffusionModule):
    """2D molecule generation: DiGress-style discrete diffusion of atom types and bond categories (hydrogens implicit).

    Args:
        atom_types: atom type labels (element, then + / - per formal charge), the node categories.
        max_atoms: largest molecule in heavy atoms (the atom-count histogram has max_atoms + 1 bins).
        hidden_nodes: node width of the graph transformer (divisible by heads).
        hidden_edges: edge width of the graph transformer.
        hidden_graph: graph-feature width of the graph transformer.
        heads: attention heads.
        layers: transformer layers.
        k_eigenvalues: first non-zero Laplacian eigenvalues of the noisy graph given to the network.
        dropout: dropout inside the transformer layers.
        edge_weight: weight of the bond terms in the loss (DiGress: 5).
        num_eval_samples: molecules sampled by polydiff test.
        eval_batch_size: molecules sampled at once.
        diffusion: the categorical process (marginal transition, schedule, steps T) and the loss.
        sampler: default sampler (ancestral, steps <= T) for polydiff test and polydiff sample.
        training: optimiser settings.
    """

    domain = "molecule"

    def __init__(
        self,
        atom_types: tuple[str, ...] = QM9_ATOMS_2D,
        max_atoms: int = 9,
        hidden_nodes: int = 64,
        hidden_edges: int = 32,
        hidden_graph: int = 64,
        heads: int = 4,
        layers: int = 4,
        k_eigenvalues: int = 5,
        dropout: float = 0.0,
        edge_weight: float = 5.0,
        num_eval_samples: int = 500,
        eval_batch_size: int = 250,
        diffusion: CategoricalConfig = CategoricalConfig(transition="marginal", schedule="cosine", steps=500,
                                                         ce_weight=1.0, bound_times=20),
        sampler: CategoricalSamplerConfig = CategoricalSamplerConfig(name="ancestral", steps=500),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        if len(atom_types) < 2:
            raise PolydiffError(f"--model.atom_types needs at least 2 types, got {list(atom_types)}")
        super().__init__(max_nodes=max_atoms, num_node_types=len(atom_types), num_edge_types=len(BOND_TYPES),
                         hidden_nodes=hidden_nodes, hidden_edges=hidden_edges, hidden_graph=hidden_graph, heads=heads,
                         layers=layers, k_eigenvalues=k_eigenvalues, dropout=dropout, edge_weight=edge_weight,
                         validity="none", orbits=False, num_eval_samples=num_eval_samples,
                         eval_batch_size=eval_batch_size, diffusion=diffusion, sampler=sampler, training=training)
        self.atom_types = tuple(atom_types)
        self.max_atoms = max_atoms
        self._data: Optional[MoleculeGraphData] = None
        # this class's arguments only (the graph base saved its own, which this class does not take)
        self.save_hyperparameters()

    def connect_data(self, datamodule: Any) -> None:
        """Check atom types and sizes against the data; at fit, store the atom-count histogram and the marginals."""
        dm = require(datamodule, MoleculeGraphData, "2D molecule", "polydiff.datasets.molecules.MoleculeGraphDataModule")
        _check_atom_types(self.atom_types, dm.atom_types)
        if dm.max_nodes > self.max_atoms:
            raise PolydiffError(f"--data.max_atoms={dm.max_nodes} exceeds --model.max_atoms={self.max_atoms}; set them "
                                "equal")
        if dm.num_edge_types != self.num_edge_types:
            raise PolydiffError(f"the data has {dm.num_edge_types} bond categories, the model {self.num_edge_types}")
        self._data = dm
        if self.trainer.state.fn == "fit":
            node_m, edge_m = dm.marginals()
            self.set_data_statistics(dm.node_count_histogram(), node_m, edge_m)

    def predict_step(self, batch: Any, batch_idx: int) -> list[Optional[str]]:
        """``polydiff predict``: one generated molecule (canonical SMILES, None if invalid) per molecule of the batch."""
        from polydiff.domains.molecule.chem import sanitized, smiles_of

        mols = self.sample_molecules(int(batch.num_graphs), seed=batch_idx * self.trainer.world_size + self.global_rank)
        return [smiles_of(s) if (s := sanitized(m)) is not None else None for m in mols]

    def write_predictions(self, prediction: list[Optional[str]], batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        """``polydiff predict``: the batch's molecules in ``<prefix>.smi`` (canonical SMILES; ``# invalid`` where
        RDKit refused the generated graph)."""
        path = out_dir / f"{prefix}.smi"
        path.write_text("".join(f"{s} gen_{i:04d}\n" if s else f"# invalid gen_{i:04d}\n"
                                for i, s in enumerate(prediction)))
        return [path]

    def write_samples(self, out_dir: Path, num_samples: int, sampler: CategoricalSamplerConfig, seed: int,
                      input: Optional[str] = None) -> list[Path]:
        """``samples.smi`` (one canonical SMILES per line, invalid ones commented) and ``molecules.png``."""
        if input is not None:
            raise PolydiffError("molecule generation takes no --input; drop it")
        mols = self.sample_molecules(num_samples, sampler, seed, progress=True)
        out_dir = Path(out_dir)
        return [write_smiles(mols, out_dir / "samples.smi"), draw_grid(mols, out_dir / "molecules.png")]

    def test_metrics(self) -> dict[str, float]:
        """RDKit metrics of sampled molecules, of the i.i.d. marginal control (``iid_*``) and of the test molecules
        (``data_*``)."""
        if self._data is None:
            raise PolydiffError("polydiff test needs the molecule DataModule (connect_data was not called)")
        train = self._data.split_smiles("train")
        num = self.num_eval_samples
        graphs = self.sample_graphs_dense(num, self.sampler_config, seed=0)
        mols = self.graphs_to_molecules(graphs)
        out = rdkit_metrics(mols, train)
        node_m, edge_m = self._data.marginals()
        control = iid_marginal_graphs(num, self.node_counts.cpu(), node_m, edge_m, seed=1)
        out.update({f"iid_{k}": v for k, v in rdkit_metrics(self.graphs_to_molecules(control), train).items()})
        test = self.graphs_to_molecules(self._data.split_graphs("test"))
        out.update({f"data_{k}": v for k, v in rdkit_metrics(test, train).items()})
        out["num_generated"] = float(len(mols))
        out["mean_atoms"] = float(sum(len(t) for t, _ in graphs) / max(len(graphs), 1))
        run_dir = self.run_dir() if self._trainer is not None else None
        if run_dir is not None and self.trainer.is_global_zero:
            write_smiles(mols, run_dir / "test_samples.smi")
            draw_grid(mols, run_dir / "test_samples.png")
        return out


class MoleculeEDM(MoleculeCloudAPI, DiffusionModule):
    """3D molecule generation (EDM for molecules): coordinates and one-hot atom types diffused jointly with an EGNN.

    Args:
        atom_types: element symbols, the atom categories (hydrogens explicit).
        max_atoms: largest molecule in atoms (the atom-count histogram has max_atoms + 1 bins).
        hidden: EGNN feature width.
        layers: EGNN layers.
        coords_range: largest total coordinate move of the EGNN per evaluation (EDM: 15 Å), split over the layers.
        normalization: divisor of the EGNN's sums over neighbours (EDM on QM9: 1).
        type_scale: scale of the one-hot atom types in x0 (EDM: 0.25, so coordinates are fixed first).
        num_eval_samples: molecules sampled by polydiff test.
        eval_batch_size: molecules sampled at once.
        diffusion: forward process and prediction target (EDM: a VP process, eps prediction).
        objective: training noise levels and loss weighting.
        sampler: default sampler for polydiff test and polydiff sample.
        training: optimiser settings.
    """

    domain = "molecule3d"

    def __init__(
        self,
        atom_types: tuple[str, ...] = QM9_ATOMS_3D,
        max_atoms: int = 29,
        hidden: int = 64,
        layers: int = 4,
        coords_range: float = 15.0,
        normalization: float = 1.0,
        type_scale: float = 0.25,
        num_eval_samples: int = 500,
        eval_batch_size: int = 250,
        diffusion: DiffusionConfig = DiffusionConfig(process="vp_cosine", prediction="eps"),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(name="ddpm", steps=500),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(diffusion, objective, sampler, training)
        if len(atom_types) < 1:
            raise PolydiffError("--model.atom_types is empty; give the element symbols of the data")
        if type_scale <= 0:
            raise PolydiffError(f"--model.type_scale must be > 0 (EDM: 0.25), got {type_scale}")
        self.atom_types = tuple(atom_types)
        self.max_atoms = max_atoms
        self.type_scale = type_scale
        self.num_eval_samples = num_eval_samples
        self.eval_batch_size = eval_batch_size
        self.network = EGNN(len(atom_types), hidden, layers, coords_range, normalization)
        counts = torch.zeros(max_atoms + 1)
        counts[max_atoms] = 1.0
        self.register_buffer("atom_counts", counts)
        self._data: Optional[MoleculeCloudData] = None
        self._test_totals: dict[str, float] = {}
        self.save_hyperparameters()

    # ------------------------------------------------------------------ data
    def connect_data(self, datamodule: Any) -> None:
        """Check atom types and sizes against the data; at fit, store the training atom-count histogram."""
        dm = require(datamodule, MoleculeCloudData, "3D molecule", "polydiff.datasets.molecules.MoleculeCloudDataModule")
        _check_atom_types(self.atom_types, dm.atom_types)
        if dm.max_atoms > self.max_atoms:
            raise PolydiffError(f"--data.max_atoms={dm.max_atoms} exceeds --model.max_atoms={self.max_atoms}; set them "
                                "equal")
        self._data = dm
        if self.trainer.state.fn == "fit":
            hist = dm.atom_count_histogram()
            if hist.sum() <= 0:
                raise PolydiffError("no training molecules: the atom-count histogram is empty")
            self.atom_counts.data = hist[: self.max_atoms + 1].float().to(self.atom_counts.device)

    # ------------------------------------------------------------------ hooks of the Gaussian core
    def encode(self, batch: dict[str, Tensor]) -> DiffusionBatch:
        """Padded molecules -> ``x0 = [positions at zero CoM, type_scale * one-hot types]`` ``[B, N, 3 + K]``, the node
        mask as condition and as loss mask."""
        mask = batch["mask"].float()
        if batch["types"].numel() and int(batch["types"].max()) >= len(self.atom_types):
            raise PolydiffError(f"atom type {int(batch['types'].max())} out of range for --model.atom_types "
                                f"{list(self.atom_types)}")
        onehot = F.one_hot(batch["types"], len(self.atom_types)).float() * self.type_scale
        x0 = torch.cat([remove_mean(batch["pos"].float(), mask), onehot * mask.unsqueeze(-1)], -1)
        return DiffusionBatch(x0=x0, cond=mask, mask=mask.unsqueeze(-1))

    def node_mask_of(self, x0: Tensor) -> Tensor:
        """The node mask of an encoded ``x0``: real atoms have a non-zero one-hot type, padding is all zero."""
        return (x0[..., 3:].abs().sum(-1) > 0).to(x0.dtype)

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noise with zero centre of mass over the real atoms on the coordinates, padding zero (EDM Sec. 3.2)."""
        eps = super().sample_noise(x0, generator)
        mask = self.node_mask_of(x0)
        return torch.cat([remove_mean(eps[..., :3], mask), eps[..., 3:] * mask.unsqueeze(-1)], -1)

    def predict_step(self, batch: Any, batch_idx: int) -> list[tuple[Tensor, Tensor]]:
        """``polydiff predict``: one generated molecule ``(types, positions)`` per molecule of the batch."""
        return self.sample_clouds(int(batch["mask"].shape[0]),
                                  seed=batch_idx * self.trainer.world_size + self.global_rank)

    def write_predictions(self, prediction: list[tuple[Tensor, Tensor]], batch: Any, out_dir: Path,
                          prefix: str) -> list[Path]:
        """``polydiff predict``: the batch's generated molecules as ``<prefix>.sdf`` (3D) and ``<prefix>.smi``."""
        mols = self.clouds_to_molecules(prediction)
        return [write_sdf(mols, out_dir / f"{prefix}.sdf"), write_smiles(mols, out_dir / f"{prefix}.smi")]

    def write_samples(self, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                      input: Optional[str] = None) -> list[Path]:
        """``samples.sdf`` (3D coordinates, explicit hydrogens, bonds from distances), ``samples.smi`` and
        ``molecules.png``."""
        if input is not None:
            raise PolydiffError("molecule generation takes no --input; drop it")
        mols = self.sample_molecules(num_samples, sampler, seed, progress=True)
        out_dir = Path(out_dir)
        return [write_sdf(mols, out_dir / "samples.sdf"), write_smiles(mols, out_dir / "samples.smi"),
                draw_grid(mols, out_dir / "molecules.png")]

    # ------------------------------------------------------------------ evaluation
    def on_test_epoch_start(self) -> None:
        self._test_totals = {"loss": 0.0, "count": 0.0}

    def test_step(self, batch: Any, batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(4321 + batch_idx)
        loss = self.diffusion_loss(self.encode(batch), gen)
        self._test_totals["loss"] += float(loss.sum())
        self._test_totals["count"] += float(loss.numel())

    def on_test_epoch_end(self) -> None:
        totals = sum_across_ranks(self, self._test_totals)
        self.report_metrics({"test_loss": totals["loss"] / max(totals["count"], 1.0), **self.test_metrics()})

    def test_metrics(self) -> dict[str, float]:
        """Stability, RDKit metrics and distance JS of sampled molecules, of the Gaussian-coordinates control
        (``gauss_*``) and of the test molecules (``data_*``, JS against the training molecules)."""
        if self._data is None:
            raise PolydiffError("polydiff test needs the molecule DataModule (connect_data was not called)")
        train_smiles = self._data.split_smiles("train")
        test, train = self._data.split_clouds("test"), self._data.split_clouds("train")
        gen = self.sample_clouds(self.num_eval_samples, self.sampler_config, seed=0)

        def evaluate(clouds: list[tuple[Tensor, Tensor]], ref: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
            res = stability_metrics(clouds, self.atom_types)
            res.update(rdkit_metrics(self.clouds_to_molecules(clouds), train_smiles))
            res["distance_js"] = distance_js(clouds, ref)
            return res

        out = evaluate(gen, test)
        control = gaussian_coordinates(test, coordinate_std(train), seed=1)
        out.update({f"gauss_{k}": v for k, v in evaluate(control, test).items()})
        out.update({f"data_{k}": v for k, v in evaluate(test, train).items()})
        out["num_generated"] = float(len(gen))
        run_dir = self.run_dir() if self._trainer is not None else None
        if run_dir is not None and self.trainer.is_global_zero:
            mols = self.clouds_to_molecules(gen)
            write_sdf(mols, run_dir / "test_samples.sdf")
            draw_grid(mols, run_dir / "test_samples.png")
        return out
