"""Who owns a step: host name, pid and the pid's start time.

A pid alone is not an identity: after a reboot or a long uptime the number is
reused. The start time (Linux: /proc/<pid>/stat field 22, in clock ticks since
boot) tells the original process from a newcomer with the same number. Where it
cannot be read, a live pid counts as the owner and the lease decides.
"""

from __future__ import annotations

import os
import socket

_HOST = socket.gethostname()


def hostname() -> str:
    return _HOST


def process_start(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        state = data[data.rfind(b")") + 2:][:1]
        if state in (b"Z", b"X"):
            return False
    except OSError:
        pass
    return True


def owner_alive(pid: int | None, start: int | None, host: str | None) -> bool | None:
    """True/False when it can be told from here; None for an owner on another machine."""
    if host and host != _HOST:
        return None
    if not pid or not pid_alive(pid):
        return False
    if start is not None:
        current = process_start(pid)
        if current is not None and current != start:
            return False  # the pid was reused by another process
    return True
