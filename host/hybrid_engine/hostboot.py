"""The native host's first moments: the browser's `hello` answered from the standard library.

The browser starts the host on `connectNative` and waits for the reply to its first
message; everything the host imports before that reply is latency the user sees. So the
first frame is read here, with nothing but os/sys/struct/json loaded: a `hello` from an
allowed caller is answered on the spot, and only then is host.py (logging, threads, the
store, ...) imported to serve the rest. Anything else, such as another first message, a
malformed frame or a caller that needs the install record to be checked, is handed to
host.py untouched, with the bytes already read put back in front of stdin, so that every
error reply comes from one place.

`main` is the host's one entry point (`hybrid-engine host`, `python -m hybrid_engine host`).
What host.py needs from these first moments travels in a BootState; host.py never imports
this module.
"""

from __future__ import annotations

import os
import struct
import sys

from . import PROTOCOL_VERSION, __version__
from .hello import HEAVY_MODULES, MESSAGE_TYPES, hello_result, loaded_heavy_modules  # noqa: F401 - re-exported
from .identity import NO_CALLER, parse_caller

_HEADER = struct.Struct("=I")
_FIRST_FRAME_MAX = 64 * 1024  # a hello is tiny; a bigger first frame goes to host.py as it is


class Terminated(BaseException):
    """SIGTERM/SIGINT/SIGHUP while a read is waiting: stop reading and shut down as on EOF."""


_signal_seen: list[int] = []  # signals that arrived before host.py took over; it acts on them
_reading = False  # a signal may interrupt the read of the first frame, not the import of host.py


def _on_signal(signum, frame):  # noqa: ARG001
    _signal_seen.append(signum)
    if _reading:
        raise Terminated(signum)


def install_signal_handlers(handler=_on_signal) -> None:
    """From before the first read (host.py installs its own later): a browser that gives up
    on us must still get the hand-over (queued work passed to a worker), not a kill in the
    middle of nothing."""
    import signal

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):  # not the main thread, or not supported here
                pass


def signal_seen() -> int | None:
    return _signal_seen[0] if _signal_seen else None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")  # as protocol.decode_message: no NaN, no Infinity


def guard_stdout():
    """Keep the real stdout for frames; send fd 1 and sys.stdout to stderr from now on.

    Returns an unbuffered binary stream on a private duplicate of the original fd 1.
    Anything else that writes to fd 1 (print, a C extension, a subprocess that inherits
    it) lands on stderr, or nowhere when stderr is not usable.
    """
    frames_fd = os.dup(1)
    try:
        os.dup2(2, 1)
    except OSError:  # no usable stderr: fd 1 goes nowhere rather than into the pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    if sys.stderr is not None:
        sys.stdout = sys.stderr
    else:  # pragma: no cover - pythonw without a console
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    if os.name == "nt":  # pragma: no cover - Windows only: no newline translation on the pipes
        import msvcrt

        msvcrt.setmode(frames_fd, os.O_BINARY)
        msvcrt.setmode(0, os.O_BINARY)
    return open(frames_fd, "wb", buffering=0)  # noqa: SIM115 - lives as long as the process


class Prepended:
    """A byte stream that yields `head` first, then reads `stream`: the first frame's bytes,
    already read here, put back for host.py's reader."""

    def __init__(self, head: bytes, stream):
        self._head = head
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out, self._head = self._head + self._stream.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._stream.read(n)


def pinned_caller(args: list[str]) -> bool:
    """True when the caller is our own extension by its pinned id (nothing to read for that)."""
    caller = parse_caller(args)
    return caller.kind == NO_CALLER or caller.pinned  # no caller: host.check_origin does not check either


def hello_reply(msg: dict) -> dict | None:
    """The reply to a well-formed hello, or None to let host.py answer (and explain) it."""
    if msg.get("type") != "hello":
        return None
    msg_id = msg.get("id")
    if isinstance(msg_id, bool) or not isinstance(msg_id, (str, int)):
        return None  # floats, null, missing: host.py's id rules apply
    proto = msg.get("protocol", PROTOCOL_VERSION)
    if isinstance(proto, bool) or not isinstance(proto, int) or proto < 1:
        return None
    result = hello_result()
    return {"id": msg_id, "ok": True, "result": result, "version": __version__}


def _read_upto(stream, n: int, into: bytearray) -> bool:
    """Append up to n bytes to `into`; False when the input ended first."""
    want = len(into) + n
    while len(into) < want:
        chunk = stream.read(want - len(into))
        if not chunk:
            return False
        into += chunk
    return True


def _first_hello(head: bytes, args: list[str]) -> bytes | None:
    """The reply frame for a first frame that is a pinned caller's plain hello, else None."""
    if len(head) < _HEADER.size or not pinned_caller(args):
        return None
    (length,) = _HEADER.unpack(head[:_HEADER.size])
    if len(head) != _HEADER.size + length:
        return None
    import json

    try:
        msg = json.loads(head[_HEADER.size:].decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # host.py answers with the exact error
        return None
    reply = hello_reply(msg) if isinstance(msg, dict) else None
    if reply is None:
        return None
    data = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(data)) + data


class BootState:
    """What the first moments hand to host.py: the caller's arguments, stdin (with any bytes
    read here put back in front), the stream that carries frames, and whether the first
    hello was answered here. Signals stay with this module until host.py takes them."""

    __slots__ = ("args", "stdin", "frames_out", "answered")

    def __init__(self, args: list[str], stdin, frames_out, answered: bool):
        self.args = args
        self.stdin = stdin
        self.frames_out = frames_out
        self.answered = answered

    def signal_seen(self) -> int | None:
        """The first SIGTERM/SIGINT/SIGHUP since the start, even one that arrived while
        host.py loaded: the host then shuts down as on EOF, handing queued work over."""
        return signal_seen()

    def take_signals(self, handler) -> None:
        """From now on `handler(signum, frame)` gets the signals instead of this module."""
        install_signal_handlers(handler)


def main(caller_args: list[str] | None = None) -> int:
    """`hybrid-engine host [ORIGIN | MANIFEST ADDON-ID]`, as the launcher runs it: serve until
    the input ends."""
    global _reading
    frames_out = guard_stdout()
    args = list(caller_args or [])
    stdin = sys.stdin.buffer if sys.stdin is not None else open(0, "rb", closefd=False)  # noqa: SIM115
    install_signal_handlers()
    head = bytearray()
    try:
        _reading = True
        if _read_upto(stdin, _HEADER.size, head):
            (length,) = _HEADER.unpack(head)
            if length <= _FIRST_FRAME_MAX:
                _read_upto(stdin, length, head)
    except Terminated:
        pass  # host.py sees signal_seen() and shuts down, handing queued work over
    finally:
        _reading = False
    answered = False
    reply = _first_hello(bytes(head), args) if signal_seen() is None else None
    if reply is not None:
        try:
            frames_out.write(reply)
            answered = True
        except OSError:
            pass  # nobody is reading: host.py answers the same frame, finds the pipe closed and exits
    from .host import serve_after_boot

    rest = stdin if answered or not head else Prepended(bytes(head), stdin)
    return serve_after_boot(BootState(args, rest, frames_out, answered))


__all__ = ["BootState", "MESSAGE_TYPES", "Prepended", "Terminated", "guard_stdout", "hello_reply", "hello_result",
           "loaded_heavy_modules", "main", "pinned_caller", "signal_seen"]
