"""The denoising diffusion GAN student (polydiff.core.fewstep.DDGAN): the posterior draw against the closed form, the
step grids it trains on, the latent input's zero start (the generator is the teacher), one GAN step updating both
networks, the recipe under fast_dev_run and the same callback on the time-series domain."""

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from polydiff.core.cli import build_cli, main
from polydiff.core.fewstep import DDGAN, GridDiscriminator, posterior_draw, step_pairs
from polydiff.core.module import DiffusionBatch, DiffusionConfig
from polydiff.core.processes import process_by_name
from polydiff.core.samplers import ddpm
from polydiff.core.utils import PolydiffError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "recipes" / "image" / "digits.yaml")
RECIPE = str(ROOT / "recipes" / "image" / "digits_ddgan.yaml")
ELNINO = str(ROOT / "recipes" / "timeseries" / "elnino.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL = dict(image_size=16, channels=1, num_classes=10, model_channels=16, channel_mult=[1, 2],
             attention_resolutions=[], num_heads=2, preview_every_n_epochs=0)
SMALL_ARGS = ["--model.model_channels=16", "--model.channel_mult=[1,2]", "--model.attention_resolutions=[]",
              "--model.num_heads=2", "--model.preview_every_n_epochs=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def ddpm_posterior(process, x_t, x0, lam_t, lam_s):
    """q(x_s | x_t, x0) in the alpha_{t|s} form (Kingma et al. 2021, VDM, eq. 31-33; DDPM eq. 6-7 for VP):
    alpha_{t|s} = alpha_t / alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2,
    mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0,
    var = sigma_{t|s}^2 sigma_s^2 / sigma_t^2."""
    a_t, s_t = process.alpha_sigma(torch.tensor(lam_t, dtype=torch.float64))
    a_s, s_s = process.alpha_sigma(torch.tensor(lam_s, dtype=torch.float64))
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    mean = a_ts * s_s**2 / s_t**2 * x_t + a_s * s2_ts / s_t**2 * x0
    return mean, (s2_ts * s_s**2 / s_t**2).sqrt()


class Constant:
    """A denoiser whose x0 prediction is a fixed tensor (DD-GAN's generator at one fixed z)."""

    def __init__(self, process, x0):
        self.process, self.sigma_data, self.x0 = process, 1.0, x0

    def __call__(self, x, lam, cond=None):
        return self.x0.expand_as(x)


@pytest.mark.parametrize("process", ["vp_cosine", "edm", "flow"])
def test_posterior_draw_and_the_ddpm_step_follow_the_closed_form_posterior(process):
    """The training's posterior draw (process.posterior) and the sampler's step (ddpm) both have the closed-form mean
    and standard deviation of q(x_s | x_t, x0); the draw is exactly mean + std * noise."""
    proc = process_by_name(process)
    lam_t, lam_s = -1.5, 1.0
    x_t, x0 = torch.tensor([0.7, -1.2, 2.0], dtype=torch.float64), torch.tensor([0.3, 0.9, -0.5], dtype=torch.float64)
    mean, std = ddpm_posterior(proc, x_t, x0, lam_t, lam_s)
    n = 200_000
    noise = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lt, ls = torch.full((n,), lam_t, dtype=torch.float64), torch.full((n,), lam_s, dtype=torch.float64)
    draws = posterior_draw(proc, x_t.expand(n, 3), x0.expand(n, 3), lt, ls, noise)
    torch.testing.assert_close(draws, mean + std * noise, rtol=1e-10, atol=1e-10)
    steps = ddpm(Constant(proc, x0), x_t.expand(n, 3).clone(), torch.tensor([lam_t, lam_s], dtype=torch.float64),
                 generator=torch.Generator().manual_seed(1))
    tol = 5 * float(std) / math.sqrt(n)
    assert (steps.mean(0) - mean).abs().max() < tol
    assert (steps.std(0) - std).abs().max() < 5 * float(std) / math.sqrt(2 * n)
    # the last step (to clean data) is x0 itself
    end = posterior_draw(proc, x_t[None], x0[None], torch.tensor([lam_t]), torch.tensor([math.inf]),
                         torch.randn(1, 3))
    torch.testing.assert_close(end, x0[None])


def test_step_pairs_are_the_transitions_of_the_sampling_grids():
    """1-, 2- and 4-step uniform-t grids of the cosine process: 7 distinct transitions between t = t0, 3/4 t0,
    1/2 t0, 1/4 t0 and 0, where t0 is the time of the grid's start at log-SNR -20 (lambda = -2 log tan(pi t / 2))."""
    proc = process_by_name("vp_cosine")
    pairs = step_pairs(proc, [1, 2, 4], "uniform_t", 0.002, None, 7.0)
    t0 = 2 / math.pi * math.atan(math.exp(10.0))
    lam = {f: -2 * math.log(math.tan(math.pi * f * t0 / 2)) if f > 0 else math.inf for f in (1.0, 0.75, 0.5, 0.25, 0.0)}
    expected = {(lam[1.0], lam[0.75]), (lam[0.75], lam[0.5]), (lam[0.5], lam[0.25]), (lam[0.25], lam[0.0]),
                (lam[1.0], lam[0.5]), (lam[0.5], lam[0.0]), (lam[1.0], lam[0.0])}
    got = {(a, b) for a, b in pairs.tolist()}
    assert len(got) == 7
    for a, b in expected:
        assert any(abs(a - x) < 1e-6 and (b == y or abs(b - y) < 1e-6) for x, y in got)


# ---------------------------------------------------------------------------------------------- the latent input
def small_model(latent_dim: int = 0, seed: int = 0):
    from polydiff.domains.image import ImageDiffusion

    torch.manual_seed(seed)
    return ImageDiffusion(**SMALL, diffusion=DiffusionConfig(process="vp_cosine", prediction="v",
                                                             latent_dim=latent_dim)).eval()


def perturbed(model, latent: bool = True):
    """``model`` with every weight (but the latent mapping's when ``latent`` is False) moved at random: a fresh U-Net
    outputs 0 (zero-initialised output layers), a trained one does not."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if latent or "latent_input" not in name:
                p.add_(torch.randn_like(p), alpha=0.05)
    return model


def test_zero_initialised_latent_path_makes_the_generator_the_teacher():
    """Loaded from a teacher (no latent), the generator's x0 prediction equals the teacher's for any z; once the
    mapping's last layer is not zero, z changes the prediction (the path is live)."""
    teacher = perturbed(small_model(seed=1))
    student = small_model(latent_dim=8, seed=2)
    skipped = student.load_state_dict(teacher.state_dict(), strict=False)
    assert all(k.startswith("network.latent_input.") for k in skipped.missing_keys) and not skipped.unexpected_keys
    x = torch.randn(6, 1, 16, 16)
    lam = torch.linspace(-6, 4, 6, dtype=torch.float64)
    cond = torch.arange(6) % 10
    with torch.no_grad():
        ref = teacher.denoiser(x, lam, cond)
        for z_seed in range(3):
            z = torch.randn(6, 8, generator=torch.Generator().manual_seed(z_seed))
            with student.network.latent_input.fixed(z):
                torch.testing.assert_close(student.denoiser(x, lam, cond), ref, rtol=0, atol=0)
        torch.nn.init.normal_(student.network.latent_input.mapping[-1].weight, std=0.1)
        z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
        with student.network.latent_input.fixed(z1):
            a = student.denoiser(x, lam, cond)
        with student.network.latent_input.fixed(z2):
            b = student.denoiser(x, lam, cond)
    assert float((a - b).abs().mean()) > 1e-3


def test_latent_draws_come_from_the_sampling_seed():
    """generate() seeds the latent draws: the same seed repeats a sample, another seed changes it, and the global
    generator outside is left as it was."""
    model = perturbed(small_model(latent_dim=8))
    x_init = torch.randn(4, 1, 16, 16)
    state = torch.get_rng_state()
    a = model.sample_images(4, steps=2, sampler="ddpm", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = model.sample_images(4, steps=2, sampler="ddpm", seed=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same start noise and a deterministic sampler (DDIM): only the latent draws differ between seeds
    ddim = replace(model.sampler_config, name="ddim", steps=2, grid="uniform_t")
    g1 = model.generate((4, 1, 16, 16), cond=torch.arange(4), sampler=ddim, seed=3, x_init=x_init)
    g2 = model.generate((4, 1, 16, 16), cond=torch.arange(4), sampler=ddim, seed=4, x_init=x_init)
    assert float((g1 - g2).abs().mean()) > 1e-4


def test_a_bad_latent_target_is_a_one_line_error():
    from polydiff.domains.image import ImageDiffusion

    with pytest.raises(PolydiffError, match="no submodule 'time_mlp'.*latent_into"):
        ImageDiffusion(**SMALL, diffusion=DiffusionConfig(latent_dim=4, latent_into="time_mlp"))


# ---------------------------------------------------------------------------------------------- one GAN step
def test_one_gan_step_updates_the_discriminator_and_gives_the_generator_its_gradient():
    """The loss first takes a discriminator step (its weights move), then returns the generator's non-saturating loss,
    whose gradient reaches the generator (the zero-initialised latent mapping included) and not the discriminator."""
    from polydiff.datasets.digits import DigitsDataModule

    model = perturbed(small_model(latent_dim=8), latent=False)
    objective = DDGAN(steps=(2, 4), lr=1e-3, num_classes=10)
    cfg = model.sampler_config
    objective.pairs = step_pairs(model.process, [2, 4], "uniform_t", cfg.sigma_min, cfg.sigma_max, cfg.rho)
    x, y = DigitsDataModule().split_tensors("train")
    batch = DiffusionBatch(x0=x[:32], cond=y[:32])
    d = objective.build(batch.x0)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    g_loss = objective.loss(model, batch)
    assert max(float((d.state_dict()[k] - before[k]).abs().max()) for k in before) > 1e-5
    assert g_loss.shape == (32,) and torch.isfinite(g_loss).all()
    g_loss.mean().backward()
    assert all(p.grad is None for p in d.parameters())
    grads = dict(model.named_parameters())
    assert float(grads["network.latent_input.mapping.2.weight"].grad.abs().sum()) > 0
    assert float(grads["network.out_conv.weight"].grad.abs().sum()) > 0
    assert sum(1 for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0) > 0.9 * sum(
        1 for _ in model.parameters())


def test_during_the_warmup_only_the_discriminator_learns():
    """warmup_steps: the discriminator takes its step, the generator's loss is 0 (no gradient moves it)."""
    from polydiff.datasets.digits import DigitsDataModule

    model = perturbed(small_model(latent_dim=8), latent=False)
    objective = DDGAN(steps=(4,), warmup_steps=10, num_classes=10)
    cfg = model.sampler_config
    objective.pairs = step_pairs(model.process, [4], "uniform_t", cfg.sigma_min, cfg.sigma_max, cfg.rho)
    x, y = DigitsDataModule().split_tensors("train")
    d = objective.build(x[:16])
    before = {k: v.clone() for k, v in d.state_dict().items()}
    g_loss = objective.loss(model, DiffusionBatch(x0=x[:16], cond=y[:16]))
    assert max(float((d.state_dict()[k] - before[k]).abs().max()) for k in before) > 1e-5
    g_loss.mean().backward()
    assert float(g_loss.abs().sum()) == 0
    assert all(float(p.grad.abs().max()) == 0 for p in model.parameters() if p.grad is not None)


def test_discriminator_loss_falls_on_fixed_pairs():
    """A few discriminator steps on fixed real and fake pairs lower its loss (it learns to tell them apart)."""
    torch.manual_seed(0)
    proc = process_by_name("vp_cosine")
    d = GridDiscriminator(1, 2, width=8, channel_mult=(1, 2), num_classes=10)
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.9))
    x_t, real, fake = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8) * 0.3
    lt, ls = torch.full((16,), -1.0, dtype=torch.float64), torch.full((16,), 1.0, dtype=torch.float64)
    cond = torch.arange(16) % 10
    losses = []
    for _ in range(30):
        loss = (torch.nn.functional.softplus(-d(real, x_t, lt, ls, proc, 1.0, cond)).mean()
                + torch.nn.functional.softplus(d(fake, x_t, lt, ls, proc, 1.0, cond)).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[0] > 1.2 and losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------- recipes, end to end
@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher")
    main(["fit", "--config", DIGITS, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
          "--trainer.default_root_dir", str(run)] + SMALL_ARGS + QUIET)
    return next(run.rglob("last.ckpt"))


def test_ddgan_recipe_fast_dev_run_starts_from_the_teacher(digits_teacher, tmp_path):
    """recipes/image/digits_ddgan.yaml under fast_dev_run: the generator starts from the teacher (one step moves it by
    little), the discriminator is in the callback's checkpoint state, the student samples through the core."""
    cli = build_cli(["fit", "--config", RECIPE, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path), "--model.training.init_from", str(digits_teacher)] + SMALL_ARGS + QUIET)
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and math.isfinite(float(metrics["ddgan/d_loss"]))
    teacher = torch.load(digits_teacher, weights_only=True)["state_dict"]
    student = cli.model.state_dict()
    moved = max(float((student[k] - teacher[k]).abs().max()) for k in teacher if teacher[k].is_floating_point())
    assert moved < 5e-3
    assert cli.model.training_objective is None
    for steps in (1, 2, 4):
        imgs = cli.model.sample_images(4, steps=steps)
        assert imgs.shape == (4, 1, 16, 16) and torch.isfinite(imgs).all()


def test_ddgan_without_a_latent_input_is_a_one_line_error(digits_teacher, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", RECIPE, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path),
              "--model.training.init_from", str(digits_teacher), "--model.diffusion.latent_dim=0"]
             + SMALL_ARGS + QUIET)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model.diffusion.latent_dim" in err


def test_ddgan_on_the_timeseries_domain(tmp_path):
    """The same callback trains a CSDI imputer as a DD-GAN generator (dict conditions, a loss mask, 1-D grid
    discriminator): the machinery knows no domain."""
    net = ["--model.channels=16", "--model.layers=1"]
    main(["fit", "--config", ELNINO, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
          "--trainer.default_root_dir", str(tmp_path / "teacher"), "--trainer.callbacks=[]"] + net + QUIET)
    teacher = next((tmp_path / "teacher").rglob("last.ckpt"))
    cli = build_cli(["fit", "--config", ELNINO, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path / "student"), "--trainer.callbacks=[]",
                     "--trainer.callbacks+=polydiff.core.fewstep.DDGAN", "--trainer.callbacks.steps=[2]",
                     "--trainer.callbacks.width=8", "--model.diffusion.latent_dim=4", "--model.sampler.name=ddpm",
                     "--model.sampler.steps=2", "--model.training.init_from", str(teacher)] + net + QUIET)
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    assert math.isfinite(float(cli.trainer.callback_metrics["ddgan/d_loss"]))
