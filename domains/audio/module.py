"""The audio vocoder: DiffWave conditioned on log-mels, trained and sampled by the shared core.

The DataModule hands over raw waveform crops ``[B, 1, S]``; this module computes the features itself
(:class:`~polydiff.domains.audio.features.LogMelFeatures`, whose settings are hyper-parameters stored in the checkpoint),
whitens the waveform with a mel-derived prior (optional: PriorGrad's frame envelope, or a spectral shaping per MDCT
coefficient) and hands the core ``x0 = whiten(wave)`` with the normalised mel as condition. Sampling colours the result
back with the exact inverse.

DiffWave's schedule (T = 50 linear betas 1e-4..0.05) is the core's ``vp_linear`` process with ``beta_min = 0.005``,
``beta_max = 2.5`` (continuous time, ``beta_i = beta(t_i) / T``); fast inference uses the core's samplers with 6 steps.
"""

import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from polydiff.core.base import TrainingConfig, require_data
from polydiff.core.module import DiffusionBatch, DiffusionConfig, DiffusionModule, ObjectiveConfig
from polydiff.core.samplers import network_evaluations
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError, sum_across_ranks
from polydiff.domains.audio import writers
from polydiff.domains.audio.api import VocoderAPI
from polydiff.domains.audio.consistency import check_mode
from polydiff.domains.audio.data import AudioData
from polydiff.domains.audio.features import LogMelFeatures, imdct, mdct
from polydiff.domains.audio.metrics import log_mel_l1, mr_stft_distance, periodicity_error, pesq_wb, si_sdr, stoi
from polydiff.domains.audio.network import DiffWave

#: what ``polydiff test`` evaluates: the trained pipeline, the same pipeline with a zeroed network, Griffin-Lim
PIPELINES = ("diffwave", "zeroed", "griffinlim")
#: hyper-parameters that define the features; a checkpoint must agree on all of them
FEATURE_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "log_floor", "mel_mean", "mel_std",
                "mel_prior", "spectral_prior")


class VocoderModule(VocoderAPI, DiffusionModule):
    """DiffWave-style mel-to-waveform vocoder (Kong et al. 2021) with an optional mel prior (PriorGrad / SpecGrad-like).

    Args:
        sample_rate: audio sample rate in Hz; inputs at other rates are resampled.
        n_fft: FFT size / window length of the mel spectrogram.
        hop_length: samples per mel frame (the product of ``upsample_factors``).
        n_mels: mel bands.
        f_min: lowest mel frequency (Hz).
        f_max: highest mel frequency (Hz), at most sample_rate / 2.
        log_floor: mel magnitudes are clamped to this before the log.
        mel_mean: log-mel normalisation offset (stored with the checkpoint).
        mel_std: log-mel normalisation scale (stored with the checkpoint).
        mel_prior: diffuse the waveform whitened by the mel (a data-dependent prior) instead of the raw waveform.
        spectral_prior: whiten per time-frequency coefficient (exactly invertible MDCT shaping, SpecGrad-like) instead
            of by the frame envelope only (PriorGrad).
        residual_layers: DiffWave residual layers (paper: 30).
        residual_channels: DiffWave residual channels (paper: 64).
        dilation_cycle: dilation of layer i is 2^(i mod dilation_cycle) (paper: 10).
        upsample_factors: strides of the mel upsampler; they multiply to hop_length / squeeze.
        emb_dim: width of the noise-level embedding.
        squeeze: consecutive samples folded into channels (WaveGlow's squeeze; 1 = DiffWave as published).
        griffin_lim_iters: iterations of the Griffin-Lim control in ``polydiff test`` and in sample PNGs.
        consistency: project the ``x0`` estimate of every reverse step onto consistency with the mel (GLA-Grad, Liu et
            al. 2024; no retraining): ``none``, ``griffin_lim`` (fast Griffin-Lim towards the mel pseudo-inverse,
            from the estimate's phase) or ``mel`` (per-band gains towards the target mel, then iSTFT); see
            :mod:`polydiff.domains.audio.consistency`. A sampling-time knob: ``--model.consistency`` at test/sample.
        consistency_iters: projection iterations per reverse step.
        diffusion: forward process (default: DiffWave's T = 50 linear betas as vp_linear) and prediction target.
        objective: training noise levels and loss weighting.
        sampler: default sampler (6 steps, DiffWave's fast-inference budget).
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
        mel_prior: bool = True,
        spectral_prior: bool = False,
        residual_layers: int = 30,
        residual_channels: int = 64,
        dilation_cycle: int = 10,
        upsample_factors: tuple[int, ...] = (16, 16),
        emb_dim: int = 512,
        squeeze: int = 1,
        griffin_lim_iters: int = 32,
        consistency: str = "none",
        consistency_iters: int = 3,
        diffusion: DiffusionConfig = DiffusionConfig(process="vp_linear", beta_min=0.005, beta_max=2.5,
                                                     prediction="eps", sigma_data=0.6),
        objective: ObjectiveConfig = ObjectiveConfig(),
        sampler: SamplerConfig = SamplerConfig(name="ddpm", steps=6, grid="karras", sigma_min=0.002),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(diffusion, objective, sampler, training)
        self.features = LogMelFeatures(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, log_floor, mel_mean,
                                       mel_std)
        self.network = DiffWave(n_mels, hop_length, residual_layers, residual_channels, dilation_cycle,
                                tuple(upsample_factors), emb_dim, squeeze)
        self.mel_prior = mel_prior
        self.spectral_prior = spectral_prior
        self.griffin_lim_iters = griffin_lim_iters
        self.consistency = check_mode(consistency)
        self.consistency_iters = int(consistency_iters)
        self.save_hyperparameters()
        self._test_rows: list[dict[str, Tensor]] = []

    # ------------------------------------------------------------------ features and encoding
    @staticmethod
    def _wave(batch: Any) -> Tensor:
        wave = batch[0] if isinstance(batch, (list, tuple)) else batch
        if wave.ndim == 2:
            wave = wave[:, None]
        if wave.ndim != 3 or wave.shape[1] != 1:
            raise PolydiffError(f"the vocoder expects mono waveforms [B, 1, samples], got {tuple(wave.shape)}")
        return wave.float()

    def whiten(self, wave: Tensor, mel_norm: Tensor) -> Tensor:
        """The diffused signal: ``wave`` divided by the prior's scale (identity when ``mel_prior`` is off).

        Envelope prior (PriorGrad): ``wave / envelope(mel)``. Spectral prior: ``M^T (M wave / G(mel))`` with ``M`` the
        orthogonal circular MDCT of size hop and ``G`` the mel-implied coefficient amplitudes. Both are linear and exactly
        invertible (:meth:`colour`), so diffusing the whitened signal with N(0, I) is diffusing the waveform with the
        prior N(0, L L^T), ``L = colour`` (PriorGrad, Lee et al. 2022; SpecGrad, Koizumi et al. 2022).
        """
        if not self.mel_prior:
            return wave
        if self.spectral_prior:
            self._check_hops(wave.shape[-1])
            basis = self.features.mdct_basis
            return imdct(mdct(wave, basis) / self.features.spectral_gains(mel_norm), basis)
        return wave / self.features.envelope(mel_norm, wave.shape[-1])

    def colour(self, x: Tensor, mel_norm: Tensor) -> Tensor:
        """Inverse of :meth:`whiten`: from the diffused signal back to the waveform."""
        if not self.mel_prior:
            return x
        if self.spectral_prior:
            self._check_hops(x.shape[-1])
            basis = self.features.mdct_basis
            return imdct(mdct(x, basis) * self.features.spectral_gains(mel_norm), basis)
        return x * self.features.envelope(mel_norm, x.shape[-1])

    def _check_hops(self, samples: int) -> None:
        if samples % self.features.hop_length:
            raise PolydiffError(f"the spectral prior needs waveforms of a multiple of hop_length="
                                f"{self.features.hop_length} samples, got {samples}; set --data.crop_samples and "
                                "--data.eval_samples to multiples of the hop")

    def encode(self, batch: Any) -> DiffusionBatch:
        wave = self._wave(batch)
        mel = self.features(wave)
        return DiffusionBatch(x0=self.whiten(wave, mel), cond=mel)

    # ------------------------------------------------------------------ vocoding (the Python API is api.py)
    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``polydiff predict``: the batch's waveforms ``[B, 1, S]`` re-synthesised from their own mels."""
        wave = self._wave(batch)
        return self.vocode(self.features(wave), wave.shape[-1], seed=batch_idx).cpu()

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = super().validation_step(batch, batch_idx)
        if batch_idx == 0:
            # a cheap audible-quality signal per epoch: log-mel L1 of the default sampler on the first batch
            wave = self._wave(batch)[:4]
            est = self.vocode(self.features(wave), wave.shape[-1], seed=0)
            self.log("val/logmel_l1", log_mel_l1(self.features, wave, est).mean(), prog_bar=True, batch_size=len(wave))
            self.log_media("val/vocoded", audio=est[0], sample_rate=self.features.sample_rate)
        return loss

    # ------------------------------------------------------------------ evaluation
    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        wave = self._wave(batch)
        mel = self.features(wave)
        seconds = wave.shape[0] * wave.shape[-1] / self.features.sample_rate
        outs, row = {}, {"seconds": torch.tensor(seconds)}
        # the trained pipeline, the identical pipeline with a zeroed network (the control of what the network adds)
        # and Griffin-Lim from the same mel
        for name, fn in (("diffwave", lambda: self.vocode(mel, wave.shape[-1], seed=batch_idx)),
                         ("zeroed", lambda: self.vocode(mel, wave.shape[-1], seed=batch_idx, zeroed=True)),
                         ("griffinlim", lambda: self.griffin_lim(mel, wave.shape[-1]))):
            t0 = time.perf_counter()
            outs[name] = fn()
            row[f"{name}_time"] = torch.tensor(time.perf_counter() - t0)
        rate = self.features.sample_rate
        for name, out in outs.items():
            row[f"{name}_logmel_l1"] = log_mel_l1(self.features, wave, out).sum()
            row[f"{name}_mrstft"] = mr_stft_distance(wave, out).sum()
            row[f"{name}_si_sdr"] = si_sdr(wave, out).sum()
            row[f"{name}_periodicity"] = periodicity_error(wave, out, rate).sum()
            row[f"{name}_pesq"] = pesq_wb(wave, out, rate).sum()
            row[f"{name}_stoi"] = stoi(wave, out, rate).sum()
        row["clips"] = torch.tensor(float(wave.shape[0]))
        self._test_rows.append({k: v.detach().cpu().double() for k, v in row.items()})

    def on_test_epoch_end(self) -> None:
        metric_names = ("logmel_l1", "mrstft", "si_sdr", "periodicity", "pesq", "stoi")
        keys = ["seconds", "clips"] + [f"{name}_{m}" for name in PIPELINES for m in metric_names + ("time",)]
        # the same keys on every rank (the sum over ranks is a collective)
        tot = sum_across_ranks(self, {k: float(sum(r[k] for r in self._test_rows)) for k in keys})
        if tot["clips"] == 0:
            return
        n, seconds = float(tot["clips"]), float(tot["seconds"])
        metrics = {}
        for name in PIPELINES:
            for m in metric_names:
                metrics[f"{name}_{m}"] = float(tot[f"{name}_{m}"]) / n
            metrics[f"{name}_rtf"] = float(tot[f"{name}_time"]) / seconds
        cfg = self.sampler_config
        extra = {"clips": int(n), "audio_seconds": seconds, "sampler": cfg.name, "steps": cfg.steps, "grid": cfg.grid,
                 "network_evaluations": network_evaluations(cfg.name, cfg.steps, cfg.final_step),
                 "consistency": self.consistency, "consistency_iters": self.consistency_iters,
                 "pipeline": self.describe(cfg),
                 "torch_threads": torch.get_num_threads()}
        if self.trainer.is_global_zero:
            print(writers.format_table(metrics, self.describe(cfg)))
        self.report_metrics(metrics, extra)

    def describe(self, sampler: SamplerConfig) -> str:
        """How this model vocodes, in words (table rows, spectrogram panels)."""
        label = f"DiffWave-style, {sampler.name} {sampler.steps} steps"
        if self.consistency != "none":
            label += f" + {self.consistency} consistency ({self.consistency_iters} iterations per step)"
        return label

    def write_predictions(self, prediction: Tensor, batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        return writers.write_predictions(self, prediction, batch, out_dir, prefix)

    # ------------------------------------------------------------------ polydiff sample (see writers.py)
    def write_samples(self, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                      input: Optional[dict[str, Any]] = None) -> list[Path]:
        """Re-synthesise ``input`` (a WAV/FLAC or log-mel .npy, read by the DataModule): ``<name>.wav``,
        ``<name>.mel.npy`` and ``<name>_spectrograms.png`` (:func:`polydiff.domains.audio.writers.write_samples`)."""
        return writers.write_samples(self, out_dir, num_samples, sampler, seed, input)


    # ------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.check_feature_settings(checkpoint, "<checkpoint>")

    def restore_from_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        self.check_feature_settings(checkpoint, path)

    def input_options(self) -> dict[str, Any]:
        return {"sample_rate": self.features.sample_rate}

    def connect_data(self, datamodule: Any) -> None:
        """The data's sample rate must be the model's (files are resampled to the data's rate)."""
        rate = require_data(datamodule, AudioData, "audio", "polydiff.datasets.audio.SpeechDataModule").sample_rate
        if int(rate) != self.features.sample_rate:
            raise PolydiffError(f"--data.sample_rate={rate} differs from --model.sample_rate={self.features.sample_rate}; "
                                "set both to the same rate (files are resampled to the data rate)")

    def check_feature_settings(self, checkpoint: dict[str, Any], path: str) -> None:
        """Refuse a checkpoint trained on other mel features (they would silently give noise)."""
        stored = checkpoint.get("hyper_parameters", {})
        diff = [f"{k}={stored[k]!r} (config: {self.hparams[k]!r})" for k in FEATURE_KEYS
                if k in stored and stored[k] != self.hparams[k]]
        if diff:
            raise PolydiffError(f"checkpoint {path} was trained with other mel features: {', '.join(diff)}; use the "
                                "recipe it was trained with or pass the same --model.* feature settings")
