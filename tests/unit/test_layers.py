"""The package's import graph: no cycle, and no arrow from a lower layer to a higher one.

Layers, top to bottom: transports (the CLI, the native host, its handlers) -> service and
its views -> engine (executor, recovery, dag) -> store. Adapters and pricing are leaves:
they execute one step and know nothing of runs. Imports inside functions count too: a
lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "host" / "hybrid_engine"

TRANSPORTS = {"cli", "terminal", "foreground", "host", "hostboot", "handlers", "batch_handlers", "batchcli", "install",
              "httpapi"}
SERVICE = {"service", "views", "batches", "batchfeed"}
ENGINE = {"executor", "recovery", "dag", "worker", "fallbacks", "ratelimit", "batchbudget", "modelcalls"}
LEAVES = {"adapters", "pricing", "money", "clock", "atomicfile", "pagetitle", "states", "errors", "redact", "safepath", "identity",
          "tokens", "steplimits"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Modules of this package that `path` imports, anywhere in it (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            anchor = base[:len(base) - (node.level - 1)] if node.level > 1 else base
            target = anchor + (node.module.split(".") if node.module else [])
            if node.module is None:
                found.update(".".join(anchor + [a.name]) for a in node.names)
            else:
                found.add(".".join(target))
                found.update(".".join(target + [a.name]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hybrid_engine"):
            found.add(node.module.removeprefix("hybrid_engine").lstrip("."))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path, name) if m in files and m != name}
    return graph


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_package_has_no_import_cycle_between_modules():
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle of concern.
    edges = {m: {d for d in deps if not (d and m.startswith(d + ".") or d == "")} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_lower_layer_imports_a_higher_one():
    above = {
        "store": TRANSPORTS | SERVICE | ENGINE | {"adapters"},
        "engine": TRANSPORTS | SERVICE,
        "service": TRANSPORTS,
        "leaf": TRANSPORTS | SERVICE | ENGINE | {"store"},
    }
    wrong = []
    for module, deps in _graph().items():
        top = _top(module)
        layer = ("store" if top == "store" else "engine" if top in ENGINE else "service" if top in SERVICE
                 else "leaf" if top in LEAVES else None)
        if layer is None:
            continue
        wrong += [f"{module} -> {d}" for d in sorted(deps) if _top(d) in above[layer] and _top(d) != top]
    assert wrong == []


def test_a_module_over_500_lines_says_at_its_top_why_it_is_one_file():
    long = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
        if len(lines) > 550 and "one file" not in doc:
            long.append(f"{path.relative_to(PACKAGE)}: {len(lines)} lines")
    assert long == []
