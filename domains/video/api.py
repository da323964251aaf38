"""The video model's Python API: sampling clips (class-conditional with guidance, or unconditional), animating a given
first frame, continuing clips past the training length, and the frame-by-frame control.

Without ``classes``, a model with a labeler (``infer_class``, :class:`~polydiff.domains.video.labeler.ClipLabeler`)
draws each clip's class itself, from the class prior (``sample_videos``) or from the given frames (``animate``,
``extend``), and generates every frame with it under guidance; ``infer_class=False`` (or a model without a labeler)
uses the null class.

:class:`VideoSamplingAPI` is a mixin of :class:`polydiff.domains.video.VideoDiffusion`; it relies on the model's
``generate``, ``decode``, ``resolve_sampler`` and its video settings. Known frames are the network's
:class:`~polydiff.domains.video.network.FrameCondition`, which training teaches (``known_frames_prob``).
"""

from typing import Optional, Sequence

import torch
from torch import Tensor

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.video.network import FrameCondition

Classes = Optional[int | Sequence[int] | Tensor]


class VideoSamplingAPI:
    """``sample_videos``, ``animate``, ``extend`` and ``sample_frames`` for a video diffusion model."""

    def _labels(self, n: int, classes: Classes) -> Optional[Tensor]:
        """Labels ``[n]`` for ``classes`` (None: the null class, i.e. unconditional; None for unconditional models)."""
        if self.num_classes == 0:
            if classes is not None:
                raise PolydiffError("this model is unconditional (num_classes=0); call without classes")
            return None
        if classes is None:
            return torch.full((n,), self.num_classes, dtype=torch.long)
        c = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
        c = c.expand(n) if c.numel() == 1 else c
        if c.numel() != n or c.min() < 0 or c.max() >= self.num_classes:
            raise PolydiffError(f"classes must be {n} labels in 0..{self.num_classes - 1} (or one label)")
        return c.clone()

    def infer_classes(self, known: Tensor, mask: Tensor, seed: int = 0) -> Optional[Tensor]:
        """One class per clip ``[B]`` drawn by the model's labeler from ``known [B, C, T, H, W]`` (in [-1, 1]) where
        ``mask [B, T]`` is 1 (the class prior where it is all zero); None for a model without a labeler."""
        if getattr(self, "labeler", None) is None:
            return None
        gen = torch.Generator().manual_seed(seed)
        out = []
        bs = max(1, self.eval_batch_size)
        with torch.no_grad():
            for start in range(0, len(known), bs):
                kn, mk = known[start:start + bs].to(self.device), mask[start:start + bs].to(self.device)
                out.append(self.labeler.draw(kn, mk, gen))
        return torch.cat(out)

    def _inferred(self, classes: Classes, infer_class: bool, known: Tensor, mask: Tensor, seed: int) -> Classes:
        """``classes`` if given, else the labeler's draw (when ``infer_class``), else None (the null class)."""
        if classes is not None or not infer_class:
            return classes
        return self.infer_classes(known, mask, seed)

    def _sampler(self, sampler: Optional[str | SamplerConfig], steps: Optional[int], guidance: Optional[float],
                 conditional: bool) -> SamplerConfig:
        base = sampler if isinstance(sampler, SamplerConfig) else self.resolve_sampler(name=sampler)
        overrides = {"steps": steps, "guidance": guidance if conditional else 1.0}
        return SamplerConfig(**{**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}})

    def _draw(self, known: Tensor, mask: Tensor, labels: Optional[Tensor], cfg: SamplerConfig, seed: int,
              progress: bool) -> Tensor:
        """Clips ``[B, C, T, H, W]`` in [-1, 1], batch by batch, equal to ``known`` on frames where ``mask [B, T]`` is 1."""
        out = []
        bs = max(1, self.eval_batch_size)
        for k, start in enumerate(range(0, len(known), bs)):
            sl = slice(start, start + bs)
            kn = known[sl].to(self.device)
            mk = mask[sl].to(self.device)
            lab = None if labels is None else labels[sl].to(self.device)
            cond = FrameCondition(lab, kn, mk) if kn.shape[2] > 1 else lab
            x = self.generate(tuple(kn.shape), cond, cfg, seed + k, progress)
            m = mk.to(x.dtype)[:, None, :, None, None]
            out.append((m * kn.to(x.dtype) + (1 - m) * x).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def sample_videos(self, n: int, classes: Classes = None, frames: Optional[int] = None,
                      sampler: Optional[str | SamplerConfig] = None, steps: Optional[int] = None,
                      guidance: Optional[float] = None, seed: int = 0, progress: bool = False,
                      infer_class: bool = True) -> Tensor:
        """Generate ``n`` clips as ``[n, C, T, H, W]`` in [0, 1].

        Args:
            n: number of clips.
            classes: one class for all, one per clip, or None: unconditional (each clip's class drawn from the class
                prior by the model's labeler, or the null class without one).
            frames: frames per clip (default: the training length; longer clips rely on the clipped relative position
                bias: :meth:`extend` is the way to go well past it).
            sampler: sampler name or a full :class:`SamplerConfig`; default: the model's.
            steps: sampler steps (default: the model's ``sampler.steps``).
            guidance: classifier-free guidance scale for class-conditional clips (default: the model's).
            seed: seed of every random draw (batches use ``seed + batch index``).
            progress: show a progress bar.
            infer_class: without ``classes``, let the labeler draw them (False: the null class, no guidance).
        """
        t = frames or self.frames
        known = torch.zeros(n, self.channels, t, self.image_size, self.image_size)
        classes = self._inferred(classes, infer_class, known, torch.zeros(n, t), seed)
        labels = self._labels(n, classes)
        cfg = self._sampler(sampler, steps, guidance, classes is not None)
        return self.decode(self._draw(known, torch.zeros(n, t), labels, cfg, seed, progress))

    def sample_native(self, n: int, sampler: SamplerConfig, seed: int, classes: Classes = None,
                      frames: Optional[int] = None) -> Tensor:
        """:meth:`polydiff.core.base.PolydiffModule.sample`: ``n`` clips ``[n, C, T, H, W]`` in [0, 1]."""
        return self.sample_videos(n, classes, frames, sampler, seed=seed)

    @torch.no_grad()
    def sample_frames(self, n: int, frames: Optional[int] = None, classes: Classes = None,
                      sampler: Optional[str | SamplerConfig] = None, steps: Optional[int] = None, seed: int = 0,
                      progress: bool = False) -> Tensor:
        """The frame-by-frame control: ``n`` clips ``[n, C, T, H, W]`` in [0, 1] whose frames are drawn independently,
        each as a one-frame video (temporal layers masked; meaningful for a model trained jointly on images,
        ``image_prob > 0``). Without ``classes`` a labeler draws each frame's class on its own."""
        t = frames or self.frames
        known = torch.zeros(n * t, self.channels, 1, self.image_size, self.image_size)
        if classes is None:
            lab = self._labels(n * t, self.infer_classes(known, torch.zeros(n * t, 1), seed))
        else:
            lab = self._labels(n, classes).repeat_interleave(t)
        cfg = self._sampler(sampler, steps, None, lab is not None and bool((lab < self.num_classes).all()))
        x = self._draw(known, torch.zeros(n * t, 1), lab, cfg, seed, progress)
        return self.decode(x.reshape(n, t, self.channels, self.image_size, self.image_size).transpose(1, 2))

    @torch.no_grad()
    def animate(self, first_frames: Tensor, frames: Optional[int] = None, classes: Classes = None,
                sampler: Optional[str | SamplerConfig] = None, steps: Optional[int] = None,
                guidance: Optional[float] = None, seed: int = 0, progress: bool = False,
                infer_class: bool = True) -> Tensor:
        """Clips ``[B, C, T, H, W]`` in [0, 1] that start with ``first_frames [B, C, H, W]`` (in [0, 1]); without
        ``classes`` the labeler draws each clip's class from its first frame (``infer_class``)."""
        t = frames or self.frames
        b = first_frames.shape[0]
        self._check_frames(first_frames[:, :, None], "first_frames")
        known = torch.zeros(b, self.channels, t, self.image_size, self.image_size)
        known[:, :, 0] = first_frames.float().cpu() * 2 - 1
        mask = torch.zeros(b, t)
        mask[:, 0] = 1
        classes = self._inferred(classes, infer_class, known, mask, seed)
        cfg = self._sampler(sampler, steps, guidance, classes is not None)
        return self.decode(self._draw(known, mask, self._labels(b, classes), cfg, seed, progress))

    @torch.no_grad()
    def extend(self, videos: Tensor, total_frames: int, context: Optional[int] = None, classes: Classes = None,
               sampler: Optional[str | SamplerConfig] = None, steps: Optional[int] = None,
               guidance: Optional[float] = None, seed: int = 0, progress: bool = False,
               infer_class: bool = True) -> Tensor:
        """Continue ``videos [B, C, T0, H, W]`` (in [0, 1]) to ``total_frames`` frames, a window of the training length
        at a time whose first ``context`` frames (default ``context_frames``) are the last ones generated so far;
        without ``classes`` the labeler draws each clip's class from all its given frames (``infer_class``), kept for
        every window."""
        self._check_frames(videos, "videos")
        k = context or self.context_frames
        if not 1 <= k < self.frames:
            raise PolydiffError(f"context {k} must be between 1 and frames - 1 = {self.frames - 1}; set "
                                "--model.context_frames")
        out = videos.float().cpu() * 2 - 1
        b = out.shape[0]
        classes = self._inferred(classes, infer_class, out, torch.ones(b, out.shape[2]), seed)
        labels = self._labels(b, classes)
        cfg = self._sampler(sampler, steps, guidance, classes is not None)
        window = 0
        while out.shape[2] < total_frames:
            c = min(k, out.shape[2])
            known = torch.zeros(b, self.channels, self.frames, self.image_size, self.image_size)
            known[:, :, :c] = out[:, :, -c:]
            mask = torch.zeros(b, self.frames)
            mask[:, :c] = 1
            new = self._draw(known, mask, labels, cfg, seed + 1000 * window, progress)[:, :, c:]
            out = torch.cat([out, new], dim=2)
            window += 1
        return self.decode(out[:, :, :total_frames])

    def _check_frames(self, videos: Tensor, name: str) -> None:
        if videos.ndim != 5 or videos.shape[1] != self.channels or videos.shape[-2:] != (self.image_size,) * 2:
            raise PolydiffError(f"{name} must be [B, {self.channels}, (T,) {self.image_size}, {self.image_size}] in "
                                f"[0, 1], got {tuple(videos.shape)}")
