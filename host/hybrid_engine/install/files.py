"""Writing the files install leaves behind: atomically, and byte for byte as the browser will read them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..atomicfile import write_atomically


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Bytes exactly as given (no newline translation, no BOM): a browser reads them as they are."""
    write_atomically(path, text, mode)


def is_executable(path: Path) -> bool:
    if sys.platform.startswith("win"):
        return path.is_file()
    return path.is_file() and os.access(path, os.X_OK)

