"""The video model in Python: the first loss of a fresh model against its closed form (zero-initialised output, loss on
the unknown frames only), condition dropout and the null condition, and the sampling API (known frames kept exactly,
continuation past the training length, the frame-by-frame control)."""

import pytest
import torch

from polydiff.core.module import DiffusionConfig
from polydiff.core.objective import denoising_loss
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.video import VideoDiffusion
from polydiff.domains.video.network import FrameCondition

TINY = dict(image_size=8, channels=1, frames=4, num_classes=3, model_channels=8, channel_mult=(1, 2),
            num_res_blocks=1, attention_resolutions=(), num_heads=1, temporal_heads=1, eval_batch_size=4,
            sampler=SamplerConfig(steps=2))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def batch(n: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 8, 8, generator=gen) * 2 - 1, torch.randint(0, 3, (n,), generator=gen)


def test_first_loss_of_a_fresh_model_is_the_closed_form_on_unknown_frames():
    torch.manual_seed(0)
    model = VideoDiffusion(**TINY, known_frames_prob=1.0, diffusion=DiffusionConfig(prediction="v")).train()
    videos, labels = batch()
    b = model.encode((videos, labels))
    known = b.cond.mask
    assert known.sum(1).tolist() and set(known.sum(1).tolist()) <= {1.0, 2.0}  # the first frame or the first two
    assert (known[:, 0] == 1).all() and torch.equal(b.mask[:, 0, :, 0, 0], 1 - known)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(videos.shape, generator=gen)
    logsnr = torch.linspace(-4, 4, 6, dtype=torch.float64)
    loss = denoising_loss(model.denoiser, videos, noise, logsnr, b.cond, b.mask, "native")
    # the zero-initialised output predicts v = 0, so the loss is the mean of v^2 = (alpha eps - sigma x0)^2 over the
    # unknown frames
    alpha, sigma = model.process.alpha_sigma(logsnr)
    v = alpha[:, None, None, None, None] * noise - sigma[:, None, None, None, None] * videos
    m = b.mask.expand_as(v)
    expected = ((v**2) * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    assert torch.allclose(loss.double(), expected, rtol=1e-5)


def test_condition_dropout_and_null_condition_touch_the_labels_only():
    model = VideoDiffusion(**TINY)
    videos, labels = batch()
    cond = FrameCondition(labels, videos, torch.ones(6, 4))
    dropped = model.drop_condition(cond, torch.tensor([True, False] * 3))
    assert dropped.labels.tolist() == [3, labels[1], 3, labels[3], 3, labels[5]]
    assert dropped.known is videos and model.null_condition(cond).labels.tolist() == [3] * 6
    assert model.drop_condition(labels, torch.ones(6, dtype=torch.bool)).tolist() == [3] * 6


def test_joint_image_training_gives_one_frame_batches():
    model = VideoDiffusion(**TINY, image_prob=1.0).train()
    b = model.encode(batch())
    assert b.x0.shape == (6, 1, 1, 8, 8) and b.mask is None
    model.eval()
    assert model.encode(batch()).x0.shape == (6, 1, 4, 8, 8)  # validation always sees whole clips


def test_sampling_api_keeps_known_frames_and_continues_past_the_training_length():
    torch.manual_seed(0)
    model = VideoDiffusion(**TINY)
    with torch.no_grad():
        for p in model.network.temporal_parameters():
            p.normal_(0, 0.1)
    clips = model.sample_videos(3, classes=[0, 1, 2], seed=0)
    assert clips.shape == (3, 1, 4, 8, 8) and 0 <= clips.min() and clips.max() <= 1
    first = torch.rand(2, 1, 8, 8)
    animated = model.animate(first, seed=1)
    assert torch.allclose(animated[:, :, 0], first, atol=1e-6)
    longer = model.extend(clips, 10, seed=2)
    assert longer.shape == (3, 1, 10, 8, 8)
    assert torch.allclose(longer[:, :, :4], clips, atol=1e-6)  # the given clip is kept
    assert model.sample_frames(2, seed=0).shape == (2, 1, 4, 8, 8)
    with pytest.raises(PolydiffError, match="classes must be"):
        model.sample_videos(2, classes=[5, 0])
    with pytest.raises(PolydiffError, match="context"):
        model.extend(clips, 8, context=4)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(PolydiffError, match="--model.context_frames"):
        VideoDiffusion(**{**TINY, "context_frames": 4})
    with pytest.raises(PolydiffError, match="--model.temporal_heads"):
        VideoDiffusion(**{**TINY, "temporal_heads": 3})


def test_known_frames_reach_the_network_in_training_and_in_sampling():
    """The known frames are a condition, not only a loss mask: once the network's zero-initialised outputs are non-zero,
    other known content changes the loss on the unknown frames, and another first frame changes the frames that
    animation generates after it (same seed)."""
    torch.manual_seed(0)
    model = VideoDiffusion(**TINY, known_frames_prob=1.0, cross_frame_resolutions=(8, 4),
                           diffusion=DiffusionConfig(prediction="x0")).train()  # x0: no clamped samples
    with torch.no_grad():  # every zero-initialised output (the U-Net's own last convolution too) made non-zero
        for p in model.network.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    videos, labels = batch()
    b = model.encode((videos, labels))
    other = FrameCondition(b.cond.labels, batch(seed=1)[0], b.cond.mask)
    gen = torch.Generator().manual_seed(1)
    noise, logsnr = torch.randn(videos.shape, generator=gen), torch.zeros(6, dtype=torch.float64)
    with torch.no_grad():
        loss = denoising_loss(model.denoiser, videos, noise, logsnr, b.cond, b.mask)
        loss_other = denoising_loss(model.denoiser, videos, noise, logsnr, other, b.mask)
    assert (loss - loss_other).abs().min() > 1e-6
    model.eval()
    first = torch.rand(2, 1, 8, 8)
    a = model.animate(first, seed=1)
    c = model.animate(1 - first, seed=1)
    assert (a[:, :, 1:] - c[:, :, 1:]).abs().amax(dim=(1, 3, 4)).min() > 1e-5  # every later frame of every clip
