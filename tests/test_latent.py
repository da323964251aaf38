"""Latent diffusion: the N-d KL autoencoder (closed forms), PSNR and its PCA control, the latent scale factor (measured
as 1 / std at fit start, stored, and reused after reloading on other data), both recipes under fast_dev_run, and the
bad inputs."""

import math
from pathlib import Path

import pytest
import torch

from polydiff.core import load
from polydiff.core.cli import build_cli, main
from polydiff.core.latent import LatentSpace
from polydiff.core.utils import PolydiffError
from polydiff.domains.autoencoder import AutoencoderModule, KLAutoencoder
from polydiff.domains.autoencoder.metrics import pca_reconstruction, psnr

ROOT = Path(__file__).resolve().parents[1]
AE = str(ROOT / "recipes" / "autoencoder" / "digits.yaml")
LATENT = str(ROOT / "recipes" / "image" / "digits_latent.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL_AE = ["--model.base_channels=8", "--model.channel_mult=[1,2,2]"]
SMALL_UNET = ["--model.model_channels=16", "--model.channel_mult=[1,2]", "--model.num_res_blocks=1",
              "--model.attention_resolutions=[]", "--model.num_heads=2", "--model.sampler.steps=2",
              "--model.preview_every_n_epochs=0", "--trainer.max_time=null"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory) -> Path:
    """A small autoencoder trained for 30 steps on the digits (enough to be a non-trivial map)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ae")
    main(["fit", "--config", AE, "--trainer.default_root_dir", str(tmp), "--trainer.max_steps=30",
          "--trainer.limit_val_batches=0", "--trainer.max_time=null", *SMALL_AE, *QUIET])
    return next(tmp.glob("lightning_logs/version_*/checkpoints/last.ckpt"))


# ---------------------------------------------------------------------- the autoencoder
@pytest.mark.parametrize("dims,grid", [(1, (32,)), (2, (16, 12)), (3, (8, 8, 4))])
def test_autoencoder_any_rank_shapes(dims, grid):
    net = KLAutoencoder(dims, channels=3, latent_channels=2, base_channels=8, channel_mult=(1, 2, 2))
    x = torch.randn(2, 3, *grid)
    mean, logvar = net.encode(x)
    assert mean.shape == logvar.shape == (2, *net.latent_shape(x.shape)[1:]) == (2, 2, *(g // 4 for g in grid))
    assert net.decode(mean).shape == x.shape
    with pytest.raises(ValueError, match="divisible by 4"):
        net.encode(torch.randn(2, 3, *(g + 2 for g in grid)))


def test_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(4, 2, 3, 3, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert torch.allclose(KLAutoencoder.kl(mean, logvar), expected, atol=1e-5)
    assert KLAutoencoder.kl(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_posterior_draws_have_the_posterior_moments():
    mean, logvar = torch.full((20000, 1), 1.5), torch.full((20000, 1), math.log(0.25))
    z = KLAutoencoder.sample_posterior(mean, logvar, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(1.5, abs=0.01) and z.std().item() == pytest.approx(0.5, abs=0.01)


def test_psnr_and_pca_control_closed_forms():
    x = torch.zeros(10, 1, 4, 4)
    assert psnr(x, x + 0.1) == pytest.approx(10 * math.log10(4 / 0.01))  # range 2, MSE 0.01: 26.02 dB
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 16, generator=gen)
    train = (torch.randn(200, 3, generator=gen) @ basis).reshape(200, 1, 4, 4)
    test = (torch.randn(20, 3, generator=gen) @ basis).reshape(20, 1, 4, 4)
    assert torch.allclose(pca_reconstruction(train, test, 3), test, atol=1e-4)  # rank-3 data: 3 components are exact
    err2 = (pca_reconstruction(train, test, 2) - test).pow(2).mean()
    assert err2 > 1e-2  # and 2 are not


# ---------------------------------------------------------------------- the scale factor
class _Scaling(torch.nn.Module):
    """A linear 'autoencoder' z = 3 x (on a 2x-downsampled grid): latents with a known standard deviation."""

    def encode(self, x):
        return 3.0 * x[..., ::2, ::2]

    def decode(self, z):
        return (z / 3.0).repeat_interleave(2, -1).repeat_interleave(2, -2)

    def latent_shape(self, shape):
        return (*shape[:-2], shape[-2] // 2, shape[-1] // 2)


def test_scale_factor_is_one_over_latent_std_and_round_trips():
    space = LatentSpace(_Scaling())
    with pytest.raises(PolydiffError, match="no latent scale factor"):
        space.encode(torch.zeros(1, 1, 4, 4))
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.7 + 0.2
    factor = space.measure(x.split(16))
    assert factor == pytest.approx(1.0 / float((3.0 * x[..., ::2, ::2]).double().std()), rel=1e-9)
    z = space.encode(x)
    assert float(z.std()) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(space.decode(z), _Scaling().decode(3.0 * x[..., ::2, ::2]), atol=1e-5)


# ---------------------------------------------------------------------- recipes
def test_autoencoder_recipe_fast_dev_run_and_test_beats_nothing(tmp_path, ae_ckpt):
    cli = build_cli(["fit", "--config", AE, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path),
                     *SMALL_AE, *QUIET])
    assert isinstance(cli.model, AutoencoderModule)
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    # polydiff test reports PSNR and the PCA control of the same latent size (16 numbers for 16x16 digits)
    run = tmp_path / "test"
    main(["test", "--config", AE, "--ckpt_path", str(ae_ckpt), "--trainer.default_root_dir", str(run), *SMALL_AE,
          *QUIET])
    import json

    metrics = json.loads(next(run.rglob("metrics.json")).read_text())["metrics"]
    assert metrics["latent_dims"] == 16 and metrics["data_dims"] == 256
    assert 15 < metrics["psnr_pca"] < 40 and metrics["psnr"] > 10  # 30 steps: a blurry but real reconstruction


def test_latent_recipe_fast_dev_run_first_loss(tmp_path, ae_ckpt):
    """The U-Net's output starts at zero, so the first v-prediction loss is ``(1 + E[z^2]) / 2`` of the *scaled*
    latents (uniform t on the cosine process); the scale factor makes E[z^2] = 1 + mean^2 / var, not E[x^2] of pixels."""
    cli = build_cli(["fit", "--config", LATENT, "--model.autoencoder", str(ae_ckpt), "--trainer.fast_dev_run=1",
                     "--trainer.default_root_dir", str(tmp_path), *SMALL_UNET, *QUIET])
    model = cli.model
    assert model.latent.measured
    z = model.latent.encode(cli.datamodule.split_tensors("train")[0])
    assert float(z.double().std()) == pytest.approx(1.0, rel=1e-3)
    expected = 0.5 * (1.0 + float((z.double() ** 2).mean()))
    assert float(cli.trainer.callback_metrics["train/loss"]) == pytest.approx(expected, rel=0.1)


def test_reloaded_model_uses_the_stored_scale_factor(tmp_path, ae_ckpt):
    run = tmp_path / "fit"
    common = ["--config", LATENT, "--model.autoencoder", str(ae_ckpt), *SMALL_UNET, *QUIET]
    main(["fit", *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.default_root_dir",
          str(run)])
    ckpt = next(run.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    model = load(str(ckpt))
    stored = float(model.latent.scale_factor)
    # measured at fit start: 1 / std of the training split's latents (data seed 0)
    from polydiff.datasets.digits import DigitsDataModule

    train0 = DigitsDataModule(seed=0).split_tensors("train")[0]
    assert stored == pytest.approx(1.0 / float(model.latent.raw_latents(train0).double().std()), rel=1e-6)
    # the control: other training data (split seed 1, the digits scaled by 0.5) would measure another factor
    train1 = DigitsDataModule(seed=1).split_tensors("train")[0] * 0.5
    remeasured = 1.0 / float(model.latent.raw_latents(train1).double().std())
    assert abs(remeasured - stored) > 0.02 * stored
    # sampling and decoding of the reloaded model use the stored factor
    z = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model.decode(z), (model.latent.autoencoder.decode(z / stored).clamp(-1, 1) + 1) / 2,
                          atol=1e-5)
    # polydiff predict on other data (seed 1) does not re-measure it
    out = tmp_path / "predict"
    cli = build_cli(["predict", *common, "--ckpt_path", str(ckpt), "--data.seed=1", "--trainer.limit_predict_batches=1",
                     "--trainer.default_root_dir", str(out)])
    assert float(cli.model.latent.scale_factor) == stored
    assert len(list(out.rglob("*.png"))) > 1
    # nor does a resumed fit on other data
    cli = build_cli(["fit", *common, "--ckpt_path", str(ckpt), "--data.seed=1", "--trainer.max_steps=3",
                     "--trainer.limit_val_batches=0", "--trainer.default_root_dir", str(tmp_path / "resume")])
    assert float(cli.model.latent.scale_factor) == stored
    # while a fresh fit on that data measures its own
    cli = build_cli(["fit", *common, "--data.seed=1", "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
                     "--trainer.default_root_dir", str(tmp_path / "fresh")])
    assert float(cli.model.latent.scale_factor) != stored


def test_latent_model_samples_through_the_cli(tmp_path, ae_ckpt):
    run = tmp_path / "fit"
    common = ["--config", LATENT, "--model.autoencoder", str(ae_ckpt), *SMALL_UNET, *QUIET]
    main(["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.default_root_dir",
          str(run)])
    ckpt = next(run.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    out = tmp_path / "samples"
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples=10", "--steps=2", "--out", str(out)])
    from PIL import Image

    assert Image.open(out / "00003_class3.png").size == (16, 16)
    model = load(str(ckpt))
    images = model.sample(4, steps=2, seed=0)
    assert images.shape == (4, 1, 16, 16) and 0 <= images.min() and images.max() <= 1
    with pytest.raises(PolydiffError, match="latent diffusion model"):
        model.inpaint(images, torch.ones(1, 1, 16, 16))


# ---------------------------------------------------------------------- bad inputs
def test_latent_bad_inputs(tmp_path, ae_ckpt, cli_error):
    err = cli_error(["fit", "--config", LATENT, "--model.autoencoder", str(tmp_path / "missing.ckpt"),
                     "--trainer.fast_dev_run=1"])
    assert "missing.ckpt" in err and "does not exist" in err
    # an autoencoder for 3-channel images under a 1-channel model
    err = cli_error(["fit", "--config", LATENT, "--model.autoencoder", str(ae_ckpt), "--model.channels=3",
                     "--trainer.fast_dev_run=1"])
    assert "autoencoder" in err and "channels" in err
    # a 12x12 image does not divide into 4x4 latents... 12 / 4 = 3 does; 18 does not
    err = cli_error(["fit", "--config", LATENT, "--model.autoencoder", str(ae_ckpt), "--model.image_size=18",
                     "--data.image_size=18", "--trainer.fast_dev_run=1"])
    assert "divisible by 4" in err
    # an autoencoder cannot sample on its own
    err = cli_error(["sample", "--config", AE, "--ckpt_path", str(ae_ckpt), *SMALL_AE, "--out", str(tmp_path / "s")])
    assert "does not sample" in err
    # an untrained latent model has no scale factor
    from polydiff.domains.image import ImageDiffusion

    model = ImageDiffusion(autoencoder=str(ae_ckpt), model_channels=16, channel_mult=(1, 2), attention_resolutions=())
    with pytest.raises(PolydiffError, match="no latent scale factor"):
        model.sample(2, steps=1)


def test_export_keeps_the_scale_factor(tmp_path, ae_ckpt):
    run = tmp_path / "fit"
    main(["fit", "--config", LATENT, "--model.autoencoder", str(ae_ckpt), *SMALL_UNET, *QUIET, "--trainer.max_steps=1",
          "--trainer.limit_val_batches=0", "--trainer.default_root_dir", str(run)])
    ckpt = next(run.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "export")])
    exported = load(str(tmp_path / "export"))
    assert float(exported.latent.scale_factor) == float(load(str(ckpt)).latent.scale_factor)
    assert exported.latent.measured
