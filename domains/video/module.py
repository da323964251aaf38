"""``VideoDiffusion``: video diffusion with a space-time U-Net inflated from the image U-Net, on the shared core.

Batches are ``(videos [B, C, T, H, W] in [-1, 1], labels)``. This file says how clips become tensors to diffuse (with
random known frames as a condition, the loss on the other frames), what the null condition is, what the model needs from
its data, how it is evaluated against its controls, and hands sampling to :mod:`.api` and files to :mod:`.writers`.
"""

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from polydiff.core.base import TrainingConfig, read_checkpoint
from polydiff.core.module import DiffusionBatch, DiffusionConfig, DiffusionModule, ObjectiveConfig
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.video import writers
from polydiff.domains.video.api import VideoSamplingAPI
from polydiff.domains.video.data import VideoData
from polydiff.domains.video.inflation import inflate_image_weights
from polydiff.domains.video.labeler import ClipLabeler
from polydiff.domains.video.network import FrameCondition, SpaceTimeUNet

#: weight of the labeler's cross-entropy in the training loss (see ``training_loss``)
LABEL_LOSS_WEIGHT = 0.1


class VideoDiffusion(VideoSamplingAPI, DiffusionModule):
    """Diffusion model of ``frames`` x ``channels`` x ``image_size`` x ``image_size`` clips, optionally class-conditional.

    Start from an image checkpoint with ``--model.training.init_from`` (the spatial layers load by name, the temporal
    layers keep their zero initialisation, so training starts from the image model applied frame by frame).

    Args:
        image_size: height and width of the frames (must match the DataModule's).
        channels: 1 for grayscale, 3 for RGB (must match the DataModule's).
        frames: frames per training clip (must match the DataModule's).
        num_classes: number of classes for class conditioning (0 = unconditional); class ``num_classes`` is the null
            class of condition dropout and guidance.
        model_channels: base width of the U-Net (as the image model's, to inflate it).
        channel_mult: U-Net width multiplier per resolution level.
        num_res_blocks: residual blocks per U-Net level.
        attention_resolutions: resolutions (pixels) with spatial self-attention.
        num_heads: spatial attention heads.
        dropout: dropout inside the residual blocks.
        temporal_heads: heads of the temporal attention.
        max_distance: frame offsets beyond this share one relative position bias (clips may be longer than trained).
        spacetime_resolutions: resolutions (pixels) where the temporal blocks also attend across space and time
            together (cheap at low resolution; lets frames follow an object that moves across the feature map).
        cross_frame_resolutions: resolutions (pixels) where the temporal blocks also let every frame attend to all
            pixels of the clip's first frame and of its previous frame (carries the identity to every frame at full
            resolution; see :class:`~polydiff.domains.video.network.CrossFrameAttention`).
        clip_context: pool one vector per clip from all its frames at the bottleneck and add it to every frame's
            embedding, where the class label goes (the identity of a moving object, whatever pixel it is at; see
            :class:`~polydiff.domains.video.network.ClipContext`).
        train_spatial: train the image layers too (False: freeze them and train only the temporal layers and the
            known-frame input, as AnimateDiff's motion modules on a frozen image model).
        image_prob: joint image + video training: the share of training batches in which each clip is replaced by one
            of its frames, a one-frame video with the temporal layers masked.
        known_frames_prob: share of training clips given some frames as a condition (half of them the first frame,
            half the first ``context_frames``); the loss counts the other frames only.
        context_frames: known frames at the start of each window when continuing a clip (``extend``).
        infer_class: a class-level bottleneck for identity: train a :class:`~polydiff.domains.video.labeler.ClipLabeler`
            beside the denoiser (the class prior and a small CNN on clean frames), and let it draw the class of every
            clip sampled without one (from the prior; from the given frames when animating or continuing), which all
            its frames are generated with under guidance (needs labels, ``num_classes > 0``).
        diffusion: forward process and prediction target.
        objective: noise-level sampling, loss weighting, condition dropout.
        sampler: default sampler (previews, ``polydiff test``, ``polydiff sample``), including the guidance scale.
        training: optimiser settings and the image (or video) checkpoint to start from (``training.init_from``).
        preview_every_n_epochs: write a filmstrip of samples into ``<run dir>/previews/`` every this many epochs
            (0 = never).
        preview_samples: clips in a preview.
        eval_num_samples: clips generated by ``polydiff test`` per row of its table.
        eval_batch_size: clips generated per batch.
        eval_controls: also score the model-based controls in ``polydiff test``: the inflated image model before temporal
            training (needs ``training.init_from``) and, after joint training, the model sampled frame by frame.
        eval_continuation: also score clips continued to twice the training length.
        write_mp4: ``polydiff sample`` also writes an MP4 per clip (needs PyAV).
    """

    domain = "video"

    def __init__(
        self,
        image_size: int = 16,
        channels: int = 1,
        frames: int = 8,
        num_classes: int = 10,
        model_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (4,),
        num_heads: int = 4,
        dropout: float = 0.1,
        temporal_heads: int = 4,
        max_distance: int = 8,
        spacetime_resolutions: tuple[int, ...] = (4,),
        cross_frame_resolutions: tuple[int, ...] = (),
        clip_context: bool = False,
        train_spatial: bool = True,
        image_prob: float = 0.0,
        known_frames_prob: float = 0.5,
        context_frames: int = 2,
        infer_class: bool = False,
        diffusion: DiffusionConfig = DiffusionConfig(),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        training: TrainingConfig = TrainingConfig(),
        preview_every_n_epochs: int = 5,
        preview_samples: int = 8,
        eval_num_samples: int = 256,
        eval_batch_size: int = 64,
        eval_controls: bool = True,
        eval_continuation: bool = True,
        write_mp4: bool = True,
    ) -> None:
        super().__init__(diffusion, objective, sampler, training)
        if channels not in (1, 3):
            raise PolydiffError(f"channels must be 1 or 3, got {channels}; set --model.channels")
        if num_classes < 0:
            raise PolydiffError(f"num_classes must be >= 0, got {num_classes}; set --model.num_classes")
        if frames < 2:
            raise PolydiffError(f"frames must be at least 2, got {frames}; set --model.frames (and --data.frames)")
        if not 1 <= context_frames < frames:
            raise PolydiffError(f"context_frames must be between 1 and frames - 1 = {frames - 1}, got {context_frames}; "
                                "set --model.context_frames")
        for name, p in (("image_prob", image_prob), ("known_frames_prob", known_frames_prob)):
            if not 0 <= p <= 1:
                raise PolydiffError(f"{name} must be in [0, 1], got {p}; set --model.{name}")
        try:
            self.network = SpaceTimeUNet(image_size, channels, model_channels, channel_mult, num_res_blocks,
                                         attention_resolutions, num_heads, dropout, num_classes, temporal_heads,
                                         max_distance, spacetime_resolutions, cross_frame_resolutions,
                                         clip_context)
        except ValueError as exc:
            raise PolydiffError(f"U-Net settings do not fit: {exc}; change --model.image_size, --model.channel_mult, "
                                "--model.num_heads or --model.temporal_heads") from None
        if infer_class and num_classes == 0:
            raise PolydiffError("infer_class needs class labels (num_classes > 0); set --model.infer_class false for "
                                "unlabelled videos")
        self.labeler = ClipLabeler(channels, num_classes) if infer_class else None
        if not train_spatial:
            for p in self.network.spatial_parameters():
                p.requires_grad_(False)
        self.image_size = image_size
        self.channels = channels
        self.frames = frames
        self.num_classes = num_classes
        self.image_prob = image_prob
        self.known_frames_prob = known_frames_prob
        self.context_frames = context_frames
        self.preview_every_n_epochs = preview_every_n_epochs
        self.preview_samples = preview_samples
        self.eval_num_samples = eval_num_samples
        self.eval_batch_size = eval_batch_size
        self.eval_controls = eval_controls
        self.eval_continuation = eval_continuation
        self.write_mp4 = write_mp4
        self.save_hyperparameters()

    # ------------------------------------------------------------------ the domain's side of the boundary
    def encode(self, batch: Any) -> DiffusionBatch:
        videos, labels = batch
        want = (self.channels, self.frames, self.image_size, self.image_size)
        if tuple(videos.shape[1:]) != want:
            raise PolydiffError(f"clips of shape {tuple(videos.shape[1:])} do not fit a model of {want} (C, T, H, W); "
                                "set --model.frames / --model.image_size / --model.channels to the DataModule's")
        labels = self._check_labels(labels)
        b = videos.shape[0]
        if self.training and self.image_prob > 0 and float(torch.rand(())) < self.image_prob:
            # joint image + video training: one frame of each clip, a one-frame video (temporal layers masked)
            pick = torch.randint(0, self.frames, (b,), device=videos.device)
            return DiffusionBatch(videos[torch.arange(b, device=videos.device), :, pick][:, :, None], labels)
        known = torch.zeros(b, self.frames, device=videos.device)
        if self.training and self.known_frames_prob > 0:
            given = torch.rand(b, device=videos.device) < self.known_frames_prob
            count = torch.where(torch.rand(b, device=videos.device) < 0.5, 1, self.context_frames)
            known = (torch.arange(self.frames, device=videos.device)[None] < count[:, None]) & given[:, None]
            known = known.float()
        loss_mask = (1 - known)[:, None, :, None, None]
        return DiffusionBatch(videos, FrameCondition(labels, videos, known), loss_mask)

    def training_loss(self, batch: DiffusionBatch) -> Tensor:
        """The denoising loss, plus the labeler's cross-entropy on the clean clips when ``infer_class``."""
        loss = super().training_loss(batch)
        labels = batch.cond.labels if isinstance(batch.cond, FrameCondition) else batch.cond
        if self.labeler is None or labels is None:
            return loss
        label_loss = self.labeler.loss(batch.x0, labels)
        if self._trainer is not None:
            self.log("train/label_loss", label_loss.mean(), batch_size=len(labels))
        # Adam's steps do not depend on the scale of a loss, but gradient clipping sees the sum: a small weight keeps
        # the labeler's early cross-entropy from clipping the denoiser's gradients
        return loss + LABEL_LOSS_WEIGHT * label_loss

    def _check_labels(self, labels: Tensor) -> Optional[Tensor]:
        if self.num_classes == 0:
            return None
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise PolydiffError(f"class labels {int(labels.min())}..{int(labels.max())} do not fit num_classes="
                                f"{self.num_classes}; set --model.num_classes (0 for unlabelled videos)")
        return labels.long()

    def _null_labels(self, labels: Optional[Tensor]) -> Optional[Tensor]:
        return None if labels is None or self.num_classes == 0 else torch.full_like(labels, self.num_classes)

    def null_condition(self, cond: Any) -> Any:
        if isinstance(cond, FrameCondition):
            return cond.with_labels(self._null_labels(cond.labels))
        return self._null_labels(cond)

    def drop_condition(self, cond: Any, drop: Tensor) -> Any:
        labels = cond.labels if isinstance(cond, FrameCondition) else cond
        if labels is not None and self.num_classes > 0:
            labels = torch.where(drop.to(labels.device), torch.full_like(labels, self.num_classes), labels)
        return cond.with_labels(labels) if isinstance(cond, FrameCondition) else labels

    def decode(self, x: Tensor) -> Tensor:
        """Generated clips in [-1, 1] to [0, 1] (``polydiff predict`` returns these)."""
        return (x.clamp(-1, 1) + 1) / 2

    def input_options(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": self.channels}

    def connect_data(self, datamodule: Any) -> None:
        """Check that the data's frame size, channels, clip length and classes are the model's."""
        require_video_data(datamodule)
        for name in ("image_size", "channels", "frames"):
            theirs = getattr(datamodule, name)
            if theirs != getattr(self, name):
                raise PolydiffError(f"--model.{name}={getattr(self, name)} but the data has {name}={theirs}; set both "
                                    "to the same value")
        if self.num_classes and datamodule.num_classes != self.num_classes:
            raise PolydiffError(f"--model.num_classes={self.num_classes} but the data has {datamodule.num_classes} "
                                f"classes; set --model.num_classes {datamodule.num_classes} (0 for an unconditional "
                                "model)")

    def load_weights(self, path: str, strict: bool = True) -> list[str]:
        """Load a video checkpoint's weights, or inflate an image checkpoint's (``training.init_from``: see
        :mod:`polydiff.domains.video.inflation`)."""
        checkpoint = read_checkpoint(path)
        if checkpoint.get("polydiff_domain") == "image":
            return inflate_image_weights(self, checkpoint, path)
        return super().load_weights(path, strict)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``polydiff predict``: one new clip ``[C, T, H, W]`` in [0, 1] per test clip, with that clip's class."""
        _, labels = batch
        classes = labels.long().cpu() if self.num_classes and bool((labels >= 0).all()) else None
        seed = batch_idx * self.trainer.world_size + self.global_rank
        return self.sample_videos(len(labels), classes, seed=seed)

    def write_predictions(self, prediction: Tensor, batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        """``polydiff predict``: a GIF per predicted clip (``<prefix>_003.gif``) and ``<prefix>_filmstrip.png``."""
        names = [f"{prefix}_{i:03d}" for i in range(len(prediction))]
        return [*writers.write_clips(prediction, out_dir, names, mp4=False),
                writers.save_filmstrip(prediction, out_dir / f"{prefix}_filmstrip.png")]

    # ------------------------------------------------------------------ files (see writers.py)
    def write_samples(self, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                      input: Optional[Tensor] = None) -> list[Path]:
        """GIFs, MP4s and a filmstrip; with ``input`` an animated first frame or a continued clip: see
        :func:`polydiff.domains.video.writers.write_samples`."""
        return writers.write_samples(self, out_dir, num_samples, sampler, seed, input)

    def on_validation_epoch_end(self) -> None:
        writers.write_preview(self)

    # ------------------------------------------------------------------ evaluation (polydiff test)
    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: the metrics compare generated clips with the whole test split (read in
        :meth:`on_test_epoch_end`)."""

    def on_test_epoch_end(self) -> None:
        from polydiff.domains.video.evaluation import evaluate

        dm = require_video_data(self.trainer.datamodule)
        table: dict[str, dict[str, float]] = {}
        if self.trainer.is_global_zero:
            table = evaluate(self, dm)
        table = self.trainer.strategy.broadcast(table, src=0)
        metrics = dict(table["model"])
        for row, values in table.items():
            if row != "model":
                metrics.update({f"{row}/{k}": v for k, v in values.items()})
        cfg = self.sampler_config
        samples = ("unconditional (null class)" if self.labeler is None
                   else "unconditional: each clip's class drawn by the labeler from its prior, then guided")
        self.report_metrics(metrics, extra={"table": table, "num_samples": self.eval_num_samples,
                                            "sampler": {"name": cfg.name, "steps": cfg.steps},
                                            "samples": samples})


def require_video_data(datamodule: Any) -> VideoData:
    """``datamodule`` if it fits :class:`VideoData`, else a clear error."""
    if not isinstance(datamodule, VideoData):
        raise PolydiffError(f"the video model needs a video DataModule (image_size, channels, frames, num_classes, "
                            f"split_tensors), got {type(datamodule).__name__}; use MovingDigitsDataModule or "
                            "VideoFolderDataModule")
    return datamodule
