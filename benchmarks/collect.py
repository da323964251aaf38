"""Assemble docs/benchmarks.md from the per-domain sections in docs/benchmarks/*.md.

Each benchmark script writes its own section (tables, the command that reproduced them, date, machine); this script only
concatenates them in a fixed order under one heading, so docs/benchmarks.md is never edited by hand.

    python benchmarks/collect.py
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["image", "samplers", "likelihood", "cld", "fewstep", "latent", "timeseries", "text", "graph", "audio", "medical",
         "video", "molecule"]


def main() -> Path:
    sections = {p.stem: p for p in (ROOT / "docs" / "benchmarks").glob("*.md")}
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    parts = [
        "# polydiff benchmarks\n",
        "Measured on this project's machine (2 CPU cores, no GPU). Each section names the script and the exact command "
        "that produced it; `python benchmarks/collect.py` rebuilds this page from `docs/benchmarks/*.md`.\n",
        "\n".join(f"- [{n}](#{n})" for n in names) + "\n",
    ]
    for n in names:
        # relative links in a section point into docs/benchmarks/; from docs/benchmarks.md they need that prefix
        text = re.sub(r"\]\((?!https?://|/|#|benchmarks/)([^)]+)\)", r"](benchmarks/\1)", sections[n].read_text().strip())
        parts.append(f'<a id="{n}"></a>\n\n{text}\n')
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out} from {len(names)} sections: {', '.join(names)}")
    print("reproduce: python benchmarks/collect.py")
    return out


if __name__ == "__main__":
    main()
