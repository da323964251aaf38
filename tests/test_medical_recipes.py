"""Every medical recipe through the CLI, polydiff test / sample end to end, inputs read by the DataModule."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from polydiff.core.cli import build_cli, main, resolve_recipes
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.datasets.medical import SliceDataModule
from polydiff.domains.medical import MedicalDiffusion
from polydiff.domains.medical.geometry import upsampled_affine

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes" / "medical").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL = ["--model.model_channels=8", "--model.channel_mult=[1,2]", "--model.attention_levels=[]", "--model.num_heads=2",
         "--model.sampler.steps=2", "--model.inpaint_steps=2", "--model.inpaint_resample=1"]
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_there_are_five_recipes():
    assert [p.stem for p in RECIPES] == ["inpaint2d", "sr2d", "sr3d", "synthesis2d", "synthesis3d"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_fast_dev_run_first_loss_is_the_closed_form(recipe, tmp_path):
    # the U-Net's output convolution starts at zero, so with eps-prediction and plain MSE the first loss is the mean
    # square of the standard-normal noise: 1 up to sampling error (under 0.01 for these batch sizes)
    cli = build_cli(resolve_recipes(["fit", "--config", str(recipe), "--trainer.fast_dev_run=1",
                                     "--trainer.default_root_dir", str(tmp_path), "--model.diffusion.prediction=eps",
                                     "--model.objective.weighting=native"] + QUIET))
    metrics = cli.trainer.callback_metrics
    assert float(metrics["train/loss"]) == pytest.approx(1.0, abs=0.05)
    assert float(metrics["val/loss"]) == pytest.approx(1.0, abs=0.05)


def test_synthesis_fit_test_sample_end_to_end(tmp_path):
    recipe = str(ROOT / "recipes" / "medical" / "synthesis2d.yaml")
    run = tmp_path / "run"
    common = ["--config", recipe, "--trainer.default_root_dir", str(run), "--model.eval_num_samples=12"] + SMALL + QUIET
    main(["fit", *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1"])
    rows = list(csv.DictReader(open(next(run.rglob("metrics.csv")))))
    assert any(r.get("train/loss") for r in rows)
    ckpt = next(run.rglob("last.ckpt"))
    main(["test", *common, "--ckpt_path", str(ckpt)])
    metrics = json.loads(next(run.rglob("metrics.json")).read_text())["metrics"]
    assert {"mmd2", "mmd2_pca_gaussian", "mmd2_pixelwise_gaussian", "mmd2_train_items", "bandwidth"} <= set(metrics)
    # the Python twin of polydiff sample, the same in every domain
    model = MedicalDiffusion.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.sample(2, steps=2, seed=0).shape == (2, 1, 48, 56)
    # two steps of training make noise: further from the held-out slices than the pixelwise control and real slices
    assert metrics["mmd2"] > metrics["mmd2_pixelwise_gaussian"] > metrics["mmd2_train_items"]
    cli = build_cli(["predict", *common, "--ckpt_path", str(ckpt)])  # one new slice per held-out slice
    predictions = torch.cat(cli.trainer.predict_loop.predictions)
    assert predictions.shape == (31, 1, 48, 56) and predictions.abs().max() <= 1
    written = sorted(Path(cli.trainer.log_dir, "predictions").glob("*.nii.gz"))  # the default prediction writer
    assert len(written) == 31 and nib.load(written[0]).shape[:2] == (48, 56)
    out = tmp_path / "samples"
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples=2", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["00000.nii.gz", "00000.png", "00001.nii.gz", "00001.png"]
    written = nib.load(out / "00000.nii.gz")
    reference = SliceDataModule().reference_geometry()["affine"]  # the template's grid at 4 x 4 x 1 mm
    assert written.shape == (48, 56, 1) and np.allclose(written.affine, reference)
    assert nib.aff2axcodes(written.affine) == ("R", "A", "S")
    assert written.get_data_dtype() == np.uint8  # the template's header (uint8, 0..255) came through the checkpoint


@pytest.mark.parametrize("recipe,keys", [
    ("sr2d", {"psnr", "ssim", "psnr_linear", "ssim_linear", "psnr_bicubic", "psnr_linear_consistent"}),
    ("sr3d", {"psnr", "ssim", "psnr_linear", "ssim_linear", "psnr_linear_consistent"}),
    ("inpaint2d", {"mae_repaint", "mae_harmonic_fill", "mae_mean_fill", "rmse_repaint"}),
])
def test_polydiff_test_tables_have_their_controls(recipe, keys, tmp_path):
    run = tmp_path / "run"
    common = ["--config", str(ROOT / "recipes" / "medical" / f"{recipe}.yaml"), "--trainer.default_root_dir", str(run),
              "--model.eval_num_samples=6"] + SMALL + QUIET
    main(["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=0"])
    main(["test", *common, "--ckpt_path", str(next(run.rglob("last.ckpt")))])
    metrics = json.loads(next(run.rglob("metrics.json")).read_text())["metrics"]
    assert keys <= set(metrics)
    if recipe.startswith("sr"):
        # the projection onto the measurement is orthogonal onto a set holding the truth: it can only get closer
        assert metrics["psnr_linear_consistent"] >= metrics["psnr_linear"]
    if recipe == "sr2d":  # polydiff sample --input: the DataModule reads the file, the model writes the finer grid
        out = tmp_path / "sr"
        main(["sample", *common, "--ckpt_path", str(next(run.rglob("last.ckpt"))), "--num_samples=1",
              "--input", str(lowres_file(tmp_path)), "--out", str(out)])
        high = nib.load(out / "00000_sr.nii.gz")
        assert high.shape == (32, 40, 3) and nib.aff2axcodes(high.affine) == ("L", "A", "S")
    if recipe == "inpaint2d":
        assert metrics["mae_harmonic_fill"] < metrics["mae_mean_fill"]


def lowres_file(tmp_path: Path) -> Path:
    img = nib.load(ANATOMICAL)  # LAS, 2 mm, int16
    path = tmp_path / "lowres.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:16, :20, :3], img.affine, img.header), str(path))
    return path


def test_super_resolution_writes_the_refined_grid_of_the_input(tmp_path):
    model = MedicalDiffusion(task="super_resolution", model_channels=8, channel_mult=(1, 2), attention_levels=(),
                             num_heads=2)
    src = lowres_file(tmp_path)
    payload = SliceDataModule().read_input(str(src))
    with pytest.raises(PolydiffError, match="lowres"):
        model.sample(2, steps=2)
    assert model.sample(2, steps=2, lowres=torch.zeros(2, 1, 6, 7)).shape == (2, 1, 12, 14)
    paths = model.write_samples(tmp_path / "sr", 1, SamplerConfig(steps=2), 0, payload)
    assert {p.name for p in paths} >= {"input.nii.gz", "linear.nii.gz", "00000_sr.nii.gz", "00000_sr.png"}
    low, high = nib.load(src), nib.load(tmp_path / "sr" / "00000_sr.nii.gz")
    assert high.shape == (32, 40, 3)  # in-plane x2, slices kept
    assert np.allclose(high.affine, upsampled_affine(low.affine, (2, 2, 1)))
    assert nib.aff2axcodes(high.affine) == nib.aff2axcodes(low.affine) == ("L", "A", "S")
    assert np.allclose(nib.affines.voxel_sizes(high.affine), (1.0, 1.0, 2.0))
    assert np.allclose(nib.load(tmp_path / "sr" / "input.nii.gz").affine, low.affine)


def test_inpainting_keeps_the_known_voxels_and_the_input_grid(tmp_path):
    model = MedicalDiffusion(task="inpainting", model_channels=8, channel_mult=(1, 2), attention_levels=(), num_heads=2,
                             inpaint_steps=2, inpaint_resample=1)
    src = lowres_file(tmp_path)
    payload = SliceDataModule(percentiles=(0, 100)).read_input(str(src))
    model.write_samples(tmp_path / "fill", 1, SamplerConfig(steps=2), 0, payload)
    before, after = nib.load(src), nib.load(tmp_path / "fill" / "00000_inpainted.nii.gz")
    assert after.shape == before.shape and np.allclose(after.affine, before.affine)
    a, b = before.get_fdata(), after.get_fdata()
    assert np.abs(a[0] - b[0]).max() <= 1.0  # the first sagittal column lies outside the box: kept (up to int16)


def test_bad_settings_stop_with_one_line(tmp_path, capsys):
    recipe = str(ROOT / "recipes" / "medical" / "synthesis2d.yaml")
    base = ["fit", "--config", recipe, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path)] + QUIET

    def error(args: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(base + args)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("polydiff: error:")
        return err

    (tmp_path / "empty").mkdir()
    assert "empty" in error(["--data.root", str(tmp_path / "empty")])
    err = error(["--model.item_size=[32,32]"])
    assert "--model.item_size" in err and "(48, 56)" in err
    with pytest.raises(PolydiffError, match="divisible by 4"):
        MedicalDiffusion(item_size=(48, 54))
    with pytest.raises(PolydiffError, match="item_size"):
        MedicalDiffusion(spatial_dims=3, item_size=(16, 16))
