"""Write one generated section of a markdown file between ``<!-- key:begin -->`` / ``<!-- key:end -->`` markers,
keeping the rest of the file (other benchmarks' sections, hand-written text) as it is."""

import datetime
import platform
import shlex
import sys
from pathlib import Path

import torch


def command_line() -> str:
    return " ".join([".venv/bin/python"] + [shlex.quote(a) for a in sys.argv])


def provenance() -> str:
    """Date, command and machine, for the head of a generated section."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    return (f"Measured {now} with `{command_line()}` on {cpu}, {torch.get_num_threads()} torch thread(s), "
            f"torch {torch.__version__}.")


def write_section(path: str | Path, key: str, text: str, title: str = "# Benchmarks") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else f"{title}\n"
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        _, tail = rest.split(end, 1)
        new = head + block + tail
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)
