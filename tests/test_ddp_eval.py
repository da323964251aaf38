"""``polydiff test`` on 2 CPU processes (DDP, gloo): no rank waits alone on a collective, and test-set sums count every
item once (the loaders give each process a disjoint share: no padding repeats)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polydiff.core.cli import main

ROOT = Path(__file__).resolve().parents[1]
POLYDIFF = str(Path(sys.executable).with_name("polydiff"))
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _run(args: list[str], returncode: int = 0) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([POLYDIFF, *args], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == returncode, res.stderr[-2000:]
    return res.stdout + res.stderr


@pytest.mark.slow
def test_graph_test_on_two_processes(tmp_path):
    """The graph test writes its sample grid from rank 0; reading the run directory is a collective for every rank."""
    recipe = str(ROOT / "recipes" / "graph" / "community_small.yaml")
    common = ["--config", recipe, "--model.hidden_nodes", "8", "--model.hidden_edges", "4", "--model.hidden_graph", "8",
              "--model.heads", "2", "--model.layers", "1", "--model.num_eval_samples", "4", "--model.sampler.steps", "2",
              "--model.diffusion.bound_times", "2"]
    main(["fit", *common, "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1",
          "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    _run(["test", *common, *DDP, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "test")])
    reports = list((tmp_path / "test").rglob("metrics.json"))
    assert len(reports) == 1
    metrics = json.loads(reports[0].read_text())["metrics"]
    assert metrics["num_generated"] == 4 and (reports[0].parent / "test_samples.png").is_file()


@pytest.mark.slow
def test_audio_test_on_two_processes_counts_each_clip_once(tmp_path):
    """3 held-out clips on 2 processes: 2 + 1, not 2 + 2 with a repeat."""
    recipe = str(ROOT / "recipes" / "audio" / "diffwave_speech.yaml")
    small = ["--config", recipe, "--model.residual_layers", "2", "--model.residual_channels", "8",
             "--model.dilation_cycle", "2", "--data.max_eval_clips", "3"]
    main(["fit", *small, "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1",
          "--trainer.limit_val_batches", "0", "--data.crops_per_epoch", "4", "--trainer.enable_progress_bar", "false"])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    _run(["test", *small, *DDP, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "test")])
    report = json.loads(next((tmp_path / "test").rglob("metrics.json")).read_text())
    assert report["clips"] == 3
    assert abs(report["audio_seconds"] - 3 * 16384 / 16000) < 1e-6
    # one clip for two processes: a clear error instead of a process without a batch
    small[-1] = "1"
    out = _run(["test", *small, *DDP, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "t1")], 2)
    assert "the evaluation split has 1 items, fewer than the 2 processes" in out
