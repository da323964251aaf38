"""The image model's Python API: class-conditional sampling with any sampler and guidance, and RePaint inpainting.

:class:`ImageSamplingAPI` is a mixin of :class:`polydiff.domains.image.ImageDiffusion`; it relies on the model's
``generate``, ``denoiser``, ``decode`` and its image settings.
"""

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from polydiff.core.guidance import ClassifierFreeGuidance
from polydiff.core.inpaint import inpaint as inpaint_core
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError


class ImageSamplingAPI:
    """``sample_images`` and ``inpaint`` for an image diffusion model."""

    def _classes(self, n: int, classes: Optional[int | Sequence[int] | Tensor]) -> Optional[Tensor]:
        if self.num_classes == 0:
            if classes is not None:
                raise PolydiffError("this model is unconditional (num_classes=0); call without classes")
            return None
        if classes is None:
            return torch.arange(n) % self.num_classes
        c = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
        c = c.expand(n) if c.numel() == 1 else c
        if c.numel() != n or c.min() < 0 or c.max() >= self.num_classes:
            raise PolydiffError(f"classes must be {n} labels in 0..{self.num_classes - 1} (or one label)")
        return c.clone()

    def _sampler(self, sampler: Optional[str | SamplerConfig], steps: Optional[int],
                 guidance: Optional[float]) -> SamplerConfig:
        if isinstance(sampler, SamplerConfig):
            base = sampler
            return SamplerConfig(**{**base.__dict__, **{k: v for k, v in (("steps", steps), ("guidance", guidance))
                                                         if v is not None}})
        cfg = self.resolve_sampler(name=sampler, steps=steps, guidance=guidance)
        if self.num_classes == 0 and self.text is None and cfg.guidance != 1.0:
            cfg = self.resolve_sampler(name=sampler, steps=steps, guidance=1.0)
        return cfg

    @torch.no_grad()
    def sample_images(
        self,
        n: int,
        classes: Optional[int | Sequence[int] | Tensor] = None,
        sampler: Optional[str | SamplerConfig] = None,
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        seed: int = 0,
        progress: bool = False,
    ) -> Tensor:
        """Generate ``n`` images as a ``[n, C, H, W]`` tensor in [0, 1].

        Args:
            n: number of images.
            classes: one class for all, one per image, or None (classes 0, 1, ..., K-1, 0, ... in turn). Ignored by
                unconditional models. ``guidance=0`` gives the unconditional model of a class-conditional one.
            sampler: sampler name (ddim, heun, dpmpp_2m, ...) or a full :class:`SamplerConfig`; default: the model's.
            steps: sampler steps (default: the model's ``sampler.steps``).
            guidance: classifier-free guidance scale (default: the model's ``sampler.guidance``).
            seed: seed of every random draw (batches use ``seed + batch index``).
            progress: show a progress bar.
        """
        cfg = self._sampler(sampler, steps, guidance)
        cond = self._classes(n, classes)
        out = []
        bs = max(1, self.eval_batch_size)
        for k, start in enumerate(range(0, n, bs)):
            c = None if cond is None else cond[start:start + bs].to(self.device)
            m = min(bs, n - start)
            x = self.generate(self.diffused_shape(m), c, cfg, seed + k, progress)
            out.append(self.decode(x).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def inpaint(
        self,
        images: Tensor,
        mask: Tensor,
        classes: Optional[int | Sequence[int] | Tensor] = None,
        steps: Optional[int] = None,
        resample: Optional[int] = None,
        guidance: Optional[float] = None,
        seed: int = 0,
    ) -> Tensor:
        """Regenerate the masked part of ``images`` (RePaint, :func:`polydiff.core.inpaint.inpaint`).

        Args:
            images: ``[B, C, H, W]`` in [0, 1].
            mask: 1 on known pixels, 0 on pixels to generate; broadcastable to ``images`` (e.g. ``[1, 1, H, W]``).
            classes: class per image for a class-conditional model (None: the null class, i.e. unconditional).
            steps: reverse steps (default ``inpaint_steps``).
            resample: resampling rounds per step (default ``inpaint_resample``).
            guidance: guidance scale when ``classes`` are given (default: the model's ``sampler.guidance``).
            seed: seed of every random draw.
        Returns:
            ``[B, C, H, W]`` in [0, 1], equal to ``images`` on the known pixels.
        """
        if images.ndim != 4 or images.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise PolydiffError(f"inpaint expects [B, {self.channels}, {self.image_size}, {self.image_size}] images, "
                                f"got {tuple(images.shape)}")
        self.require_pixel_space("inpainting")
        n = images.shape[0]
        model: Any = self.denoiser
        cond = None
        if self.num_classes > 0:
            if classes is None:
                cond = torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
            else:
                cond = self._classes(n, classes).to(self.device)
                scale = self.sampler_config.guidance if guidance is None else guidance
                if scale != 1.0:
                    model = ClassifierFreeGuidance(model, scale, self.null_condition(cond))
        was_training = self.training
        self.eval()
        try:
            x = inpaint_core(model, images.to(self.device) * 2 - 1, mask.to(self.device),
                             steps=steps or self.inpaint_steps, resample=resample or self.inpaint_resample, cond=cond,
                             generator=torch.Generator().manual_seed(seed), sigma_min=self.sampler_config.sigma_min,
                             sigma_max=self.sampler_config.sigma_max)
        finally:
            self.train(was_training)
        return ((x.float().clamp(-1, 1) + 1) / 2).cpu()
