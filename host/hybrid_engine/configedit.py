"""Changing one setting in config.toml the way a person would: that one line, nothing else.

The file is the user's: their comments, their order and every key this module does not
touch stay as they were. A change is made to the text (the key's line replaced, or added
at the end of its table, or the table added at the end), the result is parsed and checked
by settings.load() before anything is written, and written atomically (a temporary file
in the same folder, then a rename): a reader sees the old file or the new one, never half.
A lock file keeps two writers from losing each other's change.

Only the settings the extension may change are accepted (EDITABLE); a value that
settings.py refuses is refused here with its message (file, key, allowed range), and the
file is left as it was.
"""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path

from . import config, settings
from .atomicfile import write_atomically
from .config import PROVIDERS, ConfigError
from .errors import BadRequest

# (section, key) -> what the value means; "providers.*" stands for each provider's table.
EDITABLE = {
    ("providers.*", "base_url"): "an http:// or https:// URL",
    ("budgets", "daily_usd"): "a finite number of USD >= 0",
    ("budgets", "monthly_usd"): "a finite number of USD >= 0",
    ("notes", "folder"): "a folder path",
}


class SettingRefused(BadRequest):
    """The change was not made; the message says which key and what is allowed."""

    def __init__(self, message: str, *, field: str = "value"):
        super().__init__(message, field=field)


def editable(section: str, key: str) -> bool:
    if section.startswith("providers."):
        return section[len("providers."):] in PROVIDERS and ("providers.*", key) in EDITABLE
    return (section, key) in EDITABLE


def allowed_list() -> str:
    names = []
    for section, key in EDITABLE:
        names.append(f"[providers.{'|'.join(PROVIDERS)}] {key}" if section == "providers.*" else f"[{section}] {key}")
    return "; ".join(names)


def toml_value(value) -> str:
    """A TOML literal for a JSON value: a string (basic, escaped), a number or a boolean."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SettingRefused(f"{value!r} cannot be written to config.toml")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes (\" \\ \n \t \uXXXX) are all valid in a TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    raise SettingRefused(f"expected a string or a number, got {type(value).__name__}")


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_HEADER = re.compile(r"^\s*\[\[")


def _header_name(line: str) -> str | None:
    if _ARRAY_HEADER.match(line):
        return "[[array]]"
    m = _HEADER.match(line)
    if not m:
        return None
    return ".".join(part.strip().strip('"').strip("'") for part in m.group(1).split("."))


def _key_of(line: str) -> str | None:
    m = re.match(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)\s*=", line)
    return m.group(1).strip("\"'") if m else None


def _trailing_comment(line: str) -> str:
    """The `   # comment` after a setting's value (with the spaces before it), or "": the first
    '#' after which the value alone still reads as TOML (a '#' inside a string is not one)."""
    import tomllib

    value = line.rstrip("\r\n").split("=", 1)[1]
    for i, ch in enumerate(value):
        if ch == "#":
            try:
                tomllib.loads(f"k = {value[:i]}")
            except tomllib.TOMLDecodeError:
                continue
            kept = value[:i]
            return value[len(kept.rstrip()):]
    return ""


def edited_text(text: str, section: str, key: str, value) -> str:
    """`text` with `key` of `[section]` set to `value` (None: the key's line removed)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    new_line = None if value is None else f"{key} = {toml_value(value)}\n"
    start = None  # index of the section's header
    for i, line in enumerate(lines):
        if _header_name(line) == section:
            start = i
            break
    if start is None:
        if new_line is None:
            return "".join(lines)
        sep = "\n" if lines and lines[-1].strip() else ""
        return "".join(lines) + f"{sep}[{section}]\n{new_line}"
    end = len(lines)
    for j in range(start + 1, len(lines)):
        if _header_name(lines[j]) is not None:
            end = j
            break
    last_content = start
    for j in range(start + 1, end):
        if _key_of(lines[j]) == key:
            if new_line is None:
                del lines[j]
            else:
                lines[j] = new_line[:-1] + _trailing_comment(lines[j]) + "\n"
            return "".join(lines)
        if lines[j].strip() and not lines[j].lstrip().startswith("#"):
            last_content = j
    if new_line is not None:
        lines.insert(last_content + 1, new_line)
    return "".join(lines)


@contextmanager
def _locked(path: Path):
    """One writer at a time (another host, the CLI): read, change and write as one."""
    config.ensure_private_dir(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the rename is still atomic
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lookup(conf: dict, section: str, key: str):
    table = conf
    for part in section.split("."):
        table = table.get(part) if isinstance(table, dict) else None
    return table.get(key) if isinstance(table, dict) else None


def update(section: str, key: str, value) -> dict:
    """Set (or, with None, remove) one editable setting; returns {section, key, value, file}.

    SettingRefused when the key is not editable, the value is refused by settings.py, or
    the file is written in a form this line editor cannot change safely (named, unchanged).
    """
    import tomllib

    where = f"[{section}] {key}"
    if not editable(section, key):
        raise SettingRefused(f"{where}: not a setting the extension may change (it may change: {allowed_list()})",
                             field="key")
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            value = None  # an emptied field removes the setting: the default applies again
    path = config.config_path()
    # A config.toml that is a link (kept in a dotfiles folder) is changed where it points:
    # renaming over the link would swap it for a copy and cut it from the user's file.
    real = Path(os.path.realpath(path))
    with _locked(path):  # the lock stays beside the link, out of the folder it points into
        try:
            text = real.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        new_text = edited_text(text, section, key, value)
        try:
            conf = tomllib.loads(new_text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingRefused(f"{path}: {where} could not be changed without breaking the file ({exc}); "
                                 "the file is unchanged; edit it by hand") from None
        if _lookup(conf, section, key) != value:
            raise SettingRefused(f"{path}: {where} is written in a form this editor does not change "
                                 "(a dotted key or an inline table); the file is unchanged; edit it by hand")
        try:
            settings.load(conf)
        except ConfigError as exc:
            own = [p for p in str(exc).split(": ", 1)[-1].split("; ") if p.startswith(where)]
            if own:
                raise SettingRefused(f"{path}: {own[0]}; not saved") from None
            raise SettingRefused(f"{exc}; fix that first (nothing was saved)") from None
        write_atomically(real, new_text)
    return {"section": section, "key": key, "value": value, "file": str(path)}


__all__ = ["EDITABLE", "SettingRefused", "edited_text", "editable", "toml_value", "update", "write_atomically"]
