"""What a SQLite or OS failure on the database file means to the user.

Each becomes a StoreError subclass that names the file and the way out (move a damaged
file aside, free some space, make the folder writable, try again when another process
lets go of the write lock), so no caller handles the driver's own exceptions.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import StoreBusy, StoreCorrupt, StoreError, StoreFull, StoreReadOnly

_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = (sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY,
                                                              sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY)
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = (
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB)
# An I/O failure with less free space than this on the file's disk is taken for a full disk:
# SQLite reports a full disk as "disk I/O error" when it cannot even create its -shm file.
_FULL_DISK_BYTES = 1 << 20


def _quote(path: Path | str) -> str:
    text = str(path)
    if os.name == "nt":
        return f'"{text}"' if " " in text else text
    import shlex

    return shlex.quote(text)


def _corrupt(path: Path, detail: str) -> StoreCorrupt:
    return StoreCorrupt(f"{path} is damaged and cannot be read ({detail}). Move it aside and start again: "
                        f"mv {_quote(path)} {_quote(str(path) + '.broken')} (the runs in it are lost to Hybrid Engine; "
                        "sqlite3's .recover command may save some)", path=str(path))


def _empty(path: Path) -> StoreCorrupt:
    return StoreCorrupt(f"{path} is an empty file (0 bytes), not a Hybrid Engine database; it is left alone rather "
                        "than silently replaced by a new one. If it should hold your runs, restore it from a backup; "
                        f"otherwise move it aside: mv {_quote(path)} {_quote(str(path) + '.empty')}", path=str(path))


def _read_only(path: Path, detail: str) -> StoreReadOnly:
    what = (f"its folder {path.parent} is read-only here" if not os.access(path.parent, os.W_OK)
            else "the file is read-only")
    return StoreReadOnly(f"{path} cannot be written ({detail}): {what}. Make it writable, or point "
                         "HYBRID_ENGINE_HOME at a writable folder", path=str(path))


def _full(path: Path, detail: str) -> StoreFull:
    return StoreFull(f"the disk that holds {path} is full ({detail}). Free some space on it and try again; what "
                     "was saved before is intact", path=str(path))


def _free_bytes(path: Path) -> int | None:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: Windows has no statvfs
        try:
            import shutil

            return shutil.disk_usage(folder).free
        except OSError:
            return None
    return st.f_bavail * st.f_frsize


def _writable(path: Path) -> bool:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def _diagnose(path: Path, detail: str) -> StoreError:
    """An open or I/O failure SQLite does not explain: look at the disk and the folder."""
    free = _free_bytes(path)
    if free is not None and free < _FULL_DISK_BYTES:
        return _full(path, detail)
    if not _writable(path):
        return _read_only(path, detail)
    return StoreError(f"{path} cannot be opened ({detail}); check that its folder exists and that you may "
                      "write there, or point HYBRID_ENGINE_HOME at another folder", path=str(path))


def store_error(exc: BaseException, path: Path | str) -> StoreError | None:
    """What a SQLite or OS failure on the database file means, as a StoreError naming the file
    and the way out; None when it says nothing about the file (a bug: let it through)."""
    path = Path(path)
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        detail = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or detail in ("file is not a database",
                                                                      "database disk image is malformed"):
            return _corrupt(path, detail)
        if primary == _SQLITE_FULL or detail == "database or disk is full":
            return _full(path, detail)
        if primary == _SQLITE_READONLY or detail.startswith("attempt to write a readonly database"):
            return _read_only(path, detail)
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreBusy(f"{path} stayed locked by another Hybrid Engine process ({detail}); try again in a "
                             "moment", path=str(path))
        if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_PERM) or detail in ("disk I/O error",
                                                                                  "unable to open database file"):
            return _diagnose(path, detail)
        return None
    if isinstance(exc, OSError):
        import errno

        detail = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return _full(path, detail)
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return _read_only(path, detail)
        return _diagnose(path, detail)
    return None


def query_error(exc: BaseException, path: Path | str) -> StoreError | None:
    """store_error for a failure that reached a transport (the CLI, the host) from a query:
    only SQLite's own errors are about the file there."""
    return store_error(exc, path) if isinstance(exc, sqlite3.Error) else None


def reraise(exc: sqlite3.Error, path: Path) -> None:
    """Raise the store's own exception for a driver error inside a transaction; the error
    itself when it says nothing about the file (a bug, such as SQL that does not parse)."""
    err = store_error(exc, path)
    if err is None:
        raise exc
    raise err from exc
