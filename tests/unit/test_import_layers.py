"""The import graph of ``ran``: no cycles, and no import against the layer direction.

Every module of ``ran/`` is parsed with :mod:`ast` (imports inside functions
count too: a lazy import is still a dependency). A module belongs to the layer
of its subpackage (``ran.training.fit`` -> ``training``) or, at the top level,
to its own name (``ran.pipeline`` -> ``pipeline``). A module may import from
its own layer and the layers before it, never from a later one; and the graph
of modules, and that of subpackages, has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RAN = Path(__file__).resolve().parents[2] / "ran"

# Each entry imports only from itself and the entries before it.
LAYERS = (
    ("ran", "util"),  # the package root (lazy names only) and the utilities with no ran imports
    ("reservoir",),
    ("injection",),
    ("mechanisms",),
    ("tasks",),
    ("training",),
    ("evaluation",),
    ("study",),
    ("report",),
    ("cli",),
    ("agent",),
    ("bench",),
    ("pipeline", "lab"),
    ("sweeps",),
    ("__main__",),
)


def module_name(path: Path, root: Path = RAN) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = RAN) -> set[str]:
    """The ``ran`` modules ``path`` imports (``from ran.x import y`` names module ``ran.x.y``
    when that is a module, else ``ran.x``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [
                f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names
            ]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # import ran.a.b.c -> the deepest known module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph(root: Path = RAN) -> dict[str, set[str]]:
    """Module -> the ``ran`` modules it imports, for every ``.py`` file under ``root``."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): imports_of(p, modules, root) for p in paths}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ran"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every problem of ``graph``: unknown layers, back-edges, module and package cycles."""
    rank = {name: i for i, group in enumerate(layers) for name in group}
    out = []
    for mod, deps in sorted(graph.items()):
        if layer_of(mod) not in rank:
            out.append(f"{mod}: its layer {layer_of(mod)!r} is not in LAYERS")
            continue
        for dep in sorted(deps):
            if rank.get(layer_of(dep), -1) > rank[layer_of(mod)]:
                out.append(f"{mod} imports {dep}: against the layer direction")
    if cycle := find_cycle(graph):
        out.append("module cycle: " + " -> ".join(cycle))
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        packages.setdefault(layer_of(mod), set()).update(
            layer_of(d) for d in deps if layer_of(d) != layer_of(mod)
        )
    if cycle := find_cycle(packages):
        out.append("subpackage cycle: " + " -> ".join(cycle))
    return out


def test_ran_imports_follow_the_layers():
    graph = import_graph()
    assert len(graph) > 50 and "ran.training.train" in graph
    assert violations(graph) == []


def test_checker_fails_on_a_back_edge_and_on_cycles():
    ok = {
        "ran.util.atomic": set(),
        "ran.reservoir.esn": {"ran.util.atomic"},
        "ran.training.train": {"ran.reservoir.esn"},
    }
    assert violations(ok) == []
    back = ok | {"ran.reservoir.esn": {"ran.util.atomic", "ran.training.train"}}
    found = violations(back)
    assert any("ran.reservoir.esn imports ran.training.train" in v for v in found)
    assert any(v.startswith("module cycle") for v in found)
    same_layer = ok | {
        "ran.training.fit": {"ran.training.kl"},
        "ran.training.kl": {"ran.training.fit"},
    }
    assert violations(same_layer) == [
        "module cycle: ran.training.fit -> ran.training.kl -> ran.training.fit"
    ]
    assert violations({"ran.nowhere.x": set()}) == [
        "ran.nowhere.x: its layer 'nowhere' is not in LAYERS"
    ]


def test_checker_reads_a_violating_tree(tmp_path):
    """The parser and the checker together fail on a back-edge written as code."""
    pkg = tmp_path / "ran"
    for sub in ("util", "training"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "training" / "train.py").write_text("from ran.util import atomic\n")
    (pkg / "util" / "atomic.py").write_text("def f():\n    from ran.training.train import g\n")
    graph = import_graph(pkg)
    assert graph["ran.training.train"] == {"ran.util.atomic"}
    assert graph["ran.util.atomic"] == {"ran.training.train"}
    found = violations(graph)
    assert "ran.util.atomic imports ran.training.train: against the layer direction" in found
    with pytest.raises(AssertionError):
        assert found == []
