"""The class-level bottleneck of the video model (``infer_class``): the labeler's prior against its closed form (the
label frequencies), its logits against the formula (prior + mean evidence of the given frames only), its draws against
their probabilities, its training loss inside the model's, and the sampling API handing its class to every frame with
guidance (from the prior, the first frame, the given clip); the same-class-frames control."""

import pytest
import torch

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.video import VideoDiffusion
from polydiff.domains.video.controls import same_class_frames
from polydiff.domains.video.labeler import ClipLabeler
from polydiff.domains.video.module import LABEL_LOSS_WEIGHT

TINY = dict(image_size=8, channels=1, frames=4, num_classes=3, model_channels=8, channel_mult=(1, 2),
            num_res_blocks=1, attention_resolutions=(), num_heads=1, temporal_heads=1, eval_batch_size=4,
            sampler=SamplerConfig(steps=2, guidance=3.0), infer_class=True)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_the_prior_learns_the_label_frequencies():
    """The prior is trained by its own cross-entropy only, whose minimiser is softmax(prior) = the label frequencies
    (the frame term sees it detached)."""
    torch.manual_seed(0)
    labeler = ClipLabeler(1, 3, width=4)
    labels = torch.tensor([0] * 10 + [1] * 6 + [2] * 4)
    videos = torch.rand(20, 1, 2, 8, 8) * 2 - 1
    opt = torch.optim.Adam(labeler.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        labeler.loss(videos, labels).mean().backward()
        opt.step()
    assert torch.allclose(torch.softmax(labeler.prior, 0), torch.tensor([0.5, 0.3, 0.2]), atol=5e-3)


def test_logits_are_the_prior_plus_the_mean_evidence_of_the_given_frames():
    torch.manual_seed(0)
    labeler = ClipLabeler(1, 3, width=4)
    with torch.no_grad():
        labeler.prior.copy_(torch.tensor([0.3, -0.2, 1.0]))
    known = torch.randn(2, 1, 4, 8, 8)
    mask = torch.tensor([[0.0, 0, 0, 0], [1, 0, 1, 0]])
    logits = labeler(known, mask)
    assert torch.equal(logits[0], labeler.prior)  # nothing given: the prior alone
    evidence = labeler.frame_logits(known[1, :, [0, 2]].transpose(0, 1))
    assert torch.allclose(logits[1], labeler.prior + evidence.mean(0), atol=1e-6)
    other = known.clone()
    other[:, :, [1, 3]] = torch.randn(2, 1, 2, 8, 8)  # frames not given do not count
    assert torch.allclose(labeler(other, mask), logits, atol=1e-6)
    # the evidence of a frame does not depend on where in the frame the object is (max-pooled features): a sprite
    # moved on a black canvas (by an even number of pixels: one convolution has stride 2; away from the borders) gives
    # the same evidence
    canvas = -torch.ones(1, 1, 24, 24)
    sprite = torch.rand(1, 1, 4, 4) * 2 - 1
    a, b = canvas.clone(), canvas.clone()
    a[..., 8:12, 8:12], b[..., 12:16, 10:14] = sprite, sprite
    assert torch.allclose(labeler.frame_logits(a), labeler.frame_logits(b), atol=1e-5)


def test_draws_follow_the_probabilities():
    labeler = ClipLabeler(1, 3, width=4)
    p = torch.tensor([0.6, 0.1, 0.3])
    with torch.no_grad():
        labeler.prior.copy_(p.log())
    drawn = labeler.draw(torch.zeros(20000, 1, 1, 4, 4), torch.zeros(20000, 1), torch.Generator().manual_seed(0))
    freq = torch.bincount(drawn, minlength=3).float() / 20000
    assert torch.allclose(freq, p, atol=0.01)  # binomial standard error <= 0.0035


def test_the_training_loss_adds_the_labelers_cross_entropy():
    torch.manual_seed(0)
    model = VideoDiffusion(**TINY).train()
    gen = torch.Generator().manual_seed(0)
    videos, labels = torch.rand(6, 1, 4, 8, 8, generator=gen) * 2 - 1, torch.randint(0, 3, (6,), generator=gen)
    b = model.encode((videos, labels))
    torch.manual_seed(1)
    total = model.training_loss(b)
    torch.manual_seed(1)
    denoising = model.diffusion_loss(b)
    expected = denoising + LABEL_LOSS_WEIGHT * model.labeler.loss(videos, labels)
    assert torch.allclose(total, expected, atol=1e-6)
    # a fresh labeler predicts uniformly: its loss is 2 log 3 (prior alone + prior with the zero-mean evidence ~ log 3)
    assert abs(float(model.labeler.loss(videos, labels).mean().detach()) - 2 * torch.log(torch.tensor(3.0))) < 0.2


class Recorder:
    """Stands in for ``VideoDiffusion.generate``: records the condition and guidance of each call."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, shape, cond, cfg, seed, progress):
        self.calls.append((cond, cfg.guidance))
        return torch.zeros(shape)


def test_sampling_without_classes_uses_the_labelers_class_for_every_frame_with_guidance(monkeypatch):
    model = VideoDiffusion(**TINY)
    with torch.no_grad():
        model.labeler.prior.copy_(torch.tensor([-30.0, -30.0, 0.0]))  # the prior: class 2
    rec = Recorder()
    monkeypatch.setattr(model, "generate", rec)
    model.sample_videos(3, seed=0)
    cond, guidance = rec.calls[-1]
    assert cond.labels.tolist() == [2, 2, 2] and guidance == 3.0
    model.sample_videos(3, seed=0, infer_class=False)  # the null class, no guidance
    cond, guidance = rec.calls[-1]
    assert cond.labels.tolist() == [3, 3, 3] and guidance == 1.0
    model.sample_frames(2, seed=0)  # the frame-by-frame control: a class per frame, each drawn on its own
    cond, guidance = rec.calls[-1]
    assert cond.tolist() == [2] * 4 and guidance == 3.0


def test_animate_and_extend_read_the_class_from_the_given_frames(monkeypatch):
    model = VideoDiffusion(**TINY)
    seen = []

    def draw(known, mask, generator):
        seen.append((known.clone(), mask.clone()))
        return torch.full((len(known),), 1)

    monkeypatch.setattr(model.labeler, "draw", draw)
    rec = Recorder()
    monkeypatch.setattr(model, "generate", rec)
    first = torch.rand(2, 1, 8, 8)
    model.animate(first, seed=0)
    known, mask = seen[-1]
    assert mask.tolist() == [[1, 0, 0, 0]] * 2 and torch.allclose(known[:, :, 0], first * 2 - 1)
    assert rec.calls[-1][0].labels.tolist() == [1, 1] and rec.calls[-1][1] == 3.0
    clips = torch.rand(2, 1, 4, 8, 8)
    model.extend(clips, 10, seed=0)
    known, mask = seen[-1]
    assert mask.tolist() == [[1, 1, 1, 1]] * 2 and torch.allclose(known, clips * 2 - 1)
    assert len(rec.calls) == 1 + 3 and all(c[0].labels.tolist() == [1, 1] for c in rec.calls[1:])  # every window
    model.animate(first, classes=0, seed=0)  # a given class wins
    assert len(seen) == 2 and rec.calls[-1][0].labels.tolist() == [0, 0]


def test_same_class_frames_take_each_frame_from_a_clip_of_the_same_class():
    videos = torch.arange(6 * 4, dtype=torch.float).reshape(6, 1, 4, 1, 1).expand(6, 1, 4, 2, 2).clone()
    classes = torch.tensor([0, 1, 0, 2, 1, 0])
    out = same_class_frames(videos, classes, seed=3)
    source = (out[:, 0, :, 0, 0] // 4).long()  # the clip each frame came from
    assert torch.equal(out[:, 0, :, 0, 0] % 4, torch.arange(4.0).expand(6, 4))  # frame t stays frame t
    assert torch.equal(classes[source], classes[:, None].expand(6, 4))
    assert (source[3] == 3).all()  # the only clip of its class
    assert len(source[[0, 2, 5]].unique()) > 1  # the others mix clips


def test_infer_class_needs_labels():
    with pytest.raises(PolydiffError, match="--model.infer_class"):
        VideoDiffusion(**{**TINY, "num_classes": 0})
