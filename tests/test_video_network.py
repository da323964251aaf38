"""The space-time U-Net: an inflated image network with zero-initialised temporal layers equals the image network frame
by frame (float64, 1e-6), the temporal layers do mix frames once they are non-zero, and clips longer than the training
length run through the clipped relative position bias."""

import pytest
import torch

import polydiff.domains.image.unet as image_unet
from polydiff.domains.image.unet import UNet
from polydiff.domains.video.network import FrameCondition, SpaceTimeUNet, to_frames, to_video

SETTINGS = dict(image_size=16, in_channels=1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(8,), num_heads=2, num_classes=10)


@pytest.fixture
def float64_embedding(monkeypatch):
    """The noise-level features are float32 by design; cast them so that the whole network runs in float64."""
    features = image_unet.noise_level_features
    monkeypatch.setattr(image_unet, "noise_level_features", lambda c, dim: features(c, dim).double())


def trained_image_net(seed: int = 0) -> UNet:
    """An image U-Net whose every weight (zero-initialised outputs included) is random, as after training."""
    torch.manual_seed(seed)
    net = UNet(**SETTINGS).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net


def per_frame(net: UNet, x, c_noise, labels):
    t = x.shape[2]
    return to_video(net(to_frames(x), c_noise.repeat_interleave(t), labels.repeat_interleave(t)), t)


def test_inflated_network_equals_the_image_network_frame_by_frame(float64_embedding):
    image = trained_image_net()
    video = SpaceTimeUNet(**SETTINGS, temporal_heads=2, spacetime_resolutions=(8,)).double()
    assert video.temporal_middle.spacetime is not None and video.temporal_down[0].spacetime is None
    result = video.load_state_dict(image.state_dict(), strict=False)
    assert not result.unexpected_keys  # every image weight has its place in the video network
    assert result.missing_keys and all(k.startswith(("temporal_", "frame_cond_conv")) for k in result.missing_keys)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 6, 16, 16, generator=gen, dtype=torch.float64)
    c_noise = torch.randn(3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 7, 10])  # 10: the null class
    expected = per_frame(image, x, c_noise, labels)
    assert expected.abs().max() > 0.1  # a non-trivial output
    assert (video(x, c_noise, labels) - expected).abs().max() < 1e-6
    # with known frames given as a condition too (zero-initialised input convolution)
    known = FrameCondition(labels, torch.randn(x.shape, generator=gen, dtype=torch.float64), torch.tensor(
        [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0] * 6]))
    assert (video(x, c_noise, known) - expected).abs().max() < 1e-6
    # once the temporal layers are non-zero, frames influence each other
    with torch.no_grad():
        for p in video.temporal_parameters():
            p.normal_(0, 0.2)
    out = video(x, c_noise, labels)
    assert (out - expected).abs().max() > 1e-3
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change frame 0 only: the last frame's output moves too
    assert (video(x2, c_noise, labels)[:, :, -1] - out[:, :, -1]).abs().max() > 1e-4
    # known frames change the output once their convolution is trained
    assert (video(x, c_noise, known) - out).abs().max() > 1e-3
    # a one-frame video is an image: the temporal layers are skipped
    assert (video(x[:, :, :1], c_noise, labels) - expected[:, :, :1]).abs().max() < 1e-6


def test_longer_clips_than_the_position_table_run_and_keep_the_bias_clipped():
    video = SpaceTimeUNet(**SETTINGS, temporal_heads=2, max_distance=4)
    attn = video.temporal_middle.attn
    with torch.no_grad():
        attn.bias.copy_(torch.arange(9.0).expand(2, 9))
    bias = attn.position_bias(12, torch.device("cpu"))
    assert bias.shape == (2, 12, 12)
    assert bias[0, 0, 11] == 8 and bias[0, 11, 0] == 0 and bias[0, 3, 3] == 4  # offsets beyond 4 share the end entries
    out = video(torch.randn(1, 1, 24, 16, 16), torch.zeros(1), torch.tensor([3]))
    assert out.shape == (1, 1, 24, 16, 16)


def test_wrong_input_rank_is_refused():
    with pytest.raises(ValueError, match=r"\[B, 1, T, H, W\]"):
        SpaceTimeUNet(**SETTINGS)(torch.randn(2, 1, 16, 16), torch.zeros(2))
