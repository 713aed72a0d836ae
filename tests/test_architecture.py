"""The layout is the architecture: each package of `pipeline/` is a layer, a layer imports only
layers below it, and no modules import each other in a cycle (docs/architecture.md).

Every import counts, at module level or inside a function: a lazy import of a higher layer is
still a dependency on it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# Low to high. A module may import its own layer and the layers listed before it.
LAYERS = [
    ("common", ["pipeline", "pipeline.common"]),
    ("io", ["pipeline.io"]),
    ("text", ["pipeline.text"]),
    ("exec", ["pipeline.exec"]),
    ("core", ["pipeline.core"]),
    ("stages", ["stages"]),
    ("audit", ["pipeline.audit"]),
    ("run", ["pipeline.run"]),
    ("train", ["pipeline.train"]),
    ("ablate", ["pipeline.ablate"]),  # pipeline ablate: runs manifests (run/) and trains (train/)
    ("cli", ["pipeline.cli"]),
]
# Layers side by side: neither may import the other.
SIBLINGS = {frozenset({"stages", "audit"})}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    files = [*(REPO / "pipeline").rglob("*.py"), *(REPO / "stages").rglob("*.py")]
    return {module_name(p): p for p in files}


def layer_of(module: str) -> str:
    best, rank = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > rank:
                best, rank = name, len(prefix)
    assert best is not None, module
    return best


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (``from X import Y`` counts as X.Y when
    that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def test_every_module_belongs_to_a_layer():
    for name in modules():
        layer_of(name)


def test_no_layer_imports_a_higher_one():
    order = {name: i for i, (name, _) in enumerate(LAYERS)}
    bad = []
    for mod, targets in graph().items():
        for target in targets:
            a, b = layer_of(mod), layer_of(target)
            if order[b] > order[a] or (a != b and frozenset({a, b}) in SIBLINGS):
                bad.append(f"{mod} ({a}) imports {target} ({b})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    assert not find_cycles(graph())


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return cycles


def test_the_checker_sees_a_violation(tmp_path):
    """The two checks above are not vacuous: a lazy import of a higher layer is found."""
    path = REPO / "pipeline" / "common" / "errors.py"
    known = modules()
    tree_imports = imports(path, "pipeline.common.errors", known)
    assert all(layer_of(t) == "common" for t in tree_imports)
    fake = tmp_path / "mod.py"
    fake.write_text("def f():\n    from pipeline.run.runner import run_manifest\n")
    assert imports(fake, "pipeline.common.fake", known) == {"pipeline.run.runner"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
