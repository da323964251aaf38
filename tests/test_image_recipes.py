"""Both image recipes through the CLI, your own image folder end to end, and the folder's bad inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polydiff.core.cli import build_cli, main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "recipes" / "image" / "digits.yaml")
FOLDER = str(ROOT / "recipes" / "image" / "folder.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# a small network and short sampling so that the CLI round trips stay cheap
SMALL = ["--model.model_channels=16", "--model.channel_mult=[1,2]", "--model.attention_resolutions=[]",
         "--model.num_heads=2", "--model.sampler.steps=2", "--model.preview_every_n_epochs=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def write_pngs(folder: Path, n: int, size=(20, 24), seed: int = 0, mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img_{i:02d}.png")


def run_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("polydiff: error:")  # one line, no traceback
    return err


def _first_loss_matches_zero_output(cli, rel: float) -> None:
    """The U-Net's output convolution starts at zero, so the first training loss of v-prediction on the cosine VP
    process is ``E|v|^2 = E_t[alpha^2] + E_t[sigma^2] E[x0^2] = (1 + E[x0^2]) / 2`` (uniform t; the cross term has
    mean 0)."""
    images = cli.datamodule.split_tensors("train")[0]
    expected = 0.5 * (1.0 + float((images**2).mean()))
    first = float(cli.trainer.callback_metrics["train/loss"])
    assert first == pytest.approx(expected, rel=rel), (first, expected)
    # and eps-prediction's first loss (1.0) would not pass: the check tells the targets apart
    assert abs(1.0 - expected) > rel * expected


def test_digits_recipe_fast_dev_run(tmp_path):
    cli = build_cli(["fit", "--config", DIGITS, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path)] + QUIET)
    _first_loss_matches_zero_output(cli, rel=0.07)  # a batch of 32 digits: the loss has a std of 1.8 % (200 batches)


def test_folder_recipe_fast_dev_run(tmp_path):
    write_pngs(tmp_path / "imgs", 6)
    cli = build_cli(["fit", "--config", FOLDER, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path / "run"), "--data.root", str(tmp_path / "imgs")] + QUIET)
    _first_loss_matches_zero_output(cli, rel=0.15)  # a batch of 4 random crops: noisier


def test_own_folder_trains_samples_and_loads_in_python(tmp_path):
    write_pngs(tmp_path / "imgs", 12, size=(40, 30))
    run = tmp_path / "run"
    common = ["--config", FOLDER, "--data.root", str(tmp_path / "imgs"), "--data.image_size=16",
              "--model.image_size=16"] + SMALL
    main(["fit", *common, "--trainer.max_steps=2", "--trainer.default_root_dir", str(run)] + QUIET)
    ckpt = next(run.rglob("last.ckpt"))
    out = tmp_path / "samples"
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples=3", "--sampler=heun", "--steps=2",
          "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png", "grid.png"]
    assert Image.open(out / "00000.png").size == (16, 16) and Image.open(out / "00000.png").mode == "RGB"
    # inpainting through the CLI: --input
    write_pngs(tmp_path / "one", 1, size=(16, 16), seed=3)
    out2 = tmp_path / "inpainted"
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples=2", "--out", str(out2),
          "--input", str(tmp_path / "one" / "img_00.png"), "--model.inpaint_steps=2", "--model.inpaint_resample=1"])
    assert (out2 / "00001_inpainted.png").is_file() and (out2 / "masked.png").is_file()
    # the Python API on the same checkpoint
    from polydiff.domains.image import ImageDiffusion

    model = ImageDiffusion.load_from_checkpoint(ckpt, map_location="cpu")
    x = model.sample_images(2, steps=2, seed=1)
    assert x.shape == (2, 3, 16, 16) and 0 <= x.min() and x.max() <= 1


def test_class_folders_train_a_class_conditional_model_and_check_the_class_count(tmp_path, capsys):
    for name in ("cats", "dogs", "owls"):
        write_pngs(tmp_path / "root" / name, 4, size=(18, 18), seed=len(name), mode="L")
    common = ["--config", FOLDER, "--data.root", str(tmp_path / "root"), "--data.class_folders=true",
              "--data.channels=1", "--model.channels=1", "--data.image_size=8", "--model.image_size=8",
              "--trainer.default_root_dir", str(tmp_path / "run"), "--model.objective.cond_dropout=0.2"] + SMALL
    main(["fit", *common, "--model.num_classes=3", "--trainer.fast_dev_run=1"] + QUIET)
    err = run_error(["fit", *common, "--model.num_classes=5", "--trainer.fast_dev_run=1"] + QUIET, capsys)
    assert "--model.num_classes 3" in err
    # images in sub-folders but --data.class_folders false: the explicit setting contradicts the data, and says so
    err = run_error(["fit", "--config", FOLDER, "--data.root", str(tmp_path / "root"), "--trainer.fast_dev_run=1",
                     "--data.class_folders=false", "--trainer.default_root_dir", str(tmp_path / "run2")] + QUIET, capsys)
    assert "class_folders" in err
    # without the setting the layout is read from the folder: three classes found, the conditional model trains
    cli = build_cli(["fit", "--config", FOLDER, "--data.root", str(tmp_path / "root"), "--data.channels=1",
                     "--model.channels=1", "--data.image_size=8", "--model.image_size=8", "--model.num_classes=3",
                     "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path / "run3")] + SMALL + QUIET)
    assert cli.datamodule.num_classes == 3 and cli.datamodule.class_names == ["cats", "dogs", "owls"]


def test_folder_bad_inputs_name_the_thing_and_the_fix(tmp_path, capsys):
    base = ["fit", "--config", FOLDER, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path / "r")]
    (tmp_path / "empty").mkdir()
    err = run_error(base + ["--data.root", str(tmp_path / "empty")], capsys)
    assert str(tmp_path / "empty") in err and "no PNG/JPEG" in err
    err = run_error(base + ["--data.root", str(tmp_path / "nowhere")], capsys)
    assert "nowhere" in err and "does not exist" in err
    err = run_error(base, capsys)
    assert "--data.root" in err
    write_pngs(tmp_path / "mixed", 3)
    (tmp_path / "mixed" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    err = run_error(base + ["--data.root", str(tmp_path / "mixed")], capsys)
    assert "broken.png" in err and "re-save" in err


def test_polydiff_test_writes_image_metrics(tmp_path):
    run = tmp_path / "run"
    common = ["--config", DIGITS, "--trainer.default_root_dir", str(run), "--model.eval_num_samples=40"] + SMALL
    main(["fit", *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=1"] + QUIET)
    ckpt = next(run.rglob("last.ckpt"))
    main(["test", *common, "--ckpt_path", str(ckpt)] + QUIET)
    metrics = json.loads(next(run.rglob("metrics.json")).read_text())["metrics"]
    assert {"fd", "fd_floor", "fd_ceiling", "fd_relative", "class_accuracy", "classifier_test_accuracy"} <= set(metrics)
    assert metrics["classifier_test_accuracy"] >= 0.95
    assert 0 < metrics["fd_floor"] < metrics["fd_ceiling"]
    # two optimiser steps make noise, not digits: near the ceiling, and chance-level accuracy
    assert metrics["fd_relative"] > 0.3 and metrics["class_accuracy"] < 0.5


def test_tensorboard_logger_receives_preview_images_and_fit_draws_the_loss_curve(tmp_path):
    """With the TensorBoard extra (pip install polydiff[tensorboard]) previews go to the logger as images; with the
    default CSV logger fit ends by drawing loss_curve.png from metrics.csv."""
    common = ["fit", "--config", DIGITS, "--trainer.max_steps", "4", "--trainer.limit_train_batches", "2",
              "--trainer.limit_val_batches", "1", "--trainer.check_val_every_n_epoch", "1",
              "--model.preview_every_n_epochs", "1", "--model.preview_per_class", "1", "--model.sampler.steps", "2",
              "--model.model_channels", "8", "--model.channel_mult", "[1, 2]", "--model.num_res_blocks", "1",
              "--model.attention_resolutions", "[]", "--model.num_heads", "1", "--trainer.log_every_n_steps", "1"] + QUIET
    main([*common, "--trainer.default_root_dir", str(tmp_path / "csv")])
    curve = next((tmp_path / "csv").rglob("loss_curve.png"))
    assert Image.open(curve).size[0] > 100
    pytest.importorskip("tensorboard", reason="the TensorBoard extra is not installed: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    main([*common, "--trainer.default_root_dir", str(tmp_path / "tb"), "--trainer.logger",
          "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.save_dir", str(tmp_path / "tb")])
    events = EventAccumulator(str(next((tmp_path / "tb").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert "previews" in events.Tags()["images"]
    assert len(events.Images("previews")) == 2  # one per epoch (2 epochs of 2 batches)
