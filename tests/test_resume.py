"""Exact resume: an interrupted run continued with ``fit --ckpt_path`` ends bit-identical to the uninterrupted run (raw
weights, EMA weights and optimiser state), at an epoch boundary and mid-epoch, for a Gaussian and a categorical
recipe. Every step's randomness is reseeded by (seed, step, rank) and the training order is a function of (seed,
epoch) that the DataModule's checkpointed state resumes part-way through."""

from pathlib import Path

import pytest
import torch

from polydiff.core.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--config", str(ROOT / "recipes" / "image" / "digits.yaml"), "--model.model_channels", "8",
          "--model.channel_mult", "[1, 2]", "--model.num_res_blocks", "1", "--model.attention_resolutions", "[]",
          "--model.num_heads", "1", "--model.training.warmup_steps", "2", "--model.preview_every_n_epochs", "0",
          "--data.batch_size", "8"]
TEXT = ["--config", str(ROOT / "recipes" / "text" / "absorbing.yaml"), "--model.init_args.hidden_size", "32",
        "--model.init_args.num_layers", "1", "--model.init_args.num_heads", "2", "--model.init_args.intermediate_size",
        "64", "--data.max_chars", "20000", "--data.seq_len", "64", "--model.init_args.max_len", "64",
        "--data.batch_size", "8"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "1"]


def _ema_from_step_zero(tmp: Path) -> list[str]:
    """An extra config whose EMA averages from the first step (the recipes start later, which would hide a
    difference in the average)."""
    cfg = tmp / "ema0.yaml"
    cfg.write_text("trainer:\n  callbacks:\n    - class_path: polydiff.core.ema.EMA\n      init_args:\n"
                   "        decay: 0.9\n        update_starting_at_step: 0\n")
    return ["--config", str(cfg)]


def _fit(root: Path, recipe: list[str], batches: int, max_steps: int, ckpt: Path | None = None) -> Path:
    args = ["fit", *recipe, *_ema_from_step_zero(root.parent), *QUIET, "--trainer.default_root_dir", str(root),
            "--trainer.limit_train_batches", str(batches), "--trainer.max_steps", str(max_steps),
            "--trainer.max_epochs", "100", "--trainer.check_val_every_n_epoch", "1"]
    main(args + (["--ckpt_path", str(ckpt)] if ckpt else []))
    found = sorted(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    assert found, f"no last.ckpt under {root}"
    return found[-1]


def _state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    out = {f"ema/{k}": v for k, v in ckpt["state_dict"].items()}
    raw = ckpt.get("current_model_state")
    assert raw, "the checkpoint keeps no raw weights besides the EMA ones"
    out.update({f"raw/{k}": v for k, v in raw.items()})
    for i, group in enumerate(ckpt["optimizer_states"][0]["state"].values()):
        for k, v in group.items():
            out[f"opt/{i}/{k}"] = torch.as_tensor(v)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["digits", "text"])
@pytest.mark.parametrize("where", ["epoch_boundary", "mid_epoch"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, recipe, where):
    torch.set_num_threads(1)
    args = DIGITS if recipe == "digits" else TEXT
    batches = 3 if where == "epoch_boundary" else 6  # 6 steps: 2 epochs of 3, or 1 epoch of 6 cut after 3
    whole = _state(_fit(tmp_path / "whole", args, batches, 6))
    first = _fit(tmp_path / "part", args, batches, 3)
    resumed = _state(_fit(tmp_path / "resumed", args, batches, 6, ckpt=first))
    assert whole.keys() == resumed.keys()
    assert any(k.startswith("opt/") for k in whole) and any(k.startswith("raw/") for k in whole)
    differ = [k for k in whole if not torch.equal(whole[k], resumed[k])]
    assert not differ, f"{len(differ)} of {len(whole)} tensors differ after resuming, e.g. {differ[:3]}"
    # and the comparison can fail: a run with another seed differs
    other = _state(_fit(tmp_path / "other", [*args, "--seed_everything", "1"], batches, 6))
    assert any(not torch.equal(whole[k], other[k]) for k in whole if k.startswith("raw/"))
