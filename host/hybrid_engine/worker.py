"""The background worker: the one process that executes queued work for the browser.

The native host never runs a step itself. The browser may kill it at any moment (Firefox
3 s after closing its stdin, Chrome with the port, a crash takes the whole process tree),
and a model call in flight would then be cut off and sent again by whoever recovers the
step. So the host only stores captures and makes sure a worker is running; the worker is
started outside the browser's process tree (a new session; on Windows, breaking away from
the browser's job) and holds an exclusive lock on `worker.lock` in the data folder while
it lives, so there is one per data folder however many browsers and profiles start hosts.
It runs while there is work and `linger_s` after, then exits.

Ending without stranding work: a host commits its work first and then looks at the lock;
a worker gives up the lock first and then looks for work once more, taking the lock back
if it finds some. Whichever order the two interleave in, one of them sees the other's
write, so a capture never waits for the next browser start.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
import threading
from pathlib import Path

from . import config

log = logging.getLogger(__name__)

LOCK_NAME = "worker.lock"
POLL_S = 0.1  # how soon a capture stored by a host is picked up
LOCK_CHECK_S = 1.0  # how soon a worker whose data folder was deleted stops sending calls


class LockUnusable(config.ConfigError):
    """worker.lock is something other than a regular file (a folder, a link, a pipe): no worker
    can start until it is removed, and a link is never followed (the pid written into the lock
    would overwrite the file it points to)."""


class WorkerLock:
    """An exclusive, non-blocking lock on a file that also names its holder's pid.

    The operating system drops the lock when its holder dies, however it dies, so a
    stale file never blocks a new worker."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def _open(self, create: bool) -> int:
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
            | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK):
                raise self._unusable() from exc
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._unusable()
        return fd

    def _unusable(self) -> LockUnusable:
        return LockUnusable(f"{self.path} is not a regular file (a folder, a link or a pipe): "
                            f"no background worker can start; remove it and it is made again")

    def check(self) -> None:
        """LockUnusable when the lock file exists and is not a regular file."""
        try:
            os.close(self._open(create=False))
        except FileNotFoundError:
            pass

    def acquire(self) -> bool:
        config.ensure_private_dir(self.path.parent)
        fd = self._open(create=True)
        if not _try_lock(fd):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def still_ours(self) -> bool:
        """False once the lock file we hold was deleted or replaced (the data folder removed or
        moved away): our store is then no longer the user's, and another worker may start."""
        fd = self._fd
        if fd is None:
            return True
        try:
            on_disk = os.stat(self.path, follow_symlinks=False)
            own = os.fstat(fd)
        except FileNotFoundError:
            return False
        except OSError:  # an fd just closed by release(), or a passing error: look again later
            return True
        return (on_disk.st_dev, on_disk.st_ino) == (own.st_dev, own.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid of the live holder, or None when nobody holds the lock."""
        try:
            fd = self._open(create=False)
        except FileNotFoundError:
            return None
        try:
            if _try_lock(fd):
                _unlock(fd)
                return None
            try:
                return int(os.pread(fd, 32, 0).decode() or 0) or -1
            except (OSError, ValueError):
                return -1
        finally:
            os.close(fd)


if os.name == "nt":  # pragma: no cover - Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 1 << 20, os.SEEK_SET)  # a byte past the pid, so reading the pid is never blocked
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        try:
            os.lseek(fd, 1 << 20, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def lock() -> WorkerLock:
    return WorkerLock(config.data_dir() / LOCK_NAME)


def linger_s() -> float:
    """How long an idle worker waits for more work: HYBRID_ENGINE_WORKER_LINGER_S, else
    [worker] linger_s in config.toml, else a minute (a spawn costs a second of imports)."""
    raw = os.environ.get("HYBRID_ENGINE_WORKER_LINGER_S")
    if raw is None:
        from . import settings

        return settings.worker().linger_s
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 86400:
        raise config.ConfigError(f"HYBRID_ENGINE_WORKER_LINGER_S: expected a number of seconds from 0 to 86400, "
                                 f"got {raw!r}")
    return value


def work_left(store) -> bool:
    """Queued steps, or RUNNING ones that nobody alive will finish."""
    from . import procs

    if store.has_queued():
        return True
    for row in store.running_steps():
        if procs.owner_alive(row.owner_pid, row.owner_start, row.owner_host) is False:
            return True
    return False


def ensure(store=None) -> int | None:
    """Make sure a background worker runs (when `store` is given: only if there is work).
    Returns the worker's pid, or None when none is needed."""
    pid = lock().holder()
    if pid is not None:
        return pid
    if store is not None and not work_left(store):
        return None
    return spawn().pid


def spawn():
    """`hybrid-engine worker --background` outside the caller's process group or job.

    It gets no handle of ours: stdin and stdout are /dev/null, stderr a file in the log folder."""
    import subprocess

    cmd = [sys.executable, "-m", "hybrid_engine", "worker", "--background", "--quiet"]
    try:
        folder = config.ensure_private_dir(config.logs_dir())
        err = open(folder / "worker-stderr.log", "ab")  # noqa: SIM115 - handed to the child
    except OSError:
        err = subprocess.DEVNULL
    kwargs = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, close_fds=True,
                  cwd=str(config.data_dir()))
    try:
        if os.name == "nt":  # pragma: no cover - Windows only
            flags = (subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
                     | getattr(subprocess, "CREATE_BREAKAWAY_FROM_JOB", 0x01000000))
            try:
                proc = subprocess.Popen(cmd, creationflags=flags, **kwargs)
            except OSError:  # the browser's job forbids breaking away: at least detach
                proc = subprocess.Popen(cmd, creationflags=flags & ~0x01000000, **kwargs)
        else:
            proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    finally:
        if err is not subprocess.DEVNULL:
            err.close()
    log.info("background worker started (pid %d)", proc.pid)
    return proc


def _keep_captures(svc) -> None:
    """[library] keep_captures_days, applied once per worker start (one at a time: the lock is
    held): a year of daily clipping then never grows the file without bound. A failure is
    logged; the work waiting for this worker goes first."""
    from . import library

    try:
        result = library.apply_retention(svc)
    except Exception:
        log.exception("could not drop old page captures")
        return
    if result["captures_dropped"]:
        log.info("dropped %d raw page capture(s) older than %s days: %d -> %d bytes", result["captures_dropped"],
                 result["retention_days"], result["db_bytes_before"], result["db_bytes_after"])


def serve(svc, *, linger: float, on_executor=None) -> int:
    """The background worker's life: hold the lock, execute until idle for `linger` s, hand
    the lock back without stranding work. Returns the number of steps executed."""
    import asyncio

    held = lock()
    if not held.acquire():
        log.info("another background worker holds %s; exiting", held.path)
        return 0
    executed = 0
    current: list = []
    finished, gone = threading.Event(), threading.Event()

    def watch_lock() -> None:
        # A deleted data folder leaves this process running on a store nobody can see: every
        # call it sent from there would be spent and never shown.
        while not finished.wait(LOCK_CHECK_S):
            if not held.still_ours():
                log.warning("%s was deleted or replaced: stopping without sending more calls", held.path)
                gone.set()
                for ex in list(current):
                    ex.stop()
                return

    threading.Thread(target=watch_lock, name="worker-lock-watch", daemon=True).start()
    _keep_captures(svc)
    try:
        while not gone.is_set():
            report = svc.recover()
            if report.requeued or report.dead_lettered:
                log.warning("recovery: requeued %d, dead-lettered %d", len(report.requeued),
                            len(report.dead_lettered))
            ex = svc.make_executor(poll_s=POLL_S)
            current[:] = [ex]
            if on_executor is not None:
                on_executor(ex)
            if gone.is_set():
                return executed
            asyncio.run(ex.run(until_idle=True, linger_s=linger))
            executed += ex.executed
            if ex.stopped_by_request or gone.is_set():
                return executed
            if work_left(svc.store):
                continue
            held.release()
            if not work_left(svc.store) or not held.acquire():
                return executed
        return executed
    finally:
        finished.set()
        held.release()
