"""Reconstruction quality of an autoencoder and its linear control: PSNR, and PCA with as many components as the
autoencoder has latent dimensions, fitted on the same training data (the best linear code of that size)."""

import numpy as np
import torch
from torch import Tensor


def psnr(reference: Tensor, reconstruction: Tensor, data_range: float = 2.0) -> float:
    """``10 log10(range^2 / MSE)`` over the whole set (one MSE of every element; data in [-1, 1] has range 2), as
    torchmetrics computes it (the medical domain's PSNR is the same number)."""
    from torchmetrics.functional import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reconstruction.double(), reference.double(), data_range=data_range))


def pca_reconstruction(train: Tensor, test: Tensor, components: int, seed: int = 0) -> Tensor:
    """``test`` projected onto the first ``components`` principal axes of ``train`` and back (sklearn's PCA)."""
    from sklearn.decomposition import PCA

    flat_train = train.reshape(len(train), -1).double().numpy()
    flat_test = test.reshape(len(test), -1).double().numpy()
    k = min(components, *flat_train.shape)
    pca = PCA(n_components=k, random_state=seed).fit(flat_train)
    rec = pca.inverse_transform(pca.transform(flat_test))
    return torch.from_numpy(np.asarray(rec, dtype=np.float64)).reshape(test.shape).to(test.dtype)
