"""The native-messaging host: what the browser starts on ``connectNative``.

    hostboot.main(caller_args), then serve_after_boot
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

Messages and their fields are in CONTRACT.md ("Native messaging"); HANDLERS maps each
type to a small function over service.Service. Replies carry the host version
(``"version"``) next to ``ok``. Events (``run.updated``, ``templates.changed``) are
sent only after ``runs.subscribe``. This module knows requests and replies; framing
is protocol.py, use cases are service.py, and no SQL lives here.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from . import PROTOCOL_VERSION, __version__, protocol
from .errors import BadRequest, Forbidden, HybridEngineError, TooLarge
from . import hostboot
from .hostboot import HEAVY_MODULES, guard_stdout, hello_result, loaded_heavy_modules  # noqa: F401 - re-exported

TYPE_CHECKING = False  # `typing` itself costs 2 ms of the host's start
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Callable

    Handler = Callable[["Host", dict], dict]

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
MAX_CAPTURE_ID = 200
_CHROME_PREFIX = "chrome-extension://"


_Terminated = hostboot.Terminated  # SIGTERM/SIGINT/SIGHUP while reading: shut down as on EOF


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

    Chrome and its relatives pass ``chrome-extension://<id>/`` (Windows adds
    ``--parent-window=N``); Firefox passes the manifest path and the add-on id. No
    argument: a terminal or a test, no check. The pinned ids are accepted without
    reading anything; others must have been registered with ``install --extension-id``.
    """
    from .identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID

    args = [a for a in args if not a.startswith("--parent-window=")]
    if not args:
        return None
    first = args[0]
    ext_id = _chrome_origin_id(first)
    if ext_id is not None:
        if ext_id == CHROME_EXTENSION_ID:
            return None
        from .install import registered_extension_ids

        if ext_id in registered_extension_ids():
            return None
        return (f"extension {ext_id} is not allowed to use this host; register it with "
                f"`hybrid-engine install --extension-id {ext_id}`")
    if first.startswith("chrome-extension://"):
        return f"caller origin {first!r} is not a chrome-extension://<id>/ origin"
    if len(args) >= 2:
        addon = args[1]
        if addon == FIREFOX_EXTENSION_ID:
            return None
        from .install import registered_gecko_ids

        if addon in registered_gecko_ids():
            return None
        return (f"add-on {addon!r} is not allowed to use this host; register it with "
                f"`hybrid-engine install --extension-id {addon}`")
    return f"unrecognised caller {first!r}: expected chrome-extension://<id>/ or a manifest path and an add-on id"


def _chrome_origin_id(origin: str) -> str | None:
    """The id in ``chrome-extension://<32 letters a-p>/`` (slash optional), else None."""
    if not origin.startswith(_CHROME_PREFIX):
        return None
    ext_id = origin[len(_CHROME_PREFIX):]
    if ext_id.endswith("/"):
        ext_id = ext_id[:-1]
    return ext_id if len(ext_id) == 32 and all("a" <= ch <= "p" for ch in ext_id) else None


# ---- field validation ----------------------------------------------------------------

_MISSING = object()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def field(msg: dict, name: str, types: type | tuple[type, ...], what: str, *, required: bool = True,
          default: Any = None, prefix: str = "") -> Any:
    """msg[name] checked against JSON types; BadRequest naming the field otherwise.

    An optional field may be absent or null. Booleans are never taken for numbers.
    """
    label = prefix + name
    value = msg.get(name, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            raise BadRequest(f"{label}: missing (expected {what})", field=label)
        return default
    types = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise BadRequest(f"{label}: expected {what}, got {_json_type(value)}", field=label)
    return value


def _text(msg: dict, name: str, *, required: bool = True, prefix: str = "") -> str | None:
    value = field(msg, name, str, "a string", required=required, prefix=prefix)
    if required and not value.strip():
        raise BadRequest(f"{prefix}{name}: must not be empty", field=prefix + name)
    return value


def _page(msg: dict) -> dict:
    """The `page` of capture and estimate: only `content` is required."""
    page = field(msg, "page", dict, "an object with at least `content`")
    out = {"content": field(page, "content", str, "a string", prefix="page.")}
    for key in ("source_url", "content_type", "title", "selection"):
        out[key] = field(page, key, str, "a string", required=False, prefix="page.")
    out["metadata"] = field(page, "metadata", dict, "an object", required=False, default={}, prefix="page.")
    if out["content_type"] is not None:  # checked before a run is created for it
        from .service import CONTENT_TYPES

        if out["content_type"].split(";")[0].strip().lower() not in CONTENT_TYPES:
            raise BadRequest(f"page.content_type: {out['content_type'][:80]!r} is not supported "
                             f"(use one of {', '.join(CONTENT_TYPES)})", field="page.content_type")
    return out


# ---- handlers: one small function per message type ------------------------------------

def h_hello(host: "Host", msg: dict) -> dict:
    proto = field(msg, "protocol", int, "an integer", required=False, default=PROTOCOL_VERSION)
    if proto < 1:
        raise BadRequest("protocol: expected a positive integer", field="protocol")
    return hello_result()


def h_host_status(host: "Host", msg: dict) -> dict:
    host.start_logging()  # so that log_file is known even before the engine has started
    from . import worker

    pid = worker.lock().holder()
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - host.started, 3),
        "worker": {"running": pid is not None, "pid": pid if pid and pid > 0 else None},
        "subscribed": host.subscribed,
        "origin_checked": bool(host.caller_args),
        "heavy_modules_loaded": loaded_heavy_modules(),
        "log_file": host.log_file or None,
        "config_error": host.config_problem,
    }


def h_templates_list(host: "Host", msg: dict) -> dict:
    svc = host.service
    return {"templates": svc.list_templates(), "errors": [e.message for e in svc.templates.errors()],
            "folder": str(svc.templates.folder)}


def h_capture(host: "Host", msg: dict) -> dict:
    template = _text(msg, "template")
    page = _page(msg)
    budget = field(msg, "budget_usd", (int, float), "a number", required=False)
    capture_id = field(page["metadata"], "capture_id", str, "a string", required=False, prefix="page.metadata.")
    if capture_id is not None and not 1 <= len(capture_id) <= MAX_CAPTURE_ID:
        raise BadRequest(f"page.metadata.capture_id: expected 1 to {MAX_CAPTURE_ID} characters",
                         field="page.metadata.capture_id")
    # A capture re-sent with a capture_id that already made a run gets that run back (duplicate: true).
    result = host.service.capture(template, capture_id=capture_id, content=page["content"],
                                  source_url=page["source_url"], content_type=page["content_type"] or "text/html",
                                  title=page["title"], selection=page["selection"], metadata=page["metadata"],
                                  budget_usd=budget)
    if not result.get("duplicate"):
        host.ensure_worker()
    return result


_EXTERNAL_FIELDS = ("content", "source_url", "content_type", "step_name", "metadata", "title", "selection")


def h_external_data_add(host: "Host", msg: dict) -> dict:
    run_id = _text(msg, "workflow_id")
    field(msg, "content", str, "a string")
    for key in ("source_url", "content_type", "step_name", "title", "selection"):
        field(msg, key, str, "a string", required=False)
    field(msg, "metadata", dict, "an object", required=False)
    request = {k: msg[k] for k in _EXTERNAL_FIELDS if msg.get(k) is not None}
    response = host.service.ingest(run_id, request)
    host.ensure_worker()
    return response.model_dump()


def h_external_data_list(host: "Host", msg: dict) -> dict:
    return host.service.external_data(_text(msg, "workflow_id"))


def h_runs_list(host: "Host", msg: dict) -> dict:
    limit = field(msg, "limit", int, "an integer from 1 to 1000", required=False, default=50)
    offset = field(msg, "offset", int, "a non-negative integer", required=False, default=0)
    return {"runs": host.service.list_runs(limit, offset), "limit": limit, "offset": offset}


def h_runs_get(host: "Host", msg: dict) -> dict:
    return host.service.run_document(_text(msg, "run_id"))


def h_runs_output(host: "Host", msg: dict) -> dict:
    return host.service.step_outputs(_text(msg, "run_id"), _text(msg, "step_id"))


def h_runs_retry(host: "Host", msg: dict) -> dict:
    budget = field(msg, "budget_usd", (int, float), "a number", required=False)
    _check_settings()  # a retry the executor cannot start would only fail again
    summary = host.service.retry(_text(msg, "run_id"), budget_usd=budget)
    host.ensure_worker()
    return summary


def h_runs_cancel(host: "Host", msg: dict) -> dict:
    return host.service.cancel(_text(msg, "run_id"))


def h_runs_subscribe(host: "Host", msg: dict) -> dict:
    host.subscribe()
    return {"subscribed": True, "events": ["run.updated", "templates.changed"]}


def h_estimate(host: "Host", msg: dict) -> dict:
    template = _text(msg, "template")
    _check_settings()
    return host.service.estimate(template, _page(msg))


def h_spend(host: "Host", msg: dict) -> dict:
    _check_settings()  # the popup asks for spend when it opens: a bad setting shows there
    return host.service.spend()


def h_config(host: "Host", msg: dict) -> dict:
    """Providers (has_key and a source label, never a key), base URLs, limits, budgets, folders."""
    return host.service.config_summary()


DOCTOR_NOTE = ("The launch check (start the host, send hello) is skipped: this host is answering now, "
               "and a host launching itself to check itself proves nothing more and is slow. "
               "`hybrid-engine doctor` in a terminal runs it.")


def h_doctor(host: "Host", msg: dict) -> dict:
    """install.doctor without the launch check: the registration as the browsers would read it."""
    ids = field(msg, "extension_ids", list, "an array of extension ids", required=False, default=[])
    for i, value in enumerate(ids):
        if not isinstance(value, str):
            raise BadRequest(f"extension_ids[{i}]: expected a string, got {_json_type(value)}",
                             field=f"extension_ids[{i}]")
    from . import install

    findings = install.doctor(extension_ids=ids, check_launch=False)
    errors = sum(1 for f in findings if f.severity == install.ERROR)
    return {
        "ok": errors == 0,
        "findings": [f.to_dict() for f in findings],
        "errors": errors,
        "warnings": sum(1 for f in findings if f.severity == install.WARNING),
        "launch_checked": False,
        "note": DOCTOR_NOTE,
    }


# One list of message types, hostboot's (its hello lists them before this module loads);
# each is served by the h_ function named after it ("runs.get" -> h_runs_get).
HANDLERS: dict[str, Handler] = {t: globals()["h_" + t.replace(".", "_")] for t in hostboot.MESSAGE_TYPES}


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

    def reply_error(self, msg_id: Any, exc: HybridEngineError) -> None:
        self.send({"id": msg_id, "ok": False, "error": exc.to_dict(), "version": __version__})

    # -- dispatch --------------------------------------------------------------------
    def handle(self, msg: dict) -> dict:
        """The reply to one decoded message. Never raises."""
        raw_id = msg.get("id")
        msg_id = raw_id if _valid_id(raw_id) else None
        try:
            if "id" not in msg or raw_id is None:
                raise BadRequest("id: missing (expected a string or a number)", field="id")
            if not _valid_id(raw_id):
                raise BadRequest(f"id: expected a string or a number, got {_json_type(raw_id)}", field="id")
            kind = msg.get("type", _MISSING)
            if kind is _MISSING or kind is None:
                raise BadRequest("type: missing (expected a message type such as \"hello\")", field="type")
            if not isinstance(kind, str):
                raise BadRequest(f"type: expected a string, got {_json_type(kind)}", field="type")
            if self.forbidden:
                raise Forbidden(self.forbidden)
            handler = HANDLERS.get(kind)
            if handler is None:
                raise HybridEngineError(f"unknown message type {kind[:80]!r} (known: {', '.join(sorted(HANDLERS))})",
                                        code="unknown_type")
            result = handler(self, msg)
            return {"id": msg_id, "ok": True, "result": result, "version": __version__}
        except HybridEngineError as exc:
            return {"id": msg_id, "ok": False, "error": exc.to_dict(), "version": __version__}
        except Exception as exc:  # noqa: BLE001 - the client gets a code, the log gets the traceback
            from .config import ConfigError

            if isinstance(exc, ConfigError):  # a broken config.toml: the user can fix it, say where
                return self._error_reply(msg_id, "bad_config", str(exc))
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
        from . import worker

        # At start: orphans of a crash, work queued while no worker ran. Then, while the browser
        # is connected, a worker that died (killed, out of memory) is replaced within WATCH_S.
        while True:
            try:
                if self._settings_ok():
                    worker.ensure(self.service.store)
            except Exception:  # noqa: BLE001 - the host keeps serving; the next round tries again
                log.exception("could not start the background worker")
            if self._closing.wait(WORKER_WATCH_S):
                return

    def _settings_ok(self) -> bool:
        """A worker started with a bad config.toml or keys.json would only exit again: until
        the file is fixed, captures wait queued and host.status, spend and estimate say why."""
        from .config import ConfigError

        try:
            _check_settings()
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
            except Exception:  # noqa: BLE001 - the next launch recovers and runs it instead
                log.exception("could not hand unfinished work to a worker")
        log.info("host exiting after %.3f s", time.monotonic() - self.started)
        return 0

    def _hand_over(self) -> None:
        if self._service is None:
            from . import config

            if not config.db_path().exists():
                return
        from . import worker

        if self._settings_ok():
            worker.ensure(self.service.store)


def _check_settings() -> None:
    """ConfigError (bad_config, naming the file, key and range) when a setting is bad."""
    from . import settings

    settings.check()


def _install_signal_handlers(host: Host) -> None:
    def on_signal(signum, frame):  # noqa: ARG001
        if host.accepting:  # later, shutdown is already under way: let it finish
            raise _Terminated(signum)

    hostboot.install_signal_handlers(on_signal)


def serve_after_boot(args: list[str], stdin, frames_out, first_answered: bool) -> int:
    """Everything after hostboot: the origin check, signals, serving, the hand-over, exit."""
    _EARLY.install()
    host = Host(args, stdin, frames_out)
    try:
        host.forbidden = check_origin(args)
    except Exception:  # noqa: BLE001 - an unreadable install record: only the pinned ids pass
        log.exception("origin check failed")
        host.forbidden = "the caller's origin could not be checked"
    log.info("host %s started (pid %d, caller %s)", __version__, os.getpid(), args or "none")
    if host.forbidden:
        log.warning("refusing caller %s: %s", args, host.forbidden)
    _install_signal_handlers(host)
    if hostboot.signal_seen() is not None:  # while hostboot read or host.py loaded: as on EOF
        log.info("signal %s before serving: shutting down", hostboot.signal_seen())
        code = host.close()
    else:
        code = host.serve(first_answered)
    # Daemon threads (handlers, pollers, watchfiles) must not hold the exit up:
    # everything that matters is committed or handed over; leave now.
    logging.shutdown()
    try:
        frames_out.close()
    except OSError:
        pass
    os._exit(code)


def main(caller_args: list[str] | None = None) -> int:
    """`hybrid-engine host [ORIGIN | MANIFEST ADDON-ID]`: serve until the input ends."""
    from .hostboot import main as boot

    return boot(caller_args)


__all__ = ["HANDLERS", "HEAVY_MODULES", "Host", "check_origin", "guard_stdout", "main", "serve_after_boot",
           "field"]
