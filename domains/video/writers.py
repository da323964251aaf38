"""Files the video model writes: one GIF per clip (and an MP4 where PyAV is installed), a PNG filmstrip of all clips
(one row per clip, one column per frame), and the validation previews. The model's methods call these; they use only its
public Python API (:mod:`.api`)."""

from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image
from torch import Tensor

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.image import io


def _scale(size: int, min_side: int) -> int:
    return max(1, min_side // size)


def save_gif(video: Tensor, path: Path | str, fps: float = 8.0, min_side: int = 64) -> Path:
    """Write one clip ``[C, T, H, W]`` in [0, 1] as a looping GIF, enlarged (nearest) to about ``min_side`` pixels."""
    frames = io.to_uint8(video.transpose(0, 1))  # [T, H, W, C]
    scale = _scale(video.shape[-1], min_side)
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def save_mp4(video: Tensor, path: Path | str, fps: int = 8, min_side: int = 64) -> Optional[Path]:
    """Write one clip ``[C, T, H, W]`` in [0, 1] as an MPEG-4 video with PyAV; None when PyAV is not installed."""
    try:
        import av
    except ImportError:
        return None
    frames = io.to_uint8(video.transpose(0, 1))
    scale = _scale(video.shape[-1], min_side)
    h, w = frames.shape[1] * scale, frames.shape[2] * scale
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        for f in frames:
            img = Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f).convert("RGB")
            img = img.resize((stream.width, stream.height), Image.NEAREST)
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def save_filmstrip(videos: Tensor, path: Path | str) -> Path:
    """Write clips ``[N, C, T, H, W]`` in [0, 1] as one PNG grid: a row per clip, a column per frame."""
    n, c, t, h, w = videos.shape
    return io.save_grid(videos.transpose(1, 2).reshape(n * t, c, h, w), path, nrow=t)


def write_clips(videos: Tensor, out_dir: Path, names: list[str], mp4: bool) -> list[Path]:
    paths = []
    for video, name in zip(videos, names):
        paths.append(save_gif(video, out_dir / f"{name}.gif"))
        if mp4:
            written = save_mp4(video, out_dir / f"{name}.mp4")
            if written is not None:
                paths.append(written)
    return paths


def write_samples(model: Any, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                  input: Optional[Tensor] = None) -> list[Path]:
    """Write ``00000.gif`` ... (``00003_class3.gif`` for class-conditional models: the requested class), an MP4 beside
    each GIF when ``model.write_mp4`` and PyAV is installed, and ``filmstrip.png``.

    With ``input`` (what the DataModule read from ``polydiff sample --input``): a first frame ``[C, H, W]`` in [-1, 1]
    is animated ``num_samples`` times (``00000_animated.gif``, ...; ``input.png``); a clip ``[C, T, H, W]`` is continued
    by ``model.frames`` frames ``num_samples`` times (``00000_continued.gif``, ...). No class is given with input: a
    model with a labeler (``infer_class``) reads it from the input's frames.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = (model.channels, model.image_size, model.image_size)
    if input is not None:
        if input.ndim not in (3, 4) or (input.shape[0], *input.shape[-2:]) != size:
            raise PolydiffError(f"--input gave a tensor of shape {tuple(input.shape)} for a model of frames {size}; set "
                                "--data.image_size / --data.channels to the model's")
        x = (input.float() + 1) / 2
        if input.ndim == 3:
            videos = model.animate(x[None].expand(num_samples, -1, -1, -1), sampler=sampler, seed=seed, progress=True)
            paths = [io.save_png(x, out_dir / "input.png")]
            names = [f"{i:05d}_animated" for i in range(num_samples)]
        else:
            given = x[None].expand(num_samples, -1, -1, -1, -1)
            videos = model.extend(given, given.shape[2] + model.frames, sampler=sampler, seed=seed, progress=True)
            paths = [save_gif(x, out_dir / "input.gif")]
            names = [f"{i:05d}_continued" for i in range(num_samples)]
    else:
        classes = torch.arange(num_samples) % model.num_classes if model.num_classes else None
        videos = model.sample_videos(num_samples, classes, sampler=sampler, seed=seed, progress=True)
        paths = []
        names = [f"{i:05d}" if classes is None else f"{i:05d}_class{int(classes[i])}" for i in range(num_samples)]
    paths += write_clips(videos, out_dir, names, model.write_mp4)
    paths.append(save_filmstrip(videos, out_dir / "filmstrip.png"))
    return paths


def write_preview(model: Any) -> None:
    """Every ``preview_every_n_epochs`` validation epochs, a filmstrip of ``preview_samples`` unconditional clips in
    ``<run dir>/previews/``."""
    path = model.preview_path(model.preview_every_n_epochs)
    if path is None:
        return
    save_filmstrip(model.sample_videos(model.preview_samples, seed=0), path)
