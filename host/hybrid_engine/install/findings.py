"""A problem found by install or doctor, and the exact command that fixes it.

Every finding names its fix: a command to paste (``install_cmd``, ``rm_cmd``) or the edit to make.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import Iterable

from .browsers import SYSTEM, USER

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    code: str  # stable, for tests and scripts: launcher_missing, origin_no_trailing_slash, ...
    severity: str  # error | warning | info
    browser: str  # browser key(s), comma-separated; "" when about the whole setup
    path: str  # the manifest, launcher, registry key or folder concerned
    problem: str
    fix: str  # the exact command or edit

    def to_dict(self) -> dict:
        return asdict(self)


def install_cmd(browsers: Iterable[str] = (), scope: str = USER, user_data_dir: str | None = None) -> str:
    parts = ["hybrid-engine", "install"]
    for b in browsers:
        parts += ["--browser", b]
    if scope == SYSTEM:
        parts = ["sudo"] + parts + ["--system"]
    if user_data_dir:
        parts += ["--user-data-dir", shlex.quote(user_data_dir)]
    return " ".join(parts)


def rm_cmd(path: str, scope: str) -> str:
    return ("sudo " if scope == SYSTEM else "") + f"rm {shlex.quote(path)}"

