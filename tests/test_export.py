"""Export and load: for each domain, fit 2 steps, ``polydiff export``, ``polydiff.core.load`` the export in a fresh
process and write samples with the same seed: the files equal those of ``polydiff sample`` on the checkpoint."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.core.cli import main
from polydiff.core.utils import PolydiffError

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
DOMAINS = {
    "image": ("image/digits.yaml", ["--model.model_channels", "8", "--model.channel_mult", "[1, 2]",
                                    "--model.num_res_blocks", "1", "--model.attention_resolutions", "[]",
                                    "--model.num_heads", "1"], ["--num_samples", "3", "--steps", "2"]),
    "text": ("text/absorbing.yaml", ["--model.init_args.hidden_size", "32", "--model.init_args.num_layers", "1",
                                     "--model.init_args.num_heads", "2", "--model.init_args.intermediate_size", "64",
                                     "--data.max_chars", "20000", "--data.seq_len", "64", "--model.init_args.max_len",
                                     "64"], ["--num_samples", "2", "--steps", "5"]),
    "graph": ("graph/community_small.yaml", ["--model.hidden_nodes", "8", "--model.hidden_edges", "4",
                                             "--model.hidden_graph", "8", "--model.heads", "2", "--model.layers", "1"],
              ["--num_samples", "2", "--steps", "3"]),
    "audio": ("audio/diffwave_speech.yaml", ["--model.residual_layers", "2", "--model.residual_channels", "8",
                                             "--model.dilation_cycle", "2", "--model.emb_dim", "16", "--data.corpus",
                                             "synthetic", "--data.num_utterances", "8", "--data.batch_size", "2",
                                             "--data.eval_samples", "4096", "--data.crop_samples", "2048",
                                             "--data.max_eval_clips", "2"], ["--num_samples", "1", "--steps", "2"]),
    "timeseries": ("timeseries/elnino.yaml", ["--model.channels", "8", "--model.heads", "2", "--model.layers", "1",
                                              "--model.time_embedding_dim", "8", "--model.feature_embedding_dim", "4"],
                   ["--num_samples", "3", "--steps", "2"]),
}
FRESH = """
import sys
from pathlib import Path
from polydiff.core import load
from polydiff.core.export import instantiate, _import
import yaml

folder, out, n, steps, seed, given = sys.argv[1:7]
model = load(folder)
payload = None
if given:
    data = yaml.safe_load((Path(folder) / "config.yaml").read_text())["data"]
    dm = instantiate(_import(data["class_path"]), data["init_args"])
    payload = dm.read_input(given, **model.input_options())
cfg = model.resolve_sampler(steps=int(steps))
Path(out).mkdir(parents=True)
print(len(model.write_samples(Path(out), int(n), cfg, int(seed), payload)))
if not given:  # the one Python signature of every domain: n samples in the domain's own form
    import torch
    torch.save(model.sample(int(n), steps=int(steps), seed=int(seed)), Path(out).parent / "api_samples.pt")
"""


def _input_for(domain: str, tmp: Path) -> str | None:
    if domain == "audio":
        t = np.arange(4096) / 16000
        sf.write(tmp / "tone.wav", 0.2 * np.sin(2 * math.pi * 220 * t), 16000)
        return str(tmp / "tone.wav")
    if domain == "timeseries":
        from statsmodels.datasets import elnino

        df = elnino.load_pandas().data.iloc[:12].copy()
        df.loc[[2, 5, 7], "MAR"] = np.nan
        df.to_csv(tmp / "gaps.csv", index=False)
        return str(tmp / "gaps.csv")
    return None


@pytest.mark.slow
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_export_loads_in_a_fresh_process_and_samples_like_the_checkpoint(domain, tmp_path):
    torch.set_num_threads(1)
    recipe, tiny, sample_args = DOMAINS[domain]
    config = ["--config", str(ROOT / "recipes" / recipe), *tiny, *QUIET]
    if domain == "audio":
        config += ["--data.data_dir", str(tmp_path / "data")]
    main(["fit", *config, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.max_time", "null",
          "--trainer.default_root_dir", str(tmp_path / "run")])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "export")])
    card = (tmp_path / "export" / "README.md").read_text()
    assert f"polydiff {domain} model" in card and "optimiser steps" in card
    assert json.loads((tmp_path / "export" / "polydiff.json").read_text())["domain"] == domain
    given = _input_for(domain, tmp_path)
    extra = ["--input", given] if given else []
    main(["sample", *config, "--ckpt_path", str(ckpt), "--out", str(tmp_path / "from_ckpt"), "--seed", "3",
          *sample_args, *extra])
    n, steps = sample_args[1], sample_args[3]
    proc = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "export"), str(tmp_path / "from_export"), n,
                           steps, "3", given or ""], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = {p.name: p.read_bytes() for p in (tmp_path / "from_ckpt").iterdir()}
    theirs = {p.name: p.read_bytes() for p in (tmp_path / "from_export").iterdir()}
    assert ours.keys() == theirs.keys() and ours
    same = [name for name in ours if ours[name] == theirs[name]]
    # the sample files are byte-identical (a PNG spectrogram plot may differ in metadata only)
    assert all(name in same for name in ours if not name.endswith("_spectrograms.png")), sorted(set(ours) - set(same))
    if not given:  # model.sample(n, steps=, seed=) from the export equals it from the checkpoint
        from polydiff.core import load

        fresh = torch.load(tmp_path / "api_samples.pt", weights_only=False)  # written by this test's own subprocess
        here = load(ckpt).sample(int(n), steps=int(steps), seed=3)
        if isinstance(here, torch.Tensor):
            assert torch.equal(fresh, here)
        elif domain == "graph":
            assert [sorted(g.edges()) for g in fresh] == [sorted(g.edges()) for g in here]
        else:
            assert fresh == here


def test_a_broken_export_is_a_clear_error(tmp_path):
    from polydiff.core import load

    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PolydiffError, match="not a polydiff export"):
        load(tmp_path)
