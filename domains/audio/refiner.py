"""The refiner vocoder: a diffusion model of the STFT magnitude that Griffin-Lim needs (see
:mod:`polydiff.domains.audio.magnitude` for the why), trained and sampled by the shared core.

It shares the features, the checkpoint checks, ``polydiff test`` (trained pipeline, the same pipeline with a zeroed
network, Griffin-Lim; log-mel L1, MR-STFT, SI-SDR, periodicity, PESQ, STOI, real-time factors) and ``polydiff sample``
with :class:`~polydiff.domains.audio.module.VocoderModule`; what differs is what is diffused and how it becomes a
waveform.
"""

from typing import Any, Optional

import torch
from torch import Tensor

from polydiff.core.base import TrainingConfig
from polydiff.core.module import DiffusionBatch, DiffusionConfig, ObjectiveConfig
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.audio.consistency import mel_consistent_magnitude
from polydiff.domains.audio.features import LogMelFeatures
from polydiff.domains.audio.magnitude import MagnitudeNet, MagnitudeResidual
from polydiff.domains.audio.metrics import griffin_lim_magnitude
from polydiff.domains.audio.module import VocoderModule


class RefinerVocoderModule(VocoderModule):
    """Mel-to-waveform vocoder that refines Griffin-Lim: diffusion of the log-magnitude residual against the mel's
    least-squares magnitude, then Griffin-Lim from the generated magnitude. A zeroed network returns the Griffin-Lim
    control exactly.

    Args:
        sample_rate: audio sample rate in Hz; inputs at other rates are resampled.
        n_fft: FFT size / window length of the mel spectrogram and of the refined magnitude.
        hop_length: samples per frame.
        n_mels: mel bands.
        f_min: lowest mel frequency (Hz).
        f_max: highest mel frequency (Hz), at most sample_rate / 2.
        log_floor: magnitudes are clamped to this before the log.
        mel_mean: log-mel normalisation offset (stored with the checkpoint).
        mel_std: log-mel normalisation scale (stored with the checkpoint).
        magnitude_layers: gated residual 2-D layers of the network.
        magnitude_channels: their width.
        dilation_cycle: frequency dilation of layer i is 2^(i mod dilation_cycle).
        emb_dim: width of the noise-level embedding.
        magnitude_scale: the log-magnitude residual is divided by this (natural-log units) before diffusion.
        griffin_lim_iters: Griffin-Lim iterations of the vocoder and of the Griffin-Lim control (the same, so that a zero
            residual without mel projection is the control).
        mel_iters: rounds of per-band gains that put the generated magnitude's band energies onto the conditioning mel
            before Griffin-Lim (:func:`~polydiff.domains.audio.consistency.mel_consistent_magnitude`; a sampling-time
            knob, 0 = none). The network sharpens the structure inside the bands; the projection keeps the bands
            where the mel says.
        diffusion: forward process and prediction target (x0: a zeroed network then returns Griffin-Lim exactly).
        objective: training noise levels and loss weighting.
        sampler: default sampler: DPM-Solver++ 2M, 5 steps to sigma 1.5 and the final denoising evaluation (6 network
            evaluations; the recipe's, measured in docs/domains/audio.md).
        training: optimiser settings.
    """

    domain = "audio"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        log_floor: float = 1e-5,
        mel_mean: float = -5.0,
        mel_std: float = 2.5,
        magnitude_layers: int = 8,
        magnitude_channels: int = 16,
        dilation_cycle: int = 7,
        emb_dim: int = 64,
        magnitude_scale: float = 2.0,
        griffin_lim_iters: int = 32,
        mel_iters: int = 10,
        diffusion: DiffusionConfig = DiffusionConfig(process="vp_cosine", prediction="x0", sigma_data=1.0),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(name="dpmpp_2m", steps=5, grid="karras", final_step="denoise",
                                               sigma_min=1.5),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        # skip the waveform vocoder's constructor (it builds DiffWave): the refiner shares its methods, not its network
        super(VocoderModule, self).__init__(diffusion, objective, sampler, training)
        if diffusion.prediction != "x0":
            raise PolydiffError("the refiner diffuses a residual and needs x0-prediction (a zeroed network then returns "
                                f"Griffin-Lim exactly); set --model.diffusion.prediction x0, not {diffusion.prediction}")
        self.features = LogMelFeatures(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, log_floor, mel_mean,
                                       mel_std)
        self.residual = MagnitudeResidual(self.features, magnitude_scale)
        self.network = MagnitudeNet(magnitude_layers, magnitude_channels, dilation_cycle, emb_dim)
        self.griffin_lim_iters = griffin_lim_iters
        self.mel_iters = int(mel_iters)
        # what the shared test / sample code reads: no waveform prior, no per-step projection
        self.mel_prior, self.spectral_prior = False, False
        self.consistency, self.consistency_iters = "none", 0
        self.save_hyperparameters()
        self._test_rows: list[dict[str, Tensor]] = []

    def describe(self, sampler: SamplerConfig) -> str:
        return (f"refiner (magnitude diffusion, {self.mel_iters} mel-gain rounds, Griffin-Lim {self.griffin_lim_iters}), "
                f"{sampler.name} {sampler.steps} steps")

    def encode(self, batch: Any) -> DiffusionBatch:
        wave = self._wave(batch)
        mel = self.features(wave)
        base = self.residual.base(mel)
        return DiffusionBatch(x0=self.residual.residual(wave, base), cond=self.residual.condition(base))

    @torch.no_grad()
    def vocode(self, mel_norm: Tensor, samples: Optional[int] = None, sampler: Optional[SamplerConfig] = None,
               seed: int = 0, zeroed: bool = False) -> Tensor:
        """Waveforms ``[B, 1, samples]`` from normalised log-mels ``[B, n_mels, F]``: a magnitude sampled from the
        model, its band energies put onto the mel (``mel_iters``), then Griffin-Lim from it (``zeroed``: the same with
        a zeroed network, i.e. from the mel's least-squares magnitude; with ``mel_iters=0`` that is the Griffin-Lim
        control exactly)."""
        mel_norm, samples = self.clip_mel(mel_norm, samples)
        base = self.residual.base(mel_norm)
        denoiser = self.zeroed_denoiser() if zeroed else self.denoiser
        x = self.generate(tuple(base.shape), cond=self.residual.condition(base), sampler=sampler, seed=seed,
                          denoiser=denoiser)
        magnitude = mel_consistent_magnitude(self.features, self.residual.magnitude(x, base),
                                             self.features.denormalise(mel_norm), self.mel_iters)
        return griffin_lim_magnitude(self.features, magnitude, samples, self.griffin_lim_iters)
