"""The CLI contract end to end on the digits recipe with a tiny budget: fit, resume, sample, test, validate, predict
config printing, fine-tuning from a checkpoint, the one-line errors, and a 2-process DDP run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polydiff.core.cli import build_cli, main
from polydiff.domains.image import ImageDiffusion

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "recipes" / "image" / "digits.yaml")
TINY = ["--model.model_channels", "8", "--model.channel_mult", "[1, 2]", "--model.num_res_blocks", "1",
        "--model.attention_resolutions", "[]", "--model.num_heads", "1", "--trainer.enable_model_summary", "false"]


def _fit(tmp: Path, *extra: str) -> Path:
    main(["fit", "--config", DIGITS, "--trainer.default_root_dir", str(tmp), "--trainer.max_steps", "3",
          "--trainer.limit_val_batches", "1", "--trainer.check_val_every_n_epoch", "1", *TINY, *extra])
    ckpts = sorted(tmp.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    assert ckpts, "fit wrote no last.ckpt"
    return ckpts[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("cli")
    return tmp, _fit(tmp)


def test_fit_writes_checkpoint_with_ema_and_raw_weights(trained):
    _, ckpt = trained
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["polydiff_domain"] == "image"
    assert "current_model_state" in state, "EMA callback did not keep the raw weights"
    ema, raw = state["state_dict"], state["current_model_state"]
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())


def test_sample_writes_pngs_named_by_class(trained, tmp_path):
    tmp, ckpt = trained
    main(["sample", "--config", DIGITS, *TINY, "--ckpt_path", str(ckpt), "--num_samples", "12", "--sampler", "ddim",
          "--steps", "3", "--guidance", "1.5", "--seed", "3", "--out", str(tmp_path / "s")])
    names = sorted(p.name for p in (tmp_path / "s").glob("*.png"))
    assert "grid.png" in names and "00003_class3.png" in names and "00011_class1.png" in names
    # the same seed gives the same pixels
    main(["sample", "--config", DIGITS, *TINY, "--ckpt_path", str(ckpt), "--num_samples", "12", "--sampler", "ddim",
          "--steps", "3", "--guidance", "1.5", "--seed", "3", "--out", str(tmp_path / "t")])
    assert (tmp_path / "s" / "00005_class5.png").read_bytes() == (tmp_path / "t" / "00005_class5.png").read_bytes()


def test_test_subcommand_writes_metrics_json(trained, capsys):
    tmp, ckpt = trained
    main(["test", "--config", DIGITS, *TINY, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp),
          "--model.eval_num_samples", "40", "--model.sampler.steps", "2", "--trainer.limit_test_batches", "2",
          "--model.eval_likelihood_images", "8", "--model.eval_likelihood_times", "2"])
    out = capsys.readouterr().out
    path = Path(out.split("metrics written to ")[1].split()[0])
    payload = json.loads(path.read_text())
    metrics = payload["metrics"]
    # --model.* given with --ckpt_path still apply on top of the checkpoint's hyper-parameters
    assert payload["num_samples"] == 40 and payload["sampler"]["steps"] == 2
    assert {"fd", "fd_floor", "fd_ceiling", "class_accuracy"} <= metrics.keys()
    # an untrained model is far from the data: its FD lies above the train-vs-held-out floor
    assert metrics["fd_floor"] < metrics["fd"]
    # bits per dimension (ELBO) with its standard error over the 8 test images
    assert math.isfinite(metrics["bits_per_dim_elbo"]) and metrics["bits_per_dim_elbo_se"] > 0


def test_validate_and_predict(trained):
    """validate reports the loss of the checkpoint's weights on fixed noise (the same figure again from Python);
    predict gives one image in [0, 1] per test item of the batch."""
    tmp, ckpt = trained
    cli = build_cli(["validate", "--config", DIGITS, *TINY, "--ckpt_path", str(ckpt), "--trainer.default_root_dir",
                     str(tmp), "--trainer.limit_val_batches", "1"])
    reported = float(cli.trainer.callback_metrics["val/loss"])
    model = ImageDiffusion.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True).eval()
    batch = next(iter(cli.datamodule.val_dataloader()))
    with torch.no_grad():
        again = float(model.validation_step(batch, 0))
    assert reported == pytest.approx(again, rel=1e-5)
    cli = build_cli(["predict", "--config", DIGITS, *TINY, "--ckpt_path", str(ckpt), "--trainer.default_root_dir",
                     str(tmp), "--trainer.limit_predict_batches", "1", "--model.sampler.steps", "2"])
    (images,) = cli.trainer.predict_loop.predictions
    items = next(iter(cli.datamodule.predict_dataloader()))[0]
    assert images.shape == items.shape and float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    folder = Path(cli.trainer.log_dir) / "predictions"  # written by the default prediction writer
    labels = next(iter(cli.datamodule.predict_dataloader()))[1]
    assert sorted(p.name for p in folder.glob("batch00000_*_class*.png")) == [
        f"batch00000_{i:03d}_class{int(c)}.png" for i, c in enumerate(labels)]


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    _, ckpt = trained
    main(["fit", "--config", DIGITS, *TINY, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "5",
          "--trainer.limit_val_batches", "0", "--ckpt_path", str(ckpt)])
    state = torch.load(next(tmp_path.glob("lightning_logs/version_*/checkpoints/last.ckpt")), weights_only=True)
    assert state["global_step"] == 5  # 3 steps before the interruption, 2 after


def test_fine_tuning_starts_from_checkpoint_weights(trained, tmp_path):
    _, ckpt = trained
    from polydiff.domains.image import ImageDiffusion

    model = ImageDiffusion(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                           num_heads=1, num_classes=4)
    skipped = model.load_weights(str(ckpt), strict=False)
    src = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any("class" in k or "label" in k or "emb" in k for k in skipped), skipped  # 11 vs 5 class embeddings
    same = [k for k in src if k not in skipped]
    assert same and all(torch.equal(model.state_dict()[k], src[k]) for k in same)


def test_readme_fine_tuning_command_on_a_class_folder(trained, tmp_path):
    """The README's fine-tuning command: digits recipe, a folder of 2 classes, weights from the digits checkpoint."""
    import numpy as np
    from PIL import Image

    _, ckpt = trained
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(tmp_path / "imgs" / cls / f"{i}.png")
    main(["fit", "--config", DIGITS, *TINY, "--data", "polydiff.datasets.image_folder.ImageFolderDataModule",
          "--data.root", str(tmp_path / "imgs"), "--data.class_folders", "true", "--data.image_size", "16",
          "--data.channels", "1", "--data.val_fraction", "0.2", "--data.test_fraction", "0.2", "--model.num_classes", "2",
          "--model.training.init_from", str(ckpt), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
          "--trainer.default_root_dir", str(tmp_path / "run")])
    tuned = torch.load(next((tmp_path / "run").glob("lightning_logs/*/checkpoints/last.ckpt")), weights_only=True)
    assert tuned["hyper_parameters"]["num_classes"] == 2
    # the weights came from the digits checkpoint: one step at the warm-up's first learning rate (1e-3 / 200) moves
    # them by at most a few 1e-6, while a fresh initialisation would differ by O(0.1); the class embedding (3 rows
    # now, 11 in the checkpoint) keeps its new initialisation
    source = torch.load(ckpt, weights_only=True)["state_dict"]
    raw = tuned["current_model_state"]
    shared = [k for k in source if k in raw and raw[k].shape == source[k].shape and raw[k].is_floating_point()
              and float(source[k].abs().max()) > 0]
    assert len(shared) > 20
    assert max(float((raw[k] - source[k]).abs().max()) for k in shared) < 1e-4
    assert raw["network.class_emb.weight"].shape[0] == 3 != source["network.class_emb.weight"].shape[0]


def test_print_config_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", DIGITS, "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: polydiff.domains.image.ImageDiffusion" in out and "prediction: v" in out
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = capsys.readouterr().out
    assert "--num_samples" in out and "classifier-free guidance scale" in out


def test_packaged_recipes_resolve_from_any_directory(tmp_path, monkeypatch):
    from polydiff.core.cli import resolve_recipes

    monkeypatch.chdir(tmp_path)
    resolved = resolve_recipes(["fit", "--config", "recipes/image/digits.yaml"])[2]
    assert Path(resolved).is_file() and Path(resolved).read_text() == Path(DIGITS).read_text()
    assert resolve_recipes(["fit", "--config", "image/digits.yaml"])[2] == resolved


def test_unknown_config_key_is_one_line(cli_error):
    line = cli_error(["fit", "--config", DIGITS, "--model.init_args.no_such_key", "1"])
    assert "no_such_key" in line


def test_unknown_sampler_is_one_line(trained, cli_error):
    _, ckpt = trained
    line = cli_error(["sample", "--config", DIGITS, *TINY, "--ckpt_path", str(ckpt), "--sampler", "euler_ancestral",
                                "--out", "unused"])
    assert line.startswith("polydiff: error: unknown sampler 'euler_ancestral'") and "dpmpp_2m" in line


def test_checkpoint_from_another_domain_is_one_line(trained, tmp_path, cli_error):
    _, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    state["polydiff_domain"] = "audio"
    other = tmp_path / "audio.ckpt"
    torch.save(state, other)
    line = cli_error(["sample", "--config", DIGITS, *TINY, "--ckpt_path", str(other), "--out", "unused"])
    assert "'audio' domain" in line and "'image'" in line
    line = cli_error(["sample", "--config", DIGITS, *TINY, "--ckpt_path", str(tmp_path / "none.ckpt"),
                                "--out", "unused"])
    assert "does not exist" in line


def test_missing_data_folder_is_one_line(cli_error, tmp_path):
    line = cli_error(["fit", "--config", str(ROOT / "recipes" / "image" / "folder.yaml"),
                                "--data.root", str(tmp_path / "nowhere"), "--trainer.fast_dev_run", "1"])
    assert "nowhere" in line and line.startswith("polydiff: error:")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_process_ddp_run(tmp_path, strategy):
    """DDP on CPU (gloo) with 2 processes launched by the console script (ddp: Lightning re-executes the command per
    rank; ddp_spawn: it pickles the trainer, callbacks included, into spawned workers): both ranks train, one checkpoint
    is written."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [str(Path(sys.executable).with_name("polydiff")), "fit", "--config", DIGITS, *TINY,
           "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", strategy, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpts = list(tmp_path.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    assert len(ckpts) == 1
    assert torch.load(ckpts[0], weights_only=True)["global_step"] == 2
    if strategy != "ddp":
        return
    # polydiff test on 2 processes: each draws half the samples, rank 0 scores all of them against the whole test split
    out = tmp_path / "test"
    cmd = [str(Path(sys.executable).with_name("polydiff")), "test", "--config", DIGITS, *TINY, "--ckpt_path",
           str(ckpts[0]), "--trainer.default_root_dir", str(out), "--trainer.accelerator", "cpu",
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--model.eval_num_samples", "21",
           "--model.sampler.steps", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    reports = list(out.rglob("metrics.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    import yaml

    from polydiff.datasets.digits import DigitsDataModule

    test_split = DigitsDataModule(**yaml.safe_load(Path(DIGITS).read_text())["data"]["init_args"]).split_tensors("test")[0]
    assert (report["processes"], report["num_samples"], report["test_images"]) == (2, 21, len(test_split))


def test_optimizer_option_of_lightning_cli_replaces_the_default_adamw(trained, tmp_path):
    _, ckpt = trained
    default = torch.load(ckpt, weights_only=True)["optimizer_states"][0]["param_groups"][0]
    assert "betas" in default  # the model's AdamW (with its warm-up) when --optimizer is not given
    sgd = _fit(tmp_path, "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.01")
    group = torch.load(sgd, weights_only=True)["optimizer_states"][0]["param_groups"][0]
    assert "momentum" in group and "betas" not in group and group["lr"] == 0.01
