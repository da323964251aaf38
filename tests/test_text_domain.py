"""Text domain: tokenisers, data errors, n-gram baselines, infilling, and every recipe through the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch

from polydiff.core.cli import build_cli, main
from polydiff.core.discrete import CategoricalConfig, CategoricalSamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.datasets.readers.text import normalize_text8
from polydiff.datasets.text import TextDataModule
from polydiff.domains.text import BPETokenizer, CharTokenizer, TextDiffusion
from polydiff.domains.text.metrics import bigram_bits_per_char, unigram_bits_per_char, word_share

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes" / "text").glob("*.yaml"))
TINY = ["--model.init_args.hidden_size", "32", "--model.init_args.num_layers", "1", "--model.init_args.num_heads", "2",
        "--model.init_args.intermediate_size", "64"]


def test_normalisation_and_char_tokenizer_round_trip():
    assert normalize_text8("Hello,  World! 42x") == "hello world x"
    tok = CharTokenizer()
    assert tok.num_categories == 28 and tok.mask_id == 27
    assert tok.decode(tok.encode("the cat")) == "the cat"
    with pytest.raises(PolydiffError, match="normalize"):
        tok.encode("The")


def test_bpe_tokenizer_trains_and_round_trips():
    texts = ["the quick brown fox jumps over the lazy dog. " * 20, "Pack my box with five dozen liquor jugs! " * 20]
    tok = BPETokenizer.train(texts, 300)
    ids = tok.encode("the lazy fox, Pack my box")
    assert max(ids) < 300 and tok.mask_id == 300
    assert tok.decode(ids) == "the lazy fox, Pack my box"
    assert len(ids) < len("the lazy fox, Pack my box")  # merges happened


def test_data_errors_are_clear(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(PolydiffError, match="empty"):
        TextDataModule(path=str(empty)).setup()
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(PolydiffError, match="not UTF-8"):
        TextDataModule(path=str(latin)).setup()
    with pytest.raises(PolydiffError, match="does not exist"):
        TextDataModule(path=str(tmp_path / "nope.txt")).setup()
    (tmp_path / "folder").mkdir()
    with pytest.raises(PolydiffError, match="no .txt"):
        TextDataModule(path=str(tmp_path / "folder")).setup()


def test_data_error_through_the_cli(tmp_path, capsys):
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"\xff\xfe bad bytes")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(ROOT / "recipes/text/absorbing.yaml"), "--trainer.fast_dev_run=1",
              "--trainer.default_root_dir", str(tmp_path), "--data.path", str(latin)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "latin.txt is not UTF-8" in err and "iconv" in err


def test_embedded_corpus_split_is_fixed_and_disjoint():
    a, b = TextDataModule(seq_len=64), TextDataModule(seq_len=64)
    assert a.split_texts("test") == b.split_texts("test")
    train, val, test = (set(a.split_texts(s)) for s in ("train", "val", "test"))
    assert len(a.split_texts("train")) > 5000 and all(len(c) == 64 for c in a.split_texts("val"))
    assert not (test & val) and len(test - train) > 0.9 * len(test)
    assert set("".join(a.split_texts("val"))) <= set("abcdefghijklmnopqrstuvwxyz ")
    c = TextDataModule(seq_len=64, split_seed=1)
    assert c.split_texts("test") != a.split_texts("test")


def test_ngram_baselines_match_hand_computation():
    train = ["ab" * 50]
    # unigram with add-1 over alphabet {a, b}: p = 51 / 102 = 1/2 -> 1 bit per char
    assert unigram_bits_per_char(train, ["abba"], k=1.0) == pytest.approx(1.0)
    # bigram, k -> 0: first char 1 bit, a->b and b->a certain, so "abab" costs 1 bit over 4 chars
    assert bigram_bits_per_char(train, ["abab"], k=1e-9) == pytest.approx(0.25, abs=1e-6)
    assert word_share(["xx the cat sat yy"], {"the", "cat"}) == pytest.approx(2 / 3)


def tiny_model(transition="absorbing", sampler="absorbing_fast"):
    schedule = "linear" if transition == "absorbing" else "cosine"
    return TextDiffusion(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_len=64,
                         diffusion=CategoricalConfig(transition=transition, schedule=schedule, steps=100),
                         sampler=CategoricalSamplerConfig(name=sampler, steps=50))


@pytest.mark.parametrize("transition,sampler", [("absorbing", "absorbing_fast"), ("absorbing", "ancestral"),
                                                ("uniform", "ancestral")])
def test_infilling_keeps_every_given_token(transition, sampler):
    model = tiny_model(transition, sampler)
    text = "th_ quick ____n fox ___ over the lazy ___"
    texts, tokens, ids, fixed = model.infill(text, n=5, seed=1)
    assert len(ids) == len(text) and int(fixed.sum()) == len(text) - text.count("_")
    for row, s in zip(tokens, texts):
        assert torch.equal(row[fixed], ids[fixed])
        assert len(s) == len(text) and "_" not in s
        assert all(c_out == c_in for c_out, c_in in zip(s, text) if c_in != "_")
    # the char model reads an input text8-style: lower case, other characters as one space
    ids, fixed = model.parse_blanks("Th_, End")
    assert model.decode(ids[None])[0].replace("a", "_", 1) == "th_ end" and fixed.tolist() == [1, 1, 0, 1, 1, 1, 1]


def test_fit_test_sample_end_to_end(tmp_path):
    """Two training steps through the CLI, then ``polydiff test`` (metrics.json) and ``polydiff sample`` (text files,
    with and without blanks)."""
    cfg = str(ROOT / "recipes/text/absorbing.yaml")
    common = ["--config", cfg, *TINY, "--data.max_chars", "20000", "--data.seq_len", "64", "--model.init_args.max_len",
              "64"]
    main(["fit", *common, "--trainer.max_steps", "2", "--trainer.max_time", "null", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    main(["test", *common, "--ckpt_path", str(ckpt), "--model.init_args.diffusion.bound_times", "2",
          "--model.init_args.num_test_samples", "2", "--model.init_args.sampler.steps", "20",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "test")])
    metrics = json.loads(next((tmp_path / "test").rglob("metrics.json")).read_text())["metrics"]
    for key in ("bits_per_char", "bits_per_token", "unigram_bits_per_char", "bigram_bits_per_char",
                "generated_words_in_train_vocab", "heldout_words_in_train_vocab"):
        assert math.isfinite(metrics[key]), key
    assert metrics["bigram_bits_per_char"] < metrics["unigram_bits_per_char"] < math.log2(27) + 0.01
    # an untrained model is no better than uniform over the 27 characters (its bound is a valid code length)
    assert metrics["bits_per_char"] > 3.0
    out = tmp_path / "samples"
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples", "3", "--steps", "30", "--out", str(out)])
    lines = (out / "samples.txt").read_text().splitlines()
    assert len(lines) == 3 and all(len(line) == 64 for line in lines)
    infill = tmp_path / "infill"  # a folder of its own: sample refuses to mix two runs in one
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples", "2", "--steps", "30", "--out", str(infill),
          "--input", "the ____ statement"])
    lines = (infill / "infill.txt").read_text().splitlines()
    assert lines[0] == "the ____ statement" and len(lines) == 3
    assert all(line.startswith("the ") and line.endswith(" statement") and "_" not in line for line in lines[1:])
    with pytest.raises(SystemExit):
        main(["sample", *common, "--ckpt_path", str(ckpt), "--steps", "5000", "--out", str(tmp_path / "too_many")])


def test_bpe_model_on_own_folder(tmp_path):
    """BPE trained on the user's files (not normalised), stored in the checkpoint, used again by ``polydiff sample``."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("Diffusion models write Text, one token at a time? No: all at once.\n" * 40)
    (folder / "b.txt").write_text("The Cat sat on the Mat; the Dog did not.\n" * 40)
    common = ["--config", str(ROOT / "recipes/text/absorbing.yaml"), *TINY, "--model.init_args.tokenizer", "bpe",
              "--model.init_args.bpe_vocab_size", "300", "--model.init_args.max_len", "64", "--data.path", str(folder),
              "--data.normalize", "false", "--data.seq_len", "96"]
    main(["fit", *common, "--trainer.max_steps", "1", "--trainer.max_time", "null", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run")])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    out = tmp_path / "samples"
    main(["sample", *common, "--ckpt_path", str(ckpt), "--num_samples", "2", "--steps", "20", "--out", str(out),
          "--input", "The ___ sat on the Mat"])
    lines = (out / "infill.txt").read_text().splitlines()
    assert all(line.startswith("The ") and line.endswith(" sat on the Mat") for line in lines[1:])


def test_checkpoint_of_another_domain_is_refused(tmp_path):
    model = tiny_model()
    path = tmp_path / "other.ckpt"
    torch.save({"polydiff_domain": "image", "state_dict": {}}, path)
    with pytest.raises(PolydiffError, match="image"):
        model.load_weights(str(path))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_fast_dev_run(recipe, tmp_path):
    """An untrained model's bound is a valid code length of held-out text, so it cannot beat the data's bigram model
    (3.3 bits per character here): a bound computed in the wrong units or summed wrongly would."""
    cli = build_cli(["fit", "--config", str(recipe), "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar",
                     "false", "--trainer.default_root_dir", str(tmp_path)])
    bound = float(cli.trainer.callback_metrics["val/bound_bits"])
    assert bound > 3.3, bound
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def test_denoiser_from_local_pretrained_bert(tmp_path):
    from transformers import BertConfig, BertModel

    from polydiff.domains.text import TimeConditionedBert

    cfg = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=80)
    src = BertModel(cfg, add_pooling_layer=False)
    src.save_pretrained(tmp_path / "bert")
    net = TimeConditionedBert(28, max_len=64, hidden_size=999, pretrained=str(tmp_path / "bert"))
    assert net.bert.config.hidden_size == 24  # sizes come from the checkpoint
    for (name, a), b in zip(src.state_dict().items(), net.bert.state_dict().values()):
        assert torch.equal(a, b), name
    out = net(torch.randint(0, 28, (2, 10)), torch.rand(2))
    assert out.shape == (2, 10, 28)
    with pytest.raises(PolydiffError, match="config.json"):
        TimeConditionedBert(28, pretrained=str(tmp_path / "missing"))
