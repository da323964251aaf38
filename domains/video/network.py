"""A space-time factorised U-Net for video, built on the image domain's ADM U-Net (Ho et al. 2022, "Video Diffusion
Models", Sec. 3; diffusers' ``UNet3DConditionModel``; AnimateDiff's motion modules).

The image U-Net's layers run on every frame of ``[B, C, T, H, W]`` as a batch of ``B * T`` images (so every
normalisation is per frame). After each of its stages (every residual / attention group of the down and up paths and
the middle) a :class:`TemporalBlock` mixes information across frames at each pixel: a temporal convolution (kernel 3
over time, diffusers' ``TemporalConvLayer``) and temporal self-attention with a learned relative position bias whose
distances are clipped at ``max_distance`` (so it applies unchanged to clips longer than the training length; AnimateDiff's
absolute encoding breaks past its 24 frames). Both are residual and their output layers start at zero, so before any
training the network *is* the image network applied frame by frame: an image checkpoint inflates to video exactly
(``tests/test_video_network.py`` checks it to 1e-6 in float64).

Known frames (the first frame of an image to animate, the last frames of a clip to continue) enter as a condition,
:class:`FrameCondition`: the known frames times their mask, and the mask, go through a zero-initialised convolution
added to the input convolution's output (so the inflated network still equals the image network). Training shows the
model clips with random known frames and counts the loss on the other frames only (the core's loss mask).

A one-frame input (``T == 1``) skips the temporal blocks: an image is a one-frame video with the temporal layers masked,
which joint image + video training and the frame-by-frame control use.

The spatial layers keep the image U-Net's parameter names, so an image checkpoint's weights load into them by name
(``--model.training.init_from``); the temporal layers live under ``temporal_*``.
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.domains.image.unet import CrossAttentionBlock, Downsample, ResBlock, UNet, Upsample, group_norm, zero_init


@dataclass
class FrameCondition:
    """The condition of a video: class labels (None: unconditional) and known frames.

    ``known``: ``[B, C, T, H, W]`` clean frames in the data space (entries of unknown frames are ignored); ``mask``:
    ``[B, T]``, 1 on known frames.
    """

    labels: Optional[Tensor]
    known: Tensor
    mask: Tensor

    def with_labels(self, labels: Optional[Tensor]) -> "FrameCondition":
        return FrameCondition(labels, self.known, self.mask)


def to_frames(x: Tensor) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B * T, C, H, W]`` (frame-major within each video)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def to_video(x: Tensor, frames: int) -> Tensor:
    """``[B * T, C, H, W]`` -> ``[B, C, T, H, W]``."""
    bt, c, h, w = x.shape
    return x.reshape(bt // frames, frames, c, h, w).transpose(1, 2)


class TemporalConv(nn.Module):
    """``x + conv_t(silu(conv_t(silu(norm(x)))))`` with kernel 3 over time at every pixel; the second convolution starts
    at zero (diffusers' ``TemporalConvLayer`` zero-initialises its last convolution)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.conv1 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.conv2 = zero_init(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))

    def forward(self, x: Tensor, frames: int) -> Tensor:
        h = to_video(F.silu(self.norm(x)), frames)
        h = self.conv2(F.silu(self.conv1(h)))
        return x + to_frames(h)


class TemporalAttention(nn.Module):
    """Self-attention across the frames of each pixel, ``x + proj(attn(norm(x)))``, with a learned relative position
    bias per head over frame offsets clipped to ``[-max_distance, max_distance]`` (Shaw et al. 2018; the Video Diffusion
    Models paper uses relative position embeddings in its temporal attention). ``proj`` starts at zero."""

    def __init__(self, channels: int, num_heads: int, max_distance: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"temporal attention width {channels} is not divisible by temporal_heads={num_heads}")
        self.num_heads = num_heads
        self.max_distance = max_distance
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.bias = nn.Parameter(torch.zeros(num_heads, 2 * max_distance + 1))
        self.proj = zero_init(nn.Linear(channels, channels))

    def position_bias(self, frames: int, device: torch.device) -> Tensor:
        """``[heads, T, T]`` bias of query frame i attending to key frame j, from the clipped offset ``j - i``."""
        pos = torch.arange(frames, device=device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.bias[:, offset]

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bt, c, h, w = x.shape
        b = bt // frames
        # tokens: one sequence of T frames per video and pixel
        tokens = self.norm(x).reshape(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        q, k, v = self.qkv(tokens).reshape(b * h * w, frames, 3, self.num_heads, c // self.num_heads).permute(
            2, 0, 3, 1, 4)
        bias = self.position_bias(frames, x.device).to(q.dtype)[None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [b*h*w, heads, T, c/heads]
        out = self.proj(out.transpose(1, 2).reshape(b * h * w, frames, c))
        out = out.reshape(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        return x + out


class SpaceTimeAttention(TemporalAttention):
    """Self-attention over every pixel of every frame of a clip, ``x + proj(attn(norm(x)))``, with the same clipped
    relative bias over frame offsets; ``proj`` starts at zero. Per-pixel temporal attention cannot follow an object that
    moves across pixels of a coarse feature map; at low resolutions (a 4x4 map of 8 frames is 128 tokens) attending
    across space and time together lets every frame see where the object went."""

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bt, c, h, w = x.shape
        b, n = bt // frames, frames * h * w
        tokens = self.norm(x).reshape(b, frames, c, h * w).transpose(2, 3).reshape(b, n, c)
        q, k, v = self.qkv(tokens).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.position_bias(frames, x.device).to(q.dtype)
        bias = bias.repeat_interleave(h * w, dim=1).repeat_interleave(h * w, dim=2)[None]  # [1, heads, n, n]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [b, heads, n, c/heads]
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))
        return x + out.reshape(b, frames, h * w, c).transpose(2, 3).reshape(bt, c, h, w)


class CrossFrameAttention(CrossAttentionBlock):
    """Every frame attends to all pixels of its clip's first frame and of its previous frame, ``x + proj(attn(norm(x)))``
    (Tune-A-Video's sparse-causal attention, Wu et al. 2023; Text2Video-Zero's cross-frame attention). Per-pixel
    temporal attention can only carry what sits at the same pixel in every frame; a sprite that moves leaves it behind.
    Attending over the whole first frame lets every frame, at every resolution, copy the clip's identity from wherever
    it is in the first frame (the given image when animating, the first context frame when continuing), and the previous
    frame gives it where the object just was. ``proj`` starts at zero."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__(channels, channels, num_heads)  # the image U-Net's cross-attention; context = other frames

    def forward(self, x: Tensor, frames: int) -> Tensor:  # type: ignore[override]
        bt, c, h, w = x.shape
        b, n = bt // frames, h * w
        tokens = self.norm(x).reshape(b, frames, c, n).transpose(2, 3)  # [b, T, hw, c]
        previous = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)  # frame t-1 (frame 0 for frame 0)
        context = torch.cat([tokens[:, :1].expand(b, frames, n, c), previous], dim=2)  # [b, T, 2 hw, c]
        return super().forward(x, context.reshape(bt, 2 * n, c))


class ClipContext(nn.Module):
    """One vector per clip, pooled from the features of all its frames, added to every frame's embedding.

    The identity of a moving object is what its frames share wherever the object is; a sum over pixels does not move
    with it. Attention pooling (a learned score per token, softmax over every pixel of every frame of the clip: the known
    frames, whose features carry the given image, can take the weight) gives ``[B, C]``; an MLP whose last layer starts
    at zero maps it into the embedding that the residual blocks read (where the class embedding goes), so the up path
    of every frame is told, like by a class label, what the clip shows. Zero at initialisation."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.score = nn.Linear(channels, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), zero_init(nn.Linear(emb_dim, emb_dim)))

    def forward(self, x: Tensor, frames: int) -> Tensor:
        """``x [B*T, C, H, W]`` -> ``[B*T, emb_dim]`` (the clip's vector repeated for each of its frames)."""
        bt, c, h, w = x.shape
        tokens = self.norm(x).reshape(bt // frames, frames, c, h * w).transpose(2, 3).reshape(bt // frames, -1, c)
        weights = torch.softmax(self.score(tokens), dim=1)  # [B, T*H*W, 1]
        return self.mlp((weights * tokens).sum(1)).repeat_interleave(frames, dim=0)


class TemporalBlock(nn.Module):
    """A temporal convolution followed by temporal attention (and, at chosen resolutions, space-time attention and
    cross-frame attention), all residual with zero-initialised outputs."""

    def __init__(self, channels: int, num_heads: int, max_distance: int, spacetime: bool = False,
                 cross_frame: bool = False) -> None:
        super().__init__()
        self.conv = TemporalConv(channels)
        self.attn = TemporalAttention(channels, num_heads, max_distance)
        self.spacetime = SpaceTimeAttention(channels, num_heads, max_distance) if spacetime else None
        self.cross_frame = CrossFrameAttention(channels, num_heads) if cross_frame else None

    def forward(self, x: Tensor, frames: int) -> Tensor:
        x = self.attn(self.conv(x, frames), frames)
        x = x if self.spacetime is None else self.spacetime(x, frames)
        return x if self.cross_frame is None else self.cross_frame(x, frames)


def _width(layers: nn.ModuleList) -> Optional[int]:
    """Output channels of a U-Net stage if it holds a residual block (the temporal block goes after it), else None."""
    res = [m for m in layers if isinstance(m, ResBlock)]
    return res[-1].conv2.out_channels if res else None


class SpaceTimeUNet(UNet):
    """The image :class:`~polydiff.domains.image.unet.UNet` inflated to video: ``forward(x [B, C, T, H, W], c_noise [B],
    cond [B] or None) -> [B, C, T, H, W]``.

    Args:
        image_size, in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions, num_heads,
            dropout, num_classes: the image U-Net's settings (see :class:`~polydiff.domains.image.unet.UNet`).
        temporal_heads: heads of the temporal attention.
        max_distance: frame offsets beyond this share one relative position bias.
        spacetime_resolutions: resolutions (pixels) whose temporal blocks also attend across space and time together.
        cross_frame_resolutions: resolutions (pixels) whose temporal blocks also attend from every frame to the whole
            first and previous frames (:class:`CrossFrameAttention`).
        clip_context: pool one vector per clip at the bottleneck and add it to the embedding of every frame for the rest
            of the network (:class:`ClipContext`).
    """

    def __init__(self, image_size: int = 16, in_channels: int = 1, model_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (8,), num_heads: int = 4, dropout: float = 0.0,
                 num_classes: int = 0, temporal_heads: int = 4, max_distance: int = 8,
                 spacetime_resolutions: Sequence[int] = (), cross_frame_resolutions: Sequence[int] = (),
                 clip_context: bool = False) -> None:
        super().__init__(image_size, in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
                         num_heads, dropout, num_classes)

        def block(layers: nn.ModuleList, res: int) -> nn.Module:
            width = _width(layers)
            return nn.Identity() if width is None else TemporalBlock(width, temporal_heads, max_distance,
                                                                      res in spacetime_resolutions,
                                                                      res in cross_frame_resolutions)

        # the resolution each stage's output has (a Downsample stage halves it, an up stage ending in Upsample doubles it)
        res, down = image_size, []
        for layers in self.down:
            res //= 2 if isinstance(layers[-1], Downsample) else 1
            down.append(block(layers, res))
        self.temporal_down = nn.ModuleList(down)
        self.temporal_middle = TemporalBlock(self.middle[-1].conv2.out_channels, temporal_heads, max_distance,
                                             res in spacetime_resolutions, res in cross_frame_resolutions)
        up = []
        for layers in self.up:
            res *= 2 if isinstance(layers[-1], Upsample) else 1
            up.append(block(layers, res))
        self.temporal_up = nn.ModuleList(up)
        self.temporal_context = (ClipContext(self.middle[-1].conv2.out_channels, 4 * model_channels) if clip_context
                                 else None)
        # known frames (times their mask) and the mask, per frame, added after the input convolution
        self.frame_cond_conv = zero_init(nn.Conv2d(in_channels + 1, model_channels, 3, padding=1))

    def spatial_parameters(self) -> list[nn.Parameter]:
        """The image U-Net's parameters (what an image checkpoint provides)."""
        temporal = {id(p) for p in self.temporal_parameters()}
        return [p for p in self.parameters() if id(p) not in temporal]

    def temporal_parameters(self) -> list[nn.Parameter]:
        """The parameters the image U-Net does not have: the temporal blocks and the known-frame convolution."""
        mods = [self.temporal_down, self.temporal_middle, self.temporal_up, self.temporal_context, self.frame_cond_conv]
        return [p for m in mods if m is not None for p in m.parameters()]

    @staticmethod
    def _stage(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: Tensor, c_noise: Tensor, cond: Optional[Tensor | FrameCondition] = None) -> Tensor:
        f = 2 ** (self.levels - 1)
        if x.ndim != 5 or x.shape[1] != self.in_channels or x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"SpaceTimeUNet expects [B, {self.in_channels}, T, H, W] input with H and W divisible by "
                             f"{f}, got {tuple(x.shape)}")
        b, frames = x.shape[0], x.shape[2]
        frame_cond = cond if isinstance(cond, FrameCondition) else None
        labels = frame_cond.labels if frame_cond is not None else cond
        emb = self.embed(c_noise, labels, b).repeat_interleave(frames, dim=0)  # one embedding per frame
        temporal = frames > 1  # a one-frame video is an image: temporal layers masked

        def mix(block: nn.Module, h: Tensor) -> Tensor:
            return block(h, frames) if temporal and not isinstance(block, nn.Identity) else h

        h = self.input_conv(to_frames(x))
        if frame_cond is not None:
            mask = frame_cond.mask.to(x.dtype)[:, None, :, None, None].expand(b, 1, frames, *x.shape[-2:])
            known = frame_cond.known.to(x.dtype) * mask
            h = h + self.frame_cond_conv(to_frames(torch.cat([known, mask], dim=1)))
        skips = [h]
        for layers, block in zip(self.down, self.temporal_down):
            h = mix(block, self._stage(layers, h, emb))
            skips.append(h)
        h = self.middle[0](h, emb)
        h = mix(self.temporal_middle, h)
        if temporal and self.temporal_context is not None:
            emb = emb + self.temporal_context(h, frames)  # what the clip shows, for the rest of the network
        for layer in self.middle[1:]:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layers, block in zip(self.up, self.temporal_up):
            h = mix(block, self._stage(layers, torch.cat([h, skips.pop()], dim=1), emb))
        return to_video(self.out_conv(F.silu(self.out_norm(h))), frames)

