"""Reading the user's text: UTF-8 files and folders of them, text8-style normalisation, ``polydiff sample --input``."""

import re
from pathlib import Path

from polydiff.core.utils import PolydiffError

_NON_TEXT8 = re.compile(r"[^a-z]+")


def normalize_text8(text: str) -> str:
    """Lower-case, map every run of characters outside a-z to one space, strip (Mahoney's text8 convention, without
    spelling out digits)."""
    return _NON_TEXT8.sub(" ", text.lower()).strip()


def read_text_files(path: str) -> str:
    """UTF-8 text of a .txt file or of every .txt file under a folder, with clear errors for the user's mistakes."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise PolydiffError(f"folder {path} holds no .txt files; put UTF-8 .txt files in it or pass one file as "
                                "--data.path")
    elif p.is_file():
        files = [p]
    else:
        raise PolydiffError(f"--data.path {path} does not exist; pass a .txt file or a folder of .txt files")
    parts = []
    for f in files:
        raw = f.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolydiffError(f"file {f} is not UTF-8 text (invalid byte at offset {exc.start}); convert it, e.g. "
                                f"'iconv -f latin1 -t utf-8 {f.name}', or remove it from --data.path") from None
        if not text.strip():
            raise PolydiffError(f"file {f} is empty; remove it from --data.path or add text to it")
        parts.append(text)
    return "\n".join(parts)


def read_text_input(input: str) -> str:
    """``polydiff sample --input``: the text of a file when ``input`` names one, else ``input`` itself."""
    try:
        is_file = len(input) < 4096 and Path(input).is_file()
    except OSError:  # a long text is not a file name
        is_file = False
    if not is_file:
        return input
    try:
        return Path(input).read_text(encoding="utf-8").rstrip("\n")
    except UnicodeDecodeError as exc:
        raise PolydiffError(f"--input {input} is not UTF-8 text (invalid byte at offset {exc.start}); convert it") \
            from None
