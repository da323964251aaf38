"""An ADM-style U-Net (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", App. A; improved-diffusion's ``UNetModel``).

Residual blocks with GroupNorm and scale-shift (FiLM) conditioning on an embedding of the noise level and the class,
self-attention at chosen resolutions, skip connections between the down and up paths. The last convolution of every
residual block, of every attention block and the output convolution start at zero (ADM's ``zero_module``), so a fresh
network is the identity on its residual paths and outputs zeros.

Class conditioning uses an embedding table with one extra row: index ``num_classes`` is the *null class*, which
classifier-free guidance (Ho & Salimans 2022) trains by condition dropout and uses for the unconditional prediction.
"""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.embeddings import noise_level_features


def zero_init(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (ADM's ``zero_module``)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups when the width allows it, else the largest divisor of ``channels`` up to 32."""
    groups = max(g for g in range(1, 33) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """``x + conv(drop(silu(FiLM(norm(conv(silu(norm(x))))))))`` with FiLM ``h (1 + scale) + shift`` (ADM's
    ``use_scale_shift_norm``)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the spatial positions, with a residual connection and zero-initialised output."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention width {channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class CrossAttentionBlock(nn.Module):
    """Attention from the spatial positions (queries) to a sequence of context vectors (keys and values), e.g. the
    hidden states of a text encoder: LDM's ``SpatialTransformer`` cross-attention (Rombach et al. 2022, Sec. 3.3,
    eq. 3), with a residual connection and a zero-initialised output projection, so a fresh block is the identity.
    Context positions where ``mask`` is False (padding) are not attended to."""

    def __init__(self, channels: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention width {channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor, context: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self.q(self.norm(x).flatten(2).transpose(1, 2)).reshape(b, h * w, heads, d).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, heads, d).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return x + self.proj(out.transpose(1, 2).reshape(b, h * w, c)).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """ADM U-Net: ``forward(x, c_noise, cond) -> Tensor`` of ``x``'s shape.

    Args:
        image_size: height and width of the input (must be divisible by ``2 ** (len(channel_mult) - 1)``).
        in_channels: image channels (1 grayscale, 3 RGB); the output has as many unless ``out_channels`` is set.
        model_channels: base width.
        channel_mult: width multiplier per resolution level; one level per entry, halving the resolution between levels.
        num_res_blocks: residual blocks per level on the way down (the way up has one more, as in ADM).
        attention_resolutions: resolutions (in pixels) with a self-attention block after each residual block.
        num_heads: attention heads.
        dropout: dropout inside residual blocks.
        num_classes: number of classes (0: unconditional). Class ``num_classes`` is the null class of guidance.
        context_dim: width of a context sequence (text encoder states) that cross-attention blocks read after every
            self-attention block (0: none). ``forward`` then takes ``context`` and its padding ``context_mask``.
        out_channels: output channels when they differ from the input's (0: as many as ``in_channels``); CLD's
            network sees the data and its velocity (2C channels) and outputs C.
    """

    def __init__(
        self,
        image_size: int = 16,
        in_channels: int = 1,
        model_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (8,),
        num_heads: int = 4,
        dropout: float = 0.0,
        num_classes: int = 0,
        context_dim: int = 0,
        out_channels: int = 0,
    ) -> None:
        super().__init__()
        levels = len(channel_mult)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{levels - 1} (channel_mult={channel_mult})")
        self.image_size = image_size
        self.levels = levels
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.model_channels = model_channels
        emb_dim = 4 * model_channels
        self.noise_mlp = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

        self.input_conv = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_chs = [model_channels]
        ch, res = model_channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = nn.ModuleList([ResBlock(ch, model_channels * mult, emb_dim, dropout)])
                ch = model_channels * mult
                if res in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                    if context_dim:
                        layers.append(CrossAttentionBlock(ch, context_dim, num_heads))
                self.down.append(layers)
                skip_chs.append(ch)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_chs.append(ch)
                res //= 2
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), AttentionBlock(ch, num_heads),
                                     *([CrossAttentionBlock(ch, context_dim, num_heads)] if context_dim else []),
                                     ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = nn.ModuleList([ResBlock(ch + skip_chs.pop(), model_channels * mult, emb_dim, dropout)])
                ch = model_channels * mult
                if res in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                    if context_dim:
                        layers.append(CrossAttentionBlock(ch, context_dim, num_heads))
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    res *= 2
                self.up.append(layers)
        self.out_norm = group_norm(ch)
        self.out_conv = zero_init(nn.Conv2d(ch, out_channels or in_channels, 3, padding=1))

    def embed(self, c_noise: Tensor, cond: Optional[Tensor], batch: int) -> Tensor:
        """Noise-level embedding plus the class embedding (the null class when ``cond`` is None)."""
        c_noise = c_noise.reshape(-1).expand(batch) if c_noise.numel() in (1, batch) else c_noise
        emb = self.noise_mlp(noise_level_features(c_noise, self.model_channels))
        if self.class_emb is not None:
            if cond is None:
                cond = torch.full((batch,), self.num_classes, dtype=torch.long, device=emb.device)
            cond = torch.as_tensor(cond, device=emb.device).long().reshape(-1)
            if cond.numel() != batch:
                raise ValueError(f"got {cond.numel()} class labels for a batch of {batch}")
            emb = emb + self.class_emb(cond)
        return emb

    def forward(self, x: Tensor, c_noise: Tensor, cond: Optional[Tensor] = None, context: Optional[Tensor] = None,
                context_mask: Optional[Tensor] = None) -> Tensor:
        f = 2 ** (self.levels - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"UNet expects [B, {self.in_channels}, H, W] input with H and W divisible by {f}, "
                             f"got {tuple(x.shape)}")
        emb = self.embed(c_noise, cond, x.shape[0])

        def run(layer: nn.Module, h: Tensor) -> Tensor:
            if isinstance(layer, ResBlock):
                return layer(h, emb)
            if isinstance(layer, CrossAttentionBlock):
                if context is None:
                    raise ValueError("this UNet has cross-attention (context_dim > 0): pass context")
                return layer(h, context, context_mask)
            return layer(h)

        h = self.input_conv(x)
        skips = [h]
        for layers in self.down:
            for layer in layers:
                h = run(layer, h)
            skips.append(h)
        for layer in self.middle:
            h = run(layer, h)
        for layers in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in layers:
                h = run(layer, h)
        return self.out_conv(F.silu(self.out_norm(h)))
