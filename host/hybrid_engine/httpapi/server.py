"""Running the HTTP API: the socket, uvicorn, and a background worker for the work it queues.

The server executes nothing itself, as the native host does not: work it commits is run
by the background worker (worker.py), which this process starts when work waits and none
runs, right after each request that queued work and every WATCH_S while it serves (a
worker that died is replaced). On the way out, work left gets a worker too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading

from .. import config

log = logging.getLogger(__name__)

DEFAULT_PORT = 7717
WATCH_S = 2.0  # how soon a background worker that died is replaced while the server runs
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class Engine:
    """Keeps a background worker running while there is work, as the host's engine thread does:
    every WATCH_S, and at once when a request committed work."""

    def __init__(self, svc):
        self.svc = svc
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._spawned = None  # the worker this process started last: it takes a second to hold the lock
        self._wake = threading.Event()
        self._stop = threading.Event()

    def _ensure(self) -> None:
        """worker.ensure, without starting a second worker while the first is still starting up
        (a burst of requests would otherwise start one per request)."""
        from .. import worker

        with self._lock:
            if self._spawned is not None and self._spawned.poll() is None:
                return
            if worker.lock().holder() is not None:
                return
            if not worker.work_left(self.svc.store):
                return
            self._spawned = worker.spawn()

    def settings_ok(self) -> bool:
        """A worker started with a bad config.toml or keys.json would only exit again: until the
        file is fixed, work waits queued (and /spend says why)."""
        from .. import worker
        from ..handlers import check_settings

        try:
            check_settings()
            worker.lock().check()
            worker.linger_s()
        except config.ConfigError as exc:
            with self._lock:
                if self.problem != str(exc):
                    log.warning("no step starts until this is fixed: %s", exc)
                self.problem = str(exc)
            return False
        self.problem = None
        return True

    def kick(self) -> None:
        """Work was just committed: the watch thread makes sure a worker runs, off the request's
        path (a burst of requests wakes it once). After the commit, so a worker that is just
        leaving sees the work."""
        self._wake.set()

    def watch(self) -> None:
        while not self._stop.is_set():
            try:
                if self.settings_ok():
                    self._ensure()
            except Exception:  # noqa: BLE001 - the server keeps serving; the next round tries again
                log.exception("could not start the background worker")
            self._wake.wait(WATCH_S)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
    # TCP, and with it on a response's head and body wait out the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if sys.platform != "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)  # before the address is printed: a client that reads it connects at once
    sock.set_inheritable(False)
    return sock


def allowed_hosts(host: str, port: int) -> set[str]:
    names = set(LOOPBACK_NAMES) if is_loopback(host) else {host}
    if host not in ("127.0.0.1", "localhost") and is_loopback(host):
        names.add(f"[{host}]" if ":" in host else host)
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


def _server_class(base):
    """uvicorn's Server, stopping on SIGINT and SIGTERM as it does but then returning instead of
    raising the signal again (which would end the process before work left is handed over)."""
    import contextlib
    import signal

    class Server(base):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            wanted = [signal.SIGINT, signal.SIGTERM]
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in wanted}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def serve(host: str, port: int, *, out=sys.stdout) -> int:
    import uvicorn

    from .. import logsetup
    from ..service import Service
    from . import token
    from .app import build_app
    from .guard import Guard

    logsetup.configure("serve")
    secret = token.load_or_create()
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    svc = Service()
    engine = Engine(svc)
    app = Guard(build_app(svc, on_work=engine.kick, db_path=lambda: svc.db_path),
                token=secret, hosts=allowed_hosts(host, bound))
    shown = f"[{host}]" if ":" in host else host
    print(f"Hybrid Engine HTTP API on http://{shown}:{bound}", file=out, flush=True)
    print(f"docs: http://{shown}:{bound}/docs; token: `hybrid-engine serve --show-token` "
          f"({token.path()}); Ctrl+C stops", file=out, flush=True)
    log.info("serving the HTTP API on %s:%d", host, bound)
    threading.Thread(target=engine.watch, name="engine", daemon=True).start()
    cfg = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                         proxy_headers=False, server_header=False, timeout_graceful_shutdown=2,
                         h11_max_incomplete_event_size=64 * 1024)
    try:
        _server_class(uvicorn.Server)(cfg).run(sockets=[sock])
    finally:
        engine.stop()
        sock.close()
        try:
            if engine.settings_ok():
                svc.ensure_worker_if_work()  # work queued during the last requests is not stranded
        except Exception:  # noqa: BLE001
            log.exception("could not start the background worker on the way out")
        log.info("the HTTP API stopped")
    return 0
