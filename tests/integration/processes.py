"""Processes the crash tests kill, and a pid that is certainly dead."""

from __future__ import annotations

import signal
import subprocess
import sys


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
