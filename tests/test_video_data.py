"""Video data: the moving-digit generator (sprites stay inside the canvas, constant speed with bounces, seeded, fixed
splits of unseen digits) and the readers of the user's videos (GIF, frame folders, MP4 via PyAV) with their errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polydiff.core.utils import PolydiffError
from polydiff.datasets.readers.video import read_video
from polydiff.datasets.video import MovingDigitsDataModule, VideoFolderDataModule, bounce_tracks


def small_digits(**kw) -> MovingDigitsDataModule:
    dm = MovingDigitsDataModule(num_train=64, num_val=8, num_test=16, **kw)
    dm.setup()
    return dm


def test_tracks_stay_inside_and_keep_their_speed_per_axis():
    gen = torch.Generator().manual_seed(0)
    tracks = bounce_tracks(500, 16, 8, 3, gen)
    assert tracks.min() == 0 and tracks.max() == 8  # inside [0, room], and the walls are reached
    steps = tracks.diff(dim=1)
    assert (steps.abs() == steps[:, :1].abs()).all()  # constant speed on each axis
    assert (steps.abs().sum(-1) > 0).all()  # every sprite moves
    flips = (steps[:, 1:] * steps[:, :-1] < 0).any(-1).any(-1)
    assert flips.float().mean() > 0.5  # most sprites bounce within 16 frames


def test_moving_digits_are_seeded_labelled_and_split_by_digit():
    dm = small_digits()
    videos, labels = dm.split_tensors("train")
    assert videos.shape == (64, 1, 8, 16, 16) and videos.min() == -1 and videos.max() <= 1
    assert labels.min() >= 0 and labels.max() <= 9
    again = small_digits()
    assert torch.equal(again.split_tensors("test")[0], dm.split_tensors("test")[0])
    assert not torch.equal(small_digits(seed=1).split_tensors("test")[0], dm.split_tensors("test")[0])
    # each frame is the same sprite pasted at the track position: the brightness is the same in every frame
    mass = ((videos + 1) / 2).sum(dim=(-1, -2))[:, 0]
    assert torch.allclose(mass, mass[:, :1].expand_as(mass), atol=1e-4)
    # the sprite's pixels sit where the track says (top-left corner, 8x8)
    tracks = dm.tracks["train"]
    frame = (videos[0, 0, 3] + 1) / 2
    r, c = tracks[0, 0, 3].tolist()
    assert frame.sum() == pytest.approx(frame[r:r + 8, c:c + 8].sum())


def test_two_digits_and_a_larger_canvas():
    dm = small_digits(num_digits=2, image_size=24, frames=12)
    assert dm.split_tensors("val")[0].shape == (8, 1, 12, 24, 24)
    assert dm.tracks["val"].shape == (8, 2, 12, 2) and dm.tracks["val"].max() <= 16


def test_bad_generator_settings_are_one_line_errors():
    with pytest.raises(PolydiffError, match="--data.max_speed"):
        small_digits(max_speed=9)
    with pytest.raises(PolydiffError, match="--data.num_digits"):
        MovingDigitsDataModule(num_digits=3)


def write_gif(path: Path, frames: int, size=(20, 14), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


def write_frames(folder: Path, frames: int) -> None:
    folder.mkdir(parents=True)
    for i in range(frames):
        Image.fromarray(np.full((12, 12), 20 * i, dtype=np.uint8)).save(folder / f"{i:03d}.png")


def test_gif_and_frame_folders_read_as_clips(tmp_path):
    write_gif(tmp_path / "a.gif", 10)
    write_frames(tmp_path / "b", 6)
    (tmp_path / "notes.txt").write_text("not a video")
    video = read_video(tmp_path / "a.gif", 8, 3)
    assert video.shape == (3, 10, 8, 8) and -1 <= video.min() and video.max() <= 1
    strided = read_video(tmp_path / "b", 8, 1, frame_stride=2)
    assert strided.shape == (1, 3, 8, 8)
    # frame i has grey level 20 i: the stride keeps frames 0, 2, 4, in order
    assert torch.allclose((strided[0, :, 0, 0] + 1) / 2 * 255, torch.tensor([0.0, 40.0, 80.0]), atol=0.6)
    dm = VideoFolderDataModule(root=str(tmp_path), clip_length=3, image_size=8, channels=1, val_fraction=0.2,
                               test_fraction=0.2)
    dm.setup()
    total = sum(len(dm.split_tensors(s)[0]) for s in ("train", "val", "test"))
    assert total == 10 // 3 + 6 // 3
    assert dm.split_tensors("train")[0].shape[1:] == (1, 3, 8, 8)


def test_mp4_reads_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(9):
            img = np.zeros((24, 32, 3), dtype=np.uint8)
            img[:, : 3 * i + 2] = 255  # a white band growing to the right
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    video = read_video(path, 16, 1)
    assert video.shape == (1, 9, 16, 16)
    brightness = video.mean(dim=(0, 2, 3))
    assert (brightness.diff() > 0).all()  # the band grows frame by frame


def test_reader_errors_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolydiffError, match="holds no videos") as exc:
        VideoFolderDataModule(root=str(tmp_path / "empty")).setup()
    assert str(tmp_path / "empty") in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(PolydiffError, match="--data.root"):
        VideoFolderDataModule().setup()
    with pytest.raises(PolydiffError, match="does not exist"):
        VideoFolderDataModule(root=str(tmp_path / "nowhere")).setup()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.gif").write_bytes(b"GIF89a this is not a gif")
    with pytest.raises(PolydiffError, match="bad.gif.*cannot be decoded"):
        VideoFolderDataModule(root=str(broken)).setup()
    (broken / "bad.gif").unlink()
    (broken / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(PolydiffError, match="bad.mp4"):
        VideoFolderDataModule(root=str(broken)).setup()
    short = tmp_path / "short"
    short.mkdir()
    write_gif(short / "two.gif", 2)
    with pytest.raises(PolydiffError, match="two.gif has 2 frames.*shorter than the clip length 8.*--data.clip_length"):
        VideoFolderDataModule(root=str(short), clip_length=8).setup()
