"""The bearer token of the HTTP API: one file in the data folder, readable by its owner alone.

Any web page the user visits can send requests to 127.0.0.1; the token is what it cannot
know. It is made on first use with 256 random bits and kept, so scripts configured with it
keep working across restarts; deleting the file makes a new one on the next `serve`.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from pathlib import Path

from .. import config

log = logging.getLogger(__name__)

FILE_NAME = "http-token"


class TokenFileError(config.ConfigError):
    """The token file exists but cannot be used (not a regular file, unreadable, empty)."""


def path() -> Path:
    return config.data_dir() / FILE_NAME


def load_or_create() -> str:
    """The token, made (0600, never through a link) when there is none yet."""
    p = path()
    try:
        return read()
    except FileNotFoundError:
        pass
    config.ensure_private_dir(p.parent)
    token = secrets.token_urlsafe(32)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:  # another `serve` made it meanwhile: use theirs
        return read()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    log.info("made the HTTP API token %s", p)
    return token


def read() -> str:
    """The stored token; FileNotFoundError when there is none. A token file others can read is
    made private again (it was ours to begin with), and said in the log."""
    p = path()
    try:
        # O_NONBLOCK: a FIFO there would otherwise wait for a writer forever.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(str(p)) from None
        raise TokenFileError(f"{p}: cannot be read ({exc.strerror}); remove it and `hybrid-engine serve` "
                             "makes a new token") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # checked before fdopen, which refuses a folder with a traceback
        os.close(fd)
        raise TokenFileError(f"{p}: not a regular file; remove it and `hybrid-engine serve` makes a new token")
    with os.fdopen(fd, "r", encoding="ascii", errors="replace") as fh:
        if os.name == "posix" and st.st_mode & 0o077:
            os.fchmod(fh.fileno(), 0o600)
            log.warning("%s could be read by other users (mode %o); made it readable by its owner alone",
                        p, st.st_mode & 0o777)
        token = fh.read(1024).strip()
    if len(token) < 16:
        raise TokenFileError(f"{p}: holds no token (expected at least 16 characters); remove it and "
                             "`hybrid-engine serve` makes a new one")
    return token


def loose_mode() -> int | None:
    """The token file's mode when other users can read it, else None (doctor's check)."""
    try:
        mode = os.stat(path(), follow_symlinks=False).st_mode
    except OSError:
        return None
    return mode & 0o777 if os.name == "posix" and mode & 0o077 else None
