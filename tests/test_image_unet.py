"""The ADM U-Net's contract: shapes across sizes and channels, zero output at initialisation, the null class."""

import pytest
import torch

from polydiff.core.embeddings import noise_level_features
from polydiff.domains.image.unet import UNet


def _perturb(net: torch.nn.Module, seed: int = 0) -> None:
    # leave the zero initialisation so that the output depends on the inputs
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize(
    "size,channels,num_classes,mult,attn",
    [(8, 1, 0, (1, 2), (4,)), (16, 1, 10, (1, 2, 2), (8,)), (32, 3, 3, (1, 2, 2, 2), (16, 8)), (12, 3, 0, (1, 1), ())],
)
def test_unet_shape_contract(size, channels, num_classes, mult, attn):
    torch.manual_seed(0)
    net = UNet(size, channels, model_channels=16, channel_mult=mult, num_res_blocks=1, attention_resolutions=attn,
               num_heads=2, num_classes=num_classes)
    x = torch.randn(3, channels, size, size)
    cond = torch.tensor([0, 1, 2]) % max(num_classes, 1) if num_classes else None
    out = net(x, torch.randn(3), cond)
    assert out.shape == x.shape
    # ADM habit: the output convolution starts at zero, so a fresh network predicts exactly zero
    assert torch.count_nonzero(out) == 0
    _perturb(net)
    out = net(x, torch.randn(3), cond)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_every_residual_block_starts_as_identity():
    net = UNet(16, 1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), num_heads=2)
    from polydiff.domains.image.unet import AttentionBlock, ResBlock

    blocks = [m for m in net.modules() if isinstance(m, (ResBlock, AttentionBlock))]
    assert blocks
    for m in blocks:
        last = m.conv2 if isinstance(m, ResBlock) else m.proj
        assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0


def test_null_class_is_the_default_condition_and_classes_matter():
    torch.manual_seed(0)
    net = UNet(16, 1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), num_classes=10)
    _perturb(net)
    net.eval()
    x, c = torch.randn(4, 1, 16, 16), torch.full((4,), 0.3)
    null = torch.full((4,), 10)
    assert torch.equal(net(x, c, None), net(x, c, null))
    a = net(x, c, torch.tensor([1, 1, 1, 1]))
    b = net(x, c, torch.tensor([2, 2, 2, 2]))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError):
        net(x, c, torch.tensor([1, 2]))


def test_noise_level_features_are_bounded_and_distinguish_levels():
    f = noise_level_features(torch.tensor([-2.5, 0.0, 2.5]), 32)
    assert f.shape == (3, 32)
    assert torch.allclose(f.pow(2).reshape(3, 2, 16).sum(1), torch.ones(3, 16))  # cos^2 + sin^2 = 1
    assert (f[0] - f[2]).abs().max() > 0.5
