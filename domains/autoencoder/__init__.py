"""The KL autoencoder of latent diffusion (LDM's first stage) for grid data of any rank, and its training module.

    polydiff fit  --config recipes/autoencoder/digits.yaml
    polydiff test --config recipes/autoencoder/digits.yaml --ckpt_path <ckpt>   # PSNR vs PCA of the latent's size
"""

from polydiff.domains.autoencoder.module import AutoencoderModule
from polydiff.domains.autoencoder.network import KLAutoencoder

__all__ = ["AutoencoderModule", "KLAutoencoder"]
