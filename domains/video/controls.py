"""Controls for the video metrics: real videos broken in known ways, which a model with temporal coherence must beat.

* frame-shuffled real videos: every frame is real and the identity is kept, but the motion is scrambled;
* independent real frames: frame ``t`` of each video comes from a randomly chosen other video (what an image model
  sampled frame by frame would reach at best: real frames, no identity or motion across them);
* same-class frames: frame ``t`` of each generated clip comes from a random clip generated with the same class (what
  the class label alone gives, without any temporal coherence beyond it).

The model-based controls (the inflated image model before temporal training, the video model sampled one frame at a
time) are drawn by :class:`polydiff.domains.video.VideoDiffusion` itself.
"""

import torch
from torch import Tensor


def shuffle_frames(videos: Tensor, seed: int = 0) -> Tensor:
    """``videos [N, C, T, H, W]`` with the frame order of each video permuted at random."""
    gen = torch.Generator().manual_seed(seed)
    n, t = videos.shape[0], videos.shape[2]
    order = torch.argsort(torch.rand(n, t, generator=gen), dim=1)
    index = order[:, None, :, None, None].expand_as(videos)
    return torch.gather(videos, 2, index)


def independent_frames(videos: Tensor, seed: int = 0) -> Tensor:
    """``videos [N, C, T, H, W]`` whose frame ``t`` is frame ``t`` of a randomly drawn video (independently per frame)."""
    gen = torch.Generator().manual_seed(seed)
    n, t = videos.shape[0], videos.shape[2]
    source = torch.randint(0, n, (n, t), generator=gen)
    return torch.stack([videos[source[:, k], :, k] for k in range(t)], dim=2)


def same_class_frames(videos: Tensor, classes: Tensor, seed: int = 0) -> Tensor:
    """``videos [N, C, T, H, W]`` whose frame ``t`` is frame ``t`` of a randomly drawn video with the same class
    (``classes [N]``; independently per frame, the video itself included)."""
    gen = torch.Generator().manual_seed(seed)
    n, t = videos.shape[0], videos.shape[2]
    source = torch.empty(n, t, dtype=torch.long)
    for c in classes.unique():
        members = torch.nonzero(classes == c)[:, 0]
        picks = torch.randint(0, len(members), (len(members), t), generator=gen)
        source[members] = members[picks]
    return torch.stack([videos[source[:, k], :, k] for k in range(t)], dim=2)
