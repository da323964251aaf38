"""The space-time U-Net: an inflated image network with zero-initialised temporal layers equals the image network frame
by frame (float64, 1e-6), the temporal layers do mix frames once they are non-zero, and clips longer than the training
length run through the clipped relative position bias."""

from pathlib import Path

import pytest
import torch
import yaml

import polydiff.domains.image.unet as image_unet
from polydiff.domains.image.unet import UNet
from polydiff.domains.video.network import (
    ClipContext,
    CrossFrameAttention,
    FrameCondition,
    SpaceTimeAttention,
    SpaceTimeUNet,
    TemporalAttention,
    TemporalBlock,
    to_frames,
    to_video,
)

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
    video = SpaceTimeUNet(**SETTINGS, temporal_heads=2, spacetime_resolutions=(8,), cross_frame_resolutions=(16, 8),
                          clip_context=True).double()
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


def random_weights(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """``module`` in float64 with every weight random (zero-initialised outputs included), as after training."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
    return module


def naive_attention(q, k, v, bias=None):
    """softmax(q k^T / sqrt(d) + bias) v for one head: q [n, d], k and v [m, d], bias [n, m]."""
    logits = q @ k.T / q.shape[-1] ** 0.5
    return torch.softmax(logits + (0 if bias is None else bias), dim=-1) @ v


def heads(x, n):
    """[tokens, c] -> n heads of [tokens, c / n]."""
    return x.reshape(x.shape[0], n, -1).unbind(1)


def test_temporal_attention_is_attention_over_the_frames_of_each_pixel_of_each_clip():
    """A loop over clips and pixels (no reshapes) gives what the batched layer gives: the [B*T] frame order, the
    per-pixel token sequences and the relative position bias are what they claim to be."""
    layer = random_weights(TemporalAttention(8, 2, max_distance=2))
    b, t, gen = 2, 5, torch.Generator().manual_seed(0)
    x = torch.randn(b * t, 8, 3, 3, generator=gen, dtype=torch.float64)
    out = layer(x, t)
    h = layer.norm(x).reshape(b, t, 8, 3, 3)
    bias = layer.position_bias(t, x.device)
    for i in range(b):
        for r in range(3):
            for c in range(3):
                q, k, v = layer.qkv(h[i, :, :, r, c]).chunk(3, dim=-1)  # [T, 8] each
                o = torch.cat([naive_attention(qh, kh, vh, bias[n]) for n, (qh, kh, vh)
                               in enumerate(zip(heads(q, 2), heads(k, 2), heads(v, 2)))], dim=-1)
                expected = x.reshape(b, t, 8, 3, 3)[i, :, :, r, c] + layer.proj(o)
                assert torch.allclose(out.reshape(b, t, 8, 3, 3)[i, :, :, r, c], expected, atol=1e-10)


def test_spacetime_attention_is_attention_over_every_pixel_of_every_frame_of_each_clip():
    layer = random_weights(SpaceTimeAttention(8, 2, max_distance=2))
    b, t, gen = 2, 4, torch.Generator().manual_seed(1)
    x = torch.randn(b * t, 8, 2, 3, generator=gen, dtype=torch.float64)
    out = layer(x, t).reshape(b, t, 8, 6)
    h = layer.norm(x).reshape(b, t, 8, 6)
    frame_of = torch.arange(t).repeat_interleave(6)  # token (frame, pixel) in frame-major order
    offset = (frame_of[None, :] - frame_of[:, None]).clamp(-2, 2) + 2
    for i in range(b):
        tokens = h[i].transpose(1, 2).reshape(t * 6, 8)
        q, k, v = layer.qkv(tokens).chunk(3, dim=-1)
        o = torch.cat([naive_attention(qh, kh, vh, layer.bias[n][offset]) for n, (qh, kh, vh)
                       in enumerate(zip(heads(q, 2), heads(k, 2), heads(v, 2)))], dim=-1)
        expected = x.reshape(b, t, 8, 6)[i].transpose(1, 2).reshape(t * 6, 8) + layer.proj(o)
        assert torch.allclose(out[i].transpose(1, 2).reshape(t * 6, 8), expected, atol=1e-10)


def test_cross_frame_attention_attends_to_the_whole_first_and_previous_frame_of_the_same_clip():
    layer = random_weights(CrossFrameAttention(8, 2))
    b, t, gen = 2, 4, torch.Generator().manual_seed(2)
    x = torch.randn(b * t, 8, 3, 2, generator=gen, dtype=torch.float64)
    out = layer(x, t).reshape(b, t, 8, 6)
    h = layer.norm(x).reshape(b, t, 8, 6).transpose(2, 3)  # [b, T, pixels, c]
    for i in range(b):
        for f in range(t):
            context = torch.cat([h[i, 0], h[i, max(f - 1, 0)]])  # the first frame's pixels, then the previous frame's
            q = layer.q(h[i, f])
            k, v = layer.kv(context).chunk(2, dim=-1)
            o = torch.cat([naive_attention(qh, kh, vh) for qh, kh, vh in zip(heads(q, 2), heads(k, 2), heads(v, 2))],
                          dim=-1)
            expected = x.reshape(b, t, 8, 6)[i, f].T + layer.proj(o)
            assert torch.allclose(out[i, f].T, expected, atol=1e-10)


@pytest.mark.parametrize("name", ["conv", "attn", "spacetime", "cross_frame", "network"])
def test_frames_mix_within_a_clip_and_never_across_clips(name, float64_embedding):
    """Jacobian blocks: a change of frame s of clip 0 reaches other frames of clip 0 and nothing of clip 1 (a
    batch/time reshape mismatch would mix frames of different clips)."""
    net = random_weights(SpaceTimeUNet(**SETTINGS, temporal_heads=2, spacetime_resolutions=(8,),
                                       cross_frame_resolutions=(8,), clip_context=True), std=0.1)
    b, t, gen = 2, 4, torch.Generator().manual_seed(3)
    if name == "network":
        x = torch.randn(b, 1, t, 16, 16, generator=gen, dtype=torch.float64)
        def run(inp):  # noqa: E306
            return to_frames(net(to_video(inp, t), torch.zeros(b, dtype=torch.float64), torch.tensor([1, 2])))
        x = to_frames(x)
    else:
        layer = getattr(net.temporal_middle, name)
        x = torch.randn(b * t, 32, 8, 8, generator=gen, dtype=torch.float64)
        def run(inp):  # noqa: E306
            return layer(inp, t)
    base = run(x)
    for s in range(t):
        x2 = x.clone()
        x2[s] += torch.randn(x[s].shape, generator=gen, dtype=torch.float64)  # frame s of clip 0 (not a constant:
        # the per-frame group norms remove a constant shift)
        change = (run(x2) - base).abs().flatten(1).amax(1).reshape(b, t)
        assert change[1].max() < 1e-12  # clip 1 untouched
        assert change[0, s] > 1e-3
        # the temporal convolution reaches the neighbouring frames; cross-frame attention reaches the next frame and,
        # from the first frame, every frame; the rest reach every frame of the clip
        reached = {"conv": [f for f in (s - 1, s + 1) if 0 <= f < t],
                   "cross_frame": list(range(1, t)) if s == 0 else [f for f in (s + 1,) if f < t]}.get(
            name, [f for f in range(t) if f != s])
        assert (change[0, reached] > 1e-8).all(), (s, change[0])  # (random weights: small but far from round-off)
        if name == "cross_frame":  # causal: earlier frames, and frames two or more later, do not see frame s > 0
            unreached = [f for f in range(t) if f != s and f not in reached]
            assert (change[0, unreached] < 1e-12).all()


def test_clip_context_is_one_attention_pooled_vector_per_clip_for_each_of_its_frames():
    layer = random_weights(ClipContext(8, 12))
    b, t, gen = 3, 4, torch.Generator().manual_seed(4)
    x = torch.randn(b * t, 8, 2, 2, generator=gen, dtype=torch.float64)
    out = layer(x, t).reshape(b, t, 12)
    h = layer.norm(x).reshape(b, t, 8, 4)
    for i in range(b):
        tokens = h[i].transpose(1, 2).reshape(t * 4, 8)  # every pixel of every frame of clip i
        pooled = (torch.softmax(layer.score(tokens)[:, 0], dim=0)[:, None] * tokens).sum(0)
        assert torch.allclose(out[i], layer.mlp(pooled).expand(t, 12), atol=1e-12)
    x2 = x.clone()
    x2[t + 1] += torch.randn(x[0].shape, generator=gen, dtype=torch.float64)  # one frame of clip 1
    change = (layer(x2, t) - layer(x, t)).abs().amax(1).reshape(b, t)
    assert (change[1] > 1e-6).all() and change[[0, 2]].max() < 1e-12  # every frame of clip 1, nothing else




def test_the_recipes_temporal_blocks_at_8_and_4_pixels_let_a_frame_see_the_first_frame_off_its_own_pixel(float64_embedding):
    """What the identity needs and per-pixel temporal layers lack: a sprite moves off its pixel after one step, so a
    later frame must read the first frame at other pixels. In the moving-digits recipe's network every temporal block
    that runs at 8x8 or 4x4 does (cross-frame attention; before it, only the three blocks with 4x4 space-time attention
    did, and none at 8x8), and the 16x16 ones stay per pixel."""
    from polydiff.domains.video import VideoDiffusion

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/video/moving_digits.yaml").read_text())
    args = {k: v for k, v in recipe["model"]["init_args"].items()
            if k not in ("diffusion", "objective", "sampler", "training")}
    net = random_weights(VideoDiffusion(**args).network, std=0.1)
    blocks = [b for b in (*net.temporal_down, net.temporal_middle, *net.temporal_up) if isinstance(b, TemporalBlock)]
    size = {}  # the resolution each block runs at, from one forward pass
    hooks = [b.register_forward_hook(lambda m, inp, out: size.__setitem__(m, inp[0].shape[-1])) for b in blocks]
    net(torch.randn(1, 1, 4, 16, 16, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), torch.tensor([0]))
    for h in hooks:
        h.remove()
    gen = torch.Generator().manual_seed(5)

    def off_pixel(layer, res: int, width: int) -> float:
        """How much frame 3 at the bottom-right pixel moves when frame 0 changes at three top-left pixels, by a rotation
        of each channel's three values about their mean: the layer's per-frame group-norm statistics stay exactly as
        they were (so nothing leaks to other pixels through them), and it is not a permutation (which attention over a
        set of pixels ignores)."""
        x = torch.randn(2 * 4, width, res, res, generator=gen, dtype=torch.float64)
        x2 = x.clone()
        corner = x[0][:, [0, 0, 1], [0, 1, 0]]  # [width, 3]
        mean = corner.mean(1, keepdim=True)
        u = corner - mean
        axis = torch.full_like(u, 3 ** -0.5)
        x2[0][:, [0, 0, 1], [0, 1, 0]] = mean + u * 0.5 + torch.cross(axis, u, dim=1) * 0.75 ** 0.5
        return float((layer(x2, 4) - layer(x, 4)).abs()[3, :, res - 1, res - 1].max())

    for block in blocks:
        res, width = size[block], block.conv.conv1.in_channels
        reach = {name: off_pixel(getattr(block, name), res, width) for name in ("conv", "attn", "spacetime", "cross_frame")
                 if getattr(block, name) is not None}
        assert reach["conv"] < 1e-13 and reach["attn"] < 1e-13  # per pixel: round-off only
        assert (max(reach.values()) > 1e-10) == (res in (8, 4)), (res, reach)  # small random weights, far from round-off
    assert sorted(size.values()) == [4, 4, 4, 8, 8, 8, 16, 16, 16, 16]
