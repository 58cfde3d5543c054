"""Keeps the C heap of a process that executes steps from growing with its threads.

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps
what is freed in it for that thread's next use. Steps that parse large pages (extract_text
through lxml) run in worker threads, each building and freeing trees of tens of MB, so the
freed memory piled up arena by arena: a 500-page batch peaked at 408 MiB against 306 MiB
with two arenas, which stays flat from 300 pages to 500. Two arenas cost nothing measurable
here, since those threads mostly wait on the GIL or on SQLite anyway.

Linux with glibc only (mallopt); elsewhere, and when the environment already sets
MALLOC_ARENA_MAX, nothing changes.
"""

from __future__ import annotations

import os
import sys

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2
_done: bool | None = None


def limit_arenas() -> bool:
    """Caps the arenas that threads started from now on may create; True when it did."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(M_ARENA_MAX, ARENAS))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt of this kind)
        _done = False
    return _done


__all__ = ["ARENAS", "limit_arenas"]
