"""The vocoder's Python API: waveforms from log-mels with any core sampler, and the Griffin-Lim control.

:class:`VocoderAPI` is a mixin of :class:`polydiff.domains.audio.VocoderModule`; it relies on the model's features,
prior (``whiten`` / ``colour``), ``denoiser`` and ``generate``.
"""

import copy
from typing import Optional

import torch
from torch import Tensor

from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.audio.consistency import ProjectedDenoiser, projection
from polydiff.domains.audio.metrics import griffin_lim


class VocoderAPI:
    """``vocode`` and ``griffin_lim`` for a mel-conditioned waveform diffusion model."""

    @torch.no_grad()
    def vocode(self, mel_norm: Tensor, samples: Optional[int] = None, sampler: Optional[SamplerConfig] = None,
               seed: int = 0, zeroed: bool = False) -> Tensor:
        """Waveforms ``[B, 1, samples]`` from normalised log-mels ``[B, n_mels, F]`` (default ``(F - 1) * hop`` samples).

        ``zeroed`` runs the identical pipeline with a copy of the network whose output is zero (the control that shows
        what the trained network adds)."""
        mel_norm, samples = self.clip_mel(mel_norm, samples)
        clip_mel = mel_norm
        pad = 0
        if self.mel_prior and self.spectral_prior:
            # two silent frames at the end: the circular MDCT's wrap-around frame then joins silence to the start
            # instead of putting the start's spectrum into the end of the signal; trimmed below
            pad = 2
            silence = self.features.normalise(torch.full_like(mel_norm[..., :pad], self.features.log_floor).log())
            mel_norm = torch.cat([clip_mel, silence], -1)
        full = samples + pad * self.features.hop_length
        shape = (mel_norm.shape[0], 1, full)
        denoiser = self.zeroed_denoiser() if zeroed else self.denoiser
        # the core starts from the marginal of the first grid level (DiffWave's schedule ends at alpha_bar 0.29)
        # the projection targets the clip's own mel (its last frames see reflect padding, not the silent pad frames)
        # and leaves the padding alone
        project = projection(self.features, self.consistency, self.consistency_iters,
                             self.features.denormalise(clip_mel))
        if project is not None:
            denoiser = ProjectedDenoiser(denoiser, self.colour, self.whiten,
                                         lambda w: torch.cat([project(w[..., :samples]), w[..., samples:]], -1))
        x = self.generate(shape, cond=mel_norm, sampler=sampler, seed=seed, denoiser=denoiser)
        return self.colour(x, mel_norm)[..., :samples]

    def clip_mel(self, mel_norm: Tensor, samples: Optional[int]) -> tuple[Tensor, int]:
        """Check a normalised log-mel ``[B, n_mels, F]``; return its frames of ``samples`` samples (default
        ``(F - 1) * hop``) on the model's device, and ``samples``."""
        if mel_norm.ndim != 3 or mel_norm.shape[1] != self.features.n_mels:
            raise PolydiffError(f"mel input must have shape [B, {self.features.n_mels}, frames], got "
                                f"{tuple(mel_norm.shape)}")
        samples = samples or (mel_norm.shape[-1] - 1) * self.features.hop_length
        return mel_norm.to(self.device)[..., :samples // self.features.hop_length + 1], samples

    def zeroed_denoiser(self) -> NetworkDenoiser:
        """The model's denoiser around a copy of the network whose output projection (``output_proj``, zero-initialised
        in both audio networks) is zero: the network as initialised, as far as its output goes."""
        network = copy.deepcopy(self.network)
        torch.nn.init.zeros_(network.output_proj.weight)
        torch.nn.init.zeros_(network.output_proj.bias)
        cfg = self.diffusion_config
        return NetworkDenoiser(network, self.process, cfg.prediction, cfg.sigma_data)

    def griffin_lim(self, mel_norm: Tensor, samples: int) -> Tensor:
        """The Griffin-Lim control from the same normalised mel."""
        return griffin_lim(self.features, self.features.denormalise(mel_norm), samples, self.griffin_lim_iters)

    def sample_native(self, n: int, sampler: SamplerConfig, seed: int, mel: Optional[Tensor] = None) -> Tensor:
        """:meth:`polydiff.core.base.PolydiffModule.sample`: ``n`` waveforms ``[n, 1, samples]`` of the normalised
        log-mel ``mel`` ``[n_mels, frames]`` (a vocoder needs one: ``mel=model.features(wave)[0]``), seeds ``seed + i``."""
        if mel is None:
            raise PolydiffError("a vocoder samples waveforms of a mel: pass mel=<[n_mels, frames] normalised log-mel>")
        mel = mel[None] if mel.ndim == 2 else mel
        return torch.cat([self.vocode(mel, sampler=sampler, seed=seed + i) for i in range(n)])
