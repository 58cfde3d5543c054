"""The database file: opening (or making) it, one connection per thread, transactions.

One SQLite file is shared by every process that touches the engine: the hosts of
several browser profiles, CLI workers, a detached worker. WAL with
synchronous=NORMAL survives the process being killed (the common crash: the
browser kills its host); writes take BEGIN IMMEDIATE so a read-then-write never
races another process. A write that fails raises the store's own exception
(failures.py), never the driver's.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

from ..errors import StoreError
from ..states import RunStatus
from .failures import _empty, _quote, reraise, store_error
from .schema import MIGRATIONS, OPEN_STATUSES, SCHEMA_VERSION

log = logging.getLogger(__name__)


class _Tx:
    """Per-transaction bookkeeping: runs whose row must be updated before COMMIT."""

    __slots__ = ("closed", "queued", "started", "touched")

    def __init__(self):
        self.closed: dict[str, int] = {}
        self.started: set[str] = set()
        self.touched: set[str] = set()
        self.queued = False  # steps became ready: the settle claims from the queue

    def close(self, run_id: str, n: int = 1) -> None:
        if n:
            self.closed[run_id] = self.closed.get(run_id, 0) + n
        self.touched.add(run_id)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or, inside another transaction, a SAVEPOINT: an inner
    block that raises undoes only its own writes and bookkeeping, so an outer caller that
    catches the error can go on (or raise, and the whole transaction goes). The outermost
    block turns the driver's errors into the store's own (busy: StoreBusy, and so on)."""

    __slots__ = ("store", "tx", "outer", "saved")

    def __init__(self, store: "StoreFile"):
        self.store = store

    def __enter__(self) -> _Tx:
        store = self.store
        conn = store.conn
        outer = store._local.tx
        self.outer = outer is not None
        if self.outer:
            self.tx = outer
            self.saved = (dict(outer.closed), set(outer.started), set(outer.touched))
            conn.execute("SAVEPOINT inner")
            return outer
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # busy past the timeout, most often
            reraise(exc, store.path)
        tx = self.tx = _Tx()
        store._local.tx = tx
        return tx

    def __exit__(self, exc_type, exc, tb) -> bool:
        store = self.store
        conn = store._local.conn
        if self.outer:
            if exc_type is None:
                conn.execute("RELEASE inner")
                return False
            self.tx.closed, self.tx.started, self.tx.touched = self.saved
            try:
                conn.execute("ROLLBACK TO inner")
                conn.execute("RELEASE inner")
            except sqlite3.Error:  # SQLite ended the whole transaction itself (disk full, ...):
                pass  # the savepoint is gone with it; the original error goes on up
            return False
        try:
            if exc_type is None:
                if self.tx.touched:
                    store._update_runs(self.tx)
                conn.execute("COMMIT")
                store.commits += 1
                return False
        except sqlite3.Error as failed:
            _rollback(conn)
            reraise(failed, store.path)
        except BaseException:
            _rollback(conn)
            raise
        finally:
            store._local.tx = None
        _rollback(conn)
        if issubclass(exc_type, sqlite3.Error):
            reraise(exc, store.path)
        return False


def _apply_migrations(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for i in range(version, SCHEMA_VERSION):
            migration = MIGRATIONS[i]
            # A migration is one script of plain statements, or a list of statements and
            # Python steps (functions of the connection) when a statement holds a semicolon.
            for statement in migration.split(";") if isinstance(migration, str) else migration:
                if callable(statement):
                    statement(conn)
                elif statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


class StoreFile:
    """The file and its connections; the parts of the Store (hotpath, lifecycle, queries)
    build on it."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self.commits = 0  # this process's own commits; PRAGMA data_version counts only other connections'
        self._plans: set[str] = set()  # plan digests this process saw saved (a hint: create_run checks the rows)
        self._links: dict[tuple[str, str], tuple] = {}  # hotpath.py: pending chain links, read once per run
        self._links_read: set[str] = set()
        self._planned: dict[str, tuple] = {}  # hotpath.py: runs made here, by their plans
        try:
            self._open()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            err = store_error(exc, self.path)
            if err is None:
                raise
            raise err from exc
        except StoreError:
            self.close()
            raise

    def _open(self) -> None:
        """Open the file, or make a new one; never take a file it did not make for a new database.

        A new database is built under a temporary name and linked into place complete, so an
        existing engine.db is always one that was written whole: an empty one (truncated to
        nothing, or made by `touch`) is refused, not quietly treated as a fresh start.
        """
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._create_file()
        else:
            import stat

            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{path} is not a file (a folder or a device); Hybrid Engine keeps its database "
                                 f"there. Move it aside: mv {_quote(path)} {_quote(str(path) + '.moved')}",
                                 path=str(path))
            if st.st_size == 0:
                raise _empty(path)
            if st.st_mode & 0o077:
                try:
                    os.chmod(path, 0o600)
                except OSError:
                    pass
        self._migrate()
        # The schema is read here, not at the first real query: a file that is not a database says so now.
        self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def _create_file(self) -> None:
        path = self.path
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.new")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                _apply_migrations(conn)
            finally:
                conn.close()
            try:
                os.link(tmp, path)  # fails if another process made engine.db meanwhile: theirs is used
            except FileExistsError:
                pass
            except OSError:  # a filesystem without hard links
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            for name in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                try:
                    name.unlink()
                except FileNotFoundError:
                    pass

    # ---- connections and transactions -------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000,
                                   check_same_thread=False, cached_statements=256)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            # On every connection, though the file keeps the mode (0.2-0.3 ms): a tool may have switched
            # it out of WAL while none of ours was open. Never read the header here instead: closing
            # any descriptor of the file drops every POSIX lock this process holds on it, and SQLite's
            # locking against other processes with it ("How To Corrupt An SQLite Database File", 2.2;
            # tried: a run just made by `serve` vanished while a background worker came and went).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA cache_size=-16000")
            self._local.conn = conn
            self._local.tx = None
            # One cursor kept for statements whose rows nobody iterates (hotpath.py's chain
            # link): conn.execute makes and drops a cursor at every statement.
            self._local.cur = conn.cursor()
            for suffix in ("-wal", "-shm"):
                side = f"{self.path}{suffix}"
                try:
                    if os.stat(side).st_mode & 0o077:
                        os.chmod(side, 0o600)
                except OSError:  # not there (yet), or not ours to change
                    pass
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = self._local.cur = None

    def transaction(self) -> "_Transaction":
        """BEGIN IMMEDIATE ... COMMIT; the rows of runs touched inside are brought up to date last.

        Nested use is a SAVEPOINT in the outer transaction. (A class, not @contextmanager:
        this is on the path of every step.)"""
        return _Transaction(self)

    def _update_runs(self, tx: _Tx) -> None:
        from ..clock import now as _now

        ts = _now()
        c = self.conn
        for run_id in tx.touched:
            # `status` is written only when it changes: assigning it at all would touch runs_active.
            row = c.execute("UPDATE runs SET open_steps = open_steps - ?, updated_at = ? WHERE id = ?"
                            " RETURNING open_steps, status", (tx.closed.get(run_id, 0), ts, run_id)).fetchone()
            if row is None:
                continue
            open_steps, status = row
            if status == "PENDING" and run_id in tx.started:
                c.execute("UPDATE runs SET status = 'RUNNING' WHERE id = ?", (run_id,))
                status = "RUNNING"
            if open_steps <= 0 and status in ("PENDING", "RUNNING"):
                self._finish_run(run_id)

    def _finish_run(self, run_id: str) -> None:
        """The counter says no step is open: check that, then set the final status from the steps."""
        c = self.conn
        statuses, carried = {}, 0
        for status, n, debt in c.execute("SELECT status, COUNT(*), SUM(carried) FROM steps WHERE run_id = ?"
                                         " GROUP BY status", (run_id,)):
            statuses[status] = n
            if status in OPEN_STATUSES:
                carried += debt or 0
        still_open = sum(statuses.get(s, 0) for s in OPEN_STATUSES)
        if still_open:  # the counter drifted (it should not): trust the rows and carry on
            log.error("run %s: open-step counter drifted; recounted %d open steps", run_id, still_open)
            c.execute("UPDATE runs SET open_steps = ? WHERE id = ?", (still_open + carried, run_id))
            return
        if statuses.get("FAILED"):
            err = c.execute("SELECT step_id, error, error_code FROM steps WHERE run_id = ? AND status = 'FAILED'"
                            " ORDER BY ended_at LIMIT 1", (run_id,)).fetchone()
            final, message, code = RunStatus.FAILED, f"step '{err[0]}' failed: {err[1]}", err[2] or "step_failed"
        elif statuses.get("CANCELLED"):
            final, message, code = RunStatus.CANCELLED, "cancelled", "cancelled"
        else:
            final, message, code = RunStatus.COMPLETED, None, None
        c.execute("UPDATE runs SET status = ?, error = ?, error_code = ? WHERE id = ?",
                  (final.value, message, code, run_id))
        from .fts import index_run

        index_run(c, run_id)  # the run's results join its page in the library, in this transaction

    def _migrate(self) -> None:
        conn = self.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer Hybrid Engine (schema {version}, "
                             f"this one knows {SCHEMA_VERSION}); upgrade hybrid-engine")
        _apply_migrations(conn)

    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def data_version(self) -> tuple[int, int]:
        """Changes whenever anyone commits: other connections' (the pragma) or ours (a counter)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0], self.commits
