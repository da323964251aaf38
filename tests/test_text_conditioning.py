"""Text conditioning: cross-attention (zero-initialised, padding masked), the locally trained tokenizer, captioned digits
and the caption-folder reader with its errors, the digit reader behind prompt accuracy (and its shuffled control), the
recipe under fast_dev_run, polydiff sample --prompt / --prompts, and a user's pretrained encoder on disk, frozen."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polydiff.core import load
from polydiff.core.cli import build_cli, main
from polydiff.core.utils import PolydiffError
from polydiff.datasets.captions import PAIR, SINGLE, WORDS, CaptionedDigitsDataModule, pair_canvas
from polydiff.domains.image.prompt_metrics import DigitReader, correct, shifted_within_kind
from polydiff.domains.image.text import PromptTokenizer, train_tokenizer
from polydiff.domains.image.unet import CrossAttentionBlock, UNet

ROOT = Path(__file__).resolve().parents[1]
TEXT = str(ROOT / "recipes" / "image" / "digits_text.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL = ["--model.model_channels=16", "--model.channel_mult=[1,2]", "--model.attention_resolutions=[8]",
         "--model.num_heads=2", "--model.text.hidden_size=16", "--model.text.num_heads=2",
         "--model.text.intermediate_size=32", "--model.sampler.steps=2", "--model.preview_every_n_epochs=0",
         "--trainer.max_time=null", "--data.pairs_per_digit=0.2"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ---------------------------------------------------------------------- cross-attention
def test_cross_attention_starts_as_identity_and_ignores_padding():
    torch.manual_seed(0)
    block = CrossAttentionBlock(8, context_dim=6, num_heads=2)
    x, ctx = torch.randn(2, 8, 4, 4), torch.randn(2, 5, 6)
    assert torch.equal(block(x, ctx), x)  # zero-initialised output projection
    torch.nn.init.normal_(block.proj.weight)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = block(x, ctx, mask)
    assert not torch.allclose(out, x)
    changed = ctx.clone()
    changed[0, 3:] = 100.0  # padding of item 0
    assert torch.allclose(block(x, changed, mask)[0], out[0], atol=1e-6)
    changed[0, 1] = 100.0  # a real token of item 0
    assert not torch.allclose(block(x, changed, mask)[0], out[0], atol=1e-3)


def test_unet_without_context_keeps_its_parameters():
    plain = UNet(16, 1, 16, (1, 2), 1, (8,), 2, 0.0, 10)
    with_text = UNet(16, 1, 16, (1, 2), 1, (8,), 2, 0.0, 0, context_dim=12)
    assert not any(isinstance(m, CrossAttentionBlock) for m in plain.modules())
    assert sum(isinstance(m, CrossAttentionBlock) for m in with_text.modules()) == 4  # 8x8 down, middle, 2 x 8x8 up
    # a trained class-conditional checkpoint of before cross-attention existed loads strictly
    ckpt = Path("/tmp/digits_run/lightning_logs/version_0/checkpoints/last.ckpt")
    if ckpt.is_file():
        assert load(str(ckpt)).network.class_emb is not None


# ---------------------------------------------------------------------- tokenizer and data
def test_word_level_tokenizer_trained_on_captions():
    tok = PromptTokenizer(train_tokenizer(["a 3 to the left of a 5", "The digit seven"], 64), max_length=12)
    ids = tok(["A 3 to the left of a 5", "", "a 3 of giraffes"])
    assert ids[0, 0] == 2 and ids[0, 9] == 3  # [CLS] a 3 to the left of a 5 [SEP]: 8 words between
    assert ids[0].tolist()[:10] == tok(["a 3 to the left of a 5"])[0].tolist()[:10]  # lower-cased
    assert ids[1].tolist()[:2] == [2, 3] and ids[1, 2:].eq(0).all()  # the empty prompt, padded with 0
    assert 1 in ids[2].tolist()  # an unknown word is [UNK]
    with pytest.raises(PolydiffError, match="max_length"):
        tok(["a " * 20])


def test_captioned_digits_name_their_digits_in_order():
    dm = CaptionedDigitsDataModule(pairs_per_digit=1.0, seed=0)
    images, captions, digits = dm.split_captions("train")
    assert len(images) == len(captions) == len(digits) == 2 * (digits[:, 1] < 0).sum()
    names = {d: {str(d), WORDS[d]} for d in range(10)}
    for cap, (a, b) in zip(captions, digits.tolist()):
        words = cap.replace(",", "").split()
        assert names[a] & set(words)
        if b >= 0:
            assert names[b] & set(words)
    # varied wording: most templates of both kinds occur
    used = {c for c in captions}
    assert len(used) > 200
    from sklearn.datasets import load_digits

    eight = torch.tensor(load_digits().images[:2], dtype=torch.float32)[:, None] / 16 * 2 - 1
    canvas = pair_canvas(eight[0], eight[1], 16)
    assert torch.equal(canvas[:, 4:12, :8], eight[0]) and torch.equal(canvas[:, 4:12, 8:], eight[1])
    assert (canvas[:, :4] == -1).all() and (canvas[:, 12:] == -1).all()
    assert len(SINGLE) >= 6 and len(PAIR) >= 6


def test_digit_reader_reads_real_canvases_and_the_control_is_chance():
    dm = CaptionedDigitsDataModule(pairs_per_digit=1.0, seed=0)
    reader = DigitReader(*[dm.split_captions("train")[i] for i in (0, 2)])
    images, _, digits = dm.split_captions("test")
    pair = digits[:, 1] >= 0
    read = reader.read(images, pair)
    ok, control = correct(read, digits), correct(read, shifted_within_kind(digits))
    assert ok[~pair].float().mean() > 0.9 and ok[pair].float().mean() > 0.8
    assert control[~pair].float().mean() < 0.2 and control[pair].float().mean() < 0.05


# ---------------------------------------------------------------------- the recipe and the CLI
def test_text_recipe_fast_dev_run_first_loss(tmp_path):
    cli = build_cli(["fit", "--config", TEXT, "--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(tmp_path),
                     *QUIET])
    model = cli.model
    images = cli.datamodule.split_captions("train")[0]
    expected = 0.5 * (1.0 + float((images**2).mean()))  # zero-initialised output: E|v|^2 on the cosine process
    assert float(cli.trainer.callback_metrics["train/loss"]) == pytest.approx(expected, rel=0.07)
    # the tokenizer was trained on the captions; the null condition is the empty prompt, padded
    cond = model.tokenize(["a 3 to the left of a five", "the digit 7"])
    null = model.null_condition(cond)
    assert null.shape == cond.shape and null[:, :2].tolist() == [[2, 3], [2, 3]] and null[:, 2:].eq(0).all()
    dropped = model.drop_condition(cond, torch.tensor([True, False]))
    assert torch.equal(dropped[0], null[0]) and torch.equal(dropped[1], cond[1])


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("text")
    main(["fit", "--config", TEXT, "--trainer.default_root_dir", str(tmp), "--trainer.max_steps=2",
          "--trainer.limit_val_batches=0", *SMALL, *QUIET])
    return next(tmp.glob("lightning_logs/version_*/checkpoints/last.ckpt"))


def test_sample_with_prompt_and_prompts_file(tmp_path, text_ckpt, cli_error):
    common = ["--config", TEXT, "--ckpt_path", str(text_ckpt), *SMALL]
    out = tmp_path / "one"
    main(["sample", *common, "--prompt", "a 3 to the left of a 5", "--num_samples=3", "--steps=2", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["00000_p000.png", "00001_p000.png", "00002_p000.png", "grid.png",
                                                     "prompts.txt"]
    assert Image.open(out / "00000_p000.png").size == (16, 16)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the digit 7\n\n  a nine \n")
    out = tmp_path / "many"
    main(["sample", *common, "--prompts", str(prompts), "--num_samples=2", "--steps=2", "--out", str(out)])
    assert (out / "prompts.txt").read_text() == "the digit 7\na nine\n"
    assert len(list(out.glob("*_p001.png"))) == 2
    err = cli_error(["sample", *common, "--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "x")])
    assert "none.txt" in err and "one prompt per line" in err
    err = cli_error(["sample", *common, "--out", str(tmp_path / "y")])
    assert "--prompt" in err
    # the reloaded model kept the tokenizer trained at fit (same ids) and samples from Python
    model = load(str(text_ckpt))
    assert model.tokenize(["a 3 to the left of a 5"])[0, 1:9].ne(1).all()  # every word known, none [UNK]
    images = model.sample(2, prompts="the digit 4", steps=2)
    assert images.shape == (2, 1, 16, 16)


def _write_caption_folder(root: Path, n: int = 8, fmt: str = "csv") -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(root / f"img{i}.png")
        rows.append({"file_name": f"img{i}.png", "text": f"a picture number {i}"})
    if fmt == "csv":
        (root / "metadata.csv").write_text("file_name,text\n" + "".join(f"{r['file_name']},{r['text']}\n" for r in rows))
    else:
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_caption_folder_trains(tmp_path, fmt):
    _write_caption_folder(tmp_path / "imgs", fmt=fmt)
    cli = build_cli(["fit", "--config", TEXT, "--data", "polydiff.datasets.captions.CaptionFolderDataModule",
                     "--data.root", str(tmp_path / "imgs"), "--data.image_size=16", "--data.channels=1",
                     "--data.batch_size=4", "--trainer.fast_dev_run=1", "--trainer.default_root_dir",
                     str(tmp_path / "run"), *SMALL[:-1], *QUIET])
    assert cli.model.tokenize(["a picture number 3"])[0, 1:5].ne(1).all()


def test_caption_folder_errors(tmp_path, cli_error):
    root = tmp_path / "imgs"
    _write_caption_folder(root)
    args = ["fit", "--config", TEXT, "--data", "polydiff.datasets.captions.CaptionFolderDataModule", "--data.root",
            str(root), "--data.image_size=16", "--data.channels=1", "--trainer.fast_dev_run=1",
            "--trainer.default_root_dir", str(tmp_path / "run"), *SMALL[:-1]]
    meta = root / "metadata.csv"
    good = meta.read_text()
    meta.write_text(good.replace("img3.png,a picture number 3", "img3.png,"))
    assert "line 5 (img3.png) has an empty text" in cli_error(args)
    meta.write_text(good.replace("img3.png", "img33.png"))
    err = cli_error(args)
    assert "img33.png" in err and "not a file" in err
    meta.write_text(good.replace("img7.png,a picture number 7\n", ""))
    err = cli_error(args)
    assert "have no caption" in err and "img7.png" in err
    meta.write_text(good.replace("file_name,text", "file,caption"))
    assert "no 'file_name' column" in cli_error(args)
    meta.unlink()
    assert "no metadata.csv or metadata.jsonl" in cli_error(args)
    # class-conditional data under a text model
    err = cli_error(["fit", "--config", TEXT, "--data", "polydiff.datasets.digits.DigitsDataModule",
                     "--trainer.fast_dev_run=1", *SMALL[:-1]])
    assert "CaptionedDigitsDataModule" in err
    err = cli_error(["fit", "--config", TEXT, "--model.num_classes=10", "--trainer.fast_dev_run=1"])
    assert "num_classes 0" in err


def test_pretrained_encoder_from_disk_is_frozen(tmp_path):
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    folder = tmp_path / "encoder"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16), add_pooling_layer=False
              ).save_pretrained(folder)
    captions = CaptionedDigitsDataModule().split_captions("train")[1]
    Tokenizer.from_str(train_tokenizer(captions, 60)).save(str(folder / "tokenizer.json"))
    before = BertModel.from_pretrained(folder, add_pooling_layer=False).state_dict()
    run = tmp_path / "run"
    main(["fit", "--config", TEXT, "--model.text.pretrained", str(folder), "--model.text.freeze=true",
          "--trainer.max_steps=3", "--trainer.limit_val_batches=0", "--trainer.callbacks=[]",  # no EMA: raw weights
          "--trainer.default_root_dir", str(run), *SMALL,
          *QUIET])
    model = load(str(next(run.glob("lightning_logs/version_*/checkpoints/last.ckpt"))))
    after = model.network.encoder.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed[:5]
    # the U-Net did train: its zero-initialised output convolution moved
    assert model.network.unet.out_conv.weight.abs().sum() > 0
