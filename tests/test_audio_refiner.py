"""The refiner vocoder (diffusion of the log-magnitude residual, then Griffin-Lim), PESQ / STOI, the voice split.

Closed forms: a zeroed network returns the Griffin-Lim control with every deterministic sampler; the diffused residual
decodes back to the clip's own STFT magnitude; the zero network's x0-loss is the mean square of the residual; PESQ and
STOI of a clip against itself are their maxima. Baselines: ``polydiff test``'s control row is Griffin-Lim's metrics.
"""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.core.cli import build_cli, main
from polydiff.core.module import DiffusionConfig
from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.datasets.audio import SpeechDataModule
from polydiff.datasets.audio_corpus import synthetic_utterance
from polydiff.domains.audio import RefinerVocoderModule
from polydiff.domains.audio.consistency import band_gains, mel_consistent_magnitude
from polydiff.domains.audio.metrics import griffin_lim_magnitude, log_mel_l1, pesq_wb, stoi
from polydiff.domains.audio.module import PIPELINES

torch.set_num_threads(1)
RECIPE = "recipes/audio/refiner_speech.yaml"
TINY = ["--model.magnitude_layers", "2", "--model.magnitude_channels", "4", "--model.emb_dim", "16",
        "--data.corpus", "synthetic", "--data.num_utterances", "8", "--data.batch_size", "2",
        "--data.eval_samples", "12288", "--data.crop_samples", "2048", "--data.max_eval_clips", "2",
        "--data.holdout_voices", "null",  # the synthetic corpus has one voice
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def refiner(**kw) -> RefinerVocoderModule:
    args = dict(magnitude_layers=2, magnitude_channels=4, emb_dim=16, griffin_lim_iters=8)
    args.update(kw)
    torch.manual_seed(0)
    return RefinerVocoderModule(**args).eval()


def speech(n: int = 2, samples: int = 4096, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(synthetic_utterance(rng, 16000, 1.0)[2000:2000 + samples])
                        for _ in range(n)])[:, None]


@pytest.mark.parametrize("name", ["dpmpp_2m", "ddim", "heun", "euler", "unipc"])
def test_zeroed_network_returns_griffin_lim(name):
    """Without the mel projection, the pipeline with a zero network is the Griffin-Lim control."""
    model = refiner(mel_iters=0)
    wave = speech()
    mel = model.features(wave)
    gl = model.griffin_lim(mel, wave.shape[-1])
    cfg = SamplerConfig(name=name, steps=6, grid="karras")
    # as initialised (output projection zero) and as a zeroed copy of a network that does predict something
    # (equal up to float rounding of exp(log(magnitude)))
    torch.testing.assert_close(model.vocode(mel, wave.shape[-1], cfg, seed=3), gl, atol=1e-4, rtol=0)
    with torch.no_grad():
        model.network.output_proj.weight.normal_(0, 0.3)
    trained = model.vocode(mel, wave.shape[-1], cfg, seed=3)
    assert (trained - gl).abs().max() > 1e-2
    torch.testing.assert_close(model.vocode(mel, wave.shape[-1], cfg, seed=3, zeroed=True), gl, atol=1e-4, rtol=0)
    # the zeroed copy left the model's own network alone
    torch.testing.assert_close(model.vocode(mel, wave.shape[-1], cfg, seed=3), trained)


@pytest.mark.parametrize("final_step", ["zero", "denoise"])
def test_zeroed_network_with_mel_projection(final_step):
    """With the projection, a zero network gives Griffin-Lim from the mel-consistent least-squares magnitude; a
    magnitude whose mel is the target is a fixed point of the projection (gains 1)."""
    model = refiner(mel_iters=4)
    wave = speech()
    mel = model.features(wave)
    log_mel = model.features.denormalise(mel)
    projected = mel_consistent_magnitude(model.features, model.residual.base(mel).exp(), log_mel, 4)
    expected = griffin_lim_magnitude(model.features, projected, wave.shape[-1], 8)
    cfg = SamplerConfig(name="dpmpp_2m", steps=5, grid="karras", final_step=final_step, sigma_min=1.5)
    torch.testing.assert_close(model.vocode(mel, wave.shape[-1], cfg, seed=1), expected, atol=1e-4, rtol=0)
    # the projection moved the band energies onto the mel
    fb = model.features.mel.mel_scale.fb
    err = lambda mag: (torch.einsum("bft,fm->bmt", mag, fb).clamp_min(1e-5).log() - log_mel).abs().mean()  # noqa: E731
    assert err(projected) < 0.5 * err(model.residual.base(mel).exp())
    true = model.features.mel.spectrogram(wave[:, 0])
    gains = band_gains(model.features, true, log_mel.exp())
    loud = log_mel.exp() > 1e-4  # bands above the floor
    torch.testing.assert_close(torch.einsum("bft,fm->bmt", gains, fb / fb.sum(0))[loud],
                               torch.ones_like(log_mel)[loud], atol=1e-4, rtol=0)


def test_encode_diffuses_the_log_magnitude_residual():
    model = refiner(magnitude_scale=2.5)
    wave = speech()
    batch = model.encode(wave)
    mel = model.features(wave)
    base = model.residual.base(mel)
    spec = model.features.mel.spectrogram(wave[:, 0])
    assert batch.x0.shape == spec.shape == (2, 513, 4096 // 256 + 1)
    torch.testing.assert_close(model.residual.magnitude(batch.x0, base), spec.clamp_min(1e-5), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(batch.cond, (base + 5.0) / 2.5)
    # x0-prediction, native weighting, zero network: the loss is the mean square of the residual
    loss = model.diffusion_loss(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss.double(), batch.x0.double().pow(2).flatten(1).mean(1), atol=1e-5, rtol=1e-4)


def test_refiner_config_errors():
    with pytest.raises(PolydiffError, match="needs x0-prediction"):
        refiner(diffusion=DiffusionConfig(process="vp_cosine", prediction="eps"))
    model = refiner()
    x = torch.zeros(1, 513, 5)
    with pytest.raises(PolydiffError, match=r"\[B, freq, frames\] of one shape"):
        model.network(x, torch.zeros(1), torch.zeros(1, 80, 5))


def test_pesq_and_stoi_closed_forms():
    wave = speech(2, 16000)
    # identical signals: PESQ-WB's maximum 4.644 and STOI 1; at 22.05 kHz PESQ resamples to 16 kHz first
    torch.testing.assert_close(pesq_wb(wave, wave, 16000), torch.full((2,), 4.644, dtype=torch.float64), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(stoi(wave, wave, 16000), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0)
    up = torch.nn.functional.interpolate(wave, scale_factor=22050 / 16000, mode="linear")
    assert float(pesq_wb(up, up, 22050).min()) > 4.6
    # more noise, lower scores
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(wave.shape, generator=gen) * wave.std()
    p = [float(pesq_wb(wave, wave + a * noise, 16000).mean()) for a in (0.03, 0.3, 1.0)]
    s = [float(stoi(wave, wave + a * noise, 16000).mean()) for a in (0.03, 0.3, 1.0)]
    assert p[0] > p[1] > p[2] and s[0] > s[1] > s[2]


def voice_folder(tmp_path):
    root = tmp_path / "voices"
    for v, f0 in (("alice", 200.0), ("bob", 110.0), ("carol", 240.0)):
        (root / v).mkdir(parents=True)
        for i in range(4):
            t = np.arange(16000) / 16000
            sf.write(root / v / f"u{i}.wav", 0.3 * np.sin(2 * math.pi * (f0 + 5 * i) * t), 16000)
    return root


def test_voice_held_out_split(tmp_path):
    root = voice_folder(tmp_path)
    dm = SpeechDataModule(root=str(root), crop_samples=2048, eval_samples=4096, holdout_voices=["bob"],
                          val_fraction=0.2)
    dm.setup()
    assert sorted(set(dm.voices)) == ["alice", "bob", "carol"]
    bob = {float(w[:400].abs().sum()) for w, v in zip(dm.load_waves(dm.files), dm.voices) if v == "bob"}
    sig = lambda ws: {float(w[:400].abs().sum()) for w in ws}  # noqa: E731
    assert sig(dm.splits["test"]) == bob and len(dm.splits["test"]) == 4
    assert not (sig(dm.splits["train"]) | sig(dm.splits["val"])) & bob
    assert len(dm.splits["val"]) == 2 and len(dm.splits["train"]) == 6
    with pytest.raises(PolydiffError, match=r"holdout_voices \['dave'\] are not voices of the data; its voices are "
                                            r"\['alice', 'bob', 'carol'\]"):
        SpeechDataModule(root=str(root), crop_samples=2048, eval_samples=4096, holdout_voices=["dave"]).setup()
    with pytest.raises(PolydiffError, match="leaves 0 clips of other voices"):
        SpeechDataModule(root=str(root), crop_samples=2048, eval_samples=4096,
                         holdout_voices=["alice", "bob", "carol"]).setup()


def run(args, tmp_path):
    return main(args + TINY + ["--data.data_dir", str(tmp_path / "data")])


def test_recipe_fast_dev_run(tmp_path):
    """The first x0-loss of the zero-initialised network is the mean square of the residual: within a factor 2 of that
    mean over 8 other training batches (random crops)."""
    cli = build_cli(["fit", "--config", RECIPE, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path)]
                    + TINY + ["--data.data_dir", str(tmp_path / "data")])
    loss = float(cli.trainer.callback_metrics["train/loss"])
    batches = iter(cli.datamodule.train_dataloader())
    ms = float(torch.stack([cli.model.encode(next(batches)).x0.pow(2).mean() for _ in range(8)]).mean())
    assert 0.5 * ms < loss < 2 * ms


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    run(["fit", "--config", RECIPE, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
         "--data.crops_per_epoch", "4", "--trainer.default_root_dir", str(tmp / "run")], tmp)
    return tmp, next((tmp / "run").rglob("last.ckpt"))


def test_test_rows_control_and_griffin_lim(trained):
    """``polydiff test``'s Griffin-Lim and zeroed-network rows are those pipelines' metrics, computed here directly on
    the same held-out clips."""
    tmp, ckpt = trained
    run(["test", "--config", RECIPE, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp / "test")], tmp)
    out = json.loads(next((tmp / "test").rglob("metrics.json")).read_text())
    m = out["metrics"]
    assert out["pipeline"].startswith("refiner") and (out["steps"], out["network_evaluations"]) == (5, 6)
    for name in PIPELINES:
        assert 1.0 <= m[f"{name}_pesq"] <= 4.65 and 0.1 <= m[f"{name}_stoi"] <= 1.0
    model = RefinerVocoderModule.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True).eval()
    dm = SpeechDataModule(corpus="synthetic", num_utterances=8, eval_samples=12288, crop_samples=2048,
                          max_eval_clips=2, data_dir=str(tmp / "data"))
    dm.setup()
    wave = next(iter(dm.test_dataloader()))
    mel = model.features(wave)
    gl = model.griffin_lim(mel, wave.shape[-1])
    assert m["griffinlim_pesq"] == pytest.approx(float(pesq_wb(wave, gl, 16000).mean()), abs=1e-4)
    assert m["griffinlim_stoi"] == pytest.approx(float(stoi(wave, gl, 16000).mean()), abs=1e-4)
    # the identical pipeline with a zeroed network: Griffin-Lim from the mel-consistent least-squares magnitude
    base = mel_consistent_magnitude(model.features, model.residual.base(mel).exp(), model.features.denormalise(mel),
                                    model.mel_iters)
    zeroed = griffin_lim_magnitude(model.features, base, wave.shape[-1], model.griffin_lim_iters)
    assert m["zeroed_pesq"] == pytest.approx(float(pesq_wb(wave, zeroed, 16000).mean()), abs=2e-3)
    assert m["zeroed_logmel_l1"] == pytest.approx(float(log_mel_l1(model.features, wave, zeroed).mean()), abs=1e-4)
    assert m["zeroed_logmel_l1"] < m["griffinlim_logmel_l1"]  # the projection alone already helps log-mel L1


def test_sample_writes_wav_and_spectrograms(trained):
    tmp, ckpt = trained
    t = np.arange(12000) / 16000
    sf.write(tmp / "my.wav", 0.2 * np.sin(2 * math.pi * 180 * t), 16000)
    run(["sample", "--config", RECIPE, "--ckpt_path", str(ckpt), "--input", str(tmp / "my.wav"), "--out",
         str(tmp / "voc")], tmp)
    wave, sr = sf.read(tmp / "voc" / "my.wav")
    assert sr == 16000 and len(wave) == (12000 // 256) * 256 and np.abs(wave).max() > 0.01
    assert (tmp / "voc" / "my_spectrograms.png").stat().st_size > 10_000
