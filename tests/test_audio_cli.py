"""The audio recipe through the CLI: fit (fast_dev_run and a 2-step run), test, sample from WAV and .npy, bad inputs."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.core.cli import build_cli, main
from polydiff.core.utils import PolydiffError
from polydiff.domains.audio import VocoderModule

torch.set_num_threads(1)
RECIPE = "recipes/audio/diffwave_speech.yaml"
# a tiny network and a tiny synthetic corpus keep every run to seconds on one core
TINY = ["--model.residual_layers", "2", "--model.residual_channels", "8", "--model.dilation_cycle", "2",
        "--model.emb_dim", "16", "--data.corpus", "synthetic", "--data.num_utterances", "8", "--data.batch_size", "2",
        "--data.eval_samples", "4096", "--data.crop_samples", "2048", "--data.max_eval_clips", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run(args, tmp_path):
    return main(args + TINY + ["--data.data_dir", str(tmp_path / "data")])


def test_recipe_fast_dev_run(tmp_path):
    """DiffWave's output projection starts at zero, so the first eps-prediction loss is ``E[eps^2] = 1`` over the
    batch's noise (2 x 2048 samples: within a few per cent)."""
    cli = build_cli(["fit", "--config", RECIPE, "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path)] + TINY + ["--data.data_dir", str(tmp_path / "data")])
    assert float(cli.trainer.callback_metrics["train/loss"]) == pytest.approx(1.0, abs=0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audio")
    run(["fit", "--config", RECIPE, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
         "--data.crops_per_epoch", "4", "--trainer.default_root_dir", str(tmp / "run")], tmp)
    ckpt = next((tmp / "run").rglob("last.ckpt"))
    return tmp, ckpt


def test_checkpoint_stores_feature_settings(trained):
    _, ckpt = trained
    hp = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert (hp["sample_rate"], hp["n_fft"], hp["hop_length"], hp["n_mels"]) == (16000, 1024, 256, 80)
    assert (hp["mel_mean"], hp["mel_std"], hp["log_floor"]) == (-5.0, 2.5, 1e-5)


def test_test_reports_vocoder_and_griffin_lim(trained):
    tmp, ckpt = trained
    run(["test", "--config", RECIPE, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp / "test")], tmp)
    m = json.loads(next((tmp / "test").rglob("metrics.json")).read_text())
    metrics = m["metrics"]
    for name in ("diffwave", "griffinlim"):
        for key in ("logmel_l1", "mrstft", "si_sdr", "periodicity", "rtf"):
            assert math.isfinite(metrics[f"{name}_{key}"])
    # a 2-step model is far from a vocoder: the Griffin-Lim control must win, and both RTFs are measured
    assert metrics["griffinlim_logmel_l1"] < metrics["diffwave_logmel_l1"]
    assert metrics["diffwave_rtf"] > 0 and metrics["griffinlim_rtf"] > 0
    assert m["clips"] == 1 and m["steps"] == 6 and m["consistency"] == "none"  # 10 % of 8 clips
    # GLA-Grad's projection is a sampling-time knob of the CLI; it pulls the samples towards the mel
    run(["test", "--config", RECIPE, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp / "test_mel"),
         "--model.consistency", "mel", "--model.consistency_iters", "3"], tmp)
    m2 = json.loads(next((tmp / "test_mel").rglob("metrics.json")).read_text())
    assert (m2["consistency"], m2["consistency_iters"]) == ("mel", 3)
    assert m2["metrics"]["diffwave_logmel_l1"] < 0.5 * metrics["diffwave_logmel_l1"]


def test_sample_from_wav_and_npy(trained):
    tmp, ckpt = trained
    t = np.arange(12000) / 16000
    sf.write(tmp / "speech.wav", 0.2 * np.sin(2 * math.pi * 220 * t), 16000)
    out = tmp / "voc"
    run(["sample", "--config", RECIPE, "--ckpt_path", str(ckpt), "--input", str(tmp / "speech.wav"), "--out", str(out)],
        tmp)
    wave, sr = sf.read(out / "speech.wav")
    assert sr == 16000 and len(wave) == (12000 // 256) * 256
    mel = np.load(out / "speech.mel.npy")
    assert mel.shape == (80, 12000 // 256 + 1)
    assert (out / "speech_spectrograms.png").stat().st_size > 10_000
    out2 = tmp / "voc2"
    run(["sample", "--config", RECIPE, "--ckpt_path", str(ckpt), "--input", str(out / "speech.mel.npy"),
         "--out", str(out2)], tmp)
    assert len(sf.read(out2 / "speech.wav")[0]) == len(wave)


def expect_error(args, tmp, capsys, pattern):
    with pytest.raises(SystemExit) as exc:
        run(args, tmp)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert pattern in err, err


def test_bad_inputs_give_clear_errors(trained, capsys):
    tmp, ckpt = trained
    base = ["sample", "--config", RECIPE, "--ckpt_path", str(ckpt), "--out", str(tmp / "bad")]
    expect_error(base, tmp, capsys, "pass --input FILE.wav")
    np.save(tmp / "wrong.npy", np.zeros((40, 10), dtype=np.float32))
    expect_error(base + ["--input", str(tmp / "wrong.npy")], tmp, capsys, "expected [80, frames >= 2]")
    expect_error(base + ["--input", str(tmp / "missing.wav")], tmp, capsys, "missing.wav does not exist")
    (tmp / "notes.txt").write_text("hello")
    expect_error(base + ["--input", str(tmp / "notes.txt")], tmp, capsys, "neither audio")
    # the CLI builds the model from the checkpoint's hyper-parameters; in Python, a model with other mel features
    # refuses the checkpoint instead of giving noise
    model = VocoderModule(mel_mean=-4.0, residual_layers=2, residual_channels=8, dilation_cycle=2, emb_dim=16)
    with pytest.raises(PolydiffError, match=r"other mel features: mel_mean=-5.0 \(config: -4.0\)"):
        model.load_weights(str(ckpt))
    # sample rates of data and model must agree
    expect_error(["fit", "--config", RECIPE, "--trainer.fast_dev_run=1", "--data.sample_rate", "8000",
                  "--trainer.default_root_dir", str(tmp / "sr")], tmp, capsys, "--data.sample_rate=8000 differs")
