"""The README's Python examples run as written (after a tiny CLI training run provides the checkpoint they load)."""

import re
from pathlib import Path

import torch

from polydiff.core.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model.model_channels", "8", "--model.channel_mult", "[1, 2]", "--model.num_res_blocks", "1",
        "--model.attention_resolutions", "[]", "--model.num_heads", "1", "--trainer.enable_model_summary", "false"]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_image_example_runs(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # the example loads runs/image/digits/... relative to the working directory
    main(["fit", "--config", str(ROOT / "recipes/image/digits.yaml"), "--trainer.max_steps", "2",
          "--trainer.limit_val_batches", "0", *TINY])
    example = _python_blocks()[0]
    assert "load(" in example and "model.sample(" in example  # the README shows polydiff's own loader and signature
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    images = scope["images"]
    assert images.shape == (20, 1, 16, 16) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert (tmp_path / "sevens.png").stat().st_size > 0
    assert type(scope["model"]).__name__ == "ImageDiffusion"  # load() chose the domain's class from the checkpoint


def test_readme_core_example_runs():
    from torch import nn

    class Zero(nn.Module):  # stands in for `my_network`: predicts zero velocity
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, c_noise, cond):
            return x * self.w

    example = _python_blocks()[1]
    scope: dict = {"my_network": Zero()}
    exec(compile(example, "README.md", "exec"), scope)
    x = scope["x"]
    # a zero velocity means x0_hat = x_t / (alpha + sigma): the flow ODE keeps the start noise, so samples stay N(0, I)
    assert x.shape == (16, 3, 32, 32) and abs(float(x.std()) - 1.0) < 0.05


def test_every_recipe_is_run_by_a_test():
    """torchgeo's habit: each recipe is exercised under fast_dev_run (or a tiny budget) in some test file. Only code
    counts: a recipe named in a comment or a docstring is not run by it."""
    tests_text = "\n".join(_code_without_comments_or_docstrings(p) for p in (ROOT / "tests").glob("test_*.py"))
    # ROOT / "recipes" / "image" / "x.yaml" -> recipes/image/x.yaml
    tests_text += "\n" + re.sub(r'"\s*/\s*"', "/", tests_text)
    for recipe in (ROOT / "recipes").rglob("*.yaml"):
        rel = recipe.relative_to(ROOT).as_posix()
        name = f"{recipe.parent.name}/{recipe.name}"
        by_glob = f'"recipes/{recipe.parent.name}").glob("*.yaml")' in tests_text  # parametrised over the folder
        assert rel in tests_text or name in tests_text or by_glob, f"{rel} is not run by any test"


def _code_without_comments_or_docstrings(path: Path) -> str:
    import ast
    import io
    import tokenize

    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                    str):
                docstrings.add(first.value.lineno)
    kept = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start[0] in docstrings):
            continue
        kept.append(tok)
    return tokenize.untokenize(kept)
