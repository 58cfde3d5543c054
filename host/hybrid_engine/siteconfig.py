"""The [[sites]] tables of config.toml, written from the extension's Options page (`sites.set`).

Only those tables change: every `[[sites]]` block is taken out of the file as it is and the
new ones are appended, so the rest of the file (comments, order, other tables) stays as the
user wrote it. The new text is parsed before it replaces the file, and must read back as the
same settings with the new rules, or nothing is written. The file is replaced atomically.
"""

from __future__ import annotations

import json
import re

from . import config
from .atomicfile import write_atomically
from .errors import BadRequest

_HEADER = re.compile(r"^\s*\[")
_SITES_HEADER = re.compile(r"^\s*\[\[\s*sites\s*\]\]\s*(#.*)?$")
MAX_RULES = 500


def _without_sites(text: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if _SITES_HEADER.match(line):
            skipping = True
            continue
        if skipping and _HEADER.match(line):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out).rstrip("\n")


def checked_rules(items) -> list[dict]:
    """[{match, rule}] from the wire, each checked as config.toml's would be (BadRequest names it)."""
    from .settings import sites as read_sites

    if not isinstance(items, list) or len(items) > MAX_RULES:
        raise BadRequest(f"sites: expected an array of at most {MAX_RULES} {{match, rule}} objects", field="sites")
    rules = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or set(item) - {"match", "rule"}:
            raise BadRequest(f"sites #{n}: expected an object with match and rule", field="sites")
        rules.append({"match": item.get("match"), "rule": item.get("rule")})
    try:
        read_sites({"sites": rules})
    except config.ConfigError as exc:
        raise BadRequest(str(exc).split(": ", 1)[-1].replace("[[sites]]", "sites"), field="sites") from None
    return [{"match": r["match"].strip(), "rule": r["rule"]} for r in rules]


def write_rules(items) -> list[dict]:
    """Replace config.toml's [[sites]] with `items`; the rules as now in effect."""
    import tomllib

    rules = checked_rules(items)
    path = config.config_path()
    try:
        before = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = ""
    old = config.load_config()  # a file that does not parse is refused (bad_config), not overwritten
    blocks = "".join(f"\n[[sites]]\nmatch = {json.dumps(r['match'])}\nrule = {json.dumps(r['rule'])}\n" for r in rules)
    kept = _without_sites(before)
    text = (kept + "\n" if kept else "") + blocks
    new = tomllib.loads(text)
    expected = {k: v for k, v in old.items() if k != "sites"}
    if {k: v for k, v in new.items() if k != "sites"} != expected or new.get("sites", []) != rules:
        raise BadRequest(f"{path}: its [[sites]] tables could not be replaced without changing the rest of the "
                         "file; edit them by hand", field="sites")
    config.ensure_private_dir(path.parent)
    write_atomically(path, text)
    return rules


__all__ = ["write_rules", "checked_rules"]
