"""The longest functions of a package, by lines (docstring included), longest first.

    python benchmarks/longest_functions.py seqablate --top 12
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def longest(root: Path, top: int) -> list[tuple[int, str]]:
    """``(lines, "path::name")`` of the ``top`` longest functions and methods under ``root``."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                rows.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root.parent)}::{node.name}"))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    for n, name in longest(args.root.resolve(), args.top):
        print(n, name)


if __name__ == "__main__":
    main()
