"""Every graph recipe through the CLI under fast_dev_run; your own graphs with --data.path; test and sample end to end."""

import json
import math
from pathlib import Path

import networkx as nx
import pytest
import torch

from polydiff.core.cli import build_cli, main
from polydiff.datasets.graphs import generate_community_small

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model.hidden_nodes", "8", "--model.hidden_edges", "4", "--model.hidden_graph", "8", "--model.heads", "2",
        "--model.layers", "1", "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"]


@pytest.mark.parametrize("recipe", ["graph/community_small.yaml", "graph/planar.yaml", "graph/sbm.yaml"])
def test_recipe_fast_dev_run(recipe, tmp_path):
    torch.set_num_threads(1)
    extra = ["--data.num_graphs", "20"] if "community" not in recipe else []
    cli = build_cli(["fit", "--config", str(ROOT / "recipes" / recipe), "--trainer.fast_dev_run=1",
                     "--trainer.default_root_dir", str(tmp_path), *TINY, *extra])
    # connect_data gave the model the training graphs' statistics: its prior is the data's marginals and node counts
    node_m, edge_m = cli.datamodule.marginals()
    torch.testing.assert_close(cli.model.marginals_1.double(), (edge_m / edge_m.sum()).double())
    assert float(cli.model.node_counts.sum()) == len(cli.datamodule.split_graphs("train"))
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def _edge_list_folder(folder: Path, num: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, g in enumerate(generate_community_small(num, seed=5)):
        (folder / f"graph_{i}.edges").write_text("\n".join(f"n{u} n{v}" for u, v in g.edges()) + "\n")
    return folder


def test_own_graphs_fit_test_and_sample(tmp_path):
    """--data.path with a folder of edge lists: fit a few steps, polydiff test (the metrics, the Erdős–Rényi control's
    and the training floor's, written to metrics.json) and polydiff sample (GraphML files and a PNG grid)."""
    torch.set_num_threads(1)
    data = _edge_list_folder(tmp_path / "mine")
    recipe = str(ROOT / "recipes" / "graph" / "community_small.yaml")
    # evaluation settings go in at fit time: polydiff test takes the model's settings from the checkpoint
    common = ["--config", recipe, "--data.path", str(data), "--data.batch_size", "4", *TINY,
              "--model.num_eval_samples", "6", "--model.sampler.steps", "4", "--model.diffusion.bound_times", "2"]
    main(["fit", *common, "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "2",
          "--trainer.max_time", "00:00:05:00"])
    ckpt = sorted((tmp_path / "run").glob("lightning_logs/version_*/checkpoints/last.ckpt"))[-1]
    main(["test", *common, "--trainer.default_root_dir", str(tmp_path / "test"), "--ckpt_path", str(ckpt)])
    metrics = json.loads(next((tmp_path / "test").rglob("metrics.json")).read_text())["metrics"]
    for key in ("degree_mmd", "clustering_mmd", "spectrum_mmd", "orbit_mmd", "valid", "unique", "novel",
                "er_degree_mmd", "train_degree_mmd", "bound_bits_per_position"):
        assert key in metrics, key
    assert metrics["train_novel"] == 0.0  # the training graphs themselves are never novel
    assert metrics["num_generated"] == 6
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples", "5", "--steps", "4",
          "--out", str(tmp_path / "samples")])
    files = sorted((tmp_path / "samples").glob("*.graphml"))
    assert len(files) == 5 and (tmp_path / "samples" / "graphs.png").stat().st_size > 0
    for f in files:
        g = nx.read_graphml(f)
        assert not g.is_directed() and nx.number_of_selfloops(g) == 0 and 12 <= g.number_of_nodes() <= 20


def _error(capsys, args) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("polydiff: error:"), err[:2000]
    return err


def test_cli_errors_for_bad_graphs(tmp_path, capsys):
    recipe = str(ROOT / "recipes" / "graph" / "community_small.yaml")
    loops = tmp_path / "loops"
    loops.mkdir()
    (loops / "a.txt").write_text("0 1\n2 2\n")
    msg = _error(capsys, ["fit", "--config", recipe, "--data.path", str(loops), "--trainer.fast_dev_run=1", *TINY,
                          "--trainer.default_root_dir", str(tmp_path)])
    assert "self-loop" in msg and "a.txt" in msg
    directed = tmp_path / "directed"
    directed.mkdir()
    nx.write_graphml(nx.DiGraph([(0, 1), (1, 2)]), directed / "d.graphml")
    msg = _error(capsys, ["fit", "--config", recipe, "--data.path", str(directed), "--trainer.fast_dev_run=1", *TINY,
                          "--trainer.default_root_dir", str(tmp_path)])
    assert "directed" in msg and "undirected" in msg
    big = _edge_list_folder(tmp_path / "big", 3)
    (big / "huge.txt").write_text("\n".join(f"{i} {i + 1}" for i in range(40)) + "\n")
    msg = _error(capsys, ["fit", "--config", recipe, "--data.path", str(big), "--trainer.fast_dev_run=1", *TINY,
                          "--trainer.default_root_dir", str(tmp_path)])
    assert "41 nodes" in msg and "max_nodes" in msg
