"""Both video recipes through the CLI: inflation from an image checkpoint (spatial weights loaded, temporal outputs
still zero), polydiff test with its controls, polydiff sample (GIF per clip, filmstrip, --input animates a first frame),
your own video folder, and bad inputs as one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polydiff.core.cli import build_cli, main

ROOT = Path(__file__).resolve().parents[1]
DIGITS_IMAGE = str(ROOT / "recipes" / "image" / "digits.yaml")
MOVING = str(ROOT / "recipes" / "video" / "moving_digits.yaml")
FOLDER = str(ROOT / "recipes" / "video" / "folder.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# one tiny U-Net for the image and the video model, so that the image checkpoint inflates
NET = ["--model.model_channels=8", "--model.channel_mult=[1,2]", "--model.num_res_blocks=1",
       "--model.attention_resolutions=[]", "--model.num_heads=1"]
VIDEO = NET + ["--model.temporal_heads=1", "--model.sampler.steps=2", "--model.preview_every_n_epochs=0",
               "--model.eval_batch_size=8", "--data.num_train=32", "--data.num_val=4", "--data.num_test=16"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def image_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("image")
    torch.set_num_threads(1)
    main(["fit", "--config", DIGITS_IMAGE, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
          "--trainer.default_root_dir", str(run), "--model.preview_every_n_epochs=0"] + NET + QUIET)
    return next(run.rglob("last.ckpt"))


def run_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("polydiff: error:")
    return err


def test_moving_digits_recipe_fast_dev_run(tmp_path, image_ckpt):
    """One step of the recipe from the image checkpoint, then polydiff predict writes one GIF of the training length
    per test clip and a filmstrip."""
    cli = build_cli(["fit", "--config", MOVING, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path),
                     "--model.training.init_from", str(image_ckpt)] + VIDEO + QUIET)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    cli = build_cli(["predict", "--config", MOVING, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path / "predict")] + VIDEO + QUIET)
    (clips,) = cli.trainer.predict_loop.predictions
    gifs = sorted((tmp_path / "predict" / "predictions").glob("batch00000_*.gif"))
    assert len(gifs) == len(clips) and (tmp_path / "predict" / "predictions" / "batch00000_filmstrip.png").exists()
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == clips.shape[2] == cli.model.frames


def test_inflation_through_the_cli_loads_spatial_weights_and_keeps_temporal_outputs_zero(tmp_path, image_ckpt):
    run = tmp_path / "run"
    main(["fit", "--config", MOVING, "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
          "--trainer.default_root_dir", str(run), "--model.training.init_from", str(image_ckpt),
          "--model.training.lr=0", "--model.training.warmup_steps=0"] + VIDEO + QUIET)
    image = torch.load(image_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    video = torch.load(next(run.rglob("last.ckpt")), map_location="cpu", weights_only=True)["state_dict"]
    spatial = [k for k in image if k.startswith("network.")]
    assert spatial and all(torch.equal(video[k], image[k]) for k in spatial)
    outputs = [k for k in video if k.endswith(("conv.conv2.weight", "attn.proj.weight")) and "temporal_" in k]
    assert len(outputs) >= 8 and all(video[k].abs().max() == 0 for k in outputs)


def test_polydiff_test_scores_the_model_beside_its_controls(tmp_path, image_ckpt):
    run = tmp_path / "run"
    common = ["--config", MOVING, "--trainer.default_root_dir", str(run), "--model.eval_num_samples=8",
              "--model.training.init_from", str(image_ckpt), "--model.image_prob=0.5"] + VIDEO
    main(["fit", *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=0"] + QUIET)
    main(["test", *common, "--ckpt_path", str(next(run.rglob("last.ckpt")))] + QUIET)
    payload = json.loads(next(run.rglob("metrics.json")).read_text())
    table = payload["table"]
    # the recipe's labeler (infer_class) adds the null-class row and the two label controls
    assert list(table) == ["model", "null_class", "real", "shuffled", "independent", "same_class_frames", "inflated",
                           "inflated_labelled", "frame_by_frame", "continued_2x", "animated_real", "animated"]
    assert table["real"]["motion_residual"] < 1e-4  # constant speed per axis, bounces flip the sign only
    assert table["shuffled"]["motion_residual"] > 0.2 and table["independent"]["motion_residual"] > 0.2
    assert table["real"]["fd"] == pytest.approx(table["shuffled"]["fd"], rel=1e-6)  # the same frames, reordered
    assert table["real"]["identity_consistency"] >= table["independent"]["identity_consistency"]
    # two optimiser steps make noise, not moving digits
    assert payload["metrics"]["fd_relative"] > 0.3 and "continued_2x/identity_consistency" in payload["metrics"]


def test_polydiff_sample_writes_gifs_and_animates_a_first_frame(tmp_path, image_ckpt):
    run = tmp_path / "run"
    common = ["--config", MOVING] + VIDEO
    main(["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.default_root_dir",
          str(run), "--model.training.init_from", str(image_ckpt)] + QUIET)
    ckpt = str(next(run.rglob("last.ckpt")))
    out = tmp_path / "samples"
    main(["sample", *common, "--ckpt_path", ckpt, "--num_samples=2", "--steps=2", "--out", str(out),
          "--model.write_mp4=false"])
    assert sorted(p.name for p in out.iterdir()) == ["00000_class0.gif", "00001_class1.gif", "filmstrip.png"]
    with Image.open(out / "00000_class0.gif") as gif:
        assert gif.n_frames == 8
    frame = np.zeros((16, 16), dtype=np.uint8)
    frame[4:12, 6:10] = 255
    Image.fromarray(frame).save(tmp_path / "first.png")
    out2 = tmp_path / "animated"
    main(["sample", *common, "--ckpt_path", ckpt, "--num_samples=1", "--steps=2", "--out", str(out2),
          "--input", str(tmp_path / "first.png"), "--model.write_mp4=false"])
    with Image.open(out2 / "00000_animated.gif") as gif:
        first = np.asarray(gif.convert("L").resize((16, 16), Image.NEAREST))
    assert np.abs(first.astype(int) - frame).max() <= 2  # the given frame opens the clip


def write_gif(path: Path, frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) for _ in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


def test_folder_recipe_fast_dev_run_and_bad_inputs(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_gif(videos / f"clip{i}.gif", 9, i)
    small = ["--model.image_size=8", "--data.image_size=8", "--model.frames=4", "--data.clip_length=4",
             "--trainer.default_root_dir", str(tmp_path / "run")] + NET + ["--model.temporal_heads=1"]
    main(["fit", "--config", FOLDER, "--data.root", str(videos), "--trainer.fast_dev_run=1"] + small + QUIET)
    (tmp_path / "empty").mkdir()
    err = run_error(["fit", "--config", FOLDER, "--data.root", str(tmp_path / "empty"), "--trainer.fast_dev_run=1"]
                    + small + QUIET, capsys)
    assert "holds no videos" in err
    err = run_error(["fit", "--config", FOLDER, "--data.root", str(videos), "--trainer.fast_dev_run=1"] + small
                    + ["--data.clip_length=12", "--model.frames=12"] + QUIET, capsys)
    assert "clip0.gif has 9 frames" in err and "--data.clip_length" in err
    err = run_error(["fit", "--config", FOLDER, "--data.root", str(videos), "--trainer.fast_dev_run=1"] + small
                    + ["--model.frames=6"] + QUIET, capsys)
    assert "--model.frames=6 but the data has frames=4" in err
