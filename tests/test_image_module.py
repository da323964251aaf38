"""ImageDiffusion: encoding, the null class and condition dropout, the Python sampling API, PNG output."""

import re

import numpy as np
import pytest
import torch

from polydiff.core.module import ObjectiveConfig
from polydiff.core.utils import PolydiffError
from polydiff.datasets.digits import DigitsDataModule
from polydiff.domains.image import ImageDiffusion

TINY = dict(image_size=8, channels=1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(), num_heads=2, eval_batch_size=5)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_encode_and_null_condition():
    m = ImageDiffusion(num_classes=3, **TINY)
    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    b = m.encode((x, y))
    assert b.x0 is x and torch.equal(b.cond, y)
    assert torch.equal(m.null_condition(y), torch.full((4,), 3))
    dropped = m.drop_condition(y, torch.tensor([True, False, True, False]))
    assert dropped.tolist() == [3, 1, 3, 1]
    with pytest.raises(PolydiffError, match="num_classes"):
        m.encode((x, torch.tensor([0, 1, 5, 1])))
    with pytest.raises(PolydiffError, match="image_size"):
        m.encode((torch.zeros(4, 1, 16, 16), y))
    unc = ImageDiffusion(num_classes=0, **TINY)
    assert unc.encode((x, torch.full((4,), -1))).cond is None and unc.null_condition(None) is None


def test_condition_dropout_sends_the_null_class_at_the_configured_rate():
    m = ImageDiffusion(num_classes=10, objective=ObjectiveConfig(cond_dropout=0.3), **TINY)
    seen = []

    def record(x, c_noise, cond):  # stands in for the U-Net: only the condition it receives matters here
        seen.append(cond.clone())
        return torch.zeros_like(x)

    m.network.forward = record
    n = 4000
    m.diffusion_loss(m.encode((torch.zeros(n, 1, 8, 8), torch.arange(n) % 10)), torch.Generator().manual_seed(0))
    cond = seen[0]
    null = cond == 10
    # Binomial(4000, 0.3): sd = 0.007
    assert null.float().mean().item() == pytest.approx(0.3, abs=0.025)
    assert torch.equal(cond[~null], (torch.arange(n) % 10)[~null])


def test_sample_images_api_is_seeded_and_in_range():
    torch.manual_seed(0)
    m = ImageDiffusion(num_classes=3, **TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = m.sample_images(7, classes=[0, 1, 2, 0, 1, 2, 0], sampler="ddim", steps=3, guidance=2.0, seed=5)
    b = m.sample_images(7, classes=[0, 1, 2, 0, 1, 2, 0], sampler="ddim", steps=3, guidance=2.0, seed=5)
    c = m.sample_images(7, classes=2, sampler="heun", steps=3, seed=5)
    assert a.shape == (7, 1, 8, 8) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0
    assert not torch.equal(a, c)
    with pytest.raises(PolydiffError, match="classes"):
        m.sample_images(2, classes=[0, 7], steps=2)
    with pytest.raises(PolydiffError, match="sampler"):
        m.sample_images(2, sampler="nope", steps=2)


def test_write_samples_names_each_file_by_its_requested_class(tmp_path):
    m = ImageDiffusion(num_classes=4, **TINY)
    paths = m.write_samples(tmp_path, 6, m.resolve_sampler(name="dpmpp_2m", steps=2), seed=0)
    names = sorted(p.name for p in paths)
    assert names == ["00000_class0.png", "00001_class1.png", "00002_class2.png", "00003_class3.png",
                     "00004_class0.png", "00005_class1.png", "grid.png"]
    from PIL import Image

    img = Image.open(tmp_path / "00005_class1.png")
    assert img.size == (8, 8) and img.mode == "L"
    assert all(re.fullmatch(r"\d{5}_class\d+\.png|grid\.png", n) for n in names)


def test_write_samples_with_an_input_image_inpaints_it(tmp_path):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray((torch.rand(20, 20, 3) * 255).byte().numpy()).save(src)
    m = ImageDiffusion(num_classes=0, inpaint_steps=3, inpaint_resample=2, inpaint_region="right_half", **TINY)
    out = tmp_path / "out"
    data = DigitsDataModule()  # what polydiff sample does: the data reads --input at the model's size and channels
    paths = m.write_samples(out, 2, m.sampler_config, seed=0, input=data.read_input(str(src), **m.input_options()))
    assert {p.name for p in paths} == {"input.png", "masked.png", "00000_inpainted.png", "00001_inpainted.png",
                                       "grid.png"}
    import numpy as np

    inp = np.asarray(Image.open(out / "input.png"), dtype=int)
    filled = np.asarray(Image.open(out / "00000_inpainted.png"), dtype=int)
    assert inp.shape == (8, 8)  # converted to the model's size and channels
    assert np.abs(inp[:, :4] - filled[:, :4]).max() <= 1  # the known (left) half is kept
    with pytest.raises(PolydiffError, match="missing.png"):
        m.write_samples(out, 1, m.sampler_config, seed=0,
                        input=data.read_input(str(tmp_path / "missing.png"), **m.input_options()))


def test_bad_model_settings_raise_clear_errors():
    with pytest.raises(PolydiffError, match="inpainting region"):
        ImageDiffusion(inpaint_region="middle", **TINY)
    with pytest.raises(PolydiffError, match="image_size"):
        ImageDiffusion(**{**TINY, "image_size": 10, "channel_mult": (1, 2, 2)})


def test_grid_is_upscaled_and_labelled(tmp_path):
    from PIL import Image

    from polydiff.domains.image import io

    images = torch.full((4, 1, 8, 8), 0.5)
    plain = io.save_grid(images, tmp_path / "plain.png", nrow=2)
    labelled = io.save_grid(images, tmp_path / "labelled.png", nrow=2, labels=["0", "1", "2", "3"])
    a = np.asarray(Image.open(plain).convert("RGB"), dtype=int)
    b = np.asarray(Image.open(labelled).convert("RGB"), dtype=int)
    assert a.shape == b.shape == (2 * 9 * 6 + 6, 2 * 9 * 6 + 6, 3)  # 8 px tiles enlarged 6x to 48 px (plus padding)
    differ = np.argwhere((a != b).any(-1))
    assert len(differ) > 10 and differ[:, 0].min() < 20 and differ[:, 1].min() < 20  # text in the first tile's corner
