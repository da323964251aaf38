"""Images: an ADM U-Net, class-conditional diffusion with classifier-free guidance, RePaint inpainting, PNG output and
download-free metrics (classifier-feature Fréchet distance and class accuracy).

    from polydiff.domains.image import ImageDiffusion
    model = ImageDiffusion.load_from_checkpoint("runs/image/digits/.../last.ckpt")   # or ImageDiffusion(...)
    images = model.sample_images(20, classes=[3] * 20, sampler="dpmpp_2m", steps=20, guidance=2.0)  # [20, 1, 16, 16]
"""

from polydiff.domains.image.module import ImageDiffusion
from polydiff.domains.image.unet import UNet

__all__ = ["ImageDiffusion", "UNet"]
