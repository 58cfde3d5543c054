"""A small native-messaging client for tests: the browser's side of the pipe.

    host = HostClient(home)                       # spawns `python -m hybrid_engine host`
    host = HostClient(home, args=["chrome-extension://<id>/"])
    result = host.call("runs.list", limit=5)      # ok reply -> result (AssertionError otherwise)
    reply = host.request("runs.get", run_id="x")  # the whole reply, ok or not
    host.send_raw(b"...")                         # any bytes, framed or not
    host.wait_event(lambda e: ...)                # events seen since start (after runs.subscribe)
    host.close_stdin(); host.wait(1.0)            # what the browser does when it goes away

A reader thread parses stdout strictly as frames: anything that is not a valid frame
(a stray print, a frame over 1 MiB, a body that is not a JSON object) is recorded in
``stdout_problems`` so tests can assert the pipe stayed clean. Chunk series are
reassembled; the size of every frame is kept in ``frame_sizes``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from hybrid_engine import protocol

from polling import GUARD_S

ROOT = Path(__file__).resolve().parents[2]
# How long a wait may take before the test fails as hung: a guard, never a measure (a busy
# 2-core machine can take tens of seconds to start a worker and run its first step).
HANG_GUARD_S = GUARD_S


def host_env(home: Path | str, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["HYBRID_ENGINE_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT / "host") + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        env.pop(var, None)
    # The background worker the host starts leaves soon after the test's work is done.
    env.setdefault("HYBRID_ENGINE_WORKER_LINGER_S", "1")
    # Loading the estimate's libraries early is tested on its own; elsewhere it would only
    # make the machine busier while the test runs.
    env.setdefault("HYBRID_ENGINE_WARM_AFTER_S", "off")
    env.update(extra or {})
    return env


class HostClient:
    def __init__(self, home: Path | str, args: list[str] = (), env: dict | None = None,
                 extra_env: dict | None = None, prefix: list[str] = ()):
        """`prefix`: a command the host is started through (e.g. one that mounts its home first)."""
        self.home = Path(home)
        self.stderr_file = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "hybrid_engine", "host", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr_file,
                                     env=env or host_env(home, extra_env))
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self.replies: dict[Any, dict] = {}
        self.unmatched: list[dict] = []  # replies with id null (errors about unreadable input)
        self.events: list[dict] = []
        self.frame_sizes: list[int] = []
        self.chunk_frames: list[dict] = []  # envelope of every chunk frame: id, chunk, chunks, size
        self.stdout_problems: list[str] = []
        self.eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- reading ----------------------------------------------------------------------
    def _read(self) -> None:
        assembler = protocol.Reassembler()
        stream = self.proc.stdout
        try:
            while True:
                try:
                    body = protocol.read_frame(stream, max_size=protocol.MAX_OUTGOING)
                except protocol.ProtocolError as exc:
                    self.stdout_problems.append(f"not a valid frame: {exc.message}")
                    return
                if body is None:
                    return
                self.frame_sizes.append(len(body))
                try:
                    message = protocol.decode_message(body)
                    if protocol.is_chunk(message):
                        self.chunk_frames.append({"id": message.get("id"), "chunk": message["chunk"],
                                                  "chunks": message["chunks"], "size": len(body)})
                    whole = assembler.feed(message)
                except protocol.ProtocolError as exc:
                    self.stdout_problems.append(f"bad frame body: {exc.message}: {body[:80]!r}")
                    continue
                if whole is None:
                    continue
                with self._cond:
                    if "event" in whole:
                        self.events.append(whole)
                    elif "ok" in whole and whole.get("id") is not None:
                        self.replies[json.dumps(whole["id"])] = whole
                    elif "ok" in whole:
                        self.unmatched.append(whole)
                    else:
                        self.stdout_problems.append(f"neither reply nor event: {json.dumps(whole)[:200]}")
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + max(timeout, GUARD_S)  # a guard, never a bound on speed
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or (self.eof and not predicate()):
                    raise AssertionError(f"timed out waiting for {what}" + ("" if not self.eof else
                                         " (the host closed its stdout)") + f"; stderr: {self.stderr()[-2000:]}")
                self._cond.wait(min(left, 0.25))

    # -- writing ----------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict) -> None:
        self.send_raw(protocol.frame(protocol.dumps(message).encode("utf-8")))

    def next_id(self) -> int:
        return next(self._ids)

    def request(self, type_: str, timeout: float = HANG_GUARD_S, **fields) -> dict:
        msg_id = self.next_id()
        self.send({"id": msg_id, "type": type_, **fields})
        return self.reply(msg_id, timeout)

    def reply(self, msg_id: Any, timeout: float = HANG_GUARD_S) -> dict:
        key = json.dumps(msg_id)
        return self._wait(lambda: self.replies.get(key), timeout, f"the reply to id {msg_id!r}")

    def call(self, type_: str, timeout: float = HANG_GUARD_S, **fields) -> Any:
        reply = self.request(type_, timeout, **fields)
        assert reply.get("ok") is True, f"{type_} failed: {reply}"
        return reply["result"]

    def error(self, type_: str, timeout: float = HANG_GUARD_S, **fields) -> dict:
        reply = self.request(type_, timeout, **fields)
        assert reply.get("ok") is False, f"{type_} unexpectedly succeeded: {reply}"
        return reply["error"]

    def next_unmatched(self, count: int, timeout: float = HANG_GUARD_S) -> dict:
        """The count-th reply with id null (errors about frames that could not be read)."""
        return self._wait(lambda: self.unmatched[count - 1] if len(self.unmatched) >= count else None,
                          timeout, f"{count} error replies without id")

    def wait_event(self, predicate: Callable[[dict], bool], timeout: float = HANG_GUARD_S, what: str = "an event") -> dict:
        def found():
            for e in self.events:
                if predicate(e):
                    return e
            return None
        return self._wait(found, timeout, what)

    def wait_run(self, run_id: str, status: str = "COMPLETED", timeout: float = 2 * HANG_GUARD_S) -> dict:
        """Polls runs.get until the run has `status` (works without a subscription)."""
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            doc = self.call("runs.get", run_id=run_id)
            if doc["status"] == status:
                return doc
            if doc["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} is {doc and doc['status']}, expected {status}: {doc}")

    # -- lifetime -----------------------------------------------------------------------
    def close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def close(self, timeout: float = 5.0) -> int | None:
        self.close_stdin()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self._reader.join(5)
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        return code

    def __enter__(self) -> "HostClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.stderr_file.close()
