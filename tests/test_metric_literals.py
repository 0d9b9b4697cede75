"""Metric names have one owner: no module but :mod:`seqablate.metric_names` spells a metric key
(``test.full.mAP``, ``val.best_objective``, ``external.oslo.mAP``, ``time.steps``) as a string
literal; the others build keys with its constants and functions, so a renamed metric cannot
leave a stale copy behind. Read from the source, as ``tests/test_layering.py`` reads imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "seqablate"
OWNER = ROOT / "metric_names.py"
#: What a metric key looks like: a split or family, an optional policy suffix, a dot, a name.
KEY = re.compile(r"^(test|val|external|time)(_[a-z_]+)?\.[a-z_]")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (prose may name metrics)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def metric_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant in ``path`` that looks like a metric key
    (f-string parts included, docstrings excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and KEY.match(node.value))


def test_no_metric_key_is_spelt_outside_metric_names() -> None:
    found = [f"{p.relative_to(ROOT.parent)}:{line}: {text!r}"
             for p in sorted(ROOT.rglob("*.py")) if p != OWNER for line, text in metric_literals(p)]
    assert not found, "metric keys spelt as literals (build them with seqablate.metric_names):\n" + "\n".join(found)


def test_the_checker_finds_a_planted_literal(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        '"""Module prose may say test.full.mAP."""\n'
        "KEYS = ('test.full.mAP', 'val.best_objective', 'external.oslo.mAP', 'time.steps', 'test_stored.full.mAP')\n"
        "def f(c):\n"
        '    """Nor here: val.mAP."""\n'
        "    return f'val.{c}.mAP', 'data.test_fraction', 'testing.x', 'value.y'\n",
        encoding="utf-8")
    assert metric_literals(planted) == [
        (2, "external.oslo.mAP"), (2, "test.full.mAP"), (2, "test_stored.full.mAP"), (2, "time.steps"),
        (2, "val.best_objective"),
    ]
    # the owner itself is where the names live
    assert any(text == "val.objective" for _, text in metric_literals(OWNER))
