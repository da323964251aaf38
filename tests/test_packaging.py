"""The wheel holds exactly the modules of the source folders that an editable install maps (design card layout)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"core": "polydiff/core", "domains": "polydiff/domains", "datasets": "polydiff/datasets",
          "recipes": "polydiff/recipes"}


def _source_modules() -> set[str]:
    mods = set()
    for folder, pkg in MAPPED.items():
        for py in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in py.parts:
                continue
            mods.add(f"{pkg}/{py.relative_to(ROOT / folder).as_posix()}")
    return mods


def test_every_source_folder_is_a_package():
    """A folder of modules without __init__.py would import in an editable install (namespace) but not from a wheel."""
    for folder in MAPPED:
        for sub in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in sub.parts:
                continue
            assert (sub.parent / "__init__.py").exists(), f"{sub.parent.relative_to(ROOT)} has modules but no __init__.py"


@pytest.mark.slow
def test_wheel_contains_the_same_modules_as_the_source_tree(tmp_path):
    # setuptools builds in ./build; a stale copy of a deleted module there would end up in the wheel
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("polydiff-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {n for n in names if n.endswith(".py")}
    assert in_wheel == _source_modules()
    assert not any(n.startswith(("core/", "datasets/", "domains/")) for n in names), "bare top-level packages leaked"
    recipes = {n for n in names if n.startswith("polydiff/recipes/") and n.endswith(".yaml")}
    assert recipes == {f"polydiff/recipes/{p.relative_to(ROOT / 'recipes').as_posix()}"
                       for p in (ROOT / "recipes").rglob("*.yaml")}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "polydiff = polydiff.core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_no_bare_core_or_datasets_import():
    code = "import importlib.util as u; print(u.find_spec('core'), u.find_spec('domains'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None None"
