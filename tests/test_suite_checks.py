"""The suite checks itself: every test function holds an assertion that can fail (an ``assert``, ``pytest.raises`` /
``pytest.warns``, an ``assert_*`` call, or a call to a helper of its file that does)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _asserts(node: ast.AST, helpers: dict[str, ast.FunctionDef], seen: set[str]) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            return True
        if isinstance(sub, ast.Call):
            func = sub.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name.startswith("assert") or name in ("raises", "warns", "fail"):
                return True
            if name in helpers and name not in seen:
                seen.add(name)
                if _asserts(helpers[name], helpers, seen):
                    return True
    return False


def test_every_test_function_asserts_something():
    empty = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test_")}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if not _asserts(node, helpers, set()):
                    empty.append(f"{path.name}::{node.name}")
    assert not empty, f"test functions without an assertion that can fail: {empty}"


def test_the_check_finds_a_test_without_assertions():
    tree = ast.parse("def helper():\n    x = 1\n\ndef test_nothing():\n    helper()\n")
    helpers = {"helper": tree.body[0]}
    assert not _asserts(tree.body[1], helpers, set())
    tree = ast.parse("def helper():\n    assert 1\n\ndef test_something():\n    helper()\n")
    assert _asserts(tree.body[1], {"helper": tree.body[0]}, set())
