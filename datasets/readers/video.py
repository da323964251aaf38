"""Reading the user's videos: video files (MP4, AVI, MOV, MKV, WebM with PyAV; GIF with Pillow) and folders of frames
(PNG / JPEG, in name order), as ``[C, T, H, W]`` tensors in [-1, 1], with errors that name the file and the fix.

Every frame is converted to grayscale or RGB, its shorter side resized to ``size`` and centre-cropped to a square
(:mod:`polydiff.datasets.readers.image` does the same for single images).
"""

from pathlib import Path
from typing import Iterator

import torch
from PIL import Image, ImageSequence, UnidentifiedImageError
from torch import Tensor

from polydiff.core.utils import PolydiffError
from polydiff.datasets.readers.image import centre_crop, list_images, open_image, pil_to_tensor, resize_shorter

#: files decoded with PyAV (FFmpeg)
AV_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
#: files decoded with Pillow
GIF_SUFFIXES = (".gif",)
VIDEO_SUFFIXES = AV_SUFFIXES + GIF_SUFFIXES


def _frame(img: Image.Image, size: int, channels: int) -> Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    return centre_crop(pil_to_tensor(resize_shorter(img, size)), size)


def _gif_frames(path: Path) -> Iterator[Image.Image]:
    try:
        with Image.open(path) as img:
            for frame in ImageSequence.Iterator(img):
                yield frame.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise PolydiffError(f"video {path} cannot be decoded ({type(exc).__name__}: {exc}); re-encode it (GIF, MP4) "
                            "or remove it from the folder") from None


def _av_frames(path: Path) -> Iterator[Image.Image]:
    try:
        import av
    except ImportError:
        raise PolydiffError(f"reading {path.suffix} video {path} needs PyAV: pip install av (or convert the videos to "
                            "GIF or to folders of PNG frames)") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PolydiffError(f"video {path} has no video stream; remove it from the folder")
            for frame in container.decode(video=0):
                yield frame.to_image()
    except PolydiffError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many FFmpeg error types that all mean "cannot decode"
        raise PolydiffError(f"video {path} cannot be decoded ({type(exc).__name__}: {exc}); re-encode it (e.g. H.264 "
                            "MP4) or remove it from the folder") from None


def _folder_frames(path: Path, channels: int) -> Iterator[Image.Image]:
    files = list_images(path)
    if not files:
        raise PolydiffError(f"frame folder {path} holds no PNG/JPEG frames; put the frames there as 00000.png, "
                            "00001.png, ... or remove the folder")
    for f in files:
        yield open_image(f, channels)


def frame_source(path: Path | str, channels: int) -> Iterator[Image.Image]:
    """The frames of a video file or a folder of frames, in order, as PIL images (decoded lazily)."""
    path = Path(path)
    if path.is_dir():
        return _folder_frames(path, channels)
    if not path.is_file():
        raise PolydiffError(f"video {path} does not exist; pass a video file ({', '.join(VIDEO_SUFFIXES)}) or a "
                            "folder of PNG frames")
    suffix = path.suffix.lower()
    if suffix in GIF_SUFFIXES:
        return _gif_frames(path)
    if suffix in AV_SUFFIXES:
        return _av_frames(path)
    raise PolydiffError(f"video {path} has an unknown suffix {suffix or '<none>'}; use one of "
                        f"{', '.join(VIDEO_SUFFIXES)} or a folder of PNG frames")


def read_video(path: Path | str, size: int, channels: int, frame_stride: int = 1, max_frames: int | None = None,
               min_frames: int = 1) -> Tensor:
    """Read a video file or frame folder as ``[C, T, size, size]`` in [-1, 1].

    Args:
        path: video file or folder of frames.
        size: side of the square frames (shorter side resized, then centre-cropped).
        channels: 1 (grayscale) or 3 (RGB).
        frame_stride: keep every ``frame_stride``-th frame.
        max_frames: stop after this many kept frames (None: all).
        min_frames: fewer kept frames than this is an error naming the file and the fix.
    """
    if frame_stride < 1:
        raise PolydiffError(f"frame_stride must be at least 1, got {frame_stride}; set --data.frame_stride")
    frames: list[Tensor] = []
    total = 0
    for i, img in enumerate(frame_source(path, channels)):
        total += 1
        if i % frame_stride == 0:
            frames.append(_frame(img, size, channels))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if len(frames) < min_frames:
        raise PolydiffError(f"video {path} has {total} frames, {len(frames)} at frame_stride {frame_stride}: shorter "
                            f"than the clip length {min_frames}; lower --data.clip_length or --data.frame_stride, or "
                            "remove the video")
    return torch.stack(frames, dim=1)


def read_first_frame(path: Path | str, size: int, channels: int) -> Tensor:
    """One image file as ``[C, size, size]`` in [-1, 1] (``polydiff sample --input IMAGE``)."""
    return _frame(open_image(path, channels), size, channels)


def list_videos(root: Path) -> list[Path]:
    """Video files and frame folders directly inside ``root``, sorted by name."""
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")
                  and ((p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and list_images(p))))
