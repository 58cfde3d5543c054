"""The store is the bottom layer: it imports nothing of the engine above it (no adapters,
service, executor), only the leaves it shares with everyone (errors, states, clock, pageurl)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

BELOW_THE_STORE = {"errors", "states", "clock", "pageurl"}


def engine_imports(path: Path, package: str) -> set[str]:
    """The hybrid_engine modules a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            names.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]):
                if name and name.split(".")[0] == "hybrid_engine":
                    names.add(name)
    return names


def store_files() -> tuple[list[Path], str]:
    """The store's source files and the package their relative imports start from."""
    spec = importlib.util.find_spec("hybrid_engine.store")
    if spec.submodule_search_locations:
        return sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.py")), spec.name
    return [Path(spec.origin)], spec.parent


def test_the_store_imports_nothing_above_it():
    files, package = store_files()
    assert files
    upward = {}
    for path in files:
        for name in engine_imports(path, package):
            parts = name.split(".")
            if parts[1:2] == ["store"] or parts[1] in BELOW_THE_STORE:
                continue
            upward.setdefault(path.name, set()).add(name)
    assert upward == {}
