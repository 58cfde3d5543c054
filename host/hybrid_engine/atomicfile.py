"""Replacing a file so that a reader sees the old bytes or the new, never half of either.

Every file the host or the installer rewrites in place (config.toml, the key file, the
browsers' host manifests, the API's login unit) goes through here, so a crash or a second
writer at the same moment cannot leave a truncated file behind. The temporary name is unique
per call: two writers never share one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE = 0o600


def write_atomically(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Write `data` (text as UTF-8, exactly as given: no newline translation) beside `path`,
    flush it to disk, then rename it over `path`. `mode` None keeps the file's permissions,
    or makes a new file readable by its owner alone."""
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = PRIVATE
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


__all__ = ["PRIVATE", "write_atomically"]
