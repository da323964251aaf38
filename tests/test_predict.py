"""``polydiff predict`` in every domain: the domain's own output per batch (not the diffused-space tensor)."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from polydiff.core.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.mark.parametrize("recipe, extra", [
    ("audio/diffwave_speech.yaml", ["--data.max_eval_clips", "2"]),
    ("timeseries/elnino.yaml", ["--model.sampler.steps", "2", "--model.eval_samples", "3"]),
    ("text/absorbing.yaml", ["--model.sampler.steps", "4"]),
    ("graph/community_small.yaml", ["--model.sampler.steps", "2", "--model.layers", "1"]),
])
def test_predict_runs_from_the_cli(recipe, extra, tmp_path):
    cli = build_cli(["predict", "--config", str(ROOT / "recipes" / recipe), "--trainer.fast_dev_run=1",
                     "--trainer.default_root_dir", str(tmp_path), *QUIET, *extra])
    (out,) = cli.trainer.predict_loop.predictions  # fast_dev_run: one batch, the domain's own output for it
    # and written as the domain's files into <run dir>/predictions (fast_dev_run: no logger, so default_root_dir)
    written = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    suffix = {"audio": ".wav", "timeseries": ".csv", "text": ".txt", "graph": ".graphml"}[recipe.split("/")[0]]
    assert written and all(name.startswith("batch00000") for name in written)
    assert any(name.endswith(suffix) for name in written), written
    batch = next(iter(cli.datamodule.predict_dataloader()))
    if isinstance(out, torch.Tensor):  # waveforms of the clips
        clips = batch[0] if isinstance(batch, (list, tuple)) else batch
        assert out.shape == clips.shape and torch.isfinite(out).all()
    elif isinstance(out, dict):  # imputed windows
        assert out["median"].shape == batch["values"].shape and torch.isfinite(out["median"]).all()
    else:  # texts or graphs: one new sample per item
        assert len(out) == (batch.num_graphs if hasattr(batch, "num_graphs") else len(batch))


def _from_recipe(recipe: str, *overrides: str):
    """The recipe's model and DataModule as the CLI builds them (no run)."""
    cli = build_cli(["--config", str(ROOT / "recipes" / recipe), *overrides], run=False)
    return cli.model, cli.datamodule


def test_audio_predict_returns_waveforms_of_the_clips():
    from polydiff.domains.audio import VocoderModule

    torch.manual_seed(0)
    model, dm = _from_recipe("audio/diffwave_speech.yaml", "--data.max_eval_clips", "2", "--model.residual_layers", "2",
                             "--model.residual_channels", "8", "--model.dilation_cycle", "2")
    assert isinstance(model, VocoderModule)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (out,) = trainer.predict(model, dm)
    clips = next(iter(dm.predict_dataloader()))
    clips = clips[0] if isinstance(clips, (list, tuple)) else clips
    assert out.shape == clips.shape and torch.isfinite(out).all()
    # a waveform (coloured by the mel prior), not the whitened diffused signal: its level follows the clips'
    ratio = float(out.pow(2).mean().sqrt() / clips.pow(2).mean().sqrt())
    assert 0.2 < ratio < 5.0


def test_timeseries_predict_fills_only_the_missing_values():
    model, dm = _from_recipe("timeseries/elnino.yaml", "--model.sampler.steps", "2", "--model.eval_samples", "5")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_predict_batches=1)
    (out,) = trainer.predict(model, dm)
    batch = next(iter(dm.predict_dataloader()))
    observed = batch["observed"].bool()
    for key in ("median", "q05", "q95"):
        assert torch.isfinite(out[key]).all()
        assert torch.allclose(out[key][observed].float(), batch["values"][observed].float(), atol=1e-4)
    assert (out["q05"] <= out["median"] + 1e-9).all() and (out["median"] <= out["q95"] + 1e-9).all()


def test_text_and_graph_predict_return_one_sample_per_item():
    import networkx as nx

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_predict_batches=1)
    model, dm = _from_recipe("text/absorbing.yaml", "--model.sampler.steps", "4")
    (texts,) = trainer.predict(model, dm)
    batch = next(iter(dm.predict_dataloader()))
    assert len(texts) == len(batch) and all(isinstance(t, str) for t in texts)
    model, dm = _from_recipe("graph/community_small.yaml", "--model.sampler.steps", "2", "--model.layers", "1")
    (graphs,) = trainer.predict(model, dm)
    batch = next(iter(dm.predict_dataloader()))
    assert len(graphs) == batch.num_graphs
    assert all(isinstance(g, nx.Graph) and nx.number_of_selfloops(g) == 0 for g in graphs)
    # node counts come from the training histogram of community-small (12-20 nodes)
    assert all(12 <= g.number_of_nodes() <= 20 for g in graphs)
