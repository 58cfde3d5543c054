"""The native-messaging host: what the browser starts on ``connectNative``.

    hostboot.main(caller_args), then serve_after_boot(boot)
      guard stdout     the real stdout is kept (a dup) for frames only; fd 1 and sys.stdout
                       now lead to stderr, so a stray print or a C library's write cannot
                       corrupt the pipe; logging and warnings go to the rotating log file
      first frame      a `hello` from a pinned caller is answered by hostboot with the
                       standard library alone (this module is not even imported yet);
                       anything else is answered here, still before any Service exists
      engine           the host executes nothing itself: once the browser's opening requests
                       are answered (ENGINE_QUIET_S), it opens the log file and, if work is
                       waiting, starts the background worker (worker.py), a process outside
                       the browser's process tree that recovers orphans and runs the steps;
                       a capture, an ingest or a retry makes sure that worker runs (not at
                       all for a caller that is not allowed)
      serve            frames are read on the main thread; messages are handled on a few
                       daemon threads (a slow `estimate` does not hold up `runs.list`);
                       every message gets a reply, a bad one an error reply, and the host
                       goes on serving
      end of input     (EOF, a truncated frame, an oversized declared length, SIGTERM)
                       stop reading, make sure the worker runs if work is left, and exit
                       within a second: Firefox kills a host 3 s after closing its stdin;
                       a model call in flight is the worker's, so it is neither cut off nor
                       sent twice when the browser goes

Messages and their fields are in docs/PROTOCOL.md; handlers.HANDLERS maps
each type to a small function over service.Service. Replies carry the host version
(``"version"``) next to ``ok``. Events (``run.updated``, ``templates.changed``) are
sent only after ``runs.subscribe``. This module is the transport: frames in and out, the
read loop, dispatch, the handler threads, events, the background worker's watchdog and
the end. The first moments are hostboot.py's (it hands over a BootState and is never
imported from here), the handlers are handlers.py, framing is protocol.py, use cases are
service.py; the store is reached only through the Service, and no SQL lives here.
It stays one file (~520 lines, half of it this map and the end-of-input rules) because the
reader thread, the handler threads, the event feed and the watchdog share one shutdown:
every path out of `serve` must hand work to the worker and exit within Firefox's 3 s.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from . import __version__, protocol
from .errors import BadRequest, Forbidden, HybridEngineError, StoreError, TooLarge
from .batch_handlers import BATCH_HANDLERS
from .handlers import HANDLERS as _RUN_HANDLERS, field, json_type  # noqa: F401 - re-exported

HANDLERS = {**_RUN_HANDLERS, **BATCH_HANDLERS}  # every type in hello.MESSAGE_TYPES
from .hello import HEAVY_MODULES  # noqa: F401 - re-exported

TYPE_CHECKING = False  # `typing` itself costs 2 ms of the host's start
if TYPE_CHECKING:
    from typing import Any, BinaryIO

log = logging.getLogger(__name__)

HANDLER_THREADS = 4
POLL_S = 0.15  # run.updated latency: Service.changes is cheap when nothing was committed
# The worker check and the log file load once the browser's opening
# requests are answered: when none has been pending for ENGINE_QUIET_S, at the latest
# ENGINE_DELAY_MAX_S after the first reply. Loaded together with the first runs.list they
# would double its wait (measured: 58 -> 42 ms from spawn).
ENGINE_QUIET_S = 0.03
ENGINE_DELAY_MAX_S = 1.0
WORKER_WATCH_S = 2.0  # how soon a background worker that died is replaced while the browser is connected


class _Terminated(BaseException):
    """SIGTERM/SIGINT/SIGHUP while reading: shut down as on EOF."""


class _EarlyRecords(logging.Handler):
    """Holds the records logged before the log file is set up, for start_logging to write
    there: nothing is lost, and nothing goes to stderr unmasked meanwhile."""

    LIMIT = 2000

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.LIMIT:
            self.records.append(record)

    def install(self) -> None:
        root = logging.getLogger()
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        root.addHandler(self)

    def replay(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        records, self.records = self.records, []
        for record in records:
            for handler in root.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


_EARLY = _EarlyRecords()


# ---- caller origin -------------------------------------------------------------------

def check_origin(args: list[str]) -> str | None:
    """None when the caller may talk to us, else why not (becomes `forbidden` replies).

    No caller (a terminal or a test): no check. The pinned ids are accepted without
    reading anything; others must have been registered with ``install --extension-id``.
    """
    from . import identity

    caller = identity.parse_caller(args)
    if caller.kind == identity.NO_CALLER or caller.pinned:
        return None
    if caller.kind == identity.CHROME:
        from .install import registered_extension_ids

        if caller.id in registered_extension_ids():
            return None
        return (f"extension {caller.id} is not allowed to use this host; register it with "
                f"`hybrid-engine install --extension-id {caller.id}`")
    if caller.kind == identity.BAD_ORIGIN:
        return f"caller origin {caller.raw!r} is not a chrome-extension://<id>/ origin"
    if caller.kind == identity.FIREFOX:
        from .install import registered_gecko_ids

        if caller.id in registered_gecko_ids():
            return None
        return (f"add-on {caller.id!r} is not allowed to use this host; register it with "
                f"`hybrid-engine install --extension-id {caller.id}`")
    return f"unrecognised caller {caller.raw!r}: expected chrome-extension://<id>/ or a manifest path and an add-on id"


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return isinstance(value, (str, int))


# ---- the host --------------------------------------------------------------------------

class Host:
    def __init__(self, caller_args: list[str], stdin: BinaryIO, stdout: BinaryIO, log_file: str | None = None):
        self.caller_args = list(caller_args)
        self.stdin = stdin
        self.writer = protocol.FrameWriter(stdout)
        self.log_file = log_file
        self.started = time.monotonic()
        self.last_message = self.started
        self._log_lock = threading.Lock()
        self.forbidden: str | None = None
        self.subscribed = False
        self.accepting = False  # inside the read loop: a signal interrupts it
        self.config_problem: str | None = None  # why no step starts (a bad config.toml or keys.json)
        self._service = None
        self._service_lock = threading.Lock()
        self._sub_lock = threading.Lock()
        self._closing = threading.Event()  # no more input; the engine must stop
        self._stop = threading.Event()  # poller and template watcher
        self._gone = threading.Event()  # writing failed: the browser went away
        self._engine: threading.Thread | None = None
        self._jobs = None  # a queue.Queue, made with the handler threads after the first reply
        self._busy = 0
        self._busy_cond = threading.Condition()
        self._workers: list[threading.Thread] = []

    # -- lazy parts ------------------------------------------------------------------
    @property
    def service(self):
        if self._service is None:
            with self._service_lock:
                if self._service is None:
                    from .service import Service

                    self._service = Service()
        return self._service

    # -- writing ---------------------------------------------------------------------
    def send(self, message: dict) -> bool:
        """Write one message (chunked when large). False if it could not be written."""
        if self._gone.is_set():
            return False
        try:
            self.writer.send(message)
            return True
        except TooLarge as exc:  # only an enormous id makes a reply impossible to chunk
            log.warning("reply could not be framed: %s", exc.message)
            if "ok" not in message or message.get("id") is None:
                return False
            return self.send(self._error_reply(None, "too_large", f"the reply cannot be sent: {exc.message}"))
        except (TypeError, ValueError) as exc:
            log.exception("message could not be encoded: %.200r", message)
            if "ok" not in message or message.get("error", {}).get("code") == "internal":
                return False
            return self.send(self._error_reply(message.get("id"), "internal",
                                               f"the reply could not be encoded: {exc}"))
        except OSError as exc:  # BrokenPipeError and friends: nobody is reading
            log.info("stdout closed (%s); shutting down", exc)
            self._gone.set()
            return False

    def _error_reply(self, msg_id: Any, code: str, message: str, **fields) -> dict:
        return {"id": msg_id, "ok": False, "error": {"code": code, "message": message, **fields},
                "version": __version__}

    # -- dispatch --------------------------------------------------------------------
    def handle(self, msg: dict) -> dict:
        """The reply to one decoded message. Never raises."""
        raw_id = msg.get("id")
        msg_id = raw_id if _valid_id(raw_id) else None
        try:
            if "id" not in msg or raw_id is None:
                raise BadRequest("id: missing (expected a string or a number)", field="id")
            if not _valid_id(raw_id):
                raise BadRequest(f"id: expected a string or a number, got {json_type(raw_id)}", field="id")
            kind = msg.get("type")
            if kind is None:
                raise BadRequest("type: missing (expected a message type such as \"hello\")", field="type")
            if not isinstance(kind, str):
                raise BadRequest(f"type: expected a string, got {json_type(kind)}", field="type")
            if self.forbidden:
                raise Forbidden(self.forbidden)
            handler = HANDLERS.get(kind)
            if handler is None:
                raise HybridEngineError(f"unknown message type {kind[:80]!r} (known: {', '.join(sorted(HANDLERS))})",
                                        code="unknown_type")
            result = handler(self, msg)
            return {"id": msg_id, "ok": True, "result": result, "version": __version__}
        except HybridEngineError as exc:
            if isinstance(exc, StoreError):
                log.warning("message %r (type %.60r): %s", msg_id, msg.get("type"), exc.message)
            return {"id": msg_id, "ok": False, "error": exc.to_dict(), "version": __version__}
        except Exception as exc:  # noqa: BLE001 - the client gets a code, the log gets the traceback
            from .config import ConfigError, db_path
            from .store import query_error

            if isinstance(exc, ConfigError):  # a broken config.toml: the user can fix it, say where
                return self._error_reply(msg_id, "bad_config", str(exc))
            # engine.db damaged, read-only or full, found by a query: its own code, the file and the fix
            store_exc = query_error(exc, self._service.db_path if self._service is not None else db_path())
            if store_exc is not None:
                log.warning("message %r (type %.60r): %s", msg_id, msg.get("type"), store_exc.message)
                return {"id": msg_id, "ok": False, "error": store_exc.to_dict(), "version": __version__}
            self.start_logging()
            log.exception("message %r (type %.60r) failed", msg_id, msg.get("type"))
            where = f" (details in {self.log_file})" if self.log_file else ""
            return self._error_reply(msg_id, "internal", f"internal error handling {str(msg.get('type'))[:60]!r}"
                                     f"{where}")

    def _worker(self) -> None:
        while True:
            msg = self._jobs.get()
            if msg is None:
                return
            try:
                self.send(self.handle(msg))
            finally:
                with self._busy_cond:
                    self._busy -= 1
                    self._busy_cond.notify_all()

    def _submit(self, msg: dict) -> None:
        if not self._workers:
            import queue

            self._jobs = queue.Queue()
            for i in range(HANDLER_THREADS):
                t = threading.Thread(target=self._worker, name=f"handler-{i}", daemon=True)
                t.start()
                self._workers.append(t)
        with self._busy_cond:
            self._busy += 1
        self._jobs.put(msg)

    def _wait_handlers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._busy_cond:
            while self._busy > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._busy_cond.wait(left)
        return True

    # -- the read loop ---------------------------------------------------------------
    def serve(self, first_answered: bool = False) -> int:
        """Read and answer messages until the input ends; then hand work over and return.

        `first_answered`: hostboot already answered the browser's hello."""
        first = not first_answered
        self.accepting = True
        if first_answered:
            self._after_first_reply()
        try:
            while not self._gone.is_set():
                try:
                    body = protocol.read_frame(self.stdin)
                except protocol.StreamError as exc:
                    self.start_logging()
                    log.warning("closing: %s", exc.message)
                    self.send(self._error_reply(None, exc.code, f"{exc.message}; closing the connection"))
                    break
                self.last_message = time.monotonic()
                if body is None:
                    self.start_logging()
                    log.info("end of input")
                    break
                try:
                    msg = protocol.decode_message(body)
                except protocol.MessageError as exc:
                    self.send(self._error_reply(None, exc.code, exc.message))
                    continue
                if first:
                    first = False
                    # Answered here, before anything heavy is imported or any thread competes.
                    self.send(self.handle(msg))
                    self._after_first_reply()
                    continue
                self._submit(msg)
        except _Terminated as exc:
            log.info("signal %s: shutting down", exc.args[0] if exc.args else "?")
        except OSError as exc:
            log.info("stdin failed (%s): shutting down", exc)
        finally:
            self.accepting = False
        return self.close()

    def start_logging(self) -> None:
        """The rotating log file; done once the opening requests are answered (it costs
        imports), or earlier by whoever needs it. What was logged before is held by
        _EarlyRecords and written to the file first, through its key-masking filter."""
        with self._log_lock:
            if self.log_file is not None:
                return
            try:
                from . import config, logsetup

                logsetup.configure("host")  # replaces every root handler, _EARLY's too
                self.log_file = str(config.logs_dir() / "hybrid-engine.log")
            except Exception:  # noqa: BLE001 - a host without a log still serves
                self.log_file = ""
            _EARLY.replay()

    def _after_first_reply(self) -> None:
        if self.forbidden:
            self.start_logging()
            return
        self._engine = threading.Thread(target=self._engine_main, name="engine", daemon=True)
        self._engine.start()

    # -- the engine: the background worker -------------------------------------------
    def _wait_for_quiet(self) -> None:
        deadline = time.monotonic() + ENGINE_DELAY_MAX_S
        while not self._closing.is_set():
            now = time.monotonic()
            with self._busy_cond:
                busy = self._busy
            if now >= deadline or (not busy and now - self.last_message >= ENGINE_QUIET_S):
                return
            self._closing.wait(min(ENGINE_QUIET_S, deadline - now))

    def _engine_main(self) -> None:
        self._wait_for_quiet()
        self.start_logging()
        if self._closing.is_set():
            return  # close() looks for work left
        # At start: orphans of a crash, work queued while no worker ran. Then, while the browser
        # is connected, a worker that died (killed, out of memory) is replaced within WATCH_S.
        store_problem = None
        while True:
            try:
                if self._settings_ok():
                    self.service.ensure_worker_if_work()
                store_problem = None
            except StoreError as exc:  # engine.db unusable: every request says so; logged once
                if store_problem != exc.message:
                    log.warning("no background worker while the store is unusable: %s", exc.message)
                store_problem = exc.message
            except Exception:  # noqa: BLE001 - the host keeps serving; the next round tries again
                log.exception("could not start the background worker")
            if self._closing.wait(WORKER_WATCH_S):
                return

    def _settings_ok(self) -> bool:
        """A worker started with a bad config.toml or keys.json (or a worker.lock that is not a
        file) would only exit again: until the file is fixed, captures wait queued and
        host.status, spend and estimate say why."""
        from . import worker
        from .config import ConfigError
        from .handlers import check_settings

        try:
            check_settings()
            worker.lock().check()
            worker.linger_s()  # HYBRID_ENGINE_WORKER_LINGER_S, which a worker reads at start
        except ConfigError as exc:
            if self.config_problem != str(exc):
                log.warning("no step starts until this is fixed: %s", exc)
            self.config_problem = str(exc)
            return False
        if self.config_problem:
            log.info("the settings are good again; the background worker starts")
        self.config_problem = None
        return True

    def ensure_worker(self) -> None:
        """Work was just committed: a running worker picks it up within worker.POLL_S; start
        one if none runs (after the commit, so a worker that is just leaving sees it)."""
        try:
            from . import worker

            if self._settings_ok():
                worker.ensure()
        except Exception:  # noqa: BLE001 - the capture is stored; the next launch runs it
            log.exception("could not start the background worker")

    # -- events --------------------------------------------------------------------
    def subscribe(self) -> None:
        with self._sub_lock:
            if self.subscribed:
                return
            _, cursor = self.service.changes(None)  # from now on, every change is news
            self.subscribed = True
        threading.Thread(target=self._poll_changes, args=(cursor,), name="run-events", daemon=True).start()
        self._watch_templates()  # notes the folder before the reply: later changes are all reported

    def _poll_changes(self, cursor: dict) -> None:
        svc = self.service
        delay = POLL_S
        while not self._stop.wait(delay):
            try:
                changed, cursor = svc.changes(cursor)
                delay = POLL_S
            except Exception:  # noqa: BLE001 - a busy or locked store: try again a bit later
                log.exception("polling for run changes failed")
                delay = min(5.0, delay * 2)
                continue
            for summary in changed:
                if not self.send({"event": "run.updated", "run": summary, "version": __version__}):
                    return

    def _watch_templates(self) -> None:
        svc = self.service

        def changed() -> None:
            self.send({"event": "templates.changed", "templates": svc.list_templates(),
                       "errors": [e.message for e in svc.templates.errors()], "version": __version__})

        try:
            svc.templates.watch(changed, self._stop)
        except Exception:  # noqa: BLE001
            log.exception("could not watch the templates folder")

    # -- the end ---------------------------------------------------------------------
    def close(self) -> int:
        """Stop serving; if work is left and no worker runs, start one; bounded in time."""
        self.start_logging()
        self._closing.set()
        self._wait_handlers(0.3)  # a capture being written lands before the hand-over check
        for _ in self._workers:
            self._jobs.put(None)
        self._stop.set()
        if not self.forbidden:
            try:
                self._hand_over()
            except StoreError as exc:
                log.warning("could not look for unfinished work: %s", exc.message)
            except Exception:  # noqa: BLE001 - the next launch recovers and runs it instead
                log.exception("could not hand unfinished work to a worker")
        log.info("host exiting after %.3f s", time.monotonic() - self.started)
        return 0

    def _hand_over(self) -> None:
        if self._service is None:
            from . import config

            if not config.db_path().exists():
                return
        if self._settings_ok():
            self.service.ensure_worker_if_work()


def serve_after_boot(boot) -> int:
    """Everything after hostboot.main's first moments (`boot`: its BootState): the origin
    check, signals, serving, the hand-over, exit."""
    _EARLY.install()
    args = boot.args
    host = Host(args, boot.stdin, boot.frames_out)
    try:
        host.forbidden = check_origin(args)
    except Exception:  # noqa: BLE001 - an unreadable install record: only the pinned ids pass
        log.exception("origin check failed")
        host.forbidden = "the caller's origin could not be checked"
    log.info("host %s started (pid %d, caller %s)", __version__, os.getpid(), args or "none")
    if host.forbidden:
        log.warning("refusing caller %s: %s", args, host.forbidden)

    def on_signal(signum, frame):  # noqa: ARG001
        if host.accepting:  # later, shutdown is already under way: let it finish
            raise _Terminated(signum)

    boot.take_signals(on_signal)
    if boot.signal_seen() is not None:  # while hostboot read or this module loaded: as on EOF
        log.info("signal %s before serving: shutting down", boot.signal_seen())
        code = host.close()
    else:
        code = host.serve(boot.answered)
    # Daemon threads (handlers, pollers, watchfiles) must not hold the exit up:
    # everything that matters is committed or handed over; leave now.
    logging.shutdown()
    try:
        boot.frames_out.close()
    except OSError:
        pass
    os._exit(code)


__all__ = ["HANDLERS", "HEAVY_MODULES", "Host", "check_origin", "serve_after_boot", "field"]
