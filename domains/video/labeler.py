"""The class of a clip, inferred by the video model itself: a class-level bottleneck for identity.

A class-conditional video model keeps a clip's identity best when every frame is generated with the same label under
classifier-free guidance; without a label (unconditional clips, a first frame to animate, a clip to continue) its frames
drift to different digits. :class:`ClipLabeler` gives the model its own label: ``p(c)`` when no frame is given (the
class prior of the training clips, so that drawing ``c`` and then the clip given ``c`` samples ``p(c) p(x | c)``, the
unconditional distribution), ``p(c | given frames)`` when frames are given (a small translation-invariant CNN on each
clean given frame). The drawn class then enters through the class embedding the image model was trained with, shared
by every frame, with guidance. It is trained beside the denoiser on the clean frames of the training clips and their
labels (cross-entropy), which is cheap: a few convolutions per frame.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ClipLabeler(nn.Module):
    """``logits(known [B, C, T, H, W], mask [B, T]) -> [B, K]``: the class prior plus the mean over the given frames
    (``mask`` 1) of each frame's class evidence; with no given frame, the prior alone.

    Args:
        channels: channels of the frames.
        num_classes: classes of the labels.
        width: channels of the first convolution (the others have twice as many).
    """

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)
        #: log p(c) up to a constant: trained alone on the labels, so softmax(prior) is the label frequency
        self.prior = nn.Parameter(torch.zeros(num_classes))

    def frame_logits(self, frames: Tensor) -> Tensor:
        """``frames [N, C, H, W]`` in [-1, 1] -> class evidence ``[N, K]`` (max-pooled over space, so it does not
        depend on where in the frame the object is)."""
        return self.head(self.features(frames).amax(dim=(-1, -2)))

    def forward(self, known: Tensor, mask: Tensor) -> Tensor:
        b, c, t, h, w = known.shape
        weights = mask.to(known.dtype)  # [B, T]
        picked = weights.reshape(-1) > 0
        evidence = torch.zeros(b * t, self.prior.shape[0], dtype=known.dtype, device=known.device)
        if bool(picked.any()):
            frames = known.transpose(1, 2).reshape(b * t, c, h, w)[picked]
            evidence[picked] = self.frame_logits(frames).to(known.dtype)
        count = weights.sum(1, keepdim=True)
        mean = (evidence.reshape(b, t, -1) * weights[..., None]).sum(1) / count.clamp_min(1)
        return self.prior + mean

    def loss(self, videos: Tensor, labels: Tensor) -> Tensor:
        """Per-clip training loss ``[B]`` on clean ``videos [B, C, T, H, W]``: cross-entropy of the prior alone (its
        minimiser is the log label frequency) plus the mean cross-entropy of the (fixed) prior + each frame's evidence."""
        b, c, t, h, w = videos.shape
        frames = videos.transpose(1, 2).reshape(b * t, c, h, w)
        per_frame = F.cross_entropy(self.prior.detach() + self.frame_logits(frames), labels.repeat_interleave(t),
                                    reduction="none").reshape(b, t).mean(1)
        return F.cross_entropy(self.prior.expand(b, -1), labels, reduction="none") + per_frame

    @torch.no_grad()
    def draw(self, known: Tensor, mask: Tensor, generator: torch.Generator) -> Tensor:
        """One class per clip drawn from ``softmax(logits)`` with ``generator`` (on the CPU): ``[B]``."""
        probs = torch.softmax(self.forward(known, mask).float(), dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
