"""Video DataModules: moving digits generated from scikit-learn's real handwritten digits (embedded, no download), and
the user's own videos (a folder of video files or of frame folders).

Batches are ``(videos [B, C, T, H, W] in [-1, 1], labels [B])`` (labels -1 when unlabelled). Both hold their clips in
memory and split them once by seed; the video model's evaluation reads whole splits through ``split_tensors`` and
``polydiff sample --input`` reads an image (a first frame to animate) or a video (to continue) through ``read_input``.
"""

from pathlib import Path
from typing import Literal, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from polydiff.core.utils import PolydiffError
from polydiff.datasets.image_tensors import split_indices
from polydiff.datasets.readers import video as reader
from polydiff.datasets.readers.image import IMAGE_SUFFIXES
from polydiff.datasets.splits import SplitLoaders


def bounce_tracks(n: int, frames: int, room: int, max_speed: int, generator: torch.Generator) -> Tensor:
    """Integer top-left positions ``[n, frames, 2]`` (row, column) of sprites that move with constant speed inside
    ``[0, room]`` on each axis and bounce off the walls.

    Each axis has an integer velocity in ``[-max_speed, max_speed]`` (not both zero). A sprite whose next step would
    leave ``[0, room]`` reverses that axis's velocity before stepping, so every step moves by exactly ``|v|`` on each
    axis: the speed per axis is constant over the whole clip, bounces only flip its sign.
    """
    if not 1 <= max_speed <= room:
        raise PolydiffError(f"max_speed={max_speed} must be between 1 and the room the sprite has to move ({room} px); "
                            "set --data.max_speed or a larger --data.image_size")
    pos = torch.stack([torch.randint(0, room + 1, (n,), generator=generator) for _ in range(2)], dim=1)
    vel = torch.randint(-max_speed, max_speed + 1, (n, 2), generator=generator)
    while (still := (vel == 0).all(1)).any():
        vel[still] = torch.randint(-max_speed, max_speed + 1, (int(still.sum()), 2), generator=generator)
    track = [pos.clone()]
    for _ in range(frames - 1):
        nxt = pos + vel
        vel = torch.where((nxt < 0) | (nxt > room), -vel, vel)
        pos = pos + vel
        track.append(pos.clone())
    return torch.stack(track, dim=1)


def render_sprites(sprites: Tensor, tracks: Tensor, canvas: int) -> Tensor:
    """Paste ``sprites [n, k, s, s]`` (values in [0, 1]) at ``tracks [n, k, T, 2]`` on a black canvas: ``[n, 1, T,
    canvas, canvas]``, overlaps taking the brighter pixel."""
    n, k, s, _ = sprites.shape
    frames = tracks.shape[2]
    out = torch.zeros(n, frames, canvas, canvas)
    for i in range(n):
        for j in range(k):
            for t in range(frames):
                r, c = int(tracks[i, j, t, 0]), int(tracks[i, j, t, 1])
                region = out[i, t, r:r + s, c:c + s]
                out[i, t, r:r + s, c:c + s] = torch.maximum(region, sprites[i, j])
    return out[:, None]


def moving_digits(digits: Tensor, labels: Tensor, n: int, frames: int, canvas: int, sprite_size: int, num_digits: int,
                  max_speed: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` moving-digit videos from the pool ``digits [K, 8, 8]`` (values in [0, 1]) with labels ``[K]``.

    Returns ``(videos [n, 1, T, canvas, canvas] in [0, 1], labels [n] of the first digit, tracks [n, num_digits, T, 2]``
    of the sprites' top-left corners).
    """
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(digits), (n, num_digits), generator=gen)
    sprites = digits[pick.reshape(-1)][:, None]
    if sprite_size != sprites.shape[-1]:
        sprites = F.interpolate(sprites, size=(sprite_size, sprite_size), mode="bilinear", align_corners=False)
    sprites = sprites.clamp(0, 1).reshape(n, num_digits, sprite_size, sprite_size)
    tracks = bounce_tracks(n * num_digits, frames, canvas - sprite_size, max_speed, gen).reshape(n, num_digits, frames, 2)
    return render_sprites(sprites, tracks, canvas), labels[pick[:, 0]], tracks


class VideoTensorDataModule(SplitLoaders, L.LightningDataModule):
    """Base of the video DataModules: clips ``[N, C, T, H, W]`` in [-1, 1] with labels, held in memory per split.

    Subclasses implement :meth:`make_splits`.
    """

    #: number of classes (0: unlabelled); known after ``setup``
    num_classes: int = 0

    def __init__(self, batch_size: int, image_size: int, channels: int, frames: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.image_size = image_size
        self.channels = channels
        self.frames = frames
        self.num_workers = num_workers
        self._splits: Optional[dict[str, tuple[Tensor, Tensor]]] = None

    def make_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"train" | "val" | "test": (videos in [-1, 1], labels)}``."""
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def setup(self, stage: Optional[str] = None) -> None:
        if self._splits is None:
            self._splits = self.make_splits()

    def split_tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """``(videos [N, C, T, H, W] in [-1, 1], labels [N])`` of ``train``, ``val`` or ``test``."""
        self.setup()
        return self._splits[split]

    def _loader(self, split: str, train: bool) -> DataLoader:
        videos, labels = self.split_tensors(split)
        if len(videos) == 0:
            raise PolydiffError(f"the {split} split is empty ({self.describe()}); add videos or change "
                                "--data.val_fraction / --data.test_fraction")
        return DataLoader(TensorDataset(videos, labels), batch_size=self.batch_size, shuffle=train,
                          drop_last=train and len(videos) > self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def read_input(self, input: str, image_size: Optional[int] = None, channels: Optional[int] = None) -> Tensor:
        """``polydiff sample --input``: an image (PNG / JPEG) as the first frame ``[C, H, W]`` to animate, or a video
        (file or frame folder) as ``[C, T, H, W]`` to continue; in [-1, 1] at the model's size and channels."""
        size, ch = image_size or self.image_size, channels or self.channels
        path = Path(input)
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            return reader.read_first_frame(path, size, ch)
        return reader.read_video(path, size, ch)


class MovingDigitsDataModule(VideoTensorDataModule):
    """Moving digits: real 8x8 handwritten digits from scikit-learn (1797 scans, 10 classes) as sprites that move with
    constant velocity and bounce inside a black canvas; the label is the (first) digit's class.

    The digit scans are split first (by ``seed``), so validation and test videos show digits the model never saw.
    The default (1 digit, 16x16 canvas, 8x8 sprites, 8 frames) is small enough to train on a CPU.

    Args:
        batch_size: videos per batch.
        image_size: side of the square canvas in pixels.
        frames: frames per video.
        sprite_size: side of a digit sprite (the scans are 8x8; other sizes are resized bilinearly).
        num_digits: digits per video (1 or 2).
        max_speed: largest speed per axis in pixels per frame (integer velocities in [-max_speed, max_speed]).
        num_train: training videos.
        num_val: validation videos.
        num_test: test videos (the reference set of ``polydiff test``).
        val_fraction: share of the digit scans reserved for validation videos.
        test_fraction: share of the digit scans reserved for test videos.
        seed: seed of the digit split and of every video.
        num_workers: DataLoader worker processes.
    """

    num_classes = 10

    def __init__(self, batch_size: int = 16, image_size: int = 16, frames: int = 8, sprite_size: int = 8,
                 num_digits: int = 1, max_speed: int = 2, num_train: int = 4000, num_val: int = 128,
                 num_test: int = 1000, val_fraction: float = 0.05, test_fraction: float = 0.2, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__(batch_size, image_size, 1, frames, num_workers)
        self.save_hyperparameters()
        if num_digits not in (1, 2):
            raise PolydiffError(f"num_digits must be 1 or 2, got {num_digits}; set --data.num_digits")
        if not 1 <= sprite_size < image_size:
            raise PolydiffError(f"sprite_size {sprite_size} must be smaller than the canvas image_size {image_size}; "
                                "set --data.sprite_size / --data.image_size")
        if frames < 1:
            raise PolydiffError(f"frames must be at least 1, got {frames}; set --data.frames")
        self.sprite_size = sprite_size
        self.num_digits = num_digits
        self.max_speed = max_speed
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        #: top-left corner of every sprite, ``[N, num_digits, T, 2]``, per split (after ``setup``)
        self.tracks: dict[str, Tensor] = {}

    def describe(self) -> str:
        return "moving digits (sklearn load_digits)"

    def make_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        scans = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # pixel values are 0..16
        labels = torch.tensor(digits.target, dtype=torch.long)
        idx = split_indices(len(scans), self.val_fraction, self.test_fraction, self.seed)
        out = {}
        for k, (split, pool) in enumerate(sorted(idx.items())):
            videos, y, tracks = moving_digits(scans[pool], labels[pool], self.counts[split], self.frames,
                                              self.image_size, self.sprite_size, self.num_digits, self.max_speed,
                                              self.seed * 1000 + k + 1)
            out[split] = (videos * 2 - 1, y)
            self.tracks[split] = tracks
        return out


class VideoFolderDataModule(VideoTensorDataModule):
    """Your own videos: every video file (MP4 / AVI / MOV / MKV / WebM via PyAV, GIF via Pillow) and every folder of
    PNG / JPEG frames directly inside ``root`` is cut into consecutive clips of ``clip_length`` frames (after keeping
    every ``frame_stride``-th frame), frames resized (shorter side) and centre-cropped to ``image_size``. Unlabelled.

    Args:
        root: folder with the videos / frame folders.
        clip_length: frames per clip (the model's ``frames``); a video with fewer frames is an error.
        frame_stride: keep every this many frames (2 halves the frame rate).
        max_clips_per_video: at most this many clips from each video (0: all that fit).
        image_size: side of the square frames.
        channels: 1 (grayscale) or 3 (RGB).
        batch_size: clips per batch.
        val_fraction: share of the clips held out for validation.
        test_fraction: share of the clips held out for testing.
        seed: seed of the fixed split.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, root: Optional[str] = None, clip_length: int = 8, frame_stride: int = 1,
                 max_clips_per_video: int = 0, image_size: int = 32, channels: Literal[1, 3] = 3, batch_size: int = 8,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size, image_size, channels, clip_length, num_workers)
        self.save_hyperparameters()
        if channels not in (1, 3):
            raise PolydiffError(f"channels must be 1 or 3, got {channels}; set --data.channels")
        if clip_length < 1:
            raise PolydiffError(f"clip_length must be at least 1, got {clip_length}; set --data.clip_length")
        self.root = root
        self.clip_length = clip_length
        self.frame_stride = frame_stride
        self.max_clips_per_video = max_clips_per_video
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed

    def describe(self) -> str:
        return f"video folder {self.root}"

    def videos(self) -> list[Path]:
        """The video files and frame folders in ``root``; errors name the folder and the fix."""
        if not self.root:
            raise PolydiffError("VideoFolderDataModule needs a folder of videos: pass --data.root DIR")
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise PolydiffError(f"video folder {root} does not exist; pass an existing folder of videos as --data.root")
        found = reader.list_videos(root)
        if not found:
            raise PolydiffError(f"video folder {root} holds no videos ({', '.join(reader.VIDEO_SUFFIXES)}) and no "
                                "folders of PNG/JPEG frames; put the videos there as root/*.mp4 or root/<clip>/*.png")
        return found

    def clips(self, path: Path) -> Tensor:
        """Consecutive clips ``[K, C, clip_length, H, W]`` of one video."""
        limit = self.max_clips_per_video * self.clip_length if self.max_clips_per_video > 0 else None
        video = reader.read_video(path, self.image_size, self.channels, self.frame_stride, limit, self.clip_length)
        k = video.shape[1] // self.clip_length
        c, _, h, w = video.shape
        return video[:, :k * self.clip_length].reshape(c, k, self.clip_length, h, w).transpose(0, 1)

    def make_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        clips = torch.cat([self.clips(p) for p in self.videos()])
        labels = torch.full((len(clips),), -1, dtype=torch.long)
        idx = split_indices(len(clips), self.val_fraction, self.test_fraction, self.seed)
        return {k: (clips[v], labels[v]) for k, v in idx.items()}
