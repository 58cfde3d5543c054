"""Starting the host as a browser would and sending it hello: doctor's launch check.

A manifest can be perfect and the host still fail to start (a moved interpreter, a broken
package); only running it shows that.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID, chrome_origin
from .browsers import CHROMIUM

HELLO = {"id": 1, "type": "hello", "protocol": 1}
HELLO_TIMEOUT_S = 2.0


@dataclass
class HostCheck:
    ok: bool
    elapsed_s: float
    reply: dict | None = None
    problem: str = ""


def check_host(launcher: Path | str, argv: Sequence[str] = (), timeout: float = HELLO_TIMEOUT_S,
               hello: dict | None = None) -> HostCheck:
    """Start the launcher as a browser would, send a hello frame, expect a reply in time.

    ``argv`` is what the browser passes (Chrome: the origin; Firefox: the manifest
    path and the add-on id). The process is stopped afterwards.
    """
    from .. import protocol  # noqa: PLC0415 - keep install importable without the framing module loaded

    hello = dict(HELLO if hello is None else hello)
    launcher = Path(launcher)
    started = time.monotonic()
    stderr = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen([str(launcher), *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, cwd=str(launcher.parent), start_new_session=True)
    except OSError as exc:
        stderr.close()
        return HostCheck(False, time.monotonic() - started, problem=f"could not start {launcher}: {exc}")
    result: dict = {}

    def read_reply() -> None:
        try:
            assembler = protocol.Reassembler()
            while True:
                message = protocol.read_message(proc.stdout)
                if message is None:
                    result["problem"] = "the host closed its output without answering"
                    return
                whole = assembler.feed(message)
                if whole is not None and "event" not in whole:
                    result["reply"] = whole
                    return
        except protocol.ProtocolError as exc:
            result["problem"] = f"the host wrote something that is not a valid frame: {exc.message}"
        except (OSError, ValueError) as exc:
            result["problem"] = f"reading the host's answer failed: {exc}"

    reader = threading.Thread(target=read_reply, daemon=True)
    reader.start()
    try:
        proc.stdin.write(protocol.encode_message(hello)[0])
        proc.stdin.flush()
    except OSError:
        pass  # the host exited at once; the reader reports what it saw
    reader.join(timeout)
    elapsed = time.monotonic() - started
    timed_out = reader.is_alive()
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(0.5)
    stderr.seek(0)
    err_tail = stderr.read()[-400:].decode("utf-8", "replace").strip()
    stderr.close()
    if proc.stdout:
        proc.stdout.close()
    reply = None if timed_out else result.get("reply")
    if reply is None:
        problem = result.get("problem") or "no answer"
        if timed_out:
            problem = f"no answer to hello within {timeout:g} s"
        if err_tail:
            problem += f"; its stderr ends with: {err_tail}"
        return HostCheck(False, elapsed, problem=problem)
    if reply.get("id") != hello.get("id") or reply.get("ok") is not True:
        err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        detail = f"{err.get('code')}: {err.get('message')}" if err else json.dumps(reply)[:200]
        return HostCheck(False, elapsed, reply, problem=f"the host answered hello with an error ({detail})")
    return HostCheck(True, elapsed, reply)


def hello_by_hand(launcher: str) -> str:
    """A shell line that sends the hello frame to a launcher and shows what comes back."""
    from ..protocol import encode_message  # noqa: PLC0415

    data = encode_message(HELLO)[0]
    escaped = "".join(chr(b) if 32 <= b < 127 and chr(b) not in "\\'%" else f"\\{b:03o}" for b in data)
    return f"printf '{escaped}' | {shlex.quote(launcher)} | od -c | head"


def browser_argv(family: str, manifest: str) -> list[str]:
    if family == CHROMIUM:
        return [chrome_origin(CHROME_EXTENSION_ID)]
    return [manifest, FIREFOX_EXTENSION_ID]

