"""The ADM U-Net of :mod:`polydiff.domains.image.unet` for any number of spatial axes (2D slices, 3D volumes).

Same design (Dhariwal & Nichol 2021, App. A): residual blocks with GroupNorm and scale-shift conditioning on the noise
level, self-attention at chosen resolutions, skip connections, zero-initialised output convolutions (a fresh network
outputs zeros). Differences: convolutions are ``Conv{N}d`` with ``N = spatial_dims``; attention flattens all spatial
axes; there is no class embedding; a condition ``cond`` of ``cond_channels`` channels on the input's grid (an upsampled
low-resolution volume, SR3) is concatenated to the input. The GroupNorm / zero-init helpers are the image U-Net's.
"""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.embeddings import noise_level_features
from polydiff.domains.image.unet import group_norm, zero_init

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv(dims: int, in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Module:
    return CONV[dims](in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)


class ResBlockND(nn.Module):
    """``x + conv(drop(silu(FiLM(norm(conv(silu(norm(x))))))))`` with FiLM ``h (1 + scale) + shift``."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = conv(dims, in_ch, out_ch, 3)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(conv(dims, out_ch, out_ch, 3))
        self.skip = nn.Identity() if in_ch == out_ch else conv(dims, in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(F.silu(emb))
        scale, shift = e.reshape(*e.shape, *([1] * (x.ndim - 2))).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class AttentionND(nn.Module):
    """Multi-head self-attention over all spatial positions, residual, zero-initialised output."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention width {channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # [B, L, C]
        q, k, v = self.qkv(tokens).reshape(b, -1, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        return x + self.proj(out).transpose(1, 2).reshape(x.shape)


class UpsampleND(nn.Module):
    def __init__(self, dims: int, channels: int) -> None:
        super().__init__()
        self.conv = conv(dims, channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNetND(nn.Module):
    """``forward(x, c_noise, cond) -> Tensor`` of ``x``'s shape, for ``[B, C, *spatial]`` with ``spatial_dims`` axes.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: channels of the diffused data (the output has as many).
        cond_channels: channels of a same-grid condition concatenated to the input (0: none).
        model_channels: base width.
        channel_mult: width multiplier per level; the resolution halves between levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_levels: levels (0 = full resolution) with self-attention after each residual block; the middle
            always has one.
        num_heads: attention heads.
        dropout: dropout inside residual blocks.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, cond_channels: int = 0, model_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_levels: Sequence[int] = (2,), num_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if spatial_dims not in CONV:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        d = self.dims = spatial_dims
        self.levels = len(channel_mult)
        self.in_channels, self.cond_channels, self.model_channels = in_channels, cond_channels, model_channels
        emb_dim = 4 * model_channels
        self.noise_mlp = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_conv = conv(d, in_channels + cond_channels, model_channels, 3)
        self.down = nn.ModuleList()
        skip_chs, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = nn.ModuleList([ResBlockND(d, ch, model_channels * mult, emb_dim, dropout)])
                ch = model_channels * mult
                if level in attention_levels:
                    layers.append(AttentionND(ch, num_heads))
                self.down.append(layers)
                skip_chs.append(ch)
            if level < self.levels - 1:
                self.down.append(nn.ModuleList([conv(d, ch, ch, 3, stride=2)]))
                skip_chs.append(ch)
        self.middle = nn.ModuleList([ResBlockND(d, ch, ch, emb_dim, dropout), AttentionND(ch, num_heads),
                                     ResBlockND(d, ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = nn.ModuleList([ResBlockND(d, ch + skip_chs.pop(), model_channels * mult, emb_dim, dropout)])
                ch = model_channels * mult
                if level in attention_levels:
                    layers.append(AttentionND(ch, num_heads))
                if level > 0 and i == num_res_blocks:
                    layers.append(UpsampleND(d, ch))
                self.up.append(layers)
        self.out_norm = group_norm(ch)
        self.out_conv = zero_init(conv(d, ch, in_channels, 3))

    @property
    def divisor(self) -> int:
        """Every spatial size must be a multiple of this."""
        return 2 ** (self.levels - 1)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        f = self.divisor
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels or any(s % f for s in x.shape[2:]):
            raise ValueError(f"UNetND expects [B, {self.in_channels}, *{self.dims} sizes divisible by {f}], "
                             f"got {tuple(x.shape)}")
        b = x.shape[0]
        c_noise = c_noise.reshape(-1).expand(b) if c_noise.numel() in (1, b) else c_noise
        emb = self.noise_mlp(noise_level_features(c_noise, self.model_channels))
        if self.cond_channels:
            if cond is None or cond.shape[1] != self.cond_channels or cond.shape[2:] != x.shape[2:]:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"UNetND expects a condition [B, {self.cond_channels}, *{tuple(x.shape[2:])}], got {got}")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        h = self.input_conv(x)
        skips = [h]
        for layers in self.down:
            for layer in layers:
                h = layer(h, emb) if isinstance(layer, ResBlockND) else layer(h)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb) if isinstance(layer, ResBlockND) else layer(h)
        for layers in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in layers:
                h = layer(h, emb) if isinstance(layer, ResBlockND) else layer(h)
        return self.out_conv(F.silu(self.out_norm(h)))
