"""Download-free image metrics: a small classifier trained on the dataset itself supplies the features and the labels.

FID needs Inception weights that are downloaded; here the feature network is a small CNN trained on the *train split*
of the same data (deterministically, cached), and two numbers are reported:

* the Fréchet distance (FD) between Gaussians fitted to its penultimate features of generated and held-out test images
  (Heusel et al. 2017, eq. 6; the Fréchet distance of Gaussians, Dowson & Landau 1982), beside a **floor** (the train split
  vs the test split: what real data scores) and a **ceiling** (noise images with the train split's per-pixel mean and
  standard deviation vs the test split);
* the class accuracy of class-conditional samples: how often the classifier assigns the requested class.

Unlabelled data (no classes) gets an untrained, seeded CNN as feature network (random features) and no accuracy.
"""

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor, nn

#: bump when the classifier or its training changes, so cached weights are not reused
CLASSIFIER_VERSION = "v2"


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (Dowson & Landau 1982; Heusel et al. 2017, eq. 6)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    with warnings.catch_warnings():
        # dead ReLU features make covariances singular; the square root is still accurate enough (checked below)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        # a singular product: regularise as pytorch-fid does
        offset = np.eye(cov1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def gaussian_stats(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``[N, D]`` features."""
    f = features.detach().cpu().double().numpy() if isinstance(features, Tensor) else np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def feature_fd(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


class DigitClassifier(nn.Module):
    """A small CNN for any ``channels`` x H x W images in [-1, 1]; ``features`` is its ``feature_dim``-wide penultimate
    layer."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, max(num_classes, 1))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _cache_dir() -> Path:
    return Path(os.environ.get("POLYDIFF_CACHE", Path.home() / ".cache" / "polydiff")) / "classifiers"


def _data_key(images: Tensor, labels: Tensor, num_classes: int) -> str:
    h = hashlib.sha256()
    h.update(CLASSIFIER_VERSION.encode())
    h.update(str((tuple(images.shape), num_classes)).encode())
    h.update(images.float().contiguous().numpy().tobytes())
    h.update(labels.long().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _shift(x: Tensor, gen: torch.Generator, pad: int = 1) -> Tensor:
    """Random translations by up to ``pad`` pixels (augmentation), from ``gen``."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    xp = torch.gather(xp, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
    return torch.gather(xp, 3, cols)


def train_classifier(images: Tensor, labels: Tensor, num_classes: int, epochs: int = 12, batch_size: int = 64,
                     seed: int = 0) -> DigitClassifier:
    """Train :class:`DigitClassifier` deterministically (fixed seed, CPU, one thread) on ``images`` in [-1, 1]."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # may be called from `polydiff test`, which runs under inference mode: training needs autograd back
    with torch.inference_mode(False), torch.enable_grad():
        return _train_classifier(images, labels, num_classes, epochs, batch_size, seed, threads)


def _train_classifier(images: Tensor, labels: Tensor, num_classes: int, epochs: int, batch_size: int, seed: int,
                      threads: int) -> DigitClassifier:
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = DigitClassifier(images.shape[1], num_classes)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        steps = epochs * max(1, len(images) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
        x, y = images.float().cpu().clone(), labels.long().cpu().clone()
        net.train()
        done = 0
        while done < steps:
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x) - batch_size + 1 if len(x) >= batch_size else 1, batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(net(_shift(x[idx], gen)), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                if done >= steps:
                    break
        net.eval()
        return net
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def predict(net: nn.Module, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """``(features, logits)`` of ``images`` in [-1, 1]."""
    feats, logits = [], []
    net.eval()
    for i in range(0, len(images), batch_size):
        f = net.features(images[i:i + batch_size].float().cpu())
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats), torch.cat(logits)


def evaluation_classifier(train_x: Tensor, train_y: Tensor, num_classes: int,
                          cache: bool = True) -> DigitClassifier:
    """The feature network for ``train_x``: trained on it (labelled data) or seeded random (unlabelled), cached on disk
    under ``$POLYDIFF_CACHE`` (default ``~/.cache/polydiff``) keyed by a hash of the data."""
    if num_classes <= 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return DigitClassifier(train_x.shape[1], 0).eval()
    path = _cache_dir() / f"{_data_key(train_x, train_y, num_classes)}.pt"
    if cache and path.is_file():
        try:
            net = DigitClassifier(train_x.shape[1], num_classes)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval()
        except Exception:  # noqa: BLE001 - a stale or broken cache file is simply retrained
            pass
    net = train_classifier(train_x, train_y, num_classes)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(net.state_dict(), tmp)
            tmp.replace(path)
        except OSError:
            pass  # a read-only home only costs retraining next time
    return net


def noise_images(reference: Tensor, n: int, seed: int = 0) -> Tensor:
    """Gaussian noise images with the per-pixel mean and standard deviation of ``reference``, clipped to [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    mean, std = reference.float().mean(0), reference.float().std(0)
    return (mean + std * torch.randn((n, *reference.shape[1:]), generator=gen)).clamp(-1, 1)


class ImageEvaluator:
    """Scores generated images against held-out test images (see the module docstring).

    Args:
        train_x, train_y: the train split (images in [-1, 1], labels) the classifier learns from; also the floor.
        test_x, test_y: the held-out reference images and labels.
        num_classes: number of classes (0: unlabelled, random features, no accuracy).
        num_noise: number of noise images for the ceiling.
    """

    def __init__(self, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
                 num_noise: int = 1000, cache: bool = True, verbose: bool = True) -> None:
        self.num_classes = num_classes
        self.net = evaluation_classifier(train_x, train_y, num_classes, cache)
        test_f, test_logits = predict(self.net, test_x)
        self.test_stats = gaussian_stats(test_f)
        self.classifier_test_accuracy: Optional[float] = None
        if num_classes > 0:
            self.classifier_test_accuracy = float((test_logits.argmax(1) == test_y.long()).float().mean())
            if verbose:
                print(f"evaluation classifier: {100 * self.classifier_test_accuracy:.1f} % accuracy on "
                      f"{len(test_x)} held-out real images")
        self.fd_floor = frechet_distance(*gaussian_stats(predict(self.net, train_x)[0]), *self.test_stats)
        noise = noise_images(train_x, num_noise)
        self.fd_ceiling = frechet_distance(*gaussian_stats(predict(self.net, noise)[0]), *self.test_stats)

    @property
    def classifier_info(self) -> dict[str, Any]:
        return {"kind": "trained on the train split" if self.num_classes else "random (untrained) features",
                "version": CLASSIFIER_VERSION, "test_accuracy": self.classifier_test_accuracy}

    def fd(self, images: Tensor) -> float:
        """FD of ``images`` (in [-1, 1]) vs the test split."""
        return frechet_distance(*gaussian_stats(predict(self.net, images)[0]), *self.test_stats)

    def report(self, images: Tensor, classes: Optional[Tensor] = None) -> dict[str, float]:
        """All metrics of generated ``images`` in [-1, 1] (``classes``: the requested class of each)."""
        feats, logits = predict(self.net, images)
        fd = frechet_distance(*gaussian_stats(feats), *self.test_stats)
        out = {"fd": fd, "fd_floor": self.fd_floor, "fd_ceiling": self.fd_ceiling,
               "fd_relative": (fd - self.fd_floor) / (self.fd_ceiling - self.fd_floor)}
        if self.num_classes > 0 and classes is not None:
            out["class_accuracy"] = float((logits.argmax(1) == classes.long().cpu()).float().mean())
            out["classifier_test_accuracy"] = float(self.classifier_test_accuracy)
        return out
