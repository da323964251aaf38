"""Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3):
diffuse in the latent space of a frozen, separately trained autoencoder instead of the data space.

:class:`LatentSpace` wraps any autoencoder checkpoint that polydiff trained (a model with ``encode``, ``decode`` and
``latent_shape``; :class:`polydiff.domains.autoencoder.AutoencoderModule`) and the **scale factor**: latents are
multiplied by ``1 / std`` of the training latents (LDM App. G; Stable Diffusion's 0.18215 is this number for its
autoencoder) so that the diffused data has unit variance, as the noise schedules assume. The factor is measured once,
from the training data at the start of ``fit`` (:meth:`LatentSpace.measure`), and kept as a buffer: checkpoints store it
and ``test`` / ``sample`` / ``predict`` / a resumed fit reuse it. Re-measuring it on other data, or forgetting it, would
silently change what the network sees (latent-diffusion issues 149 and 187, diffusers 437).

A Gaussian domain with grid data opts in with an ``autoencoder`` setting: it builds its network at
:meth:`LatentSpace.latent_shape`, maps batches with :meth:`LatentSpace.encode` in its ``encode``, decodes samples with
:meth:`LatentSpace.decode` in its ``decode``, and calls :meth:`LatentSpace.measure` from ``on_fit_start``.
"""

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from polydiff.core.ema import sync_averaged_buffers
from polydiff.core.utils import PolydiffError


class LatentSpace(nn.Module):
    """A frozen autoencoder and the scale factor of its latents.

    Args:
        autoencoder: a model with ``encode(x) -> z``, ``decode(z) -> x`` and ``latent_shape(shape) -> shape``.
        path: where it was loaded from (named in errors).
    """

    def __init__(self, autoencoder: nn.Module, path: str = "<autoencoder>") -> None:
        super().__init__()
        for name in ("encode", "decode", "latent_shape"):
            if not callable(getattr(autoencoder, name, None)):
                raise PolydiffError(f"{path} ({type(autoencoder).__name__}) is not an autoencoder (no {name}); pass a "
                                    "checkpoint of recipes/autoencoder/*.yaml as --model.autoencoder")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.path = path
        # NaN until measured: a model that was never fit has no factor, and using it is an error, not a silent 1.0
        self.register_buffer("scale_factor", torch.tensor(float("nan"), dtype=torch.float64))

    @classmethod
    def from_checkpoint(cls, path: str) -> "LatentSpace":
        """The autoencoder of a checkpoint written by ``polydiff fit`` (any polydiff model class, read safely)."""
        from pathlib import Path

        from polydiff.core.export import load

        if not Path(path).exists():
            raise PolydiffError(f"autoencoder checkpoint {path} does not exist; train one (polydiff fit --config "
                                "recipes/autoencoder/digits.yaml) and pass its last.ckpt as --model.autoencoder")
        return cls(load(path), path)

    def train(self, mode: bool = True) -> "LatentSpace":
        super().train(mode)
        self.autoencoder.eval()  # frozen: its dropout / normalisation stay in inference mode while the prior trains
        return self

    @property
    def measured(self) -> bool:
        return bool(torch.isfinite(self.scale_factor))

    def latent_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        try:
            return tuple(self.autoencoder.latent_shape(tuple(shape)))
        except ValueError as exc:
            raise PolydiffError(f"{exc} (autoencoder {self.path}); train the autoencoder on data of this model's "
                                "shape") from None

    @torch.no_grad()
    def raw_latents(self, x: Tensor) -> Tensor:
        """Unscaled latents of data ``x`` (the autoencoder's posterior mean)."""
        return self.autoencoder.encode(x.to(self.scale_factor.device))

    @torch.no_grad()
    def measure(self, batches: Iterable[Tensor], max_items: int = 4096) -> float:
        """Set the scale factor to ``1 / std`` of the latents of up to ``max_items`` training items (all latent entries
        pooled, as LDM's ``scale_by_std``) and return it."""
        latents, n = [], 0
        for x in batches:
            latents.append(self.raw_latents(x).double().flatten())
            n += len(x)
            if n >= max_items:
                break
        if not latents:
            raise PolydiffError("no training data to measure the latent scale factor from; check the DataModule's "
                                "train split")
        std = float(torch.cat(latents).std())
        if not math.isfinite(std) or std <= 0:
            raise PolydiffError(f"the training latents of {self.path} have standard deviation {std}; the autoencoder is "
                                "broken (retrain it) or the data is constant")
        self.scale_factor.fill_(1.0 / std)
        return 1.0 / std

    def _check_measured(self) -> None:
        if not self.measured:
            raise PolydiffError("this latent diffusion model has no latent scale factor (it is measured at the start of "
                                "'polydiff fit' and stored in the checkpoint); fit it, or load a checkpoint written by fit")

    def encode(self, x: Tensor) -> Tensor:
        """Data to scaled latents ``z = scale_factor * E(x)``."""
        self._check_measured()
        return (self.raw_latents(x).double() * self.scale_factor).to(x.dtype)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents back to data ``D(z / scale_factor)``."""
        self._check_measured()
        return self.autoencoder.decode((z.double() / self.scale_factor).to(z.dtype))


def measure_at_fit_start(module: nn.Module, latent: LatentSpace, batches: Iterable[Tensor]) -> None:
    """``on_fit_start`` of a latent model: measure the scale factor unless it is known (a resumed fit or a fine-tuning
    start restored it from a checkpoint), and hand it to the EMA callback's averaged copy, which was made before fit
    started and is swapped in for validation (buffers included)."""
    if latent.measured:
        return
    factor = latent.measure(batches)
    sync_averaged_buffers(module)
    print(f"latent scale factor 1 / std = {factor:.5f} (measured on the training data, stored in the checkpoint)")
