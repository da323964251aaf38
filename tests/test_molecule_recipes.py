"""Every molecule recipe through the CLI under fast_dev_run, and fit / test / sample end to end on small subsets."""

import json
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from polydiff.core.cli import build_cli, main, resolve_recipes

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes" / "molecule").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY = {
    "qm9_2d": ["--model.hidden_nodes=8", "--model.hidden_edges=4", "--model.hidden_graph=8", "--model.heads=2",
               "--model.layers=1", "--model.sampler.steps=4", "--model.diffusion.bound_times=2",
               "--model.num_eval_samples=12", "--data.max_molecules=300", "--data.batch_size=32"],
    "qm9_3d": ["--model.hidden=8", "--model.layers=1", "--model.sampler.steps=4", "--model.num_eval_samples=12",
               "--data.max_molecules=300", "--data.batch_size=32"],
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_there_are_two_recipes():
    assert [p.stem for p in RECIPES] == ["qm9_2d", "qm9_3d"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_fast_dev_run_takes_the_data_statistics(recipe, tmp_path):
    """One step of each recipe: the loss is finite and the model holds the training set's size histogram (and, in 2D,
    its atom and bond marginals), which is what sampling draws from."""
    cli = build_cli(resolve_recipes(["fit", "--config", str(recipe), "--trainer.fast_dev_run=1",
                                     "--trainer.default_root_dir", str(tmp_path), *TINY[recipe.stem], *QUIET]))
    model, dm = cli.model, cli.datamodule
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    if recipe.stem == "qm9_2d":
        assert torch.equal(model.node_counts, dm.node_count_histogram())
        node, edge = dm.marginals()
        assert torch.allclose(model.marginals_0, node) and torch.allclose(model.marginals_1, edge)
        assert edge[4] == 0 and edge[1] > edge[2] > edge[3] > 0  # kekulized: no aromatic bonds; single > double > triple
    else:
        assert torch.equal(model.atom_counts, dm.atom_count_histogram())
        assert model.atom_counts[:3].sum() == 0 and model.atom_counts.argmax() == 12  # QM9 <= 12 atoms: most have 12


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_fit_test_sample_end_to_end(recipe, tmp_path):
    """Two training steps, polydiff test (the model beside its control and the held-out data) and polydiff sample
    (SMILES / SDF files and a PNG grid)."""
    run = tmp_path / "run"
    common = ["--config", str(recipe), "--trainer.default_root_dir", str(run), *TINY[recipe.stem], *QUIET]
    main(["fit", *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=1"])
    ckpt = next(run.rglob("last.ckpt"))
    main(["test", *common, "--ckpt_path", str(ckpt)])
    metrics = json.loads(next(run.rglob("metrics.json")).read_text())["metrics"]
    assert metrics["num_generated"] == 12
    # held-out QM9 molecules are valid, connected and absent from the training split
    assert metrics["data_valid"] > 0.9 and metrics["data_connected"] > 0.9 and metrics["data_novel"] == 1.0
    if recipe.stem == "qm9_2d":
        assert metrics["iid_valid_connected"] < 0.5 and "bound_bits_per_position" in metrics
    else:
        assert metrics["data_atom_stable"] > 0.95 and metrics["gauss_atom_stable"] < 0.5
        assert metrics["data_distance_js"] < metrics["gauss_distance_js"]
    out = tmp_path / "samples"
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples", "5", "--steps", "3", "--out", str(out)])
    lines = (out / "samples.smi").read_text().splitlines()
    assert len(lines) == 5 and (out / "molecules.png").stat().st_size > 0
    if recipe.stem == "qm9_3d":
        mols = list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))
        assert len(mols) == 5 and all(m.GetNumConformers() == 1 for m in mols)
        assert all(1 <= m.GetNumAtoms() <= 12 for m in mols)
    # polydiff predict writes the batch's molecules as the domain's files (SMILES, and SDF in 3D)
    cli = build_cli(resolve_recipes(["predict", *common, "--ckpt_path", str(ckpt), "--trainer.limit_predict_batches",
                                     "1", "--model.sampler.steps", "3"]))
    (predicted,) = cli.trainer.predict_loop.predictions
    written = sorted((Path(cli.trainer.log_dir) / "predictions").iterdir())
    smi = next(p for p in written if p.suffix == ".smi").read_text().splitlines()
    assert len(smi) == len(predicted)
    if recipe.stem == "qm9_3d":
        sdf = next(p for p in written if p.suffix == ".sdf")
        assert len(list(Chem.SDMolSupplier(str(sdf), sanitize=False, removeHs=False))) == len(predicted)
    # and the one Python signature: model.sample(n, steps=, seed=) gives RDKit molecules
    from polydiff.core import load

    mols = load(ckpt).sample(3, steps=3, seed=0)
    assert len(mols) == 3 and all(isinstance(m, Chem.Mol) for m in mols)


def test_mismatched_atom_types_are_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "recipes" / "molecule" / "qm9_3d.yaml"), "--trainer.fast_dev_run=1",
              "--trainer.default_root_dir", str(tmp_path), "--model.atom_types=[H,C,N,O]", *TINY["qm9_3d"], *QUIET])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--data.atom_types" in err and "--model.atom_types" in err
