"""``MedicalDiffusion``: diffusion of NIfTI slices (2D) or volume crops (3D) on the shared core.

Three tasks, one network (:class:`~polydiff.domains.medical.unet.UNetND`):

* ``synthesis``: unconditional samples; ``polydiff test`` gives MMD² against held-out items with a pixelwise-Gaussian
  and a PCA-Gaussian control in the same table.
* ``super_resolution``: SR3 (Saharia et al. 2021): the low-resolution input, block-averaged by ``sr_factor`` on every
  axis and brought back to the fine grid by linear interpolation, is concatenated to the network input. What is
  diffused is the residual ``(x - up(lr)) * residual_scale`` (as SRDiff, Li et al. 2022): its scale is set, its mean
  is zero, and a model that learned nothing returns the interpolation. ``sr_consistency`` then makes the block average
  of the result equal the input exactly (a projection onto the measurement, as Score-MRI's data consistency).
  ``polydiff test``: PSNR and SSIM on held-out items against bilinear/trilinear and (2D) bicubic interpolation.
* ``inpainting``: RePaint (:func:`polydiff.core.inpaint.inpaint`) of a central box with an unconditional model (a
  synthesis checkpoint works); ``polydiff test``: error inside the box against a harmonic (smoothing) fill.

Geometry: generated items get the data's reference grid (stored in the checkpoint as buffers); super-resolved volumes
get the input's affine refined by ``sr_factor`` (:mod:`polydiff.domains.medical.geometry`); files are written by
:mod:`polydiff.domains.medical.io`.
"""

from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.inpaint import inpaint as inpaint_core
from polydiff.core.module import DiffusionBatch, DiffusionConfig, DiffusionModule, ObjectiveConfig, TrainingConfig
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.medical import controls, evaluation, io
from polydiff.domains.medical.geometry import upsampled_affine
from polydiff.domains.medical.protocol import MedicalData
from polydiff.domains.medical.regions import box_mask, pad_to_multiple
from polydiff.domains.medical.unet import UNetND

Task = Literal["synthesis", "super_resolution", "inpainting"]
HEADER_BYTES = 540  # room for a NIfTI-2 header (NIfTI-1: 348)


class MedicalDiffusion(DiffusionModule):
    """Diffusion of ``[B, 1, *item_size]`` slices or crops scaled to [-1, 1].

    Args:
        spatial_dims: 2 (axial slices) or 3 (volume crops); must match the DataModule.
        item_size: spatial size of the training items (the DataModule's ``slice_size`` / ``crop_size``).
        task: synthesis, super_resolution or inpainting (what is trained and what ``polydiff test`` measures).
        sr_factor: super-resolution factor per axis (2D: in-plane; 3D: every axis).
        residual_scale: super-resolution: the residual to the interpolated input is multiplied by this before it is
            diffused (about 1 / its standard deviation; 5 for MNI at 2-4 mm).
        sr_consistency: super-resolution: project each result so its block average equals the low-resolution input.
        model_channels: base width of the U-Net.
        channel_mult: width multiplier per U-Net level (the resolution halves between levels).
        num_res_blocks: residual blocks per level.
        attention_levels: U-Net levels (0 = full resolution) with self-attention.
        num_heads: attention heads.
        dropout: dropout inside residual blocks.
        diffusion: forward process and prediction target.
        objective: noise-level sampling and loss weighting.
        sampler: default sampler for ``polydiff test`` / ``polydiff sample``.
        training: optimiser settings and fine-tuning start point.
        eval_num_samples: ``polydiff test``: samples drawn for MMD² (synthesis); held-out items used at most
            (super-resolution, inpainting).
        eval_batch_size: items generated per batch.
        pca_components: principal components of the PCA-Gaussian control.
        inpaint_fraction: inpainting: side of the central box to fill, as a fraction of every side.
        inpaint_steps: RePaint reverse steps.
        inpaint_resample: RePaint resampling rounds per step (U).
    """

    domain = "medical"

    def __init__(
        self,
        spatial_dims: Literal[2, 3] = 2,
        item_size: tuple[int, ...] = (48, 56),
        task: Task = "synthesis",
        sr_factor: int = 2,
        residual_scale: float = 5.0,
        sr_consistency: bool = True,
        model_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: tuple[int, ...] = (2,),
        num_heads: int = 4,
        dropout: float = 0.0,
        diffusion: DiffusionConfig = DiffusionConfig(),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        training: TrainingConfig = TrainingConfig(),
        eval_num_samples: int = 128,
        eval_batch_size: int = 64,
        pca_components: int = 10,
        inpaint_fraction: float = 0.35,
        inpaint_steps: int = 50,
        inpaint_resample: int = 5,
    ) -> None:
        super().__init__(diffusion, objective, sampler, training)
        if spatial_dims not in (2, 3) or len(item_size) != spatial_dims:
            raise PolydiffError(f"item_size {tuple(item_size)} must have spatial_dims={spatial_dims} sizes; set "
                                "--model.item_size to the DataModule's slice_size / crop_size")
        self.network = UNetND(spatial_dims, 1, 1 if task == "super_resolution" else 0, model_channels, channel_mult,
                              num_res_blocks, attention_levels, num_heads, dropout)
        need = self.network.divisor * (sr_factor if task == "super_resolution" else 1)
        if any(s % need for s in item_size):
            raise PolydiffError(f"item_size {tuple(item_size)} must be divisible by {need} (2^(levels-1) of channel_mult"
                                f"={tuple(channel_mult)}{' times sr_factor' if task == 'super_resolution' else ''}); "
                                "change --data.slice_size/crop_size and --model.item_size, or --model.channel_mult")
        if not 0 < inpaint_fraction < 1:
            raise PolydiffError(f"inpaint_fraction must be in (0, 1), got {inpaint_fraction}; set --model.inpaint_fraction")
        self.spatial_dims, self.item_size, self.task = spatial_dims, tuple(item_size), task
        self.sr_factor, self.residual_scale, self.sr_consistency = sr_factor, residual_scale, sr_consistency
        self.eval_num_samples, self.eval_batch_size, self.pca_components = eval_num_samples, eval_batch_size, pca_components
        self.inpaint_fraction, self.inpaint_steps, self.inpaint_resample = inpaint_fraction, inpaint_steps, inpaint_resample
        # the grid generated items are written on; filled from the data at fit time, kept in the checkpoint
        self.register_buffer("reference_affine", torch.eye(4, dtype=torch.float64))
        self.register_buffer("reference_intensity", torch.tensor([-1.0, 1.0], dtype=torch.float64))
        self.register_buffer("reference_header", torch.zeros(HEADER_BYTES, dtype=torch.uint8))
        self._data: Optional[MedicalData] = None
        self._reference: Optional[dict[str, Tensor]] = None
        self._test_items: list[Tensor] = []
        self.save_hyperparameters()

    # ------------------------------------------------------------------ data
    def connect_data(self, datamodule: Any) -> None:
        """Check the DataModule against :class:`MedicalData` and this model's settings; keep its reference grid."""
        if not isinstance(datamodule, MedicalData):
            raise PolydiffError(f"{type(datamodule).__name__} does not provide what MedicalDiffusion needs (spatial_dims, "
                                "item_size, split_tensor, reference_geometry, read_input); use "
                                "polydiff.datasets.medical.SliceDataModule or CropDataModule")
        if datamodule.spatial_dims != self.spatial_dims or tuple(datamodule.item_size) != self.item_size:
            raise PolydiffError(f"the data gives {datamodule.spatial_dims}D items of {tuple(datamodule.item_size)} but "
                                f"--model.spatial_dims={self.spatial_dims}, --model.item_size={list(self.item_size)}; "
                                "set the model's to the data's")
        self._data = datamodule
        if self._trainer is None or self.trainer.state.fn == "fit":  # tests keep the grid of the checkpoint
            self.set_reference_geometry(datamodule.reference_geometry())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # the EMA callback averages buffers too and writes its copy: put the exact reference grid back
        if self._reference is not None:
            for name in ("reference_affine", "reference_intensity", "reference_header"):
                checkpoint["state_dict"][name] = self._reference[name].clone()

    def set_reference_geometry(self, geometry: dict[str, Any]) -> None:
        """Store ``geometry`` (affine, header, intensity range) as the grid generated items are written on."""
        self.reference_affine.copy_(torch.as_tensor(np.asarray(geometry["affine"]), dtype=torch.float64))
        lo, hi = geometry.get("intensity_range") or (-1.0, 1.0)
        self.reference_intensity.copy_(torch.tensor([lo, hi], dtype=torch.float64))
        block = np.frombuffer(geometry.get("header") or b"", dtype=np.uint8)[:HEADER_BYTES]
        self.reference_header.zero_()
        self.reference_header[: len(block)] = torch.from_numpy(block.copy())
        self._reference = {name: getattr(self, name).detach().cpu().clone()
                           for name in ("reference_affine", "reference_intensity", "reference_header")}

    def reference_geometry(self) -> dict[str, Any]:
        """The geometry of generated items (as :meth:`MedicalData.reference_geometry`), from the checkpoint."""
        raw = self.reference_header.cpu().numpy().tobytes()
        # a NIfTI header starts with its own size (348 or 540) in the file's byte order; zeros: no header stored
        size = next((s for s in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")) if s in (348, 540)),
                    0)
        return {"affine": self.reference_affine.cpu().numpy(), "header": raw[:size] if size else None,
                "axcodes": None, "intensity_range": tuple(self.reference_intensity.cpu().tolist())}

    @staticmethod
    def _items(batch: Any) -> Tensor:
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    # ------------------------------------------------------------------ the domain's side of the boundary
    def encode(self, batch: Any) -> DiffusionBatch:
        x = self._items(batch)
        if tuple(x.shape[1:]) != (1, *self.item_size):
            raise PolydiffError(f"items of shape {tuple(x.shape[1:])} do not fit a model of {(1, *self.item_size)}; set "
                                "--model.item_size to the DataModule's slice_size / crop_size")
        if self.task != "super_resolution":
            return DiffusionBatch(x)
        up = self.interpolated(x)
        return DiffusionBatch((x - up) * self.residual_scale, up)

    def interpolated(self, x: Tensor) -> Tensor:
        """The SR condition of high-resolution items: block-averaged by ``sr_factor``, linearly upsampled back."""
        return controls.interpolate_up(self.downsample(x), self.sr_factor)

    def downsample(self, x: Tensor) -> Tensor:
        return controls.block_downsample(x, self.sr_factor)

    def decode(self, x: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """Generated tensors to items in [-1, 1] (super-resolution: the interpolated input ``cond`` plus the residual)."""
        if self.task == "super_resolution":
            if cond is None:
                raise PolydiffError("decoding a super-resolution residual needs its interpolated input")
            x = cond + x / self.residual_scale
        return x.clamp(-1, 1)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``polydiff predict``: super-resolved (SR), inpainted or newly generated items, one per test item."""
        x = self._items(batch)
        if self.task == "super_resolution":
            return self.super_resolve(self.downsample(x), seed=batch_idx)
        if self.task == "inpainting":
            return self.inpaint(x, box_mask(self.item_size, self.inpaint_fraction), seed=batch_idx)
        return self.sample_items(x.shape[0], seed=batch_idx)

    # ------------------------------------------------------------------ Python API
    @torch.no_grad()
    def sample_items(self, n: int, sampler: Optional[SamplerConfig] = None, seed: int = 0,
                     progress: bool = False) -> Tensor:
        """``n`` generated items ``[n, 1, *item_size]`` in [-1, 1] (batches of ``eval_batch_size`` use ``seed + k``)."""
        if self.task == "super_resolution":
            raise PolydiffError("a super-resolution model needs low-resolution inputs: call super_resolve")
        out, bs = [], max(1, self.eval_batch_size)
        for k, start in enumerate(range(0, n, bs)):
            m = min(bs, n - start)
            out.append(self.decode(self.generate((m, 1, *self.item_size), None, sampler, seed + k, progress)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def super_resolve(self, lowres: Tensor, sampler: Optional[SamplerConfig] = None, seed: int = 0) -> Tensor:
        """``[B, 1, *low]`` in [-1, 1] to ``[B, 1, *(low * sr_factor)]`` (any size; padded to the U-Net's multiple)."""
        if self.task != "super_resolution":
            raise PolydiffError(f"this model was trained for {self.task}, not super_resolution")
        f = self.sr_factor
        padded, size = pad_to_multiple(lowres.to(self.device).float(), max(1, self.network.divisor // f))
        out = []
        bs = max(1, self.eval_batch_size)
        for k, start in enumerate(range(0, len(padded), bs)):
            lr = padded[start:start + bs]
            up = controls.interpolate_up(lr, f)
            x = self.decode(self.generate(tuple(up.shape), up, sampler, seed + k), up)
            if self.sr_consistency:
                x = self.project(x, lr)
            out.append(x[(slice(None), slice(None), *(slice(0, s * f) for s in size))].cpu())
        return torch.cat(out)

    def project(self, x: Tensor, lowres: Tensor) -> Tensor:
        """The closest (least squares) volume to ``x`` whose block averages equal ``lowres``."""
        err = lowres - self.downsample(x)
        return (x + F.interpolate(err, scale_factor=float(self.sr_factor), mode="nearest")).clamp(-1, 1)

    @torch.no_grad()
    def inpaint(self, x: Tensor, known: Tensor, steps: Optional[int] = None, resample: Optional[int] = None,
                seed: int = 0) -> Tensor:
        """Regenerate the entries of ``x`` (``[B, 1, *spatial]`` in [-1, 1]) where ``known == 0`` with RePaint."""
        if self.task == "super_resolution":
            raise PolydiffError("inpainting needs an unconditional model (task synthesis or inpainting)")
        padded, size = pad_to_multiple(x.to(self.device).float(), self.network.divisor)
        mask, _ = pad_to_multiple(known.to(self.device).float().expand(x.shape[0], *x.shape[1:]), self.network.divisor)
        was_training = self.training
        self.eval()
        try:
            out = inpaint_core(self.denoiser, padded, mask, steps=steps or self.inpaint_steps,
                               resample=resample or self.inpaint_resample, generator=torch.Generator().manual_seed(seed),
                               sigma_min=self.sampler_config.sigma_min, sigma_max=self.sampler_config.sigma_max)
        finally:
            self.train(was_training)
        return out.float().clamp(-1, 1)[(slice(None), slice(None), *(slice(0, s) for s in size))].cpu()

    def sample_native(self, n: int, sampler: SamplerConfig, seed: int, lowres: Optional[Tensor] = None,
                      items: Optional[Tensor] = None, known: Optional[Tensor] = None) -> Tensor:
        """``model.sample(n, ...)``: ``[n, 1, *size]`` in [-1, 1]. Synthesis: new items. Super-resolution: ``lowres=``
        ``[n, 1, *low]``, returned ``sr_factor`` times finer. Inpainting: ``items=`` ``[n, 1, *size]`` with ``known=``
        (1 known, 0 to fill; default: all but the central box of ``inpaint_fraction``)."""
        if self.task == "super_resolution":
            if lowres is None or len(lowres) != n:
                raise PolydiffError(f"a super-resolution model samples from low-resolution inputs: pass lowres=[{n}, 1, "
                                    "...] in [-1, 1]")
            return self.super_resolve(lowres, sampler, seed)
        if items is not None:
            if len(items) != n:
                raise PolydiffError(f"items= holds {len(items)} items but n={n}; pass one item per sample")
            mask = box_mask(tuple(items.shape[2:]), self.inpaint_fraction) if known is None else known
            return self.inpaint(items, mask, seed=seed)
        return self.sample_items(n, sampler, seed)

    # ------------------------------------------------------------------ files
    def write_predictions(self, prediction: Any, batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        """``polydiff predict`` with a prediction writer: each predicted item (new, inpainted, or super-resolved from its
        own block average, so on the items' grid) as ``<prefix>_<k>.nii.gz`` and ``.png`` on the reference grid."""
        geometry = self.reference_geometry()
        paths: list[Path] = []
        for k, item in enumerate(prediction):
            paths += io.write_item(item, geometry, Path(out_dir) / f"{prefix}_{k:03d}")
        return paths

    def write_samples(self, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                      input: Optional[dict[str, Any]] = None) -> list[Path]:
        """Write NIfTI files (``00000.nii.gz``) and orthogonal-slice PNGs (``00000.png``).

        ``input`` (what the DataModule's ``read_input`` returns for ``polydiff sample --input FILE``): super-resolution
        writes ``input``, ``linear`` (interpolation) and ``0000k_sr`` on the refined grid; inpainting writes ``input``,
        ``masked`` and ``0000k_inpainted`` on the input's grid. 2D models treat the axial slices of the file as a batch.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(input, (str, Path)):
            raise PolydiffError(f"write_samples got the path {input}; pass the DataModule's read_input({str(input)!r}) "
                                "(polydiff sample does so once the trainer reads inputs through the DataModule)")
        if input is None:
            if self.task == "super_resolution":
                raise PolydiffError("a super-resolution model needs a low-resolution volume: polydiff sample --input "
                                    "FILE.nii.gz")
            geometry, paths = self.reference_geometry(), []
            for i, item in enumerate(self.sample_items(num_samples, sampler, seed, progress=True)):
                paths += io.write_item(item, geometry, out_dir / f"{i:05d}")
            return paths
        if self.task == "synthesis":
            raise PolydiffError("a synthesis model takes no --input; use the inpainting or super-resolution recipe")
        volume, geometry = input["volume"].float(), dict(input["geometry"])
        batch = volume.permute(2, 0, 1)[:, None] if self.spatial_dims == 2 else volume[None, None]
        unbatch = (lambda b: b[:, 0].permute(1, 2, 0)) if self.spatial_dims == 2 else (lambda b: b[0, 0])
        paths = io.write_item(volume, geometry, out_dir / "input")
        if self.task == "super_resolution":
            factors = (self.sr_factor,) * 2 + ((self.sr_factor,) if self.spatial_dims == 3 else (1,))
            fine = {**geometry, "affine": upsampled_affine(geometry["affine"], factors)}
            paths += io.write_item(unbatch(controls.interpolate_up(batch, self.sr_factor)), fine, out_dir / "linear")
            for k in range(num_samples):
                paths += io.write_item(unbatch(self.super_resolve(batch, sampler, seed + k)), fine, out_dir / f"{k:05d}_sr")
            return paths
        known = box_mask(tuple(batch.shape[2:]), self.inpaint_fraction)
        paths += io.write_item(unbatch(batch * known + (-1) * (1 - known)), geometry, out_dir / "masked")
        for k in range(num_samples):
            paths += io.write_item(unbatch(self.inpaint(batch, known, seed=seed + k)), geometry,
                                   out_dir / f"{k:05d}_inpainted")
        return paths

    # ------------------------------------------------------------------ evaluation
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._test_items.append(self._items(batch).detach().cpu())

    def on_test_epoch_start(self) -> None:
        self._test_items = []

    def on_test_epoch_end(self) -> None:
        real = torch.cat(self._test_items)
        if self.task == "synthesis":
            if self._data is None:
                raise PolydiffError("synthesis metrics need the training items for their controls: run polydiff test "
                                    "with the recipe's --data")
            table = evaluation.synthesis_table(self, real, self._data.split_tensor("train"))
        elif self.task == "super_resolution":
            table = evaluation.super_resolution_table(self, real[: self.eval_num_samples])
        else:
            table = evaluation.inpainting_table(self, real[: self.eval_num_samples])
        for k, v in table.items():
            print(f"{k:>32s}  {v:.5f}")
        self.report_metrics(table, {"task": self.task, "num_test_items": len(real)})
