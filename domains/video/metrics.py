"""Download-free video metrics (FVD needs I3D weights that are downloaded), computed frame by frame with a classifier
trained on the data's own frames (the image domain's :mod:`polydiff.domains.image.metrics`):

* **per-frame FD**: the Fréchet distance between the classifier's penultimate features of all generated frames and of all
  test frames, with a floor (train frames vs test frames) and a ceiling (per-pixel Gaussian noise frames vs test
  frames); ``fd_relative = (fd - floor) / (ceiling - floor)``;
* **identity consistency**: the share of videos whose frames the classifier all assigns the same class (labelled data);
  **frame agreement**: the share of pairs of frames of a video assigned the same class (about 1 / classes by chance);
* **motion**: the intensity centroid of each frame (pixels brighter than ``threshold`` in [0, 1]) gives a track; the
  *constant-velocity residual* is the mean absolute deviation, in pixels, of each axis's step size ``|c_{t+1} - c_t|``
  from that video's median step size on that axis. A sprite moving with constant velocity and bouncing off the walls
  has the same step size on every step (a bounce flips the sign only), so real moving digits score 0; ``mean_step`` is
  the mean length of a step.

The controls that put these numbers in context (frame-shuffled real videos, independent frames) are in
:mod:`polydiff.domains.video.controls`.
"""

from typing import Any, Optional

import torch
from torch import Tensor

from polydiff.domains.image.metrics import (
    CLASSIFIER_VERSION,
    evaluation_classifier,
    frechet_distance,
    gaussian_stats,
    noise_images,
    predict,
)


def frames_of(videos: Tensor) -> Tensor:
    """``[N, C, T, H, W]`` -> ``[N * T, C, H, W]``."""
    n, c, t, h, w = videos.shape
    return videos.transpose(1, 2).reshape(n * t, c, h, w)


def centroid_tracks(videos: Tensor, threshold: float = 0.25) -> Tensor:
    """Intensity centroids ``[N, T, 2]`` (row, column, in pixels) of ``videos`` in [-1, 1]; a frame with nothing above
    ``threshold`` has its centroid at the centre."""
    x = ((videos.float().mean(1) + 1) / 2 - threshold).clamp_min(0)  # [N, T, H, W]
    h, w = x.shape[-2:]
    mass = x.sum(dim=(-1, -2))
    rows = torch.arange(h, dtype=x.dtype)[:, None]
    cols = torch.arange(w, dtype=x.dtype)[None, :]
    safe = mass.clamp_min(1e-8)
    r = (x * rows).sum(dim=(-1, -2)) / safe
    c = (x * cols).sum(dim=(-1, -2)) / safe
    empty = mass <= 1e-8
    r = torch.where(empty, torch.full_like(r, (h - 1) / 2), r)
    c = torch.where(empty, torch.full_like(c, (w - 1) / 2), c)
    return torch.stack([r, c], dim=-1)


def motion_statistics(videos: Tensor) -> dict[str, float]:
    """``motion_residual`` (px, 0 for constant speed per axis) and ``mean_step`` (px per frame) of ``videos``."""
    if videos.shape[2] < 2:
        return {"motion_residual": float("nan"), "mean_step": float("nan")}
    steps = centroid_tracks(videos).diff(dim=1)  # [N, T-1, 2]
    speed = steps.abs()
    residual = (speed - speed.median(dim=1, keepdim=True).values).abs().mean()
    return {"motion_residual": float(residual), "mean_step": float(steps.norm(dim=-1).mean())}


def identity_consistency(logits: Tensor, frames: int) -> float:
    """Share of videos whose frames all get the same class, from per-frame ``logits [N * T, K]``."""
    labels = logits.argmax(1).reshape(-1, frames)
    return float((labels == labels[:, :1]).all(1).float().mean())


def frame_agreement(logits: Tensor, frames: int) -> float:
    """Share of pairs of distinct frames of a video that get the same class (about 1/K for independent frames)."""
    labels = logits.argmax(1).reshape(-1, frames)
    same = (labels[:, :, None] == labels[:, None, :]).float().sum(dim=(1, 2)) - frames
    return float((same / (frames * (frames - 1))).mean())


class VideoEvaluator:
    """Scores videos against the test split (see the module docstring).

    Args:
        train_videos, train_labels: the train split; the classifier learns from up to ``max_classifier_frames`` of its
            frames, and its frames are the FD floor.
        test_videos: the reference videos.
        num_classes: classes of the labels (0: unlabelled: random features, no identity consistency).
        max_classifier_frames: frames the classifier trains on (evenly spread over the train videos).
    """

    def __init__(self, train_videos: Tensor, train_labels: Tensor, test_videos: Tensor, num_classes: int,
                 max_classifier_frames: int = 6000, cache: bool = True) -> None:
        self.num_classes = num_classes
        n, _, t = train_videos.shape[:3]
        frames = frames_of(train_videos)
        labels = train_labels.repeat_interleave(t)
        step = max(1, len(frames) // max_classifier_frames)
        gen = torch.Generator().manual_seed(0)
        pick = (torch.arange(0, len(frames), step) + torch.randint(0, step, (1,), generator=gen))[:max_classifier_frames]
        pick = pick.clamp_max(len(frames) - 1)
        self.net = evaluation_classifier(frames[pick], labels[pick], num_classes, cache)
        test_frames = frames_of(test_videos)
        test_f, _ = predict(self.net, test_frames)
        self.test_stats = gaussian_stats(test_f)
        self.fd_floor = frechet_distance(*gaussian_stats(predict(self.net, frames[pick])[0]), *self.test_stats)
        noise = noise_images(frames[pick], len(test_frames))
        self.fd_ceiling = frechet_distance(*gaussian_stats(predict(self.net, noise)[0]), *self.test_stats)

    @property
    def classifier_info(self) -> dict[str, Any]:
        return {"kind": "trained on train-split frames" if self.num_classes else "random (untrained) features",
                "version": CLASSIFIER_VERSION}

    def report(self, videos: Tensor, labels: Optional[Tensor] = None) -> dict[str, float]:
        """Every metric of ``videos [N, C, T, H, W]`` in [-1, 1] (``labels``: the class each video should show)."""
        t = videos.shape[2]
        feats, logits = predict(self.net, frames_of(videos))
        fd = frechet_distance(*gaussian_stats(feats), *self.test_stats)
        out = {"fd": fd, "fd_relative": (fd - self.fd_floor) / (self.fd_ceiling - self.fd_floor)}
        if self.num_classes > 0:
            out["identity_consistency"] = identity_consistency(logits, t)
            out["frame_agreement"] = frame_agreement(logits, t)
            if labels is not None:
                per_frame = logits.argmax(1).reshape(-1, t)
                out["class_accuracy"] = float((per_frame == labels.long().cpu()[:, None]).float().mean())
        out.update(motion_statistics(videos))
        return out
