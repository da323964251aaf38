"""A latent input ``z`` for any network ``network(x_in, c_noise, cond)``: what a denoising diffusion GAN's generator needs.

DD-GAN's generator (Xiao et al. 2022, "Tackling the generative learning trilemma with denoising diffusion GANs",
Sec. 3.3) predicts ``x0 = G(x_t, t, z)`` with a latent ``z ~ N(0, I)``, so that ``x_{t-1}`` drawn from the posterior
``q(x_{t-1} | x_t, x0)`` can be multimodal. The core's networks take no ``z``. Every one of them embeds the noise level
into a vector that conditions all its blocks (the image U-Net's ``noise_mlp`` feeds each ResBlock's scale-shift;
DiffWave, CSDI likewise); :class:`LatentInput` adds ``mapping(z)`` to the output of that submodule through a forward
hook, as DD-GAN's own generator feeds ``z`` through a mapping network into every block's AdaGN. The network's code and
its parameter names are untouched (a teacher checkpoint loads into the generator as is) and the mapping's last layer is
zero-initialised: at initialisation the generator *is* the teacher's x0-predictor, for every ``z``.

``z`` is drawn per network call from the global generator (``DiffusionModule.generate`` seeds it from its ``seed``,
the training step from ``(seed, step)``); :meth:`LatentInput.fixed` sets it explicitly.
"""

import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from polydiff.core.utils import PolydiffError


def _output_width(module: nn.Module, path: str) -> int:
    """Width of the vector ``module`` outputs: the ``out_features`` of its last linear layer (or of itself)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PolydiffError(f"the network's submodule {path!r} has no linear layer whose width the latent input could "
                            "match; set --model.diffusion.latent_into to the network's noise-embedding module")
    return linears[-1].out_features


class LatentInput(nn.Module):
    """``mapping(z)``, added to the output ``[B, W]`` of the network's submodule ``into`` (its noise embedding).

    Args:
        network: the network to feed; a forward hook is registered on ``network.get_submodule(into)``.
        latent_dim: size of ``z``.
        into: dotted name of the submodule whose output is the noise-level embedding (``noise_mlp`` in the image and
            medical U-Nets and in CSDI, ``embedding`` in DiffWave).
        hidden: width of the mapping MLP (0: the embedding width).
    """

    def __init__(self, network: nn.Module, latent_dim: int, into: str = "noise_mlp", hidden: int = 0) -> None:
        super().__init__()
        if latent_dim < 1:
            raise PolydiffError(f"latent_dim must be at least 1, got {latent_dim}")
        try:
            target = network.get_submodule(into)
        except AttributeError:
            names = [n for n, _ in network.named_children()]
            raise PolydiffError(f"the network {type(network).__name__} has no submodule {into!r} to feed the latent z "
                                f"into; set --model.diffusion.latent_into to its noise-embedding module (children: "
                                f"{names})") from None
        width = _output_width(target, into)
        hidden = hidden or width
        self.latent_dim, self.into = int(latent_dim), into
        self.mapping = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, width))
        nn.init.zeros_(self.mapping[-1].weight)  # the generator starts as the network without z
        nn.init.zeros_(self.mapping[-1].bias)
        self._z: Optional[Tensor] = None
        target.register_forward_hook(self._add)

    def _add(self, module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        b = out.shape[0]
        z = self._z if self._z is not None else torch.randn(b, self.latent_dim)  # CPU draw: same z on any device
        if z.shape != (b, self.latent_dim):
            raise PolydiffError(f"latent z of shape {tuple(z.shape)} for a batch of {b}; expected ({b}, "
                                f"{self.latent_dim})")
        w = self.mapping[0].weight
        return out + self.mapping(z.to(w.device, w.dtype)).to(out.dtype)

    @contextlib.contextmanager
    def fixed(self, z: Tensor) -> Iterator[None]:
        """Use ``z`` (``[B, latent_dim]``) instead of fresh draws for the network calls inside the block."""
        self._z = z
        try:
            yield
        finally:
            self._z = None


@contextlib.contextmanager
def latent_draws_from(seed: int) -> Iterator[None]:
    """Inside the block the global CPU generator (where :class:`LatentInput` draws ``z``) starts from ``seed``; its
    state outside is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
