"""The package's layering, read from the source: no module imports a layer above its own, no
import cycles, and Ray and MLflow each stay behind one package (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "seqablate"

#: Lowest first. A module may import its own layer and those below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("seqablate", "seqablate.sequences", "seqablate.config", "seqablate.folders", "seqablate.metric_names",
     "seqablate.naming", "seqablate.objectives", "seqablate.provenance", "seqablate.timing", "seqablate.vocabulary"),
    ("seqablate.data",),
    ("seqablate.models",),
    ("seqablate.metrics", "seqablate.saliency"),
    ("seqablate.tracking",),
    ("seqablate.search_spaces",),
    ("seqablate.evaluation",),
    ("seqablate.trainables",),
    ("seqablate.analysis",),
    ("seqablate.demo", "seqablate.cli", "seqablate.__main__"),
)
#: Third-party packages only one area may import.
OWNERS = {"ray": "seqablate.trainables", "mlflow": "seqablate.tracking"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(seqablate modules, top-level third-party packages) that ``path`` imports anywhere,
    including inside functions and ``TYPE_CHECKING`` blocks. ``from pkg import sub`` counts
    as importing ``pkg.sub`` when that is a module."""
    ours: set[str] = set()
    theirs: set[str] = set()
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.split(".")[0] == "seqablate" else theirs).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "seqablate":
                theirs.add(base)
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                ours.add(sub if sub in known else base)
    return {m for m in ours if m != me}, {t.split(".")[0] for t in theirs}


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer of tests/test_layering.py: add it to LAYERS")
    return best


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {d for d in imports(p, known)[0] if d in known} for m, p in mods.items()}


def test_every_module_has_a_layer_and_imports_none_above_it():
    upward = [
        f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
        for m, deps in graph().items() for d in sorted(deps) if layer_of(d) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    # A package importing its own submodules (re-exports) is not a cycle of concepts; drop
    # edges from a package's __init__ into itself before looking for cycles.
    g = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("package", sorted(OWNERS))
def test_third_party_owners(package):
    mods = modules()
    known = set(mods)
    owner = OWNERS[package]
    offenders = [m for m, p in mods.items()
                 if package in imports(p, known)[1] and not (m == owner or m.startswith(owner + "."))]
    assert not offenders, f"only {owner} may import {package}; also: {offenders}"


def test_checker_sees_upward_and_cyclic_imports(tmp_path, monkeypatch):
    """The walk above would pass vacuously if it missed imports; check it on a made-up package."""
    pkg = tmp_path / "seqablate"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from seqablate.analysis import report\n")
    (pkg / "data" / "b.py").write_text("from . import c\n")
    (pkg / "data" / "c.py").write_text("from seqablate.data import b\nimport mlflow.tracking\n")
    (pkg / "analysis").mkdir()
    (pkg / "analysis" / "__init__.py").write_text("")
    (pkg / "analysis" / "report.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    g = graph()
    assert g["seqablate.data.a"] == {"seqablate.analysis.report"}
    assert g["seqablate.data.b"] == {"seqablate.data.c"} and g["seqablate.data.c"] == {"seqablate.data.b"}
    assert "mlflow" in imports(pkg / "data" / "c.py", set(g))[1]
    with pytest.raises(AssertionError, match="data.a .* imports seqablate.analysis.report"):
        test_every_module_has_a_layer_and_imports_none_above_it()
    with pytest.raises(AssertionError, match="seqablate.data.b -> seqablate.data.c -> seqablate.data.b"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="only seqablate.tracking may import mlflow"):
        test_third_party_owners("mlflow")


def private_imports(path: Path) -> list[str]:
    """``module.name`` of every ``_private`` name ``path`` imports from another seqablate module
    (``__dunder__`` names such as ``__version__`` are public)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "seqablate":
            out += [f"{node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__"))]
    return out


def import_time_environ(path: Path) -> list[int]:
    """Lines of module-level statements (not inside a function or class) that write
    ``os.environ``: an import must not change the process's environment."""
    lines = []
    for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for node in ast.walk(stmt):
            target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                target = next((t.value for t in targets if isinstance(t, ast.Subscript)), None)
            if isinstance(target, ast.Attribute) and target.attr == "environ":
                lines.append(node.lineno)
    return lines


def test_no_private_name_crosses_a_module_and_no_import_changes_the_environment():
    mods = modules()
    crossing = [f"{m} imports {name}" for m, p in mods.items() for name in private_imports(p)]
    assert not crossing, "make these public (or keep them in one module):\n" + "\n".join(crossing)
    env = [f"{m}:{line}" for m, p in mods.items() for line in import_time_environ(p)]
    assert not env, "os.environ written at import time: " + ", ".join(env)


def test_checker_sees_private_imports_and_import_time_environ(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom seqablate import __version__\nfrom seqablate.tracking.store import _retry, client\n"
                 "from os.path import _get_sep\nos.environ.setdefault('A', '1')\nos.environ['B'] = '2'\n"
                 "def f():\n    os.environ['C'] = '3'\n")
    assert private_imports(f) == ["seqablate.tracking.store._retry"]
    assert import_time_environ(f) == [5, 6]


#: The presence rule (``data.dropout``) and the choice of statistics (``DeployedModel``) are
#: applied at inference by :class:`~seqablate.models.deployed.DeployedModel` alone; training
#: batches and the statistics estimate apply the rule through ``data.dropout`` directly.
RULE_NAMES = {"apply_presence", "presence_weights", "keep_vector", "stats_key"}
RULE_OWNERS = {"seqablate.data.dropout", "seqablate.data", "seqablate.data.dataset", "seqablate.models.deployed",
               "seqablate.models.norm_stats", "seqablate.trainables.loop", "seqablate.trainables.sampling"}


def rule_uses(path: Path) -> set[str]:
    """The names of :data:`RULE_NAMES` that ``path`` calls or imports (``f()``, ``x.f()``,
    ``from m import f``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found |= {a.name for a in node.names} & RULE_NAMES
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in RULE_NAMES:
                found.add(name)
    return found


def test_one_inference_path_applies_the_presence_rule_and_picks_statistics():
    users = {m: rule_uses(p) for m, p in modules().items() if m not in RULE_OWNERS}
    offenders = {m: sorted(u) for m, u in users.items() if u}
    assert not offenders, f"call DeployedModel (condition / presence / sequence_weights) instead: {offenders}"


def test_checker_sees_rule_uses(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from seqablate.data.dropout import apply_presence\n"
                 "def g(model, x, p):\n    return model.deployed.stats_key(p), model.presence(x, p)\n")
    assert rule_uses(f) == {"apply_presence", "stats_key"}
