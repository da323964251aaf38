"""Few-step students (polydiff.core.fewstep): the formulas against closed forms, the 2D reflow toy, the consistency
sampler, the three image recipes under fast_dev_run and one student on the time-series domain."""

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from polydiff.core.cli import build_cli, main
from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.fewstep import consistency_function, progressive_target, straightness
from polydiff.core.fewstep.consistency import pseudo_huber
from polydiff.core.processes import process_by_name
from polydiff.core.samplers import consistency, ddim
from polydiff.core.utils import PolydiffError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "recipes" / "image" / "digits.yaml")
# written out (not built from the names) so that tests/test_readme.py sees each recipe run here
RECIPES = {"consistency": str(ROOT / "recipes/image/digits_consistency.yaml"),
           "progressive": str(ROOT / "recipes/image/digits_progressive.yaml"),
           "reflow": str(ROOT / "recipes/image/digits_reflow.yaml")}
ELNINO = str(ROOT / "recipes" / "timeseries" / "elnino.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL = ["--model.model_channels=16", "--model.channel_mult=[1,2]", "--model.attention_resolutions=[]",
         "--model.num_heads=2", "--model.preview_every_n_epochs=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class RandomNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, x_in, c_noise, cond):
        return torch.tanh(self.lin(x_in.double()) + c_noise.double()[:, None])


# ---------------------------------------------------------------------------------------------- consistency function
@pytest.mark.parametrize("process", ["vp_cosine", "edm", "flow"])
@pytest.mark.parametrize("prediction", ["v", "eps", "edm"])
def test_consistency_function_is_song_et_al_scalings_of_the_edm_output(process, prediction):
    """f = c_skip(s) x~ + c_out(s) F with Song et al.'s c_skip = sd^2/((s-eps)^2+sd^2), c_out = (s-eps) sd/sqrt(s^2+sd^2)
    and F the network output in EDM's frame; exactly x~ at s = eps."""
    torch.manual_seed(0)
    proc, sd, eps = process_by_name(process), 0.6, 0.002
    den = NetworkDenoiser(RandomNet(), proc, prediction, sd)
    x = torch.randn(5, 3, dtype=torch.float64)
    s = torch.tensor([0.05, 0.3, 1.0, 4.0, 40.0], dtype=torch.float64)
    lam = -2 * torch.log(s)
    a, sig = proc.alpha_sigma(lam)
    x_ve = x / a[:, None]
    d = den(x, lam)
    skip_edm = sd**2 / (s**2 + sd**2)
    cout_edm = s * sd / torch.sqrt(s**2 + sd**2)
    f_edm = (d - skip_edm[:, None] * x_ve) / cout_edm[:, None]
    c_skip = sd**2 / ((s - eps) ** 2 + sd**2)
    c_out = (s - eps) * sd / torch.sqrt(s**2 + sd**2)
    expected = c_skip[:, None] * x_ve + c_out[:, None] * f_edm
    got = consistency_function(den, x, lam, None, eps)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # the boundary condition f(x, eps) = x~ holds exactly, whatever the network outputs
    lam_eps = torch.full((5,), -2 * math.log(eps), dtype=torch.float64)
    a_eps = proc.alpha_sigma(lam_eps)[0]
    torch.testing.assert_close(consistency_function(den, x, lam_eps, None, eps), x / a_eps[:, None], rtol=1e-12,
                               atol=1e-12)
    # and away from the boundary f is the denoiser up to O(eps / s) (what the consistency sampler evaluates)
    bound = 2 * eps / s * (d.abs() + x_ve.abs()).max(1).values
    assert bool(((got - d).abs().max(1).values <= bound).all())


def test_pseudo_huber_is_quadratic_then_linear():
    a, b = torch.zeros(2, 4), torch.tensor([[1e-3, 0, 0, 0], [100.0, 0, 0, 0]])
    d = pseudo_huber(a, b, c=0.1)
    assert float(d[0]) == pytest.approx(1e-6 / (2 * 0.1), rel=1e-4)  # |x|^2 / 2c for |x| << c
    assert float(d[1]) == pytest.approx(100 - 0.1, rel=1e-4)  # |x| - c for |x| >> c


# ---------------------------------------------------------------------------------------------- consistency sampler
def test_consistency_sampler_one_step_is_the_denoiser_and_two_steps_renoise_with_fresh_noise():
    proc = process_by_name("vp_cosine")
    den = NetworkDenoiser(RandomNet(), proc, "v", 1.0)
    grid = torch.tensor([-8.0, 0.5, math.inf], dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    one = consistency(den, x, grid[[0, 2]])
    torch.testing.assert_close(one, den(x, grid[0].expand(6)))
    two = consistency(den, x, grid, generator=torch.Generator().manual_seed(3))
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float32).double()
    a, s = proc.alpha_sigma(grid[1])
    torch.testing.assert_close(two, den(a * den(x, grid[0].expand(6)) + s * z, grid[1].expand(6)))


# ---------------------------------------------------------------------------------------------- progressive distillation
class Constant:
    """A denoiser whose x0 prediction is a fixed tensor."""

    def __init__(self, process, x0):
        self.process, self.sigma_data, self.x0 = process, 1.0, x0

    def __call__(self, x, lam, cond=None):
        return self.x0


def test_progressive_target_makes_one_ddim_step_land_on_the_teachers_two():
    """With x0 = the target, one DDIM step t -> t'' of the student equals the teacher's two steps t -> t' -> t''."""
    proc = process_by_name("vp_cosine")
    teacher = NetworkDenoiser(RandomNet(), proc, "v", 1.0)
    x_t = torch.randn(4, 3, dtype=torch.float64)
    for grid in (torch.tensor([-3.0, -0.5, 2.0], dtype=torch.float64),
                 torch.tensor([1.0, 3.0, math.inf], dtype=torch.float64)):
        x_s = ddim(teacher, x_t, grid)
        a_t, s_t = proc.alpha_sigma(grid[0].expand(4))
        a_s, s_s = proc.alpha_sigma(grid[2].expand(4))
        target = progressive_target(x_t, x_s, a_t, s_t, a_s, s_s)

        torch.testing.assert_close(ddim(Constant(proc, target), x_t, grid[[0, 2]]), x_s, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------- reflow
def test_straightness_is_zero_for_a_point_mass_and_positive_for_a_spread():
    """Data at one point c: the flow from noise to c is a straight line (velocity eps - c is constant along it), so
    S = 0; Gaussian data with two scales bend the paths, S > 0."""
    proc = process_by_name("vp_cosine")
    c = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    class PointMass:
        process, sigma_data = proc, 1.0

        def __call__(self, x, lam, cond=None):
            return c.expand_as(x)

    class Gaussian:  # x0 ~ N(0, diag(0.01, 1, 4)): E[x0 | x_t] = a v / (a^2 v + s^2) x_t per coordinate
        process, sigma_data = proc, 1.0
        var = torch.tensor([0.01, 1.0, 4.0], dtype=torch.float64)

        def __call__(self, x, lam, cond=None):
            a, s = proc.alpha_sigma(lam)
            a, s = a[:, None], s[:, None]
            return a * self.var / (a * a * self.var + s * s) * x

    noise = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    s0, end = straightness(PointMass(), noise, steps=16)
    assert s0 < 1e-20 and torch.allclose(end, c.expand_as(end))
    s1, _ = straightness(Gaussian(), noise, steps=16)
    assert s1 > 0.05


def test_reflow_straightens_the_2d_toy_and_improves_its_one_step_samples():
    """1-RF vs 2-RF on noise -> two Gaussians (benchmarks/_reflow_toy.py, a small run): measured straightness 0.76 ->
    0.013 and one-step distance to the nearest mode 4.7 -> 0.85 at 600 steps (2 MODE_STD^2 = 0.125 for real data)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _reflow_toy import run_toy

    out = run_toy(steps=600, num_pairs=4096, eval_points=1000)
    one, two = out["1-rectified flow"], out["2-rectified flow"]
    assert two["straightness"] < 0.2 * one["straightness"]
    assert two["one_step_error"] < 0.3 * one["one_step_error"]
    assert two["one_step_mode_distance"] < 0.5 * one["one_step_mode_distance"]


def test_pair_cache_resumes_at_the_first_missing_batch(tmp_path):
    from polydiff.core.fewstep import PairCache

    cache = PairCache(tmp_path / "pairs")
    for i in (0, 2):
        cache.write(i, torch.full((2, 3), float(i)), torch.full((2, 3), -float(i)), torch.tensor([i, i]))
    assert cache.missing(4) == [1, 3]
    (tmp_path / "pairs" / "pairs_00001.tmp").write_bytes(b"half written")  # an interrupted write does not count
    assert cache.missing(4) == [1, 3]
    cache.write(1, torch.ones(2, 3), -torch.ones(2, 3), torch.tensor([1, 1]))
    noise, end, cond = cache.load(3)
    assert noise.shape == (6, 3) and cond.tolist() == [0, 0, 1, 1, 2, 2] and float(end[5, 0]) == -2.0
    (tmp_path / "pairs" / "pairs_00002.pt").write_bytes(b"broken")
    with pytest.raises(PolydiffError, match="pairs_00002.pt cannot be read"):
        cache.load(3)


# ---------------------------------------------------------------------------------------------- recipes, end to end
@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher")
    main(["fit", "--config", DIGITS, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
          "--trainer.default_root_dir", str(run)] + SMALL + QUIET)
    return next(run.rglob("last.ckpt"))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_student_recipe_fast_dev_run_starts_from_the_teacher(name, digits_teacher, tmp_path):
    """Each student recipe runs under fast_dev_run from a teacher checkpoint; the student's weights start as the
    teacher's (one step at lr <= 2e-4 moves them by a few 1e-4 at most, a fresh initialisation by O(0.1))."""
    cli = build_cli(["fit", "--config", RECIPES[name], "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path), "--model.training.init_from", str(digits_teacher)] + SMALL + QUIET)
    loss = float(cli.trainer.callback_metrics["train/loss"])
    assert math.isfinite(loss) and loss >= 0
    teacher = torch.load(digits_teacher, weights_only=True)["state_dict"]
    student = cli.model.state_dict()
    moved = max(float((student[k] - teacher[k]).abs().max()) for k in teacher if teacher[k].is_floating_point())
    assert moved < 5e-3
    # the students sample through the core at 1 and 2 steps
    imgs = cli.model.sample_images(4, steps=1)
    assert imgs.shape == (4, 1, 16, 16) and torch.isfinite(imgs).all()


def test_a_student_without_its_teacher_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no_teacher.ckpt"
    with pytest.raises(SystemExit):
        main(["fit", "--config", RECIPES["consistency"], "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
              str(tmp_path), "--model.training.init_from", str(missing)] + SMALL + QUIET)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {missing} does not exist" in err


def test_consistency_distillation_on_the_timeseries_domain(tmp_path):
    """The same callback distils a CSDI imputer (dict conditions, a loss mask): the machinery knows no domain."""
    net = ["--model.channels=16", "--model.layers=1"]
    main(["fit", "--config", ELNINO, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
          "--trainer.default_root_dir", str(tmp_path / "teacher"), "--trainer.callbacks=[]"] + net + QUIET)
    teacher = next((tmp_path / "teacher").rglob("last.ckpt"))
    cli = build_cli(["fit", "--config", ELNINO, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path / "student"), "--trainer.callbacks=[]",
                     "--trainer.callbacks+=polydiff.core.fewstep.ConsistencyDistillation",
                     "--trainer.callbacks.num_levels=6", "--model.training.init_from", str(teacher)] + net + QUIET)
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    assert cli.model.training_objective is None  # removed again when fit ends


def test_progressive_rounds_halve_the_steps_and_write_each_student(digits_teacher, tmp_path):
    """Two rounds of two steps: the 2-step student is written at the switch, the 1-step one at the end; in round 2 the
    teacher is the round-1 student (unguided) and the learning rate restarts from its peak."""
    main(["fit", "--config", RECIPES["progressive"], "--trainer.max_steps=4", "--trainer.limit_val_batches=0",
          "--trainer.default_root_dir", str(tmp_path), "--model.training.init_from", str(digits_teacher),
          "--trainer.callbacks.start_steps=2", "--trainer.callbacks.rounds=2", "--trainer.callbacks.steps_per_round=2"]
         + SMALL + QUIET)
    folder = next(tmp_path.rglob("checkpoints"))
    two, one = folder / "progressive_2steps.ckpt", folder / "progressive_1steps.ckpt"
    assert two.is_file() and one.is_file()
    s2, s1 = (torch.load(p, weights_only=True) for p in (two, one))
    assert (s2["global_step"], s1["global_step"]) == (2, 4)
    state = next(v for k, v in s1["callbacks"].items() if "ProgressiveDistillation" in k)
    # the round-2 teacher is the 2-step student
    for k, v in state["teacher"].items():
        torch.testing.assert_close(v, s2["state_dict"]["network." + k])
