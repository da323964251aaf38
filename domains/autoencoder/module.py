"""``AutoencoderModule``: trains the KL autoencoder that latent diffusion encodes with (the first stage of LDM's two).

Batches are the grid tensors themselves or tuples whose first item is (``(images, labels)`` of the image DataModules,
so every grid DataModule fits). The loss is the mean squared reconstruction error of a posterior draw plus
``kl_weight`` times the KL divergence to N(0, I), both per data element (LDM's small KL weight keeps the latent near a
standard Gaussian without the variance collapse of a plain autoencoder or the blur of a VAE). ``polydiff test`` reports
held-out PSNR beside PCA with as many components as the latent has dimensions (the linear control), and the latents'
standard deviation (what a latent diffusion model's scale factor ``1 / std`` will be measured from).

A latent diffusion model points at the checkpoint this trains (``--model.autoencoder``, see
:class:`polydiff.core.latent.LatentSpace`), which calls :meth:`AutoencoderModule.encode` / :meth:`decode`.
"""

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.core.base import PolydiffModule, TrainingConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.autoencoder.metrics import pca_reconstruction, psnr
from polydiff.domains.autoencoder.network import KLAutoencoder


class AutoencoderModule(PolydiffModule):
    """KL-regularised convolutional autoencoder of ``channels`` x grid data with ``dims`` grid axes.

    Args:
        dims: grid axes of the data: 1 (signals), 2 (images), 3 (volumes, videos as channels x frames x H x W).
        channels: data channels (1 grayscale, 3 RGB).
        latent_channels: channels of the latent grid.
        base_channels: width of the first level.
        channel_mult: width multiplier per level; the grid halves between levels (16x16 with 3 levels: 4x4 latents).
        num_res_blocks: residual blocks per level.
        kl_weight: weight of the KL term (per data element, like the reconstruction error).
        training: optimiser settings and fine-tuning start point.
    """

    domain = "autoencoder"

    def __init__(
        self,
        dims: int = 2,
        channels: int = 1,
        latent_channels: int = 2,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        kl_weight: float = 1e-4,
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(None, training)
        if kl_weight < 0:
            raise PolydiffError(f"kl_weight must be >= 0, got {kl_weight}; set --model.kl_weight")
        try:
            self.network = KLAutoencoder(dims, channels, latent_channels, base_channels, channel_mult, num_res_blocks)
        except ValueError as exc:
            raise PolydiffError(f"autoencoder settings do not fit: {exc}; set --model.dims") from None
        self.kl_weight = kl_weight
        self._test_items: list[Tensor] = []
        self.save_hyperparameters()

    # ------------------------------------------------------------------ the codec latent diffusion uses
    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean of ``x`` (deterministic: a latent model's training data and scale factor)."""
        return self.network.encode(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.network.decode(z)

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.network.latent_shape(shape)

    # ------------------------------------------------------------------ training
    def grid(self, batch: Any) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        try:
            self.network.check_input(x)
        except ValueError as exc:
            raise PolydiffError(f"{exc}; set --model.dims / --model.channels to the data's (or --model.channel_mult "
                                "to fewer levels)") from None
        return x

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        mean, logvar = self.network.encode(x)
        rec = self.network.decode(self.network.sample_posterior(mean, logvar, generator))
        mse = (rec - x).pow(2).flatten(1).mean(1)
        kl = self.network.kl(mean, logvar) / x[0].numel()
        return {"loss": (mse + self.kl_weight * kl).mean(), "mse": mse.mean(), "kl": kl.mean()}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = self.grid(batch)
        with self.seeded_step():
            out = self.loss(x)
        if not torch.isfinite(out["loss"]):
            raise PolydiffError(f"training loss is {out['loss'].item()} at step {self.global_step}: lower "
                                "--model.training.lr or check the data for NaN/inf values")
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=len(x))
        self.log("train/kl", out["kl"], batch_size=len(x))
        return out["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = self.grid(batch)
        out = self.loss(x, torch.Generator().manual_seed(1234 + batch_idx))
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=len(x))
        self.log("val/psnr", psnr(x, self.decode(self.encode(x))), prog_bar=True, batch_size=len(x))

    # ------------------------------------------------------------------ evaluation (polydiff test)
    def on_test_epoch_start(self) -> None:
        self._test_items = []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._test_items.append(self.grid(batch).detach().cpu())

    @torch.no_grad()
    def reconstruct(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Decoded posterior means of ``x`` (batched, eval mode)."""
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self.decode(self.encode(x[i:i + batch_size].to(self.device))).cpu()
                              for i in range(0, len(x), batch_size)])
        finally:
            self.train(was_training)

    def on_test_epoch_end(self) -> None:
        if not self._test_items:
            raise PolydiffError("the test split is empty; give the DataModule a test split (--data.test_fraction)")
        test = torch.cat(self._test_items)
        train = torch.cat([self.grid(b).cpu() for b in self.trainer.datamodule.train_dataloader()])
        with torch.no_grad():
            latents = torch.cat([self.encode(train[i:i + 256].to(self.device)).cpu() for i in range(0, len(train), 256)])
        dims = latents[0].numel()
        metrics = {"psnr": psnr(test, self.reconstruct(test)),
                   "psnr_pca": psnr(test, pca_reconstruction(train, test, dims)),
                   "latent_dims": float(dims), "data_dims": float(test[0].numel()),
                   "latent_std": float(latents.std())}
        self.report_metrics(metrics, extra={"test_items": len(test), "train_items": len(train),
                                            "latent_shape": list(latents.shape[1:])})

    # ------------------------------------------------------------------ not a generative model on its own
    def resolve_sampler(self, **overrides: Any) -> Any:
        raise PolydiffError("an autoencoder does not sample on its own; point a latent diffusion recipe at its checkpoint "
                            "(--model.autoencoder, e.g. recipes/image/digits_latent.yaml)")

    def write_samples(self, out_dir: Path, num_samples: int, sampler: Any, seed: int, input: Any = None) -> list[Path]:
        return self.resolve_sampler()
