"""File paths that page text and model output cannot steer.

A template chooses where a file goes; the data a run carries (a page's title, a
model's answer) may only fill in a *name*. Two halves keep that true:

- rendering (dag.render_path): each value substituted into a path becomes one safe
  name piece (`name_piece`), and the last piece that came from a step's outputs
  gets a short tag unique to the run and step (`tagged`), so two pages with the
  same title do not overwrite each other;
- writing (`open_for_write`): a relative path lands inside the files folder, `..`
  and `~user` are refused, no symbolic link is followed below the folder, and only
  a regular file is ever written (a FIFO or a device is refused without blocking).

An absolute or `~/` path is the template author's own choice of folder: it is
never produced by data (a name piece has no separator and no leading `~`), and
`template_problem` refuses a template whose data would choose a folder in one.

This module is a leaf: standard library only, so adapters may use it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import unicodedata
from pathlib import Path
from typing import Any

MAX_PIECE_BYTES = 100  # a name piece in UTF-8; leaves room for a tag and an extension under 255
NAME_MAX_BYTES = 255  # one file or folder name, on every file system we run on
FALLBACK_NAME = "untitled"
TAG_CHARS = 8  # hex digits of the run-and-step tag: 32 bits, collisions need ~65k same-named runs

SCAN_CHARS = 1000  # of a value, enough to fill a piece; a whole page as a name costs no more
_WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{port}{i}" for port in ("COM", "LPT")
                                                               for i in [*range(1, 10), *"¹²³"])})
_SEPARATORS = "/\\" if sys.platform == "win32" else "/"


class UnsafePath(ValueError):
    """A path that would leave its folder or touch something other than a regular file."""


def as_text(value: Any) -> str:
    """A referenced value as rendering writes it: text as is, None as nothing, a list of texts
    (a for_each step's outputs, in part order) one after another with a blank line between,
    the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n\n".join(value)
    import json

    return json.dumps(value, ensure_ascii=False)


def name_piece(value: Any, max_bytes: int = MAX_PIECE_BYTES) -> str:
    """One file-name component made from untrusted text: never empty, never a path.

    Keeps letters and digits of every script, '-', '_' and inner '.'; the rest becomes
    '-'. No leading '.' or '-' (no hidden files, no '..', nothing a shell reads as an
    option), at most `max_bytes` of UTF-8, and not a name Windows reserves.
    """
    text = unicodedata.normalize("NFC", as_text(value)[:SCAN_CHARS])
    # Letters, marks and digits of any script, '_', '-' and '.'; anything else (separators,
    # spaces, '~', ':', control and format characters such as bidi overrides) becomes '-'.
    text = "".join(ch if ch in "_-." or unicodedata.category(ch)[0] in "LMN" else "-" for ch in text)
    text = re.sub(r"-{2,}", "-", text).strip(".-")
    raw = text.encode("utf-8")[:max(1, max_bytes)]
    text = raw.decode("utf-8", "ignore").rstrip(".-")
    if not text:
        return FALLBACK_NAME
    if text.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def piece_budgets(raw: str, refs: re.Pattern) -> list[int]:
    """Bytes each reference in a path may fill, in order: the references in one name share
    what is left of NAME_MAX_BYTES after the template's own text and a tag, so three long
    titles in one name still make a name the file system takes."""
    budgets: list[int] = []
    for part in re.split(r"[/\\]", raw):
        n = len(refs.findall(part))
        if n:
            room = NAME_MAX_BYTES - len(refs.sub("", part).encode("utf-8")) - (TAG_CHARS + 1)
            budgets += [min(MAX_PIECE_BYTES, room // n)] * n
    return budgets


def unique_tag(seed: str) -> str:
    import hashlib

    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:TAG_CHARS]


def tagged(piece: str, seed: str) -> str:
    """`My-Title` -> `My-Title-1a2b3c4d`, the tag derived from `seed` (run and step).

    A retry of the same step writes the same file again instead of leaving a second copy.
    """
    return f"{piece}-{unique_tag(seed)}"


def _is_anchored(skeleton: str) -> bool:
    return skeleton.startswith("~") or os.path.isabs(skeleton)


def template_problem(raw: str, refs: re.Pattern) -> str | None:
    """What is wrong with a path as the template wrote it, before anything is substituted.

    `refs` matches one reference; a reference to a step's outputs is data. Data may fill a
    name anywhere below the files folder, but in an absolute or `~/` path only the file name:
    the folders there are the author's, written out.
    """
    if not raw.strip():
        return "the path is empty"
    if "\x00" in raw:
        return "the path contains a NUL character"
    marker = "\x00"
    skeleton = refs.sub(lambda m: marker if m.group(1).strip().startswith("steps.") else "x", raw)
    parts = re.split(r"[/\\]", skeleton)
    if ".." in parts:
        return (f"'{raw}' contains '..'; name a folder inside the files folder, or write the "
                f"absolute folder out")
    if skeleton.startswith("~") and not (skeleton == "~" or skeleton[1:2] in ("/", "\\")):
        return f"'{raw}': only '~/' (your home folder) is understood, not '~name'"
    if _is_anchored(skeleton) and any(marker in p for p in parts[:-1]):
        return (f"'{raw}': in an absolute path, step outputs may only fill the file name, not a "
                f"folder; use a path relative to the files folder to sort files into folders")
    if parts[-1] == "":
        return f"'{raw}' names a folder, not a file"
    return None


# ---- writing -------------------------------------------------------------------------

def _split(path: str) -> list[str]:
    parts = [p for p in re.split("[" + re.escape(_SEPARATORS) + "]", path) if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"'{path}' contains '..', which would leave its folder")
    return parts


def target(path: str, files_dir: Path) -> tuple[Path, list[str]]:
    """(the folder to stay inside, the components below it) for a rendered path."""
    if not path or "\x00" in path:
        raise UnsafePath("the path is empty" if not path else "the path contains a NUL character")
    if path.startswith("~"):
        if not (path == "~" or path[1:2] in ("/", "\\")):
            raise UnsafePath(f"'{path}': only '~/' (your home folder) is understood, not '~name'")
        path = str(Path.home()) + path[1:]
    if os.path.isabs(path):
        parts = _split(path)
        if not parts:
            raise UnsafePath(f"'{path}' names a folder, not a file")
        # The author wrote the folder out (data cannot begin a path): follow it as they see it.
        return Path(path).parent, [Path(path).name]
    parts = _split(path)
    if not parts:
        raise UnsafePath(f"'{path}' names a folder, not a file")
    return files_dir, parts


_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")


def open_for_write(path: str, files_dir: Path, *, append: bool, exclusive: bool = False) -> tuple[int, Path]:
    """An fd open for writing on a regular file at `path`, and where that file is.

    Relative paths land in `files_dir`; an absolute one in the folder the template wrote
    out. Missing folders are created (0700). Every component below the anchor is opened without following links, so a
    link inside the folder cannot lead out of it; the file itself is opened with
    O_NOFOLLOW and O_NONBLOCK (a FIFO with no reader fails at once instead of blocking)
    and kept only if fstat says it is a regular file with no other hard link. With
    `exclusive`, a file that exists already raises FileExistsError (nothing is touched).
    """
    anchor, parts = target(path, files_dir)
    anchor.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _DIR_FD:  # pragma: no cover - Windows: no dir_fd / O_NOFOLLOW
        return _open_by_name(anchor, parts, append=append, exclusive=exclusive)
    where = anchor
    dir_fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts[:-1]:
            where = where / name
            sub = _enter(dir_fd, name, where)
            os.close(dir_fd)
            dir_fd = sub
        where = where / parts[-1]
        return _open_file(dir_fd, parts[-1], where, append=append, exclusive=exclusive), where
    finally:
        os.close(dir_fd)


def _enter(dir_fd: int, name: str, where: Path) -> int:
    """The sub-folder `name` of dir_fd, created if missing, never through a link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            sub = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                pass  # made meanwhile by another step; opened below like any folder
            sub = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            if _is_link(dir_fd, name):
                raise UnsafePath(f"'{where}' is a symbolic link; links below the files folder are not "
                                 f"followed") from exc
            raise UnsafePath(f"'{where}' is not a folder") from exc
        raise
    return sub


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _refuse_kind(mode: int, where: Path) -> None:
    if stat.S_ISLNK(mode):
        raise UnsafePath(f"'{where}' is a symbolic link; write_file writes regular files only")
    if stat.S_ISDIR(mode):
        raise UnsafePath(f"'{where}' is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise UnsafePath(f"'{where}' is not a regular file (a pipe, socket or device); "
                         f"write_file writes regular files only")


def _open_file(dir_fd: int, name: str, where: Path, *, append: bool, exclusive: bool = False) -> int:
    # Look before opening: opening a device can itself do something (a tape rewinds).
    if exclusive:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            raise FileExistsError(errno.EEXIST, "exists", str(where))
        except FileNotFoundError:
            pass
    try:
        _refuse_kind(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode, where)
    except FileNotFoundError:
        pass
    flags = (os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
             | (os.O_APPEND if append else 0) | (os.O_EXCL if exclusive else 0))
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"'{where}' is a symbolic link; write_file writes regular files only") from exc
        if exc.errno == errno.ENXIO:  # a FIFO that appeared between the look and the open
            raise UnsafePath(f"'{where}' is a pipe; write_file writes regular files only") from exc
        if exc.errno == errno.EISDIR:
            raise UnsafePath(f"'{where}' is a folder, not a file") from exc
        raise
    try:
        st = os.fstat(fd)
        _refuse_kind(st.st_mode, where)
        if st.st_nlink > 1:
            raise UnsafePath(f"'{where}' has other hard links; writing it would change a file elsewhere")
        os.set_blocking(fd, True)
        if not append:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_by_name(anchor: Path, parts: list[str], *, append: bool,
                  exclusive: bool = False) -> tuple[int, Path]:  # pragma: no cover
    """Without dir_fd: check each component by name (not race-free, still no link followed)."""
    where = anchor
    for name in parts[:-1]:
        where = where / name
        if where.is_symlink():
            raise UnsafePath(f"'{where}' is a symbolic link; links below the files folder are not followed")
        where.mkdir(mode=0o700, exist_ok=True)
    where = where / parts[-1]
    if where.exists() or where.is_symlink():
        _refuse_kind(os.lstat(where).st_mode, where)
    fd = os.open(where, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0) | (os.O_EXCL if exclusive else 0)
                 | getattr(os, "O_BINARY", 0), 0o600)
    if not append:
        os.ftruncate(fd, 0)
    return fd, where


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
