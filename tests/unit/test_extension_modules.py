"""The extension's modules, read as text: what one module exports, another imports.

The extension has no bundler and no linter run in the suite, so an export nobody imports
would stay unnoticed; these checks keep the module surface the one the code uses.
"""

from __future__ import annotations

import re
from pathlib import Path

EXTENSION = Path(__file__).resolve().parents[2] / "extension"
_IMPORT = re.compile(r'import\s*\{([^}]*)\}\s*from\s*"([^"]+)"')
_EXPORT = re.compile(r"^export (?:async )?(?:function\*?|const|let|class) (\w+)", re.M)
_EXPORT_LIST = re.compile(r"^export \{([^}]*)\}", re.M)


def _sources() -> dict[Path, str]:
    return {p.resolve(): p.read_text(encoding="utf-8") for p in EXTENSION.rglob("*.js")}


def _imported() -> dict[Path, set[str]]:
    names: dict[Path, set[str]] = {}
    for path, text in _sources().items():
        for listed, target in _IMPORT.findall(text):
            module = (path.parent / target).resolve()
            names.setdefault(module, set()).update(
                n.split(" as ")[0].strip() for n in listed.split(",") if n.strip())
    return names


def test_every_export_of_an_extension_module_is_imported_somewhere():
    imported = _imported()
    unused = []
    for path, text in _sources().items():
        exported = _EXPORT.findall(text) + [n.strip() for group in _EXPORT_LIST.findall(text)
                                            for n in group.split(",") if n.strip()]
        unused += [f"{path.relative_to(EXTENSION)}: {name}" for name in exported
                   if name not in imported.get(path, set())]
    assert unused == []
