"""Video: a space-time U-Net built on the image U-Net (temporal convolutions and attention with zero-initialised
outputs), inflation from an image checkpoint, known-frame conditioning (animate a first frame, continue a clip past the
training length), GIF / MP4 / filmstrip output and download-free metrics with controls.

    from polydiff.domains.video import VideoDiffusion
    model = VideoDiffusion.load_from_checkpoint("runs/video/moving_digits/.../last.ckpt")
    clips = model.sample_videos(8, classes=3, guidance=2.0)        # [8, 1, 8, 16, 16] in [0, 1]
    longer = model.extend(clips, 16)                                # continued to 16 frames
"""

from polydiff.domains.video.module import VideoDiffusion
from polydiff.domains.video.network import SpaceTimeUNet

__all__ = ["VideoDiffusion", "SpaceTimeUNet"]
