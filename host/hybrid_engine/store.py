"""The only module that speaks SQL.

One SQLite file shared by every process that touches the engine: the hosts of
several browser profiles, CLI workers, a detached worker. WAL with
synchronous=NORMAL survives the process being killed (the common crash: the
browser kills its host); writes take BEGIN IMMEDIATE so a read-then-write never
races another process. Step outputs live in their own table and are written once,
when the step completes: a 5 MB page is never rewritten by a status change.

Claiming is a compare-and-swap UPDATE that bumps the step's epoch; every later
write by the claimant is conditional on that epoch, so a worker that lost its lease
cannot overwrite the step's new owner. A run is created by copying its template's
saved plan (`plan_steps`) inside SQLite, not by binding every row from Python.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's first runs.list 2 ms
if TYPE_CHECKING:
    from typing import Any, Iterable


from .errors import StoreCorrupt, StoreError, StoreFull, StoreReadOnly
from .states import RunStatus, StepStatus

log = logging.getLogger(__name__)

OPEN_STATUSES = ("PENDING", "QUEUED", "RUNNING", "WAITING_FOR_INPUT")
_OPEN_SQL = "('PENDING','QUEUED','RUNNING','WAITING_FOR_INPUT')"

MIGRATIONS: list[str] = [
    # 1: the initial schema. Hot-path notes: a status change of a step touches its
    # table row and at most the one `steps_live` index; the run's open-step counter
    # lives on its row so that "is the run over?" needs no scan; outputs under
    # INLINE_OUTPUT_MAX bytes sit in the step's row, larger ones (pages) are written
    # once to `outputs` and never rewritten.
    """
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        template    TEXT NOT NULL,
        status      TEXT NOT NULL,
        budget_usd  REAL,
        error       TEXT,
        error_code  TEXT,
        open_steps  INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX runs_created ON runs(created_at);
    CREATE INDEX runs_active ON runs(status) WHERE status IN ('PENDING','RUNNING');

    -- AUTOINCREMENT: a step's rowid is never reused after its run is deleted, so the
    -- (rowid, epoch) pair that every compare-and-swap checks names one step forever.
    CREATE TABLE steps (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id        TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id       TEXT NOT NULL,
        pos           INTEGER NOT NULL,
        name          TEXT NOT NULL,
        action        TEXT NOT NULL,
        provider      TEXT,
        params        TEXT NOT NULL,
        deps          TEXT NOT NULL,
        dependents    TEXT NOT NULL DEFAULT '',  -- "step action provider" entries, comma-separated
        waiting_on    INTEGER NOT NULL DEFAULT 0,
        status        TEXT NOT NULL,
        outputs       TEXT,
        outputs_ref   INTEGER NOT NULL DEFAULT 0,
        error         TEXT,
        error_code    TEXT,
        metadata      TEXT,
        model         TEXT,
        tokens        INTEGER,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost          REAL,
        price_unknown INTEGER NOT NULL DEFAULT 0,
        attempts      INTEGER NOT NULL DEFAULT 0,
        error_count   INTEGER NOT NULL DEFAULT 0,
        crash_count   INTEGER NOT NULL DEFAULT 0,
        max_retries   INTEGER NOT NULL DEFAULT 0,
        timeout_s     REAL,
        due_at        REAL,
        owner         TEXT,
        owner_pid     INTEGER,
        owner_start   INTEGER,
        owner_host    TEXT,
        epoch         INTEGER NOT NULL DEFAULT 0,
        lease_until   REAL,
        started_at    REAL,
        ended_at      REAL,
        duration_ms   INTEGER,
        external      INTEGER NOT NULL DEFAULT 0,
        carried       INTEGER NOT NULL DEFAULT 0,  -- closed predecessors not yet taken off runs.open_steps
        UNIQUE (run_id, step_id)
    );
    CREATE INDEX steps_queue ON steps(due_at) WHERE status = 'QUEUED';
    CREATE INDEX steps_billed ON steps(ended_at) WHERE cost IS NOT NULL;

    CREATE TABLE outputs (
        run_id  TEXT NOT NULL,
        step_id TEXT NOT NULL,
        data    TEXT NOT NULL,
        PRIMARY KEY (run_id, step_id),
        FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE CASCADE
    );

    CREATE TABLE step_logs (
        id      INTEGER PRIMARY KEY,
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id TEXT NOT NULL,
        ts      REAL NOT NULL,
        line    TEXT NOT NULL
    );
    CREATE INDEX step_logs_step ON step_logs(run_id, step_id);
    """,
    # 2: capture de-duplication. The extension re-sends a capture that was in flight when
    # the host died, with the same page.metadata.capture_id; this maps that id to the run
    # it already made, across restarts. Rows go with their run (ON DELETE CASCADE; the
    # run_id index keeps that delete from scanning the table).
    """
    CREATE TABLE captures (
        capture_id TEXT PRIMARY KEY,
        run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id    TEXT
    );
    CREATE INDEX captures_run ON captures(run_id);
    """,
    # 3: a template's step rows, stored once per version (content-addressed by `digest`), so
    # that creating a run is one INSERT ... SELECT done inside SQLite instead of binding every
    # column of every row from Python (200 steps: 3.5 -> 1.5 us per step). Runs do not refer
    # to plans: a plan can be dropped at any time and is written again when next needed.
    """
    CREATE TABLE plans (
        digest     TEXT PRIMARY KEY,
        template   TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX plans_template ON plans(template);
    CREATE TABLE plan_steps (
        digest      TEXT NOT NULL,
        pos         INTEGER NOT NULL,
        step_id     TEXT NOT NULL,
        name        TEXT NOT NULL,
        action      TEXT NOT NULL,
        provider    TEXT,
        params      TEXT NOT NULL,
        deps        TEXT NOT NULL,
        dependents  TEXT NOT NULL,
        waiting_on  INTEGER NOT NULL,
        status      TEXT NOT NULL,
        max_retries INTEGER NOT NULL,
        timeout_s   REAL,
        PRIMARY KEY (digest, pos)
    ) WITHOUT ROWID;
    """,
    # 4: the call journal. A provider call is written here, committed, before its request is
    # sent; settling the step settles the call in the same transaction. A call still `sent`
    # whose process died, or whose answer was dropped (cancel, timeout), becomes
    # `unconfirmed`: it may have been billed, so budgets and spend count it at `cost_max`.
    # States: sent -> answered (the step's row holds its cost) | refused (the provider
    # answered with an error: not billed) | unconfirmed.
    """
    CREATE TABLE calls (
        id          INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id     TEXT NOT NULL,
        epoch       INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        provider    TEXT,
        model       TEXT,
        prompt_tokens INTEGER,
        max_output_tokens INTEGER,
        cost_max    REAL,
        cost        REAL,
        owner_pid   INTEGER,
        sent_at     REAL NOT NULL,
        state       TEXT NOT NULL,
        settled_at  REAL,
        reason      TEXT
    );
    CREATE INDEX calls_step ON calls(run_id, step_id);
    CREATE INDEX calls_open ON calls(sent_at) WHERE state IN ('sent', 'unconfirmed');
    """,
    # 5: what a deleted run spent. Deleting a run removes its steps and its journal, not the
    # money: the day's and the month's spend and their budgets keep counting its completed
    # model steps ('step': cost, NULL when the price is unknown) and its calls without a
    # recorded answer ('call': the bound, or the cost of one answered after its step was
    # taken over; a call still in flight when its run was deleted counts as unconfirmed).
    """
    CREATE TABLE deleted_spend (
        kind      TEXT NOT NULL,
        provider  TEXT,
        model     TEXT,
        at        REAL NOT NULL,
        cost      REAL,
        estimated INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX deleted_spend_at ON deleted_spend(kind, at);
    """,
]

INLINE_OUTPUT_MAX = 8192
HANDED_OVER = -1  # _release_dependents: the continued step took over the closing count

# RUNNING steps are found through the runs that are open (runs_active), not through an
# index of their own: a chain step then goes PENDING -> RUNNING -> COMPLETED touching no
# index at all, and recovery still costs O(steps of open runs), not O(history).
ACTIVE_RUNS = "run_id IN (SELECT id FROM runs WHERE status IN ('PENDING','RUNNING'))"
SCHEMA_VERSION = len(MIGRATIONS)


class _Stale(Exception):
    """The row changed under us: the transaction is undone and the caller told so."""


def _iso(ts: float) -> str:
    from .clock import iso

    return iso(ts)


@dataclass
class NewStep:
    step_id: str
    name: str
    action: str
    provider: str | None
    params: dict
    deps: list[str]
    status: StepStatus
    max_retries: int
    timeout_s: float | None


@dataclass(frozen=True)
class RunPlan:
    """A template's steps as rows: everything a run needs to execute is in them."""

    rows: list[tuple]
    queued: list[str]
    digest: str  # of the rows: names the plan in the store's `plans` table


@dataclass(slots=True)
class Claimed:
    rowid: int
    run_id: str
    step_id: str
    action: str
    provider: str | None
    params: str
    dependents: str
    epoch: int
    attempts: int
    error_count: int
    crash_count: int
    max_retries: int
    timeout_s: float | None
    carried: int = 0


@dataclass(slots=True)
class Outcome:
    """What happened to a claimed step; applied by Store.settle in one transaction."""

    claim: Claimed
    kind: str  # "completed" | "retry" | "failed" | "released"
    started_at: float
    ended_at: float
    outputs: dict | None = None
    metadata: dict | None = None
    error: str | None = None
    error_code: str | None = None
    due_at: float | None = None
    log: str | None = None
    # The journaled provider call of this attempt, if one was sent, and what became of it:
    # "answered", "refused" (the provider answered with an error) or "unconfirmed".
    call_id: int | None = None
    call_state: str | None = None
    call_cost: float | None = None


@dataclass
class ClaimRequest:
    owner: str
    pid: int
    start: int | None
    host: str
    lease_until: float
    limit: int
    exclude_actions: Iterable[str] = ()
    exclude_providers: Iterable[str] = ()
    # Groups with a concurrency limit: their steps always go through the queue.
    limited_actions: frozenset = frozenset()
    limited_providers: frozenset = frozenset()
    # Actions that finish on the spot take no concurrency slot: up to `inline_limit` more
    # of them are claimed in the same batch when `limit` is used up.
    inline_actions: tuple = ()
    inline_limit: int = 0
    # False: when a continuation claimed something, skip looking at the queue this time
    # (the executor still looks often enough for fairness).
    probe_queue: bool = True


@dataclass
class RunningRow:
    rowid: int
    run_id: str
    step_id: str
    owner: str | None
    owner_pid: int | None
    owner_start: int | None
    owner_host: str | None
    epoch: int
    lease_until: float | None
    crash_count: int
    carried: int = 0
    provider: str | None = None


class _Tx:
    """Per-transaction bookkeeping: runs whose row must be updated before COMMIT."""

    __slots__ = ("closed", "started", "touched")

    def __init__(self):
        self.closed: dict[str, int] = {}
        self.started: set[str] = set()
        self.touched: set[str] = set()

    def close(self, run_id: str, n: int = 1) -> None:
        if n:
            self.closed[run_id] = self.closed.get(run_id, 0) + n
        self.touched.add(run_id)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or, inside another transaction, a SAVEPOINT: an inner
    block that raises undoes only its own writes and bookkeeping, so an outer caller that
    catches the error can go on (or raise, and the whole transaction goes)."""

    __slots__ = ("store", "tx", "outer", "saved")

    def __init__(self, store: "Store"):
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
        conn.execute("BEGIN IMMEDIATE")
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
        except BaseException:
            _rollback(conn)
            raise
        finally:
            store._local.tx = None
        _rollback(conn)
        return False


def encode_dependents(entries: list) -> str:
    """Step ids, action names and providers never hold spaces or commas (the template schema
    says so), so a step's dependents fit a string that splits faster than JSON parses: read
    at every completion."""
    return ",".join(f"{step} {action} {provider or ''}" for step, action, provider in entries)


def decode_dependents(text: str) -> list[tuple[str, str, str | None]]:
    if not text:
        return []
    out = []
    for entry in text.split(","):
        step, action, provider = entry.split(" ")
        out.append((step, action, provider or None))
    return out


def _apply_migrations(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for i in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[i].split(";"):
                if statement.strip():
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


# ---- opening the file, and what its failures mean to the user --------------------

_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = (sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY,
                                                              sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY)
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = (
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB)
# An I/O failure with less free space than this on the file's disk is taken for a full disk:
# SQLite reports a full disk as "disk I/O error" when it cannot even create its -shm file.
_FULL_DISK_BYTES = 1 << 20


def _quote(path: Path | str) -> str:
    text = str(path)
    if os.name == "nt":
        return f'"{text}"' if " " in text else text
    import shlex

    return shlex.quote(text)


def _corrupt(path: Path, detail: str) -> StoreCorrupt:
    return StoreCorrupt(f"{path} is damaged and cannot be read ({detail}). Move it aside and start again: "
                        f"mv {_quote(path)} {_quote(str(path) + '.broken')} (the runs in it are lost to Hybrid Engine; "
                        "sqlite3's .recover command may save some)", path=str(path))


def _empty(path: Path) -> StoreCorrupt:
    return StoreCorrupt(f"{path} is an empty file (0 bytes), not a Hybrid Engine database; it is left alone rather "
                        "than silently replaced by a new one. If it should hold your runs, restore it from a backup; "
                        f"otherwise move it aside: mv {_quote(path)} {_quote(str(path) + '.empty')}", path=str(path))


def _read_only(path: Path, detail: str) -> StoreReadOnly:
    what = (f"its folder {path.parent} is read-only here" if not os.access(path.parent, os.W_OK)
            else "the file is read-only")
    return StoreReadOnly(f"{path} cannot be written ({detail}): {what}. Make it writable, or point "
                         "HYBRID_ENGINE_HOME at a writable folder", path=str(path))


def _full(path: Path, detail: str) -> StoreFull:
    return StoreFull(f"the disk that holds {path} is full ({detail}). Free some space on it and try again; what "
                     "was saved before is intact", path=str(path))


def _free_bytes(path: Path) -> int | None:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: Windows has no statvfs
        try:
            import shutil

            return shutil.disk_usage(folder).free
        except OSError:
            return None
    return st.f_bavail * st.f_frsize


def _writable(path: Path) -> bool:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def _diagnose(path: Path, detail: str) -> StoreError:
    """An open or I/O failure SQLite does not explain: look at the disk and the folder."""
    free = _free_bytes(path)
    if free is not None and free < _FULL_DISK_BYTES:
        return _full(path, detail)
    if not _writable(path):
        return _read_only(path, detail)
    return StoreError(f"{path} cannot be opened ({detail}); check that its folder exists and that you may "
                      "write there, or point HYBRID_ENGINE_HOME at another folder", path=str(path))


def store_error(exc: BaseException, path: Path | str) -> StoreError | None:
    """What a SQLite or OS failure on the database file means, as a StoreError naming the file
    and the way out; None when it says nothing about the file (a bug: let it through)."""
    path = Path(path)
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        detail = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or detail in ("file is not a database",
                                                                      "database disk image is malformed"):
            return _corrupt(path, detail)
        if primary == _SQLITE_FULL or detail == "database or disk is full":
            return _full(path, detail)
        if primary == _SQLITE_READONLY or detail.startswith("attempt to write a readonly database"):
            return _read_only(path, detail)
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreError(f"{path} stayed locked by another Hybrid Engine process ({detail}); try again in a "
                              "moment", path=str(path))
        if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_PERM) or detail in ("disk I/O error",
                                                                                  "unable to open database file"):
            return _diagnose(path, detail)
        return None
    if isinstance(exc, OSError):
        import errno

        detail = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return _full(path, detail)
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return _read_only(path, detail)
        return _diagnose(path, detail)
    return None


def query_error(exc: BaseException, path: Path | str) -> StoreError | None:
    """store_error for a failure that reached a transport (the CLI, the host) from a query:
    only SQLite's own errors are about the file there."""
    return store_error(exc, path) if isinstance(exc, sqlite3.Error) else None


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps with options builds one per call


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


class Store:
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self.commits = 0  # this process's own commits; PRAGMA data_version counts only other connections'
        self._plans: set[str] = set()  # plan digests this process saw saved (a hint: create_run checks the rows)
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
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA cache_size=-16000")
            self._local.conn = conn
            self._local.tx = None
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                try:
                    if side.exists() and side.stat().st_mode & 0o077:
                        os.chmod(side, 0o600)
                except OSError:
                    pass
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def transaction(self) -> "_Transaction":
        """BEGIN IMMEDIATE ... COMMIT; the rows of runs touched inside are brought up to date last.

        Nested use is a SAVEPOINT in the outer transaction. (A class, not @contextmanager:
        this is on the path of every step.)"""
        return _Transaction(self)

    def _update_runs(self, tx: _Tx) -> None:
        from .clock import now as _now

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

    # ---- creating runs and filling slots -----------------------------------

    @staticmethod
    def plan_run(steps: list[NewStep], template: str = "") -> "RunPlan":
        """Serialise a template's steps once; every run made from it reuses the result.

        The digest covers the template's name too: two templates never share a saved plan,
        so replacing one's plan never drops the other's."""
        dependents: dict[str, list] = {s.step_id: [] for s in steps}
        for s in steps:
            for d in s.deps:
                dependents[d].append((s.step_id, s.action, s.provider))
        rows = [(s.step_id, i, s.name, s.action, s.provider, _dumps(s.params), _dumps(s.deps),
                 encode_dependents(dependents[s.step_id]), len(s.deps), s.status.value, s.max_retries, s.timeout_s)
                for i, s in enumerate(steps)]
        queued = [r[0] for r in rows if r[9] == "QUEUED"]
        import hashlib  # once per template, not at import (OpenSSL costs the host's first runs.list)

        digest = hashlib.sha256(_dumps([template, rows]).encode()).hexdigest()[:32]
        return RunPlan(rows, queued, digest)

    _RUN_FROM_PLAN = (
        "INSERT INTO steps (run_id, step_id, pos, name, action, provider, params, deps, dependents, waiting_on,"
        " status, max_retries, timeout_s, due_at) SELECT ?1, step_id, pos, name, action, provider, params, deps,"
        " dependents, waiting_on, status, max_retries, timeout_s, CASE WHEN status = 'QUEUED' THEN ?3 END"
        " FROM plan_steps WHERE digest = ?2 ORDER BY pos")

    def create_run(self, run_id: str, name: str, template: str, plan: "RunPlan", budget_usd: float | None,
                   now: float) -> None:
        with self.transaction():
            c = self.conn
            c.execute("INSERT INTO runs (id, name, template, status, budget_usd, open_steps, created_at,"
                      " updated_at) VALUES (?, ?, ?, 'PENDING', ?, ?, ?, ?)",
                      (run_id, name, template, budget_usd, len(plan.rows), now, now))
            n = c.execute(self._RUN_FROM_PLAN, (run_id, plan.digest, now)).rowcount if plan.digest in self._plans else 0
            if n == 0:  # not saved yet, or dropped since (by another process saving a newer version)
                self._save_plan(plan, template, now)
                n = c.execute(self._RUN_FROM_PLAN, (run_id, plan.digest, now)).rowcount
            if n != len(plan.rows):
                raise StoreError(f"plan {plan.digest} of template '{template}' has {n} rows, expected {len(plan.rows)}")

    def _save_plan(self, plan: "RunPlan", template: str, now: float) -> None:
        """Keep one plan per template: an edited template's older plans go (no run refers to them)."""
        c = self.conn
        if c.execute("SELECT 1 FROM plans WHERE digest = ?", (plan.digest,)).fetchone() is None:
            for (old,) in c.execute("SELECT digest FROM plans WHERE template = ?", (template,)).fetchall():
                c.execute("DELETE FROM plan_steps WHERE digest = ?", (old,))
                c.execute("DELETE FROM plans WHERE digest = ?", (old,))
            c.execute("INSERT INTO plans (digest, template, created_at) VALUES (?, ?, ?)",
                      (plan.digest, template, now))
            c.executemany("INSERT INTO plan_steps (digest, step_id, pos, name, action, provider, params, deps,"
                          " dependents, waiting_on, status, max_retries, timeout_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          [(plan.digest, *row) for row in plan.rows])
        self._plans.add(plan.digest)

    def open_slots(self, run_id: str) -> list[str]:
        rows = self.conn.execute("SELECT step_id FROM steps WHERE run_id = ? AND status = 'WAITING_FOR_INPUT'"
                                 " ORDER BY pos", (run_id,)).fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def _place_outputs(outputs: dict | None) -> tuple[str, str | None, int]:
        """Small outputs go in the step's row, large ones in `outputs`: (json, inline value, ref)."""
        data = _dumps(outputs if outputs is not None else {})
        if len(data) <= INLINE_OUTPUT_MAX:
            return data, data, 0
        return data, None, 1

    def _write_large_outputs(self, run_id: str, step_id: str, data: str) -> None:
        """Written once, after the step's own row was won: never rewritten by a status change."""
        self.conn.execute("INSERT OR REPLACE INTO outputs (run_id, step_id, data) VALUES (?,?,?)",
                          (run_id, step_id, data))

    def fill_slot(self, run_id: str, step_id: str, outputs: dict, metadata: dict, now: float, log: str) -> int | None:
        """Complete a WAITING_FOR_INPUT step with external data; None if it was not waiting."""
        with self.transaction() as tx:
            c = self.conn
            row = c.execute("SELECT dependents FROM steps WHERE run_id = ? AND step_id = ?"
                            " AND status = 'WAITING_FOR_INPUT'", (run_id, step_id)).fetchone()
            if row is None:
                return None
            data, inline, ref = self._place_outputs(outputs)
            c.execute("UPDATE steps SET status = 'COMPLETED', outputs = ?, outputs_ref = ?, metadata = ?,"
                      " started_at = ?, ended_at = ?, duration_ms = 0, error = NULL, error_code = NULL"
                      " WHERE run_id = ? AND step_id = ?", (inline, ref, _dumps(metadata), now, now, run_id, step_id))
            if ref:
                self._write_large_outputs(run_id, step_id, data)
            self._log(run_id, step_id, now, log)
            queued = self._release_dependents(run_id, row[0], now, tx)
            tx.close(run_id)
            tx.started.add(run_id)
            return queued

    def add_external_step(self, run_id: str, step_id: str, name: str, outputs: dict, metadata: dict,
                          now: float, log: str) -> int | None:
        """None when the run has finished meanwhile (checked inside the write transaction)."""
        with self.transaction() as tx:
            c = self.conn
            status = c.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if status is None or status[0] not in ("PENDING", "RUNNING"):
                return None
            pos = c.execute("SELECT COALESCE(MAX(pos), -1) + 1 FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
            data, inline, ref = self._place_outputs(outputs)
            if ref:
                self._write_large_outputs(run_id, step_id, data)
            c.execute("INSERT INTO steps (run_id, step_id, pos, name, action, params, deps, status, outputs,"
                      " outputs_ref, metadata, started_at, ended_at, duration_ms, external)"
                      " VALUES (?, ?, ?, ?, 'capture', '{}', '[]', 'COMPLETED', ?, ?, ?, ?, ?, 0, 1)",
                      (run_id, step_id, pos, name, inline, ref, _dumps(metadata), now, now))
            self._log(run_id, step_id, now, log)
            queued = self._queue_ready(run_id, now)
            tx.touched.add(run_id)
            tx.started.add(run_id)
            return queued

    def step_exists(self, run_id: str, step_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE run_id = ? AND step_id = ?",
                                 (run_id, step_id)).fetchone() is not None

    # ---- claiming and settling ---------------------------------------------

    _CLAIM_COLS = ("rowid, run_id, step_id, action, provider, params, dependents, epoch, attempts, error_count,"
                   " crash_count, max_retries, timeout_s, carried")

    _CLAIM_SET = ("status = 'RUNNING', owner = ?, owner_pid = ?, owner_start = ?, owner_host = ?, epoch = epoch + 1,"
                  " lease_until = ?, attempts = attempts + 1, started_at = ?, ended_at = NULL")

    # A chain link: read the one dependent, then either count the finished dependency or
    # claim it by rowid. (A single UPDATE ... RETURNING did both, but SQLite's RETURNING
    # costs more than this SELECT: ~1 us of a ~30 us chain step.)
    _CHAIN_NEXT = f"SELECT waiting_on, {_CLAIM_COLS} FROM steps WHERE run_id = ? AND step_id = ? AND status = 'PENDING'"
    _CLAIM_ROW = f"UPDATE steps SET {_CLAIM_SET}, waiting_on = 0, carried = carried + ? WHERE rowid = ?"

    def _claim(self, req: ClaimRequest, now: float, tx: _Tx) -> list[Claimed]:
        if req.limit <= 0 and not req.inline_limit:
            return []
        where = "status = 'QUEUED' AND due_at <= ?"
        args: list[Any] = [now]
        ex_a, ex_p = list(req.exclude_actions), list(req.exclude_providers)
        if ex_a:
            where += f" AND action NOT IN ({','.join('?' * len(ex_a))})"
            args += ex_a
        if ex_p:
            where += f" AND (provider IS NULL OR provider NOT IN ({','.join('?' * len(ex_p))}))"
            args += ex_p
        sql = (f"UPDATE steps SET {self._CLAIM_SET} WHERE rowid IN"
               f" (SELECT rowid FROM steps WHERE {where} ORDER BY due_at LIMIT ?) RETURNING {self._CLAIM_COLS}")
        head = [req.owner, req.pid, req.start, req.host, req.lease_until, now]
        rows = self.conn.execute(sql, [*head, *args, req.limit]).fetchall()
        if len(rows) == req.limit and req.inline_limit > 0 and req.inline_actions:
            marks = ",".join("?" * len(req.inline_actions))
            rows += self.conn.execute(
                f"UPDATE steps SET {self._CLAIM_SET} WHERE rowid IN (SELECT rowid FROM steps WHERE {where}"
                f" AND action IN ({marks}) ORDER BY due_at LIMIT ?) RETURNING {self._CLAIM_COLS}",
                [*head, *args, *req.inline_actions, req.inline_limit]).fetchall()
        claimed = [Claimed(*r) for r in rows]
        for c in claimed:
            tx.touched.add(c.run_id)
            tx.started.add(c.run_id)
        return claimed

    def claim(self, req: ClaimRequest, now: float) -> list[Claimed]:
        with self.transaction() as tx:
            return self._claim(req, now, tx)

    def settle(self, outcomes: list[Outcome], req: ClaimRequest | None, now: float) -> tuple[list[bool], list[Claimed]]:
        """Apply outcomes and claim the next batch, all in one commit.

        A dependent that a completion makes ready is claimed on the spot when the
        request has room for it ("continuation"): a chain then costs one commit per
        step and never passes through the queue. Returns, per outcome, whether it was
        applied (False: the lease was lost and another owner has the step), and the
        newly claimed steps.
        """
        with self.transaction() as tx:
            claimed: list[Claimed] = []
            room = [req.limit if req is not None else 0]
            applied = [self._apply(o, tx, req, room, claimed) for o in outcomes]
            if req is not None and (room[0] > 0 or req.inline_limit) and (not claimed or req.probe_queue and self.conn.execute(
                    "SELECT 1 FROM steps WHERE status = 'QUEUED' AND due_at <= ? LIMIT 1", (now,)).fetchone()):
                req.limit = room[0]
                claimed += self._claim(req, now, tx)
            return applied, claimed

    _COMPLETE = (
        "UPDATE steps SET status = 'COMPLETED', outputs = ?, outputs_ref = ?, ended_at = ?, duration_ms = ?,"
        " metadata = ?, model = ?, provider = COALESCE(?, provider), tokens = ?, prompt_tokens = ?,"
        " completion_tokens = ?, cost = ?, price_unknown = ?, error = NULL, error_code = NULL, owner = NULL,"
        " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'")
    # The same for a step without metadata (deterministic actions): the NULLs are literals,
    # which saves binding eight parameters on every link of a chain (~1.5 us of ~30).
    _COMPLETE_PLAIN = (
        "UPDATE steps SET status = 'COMPLETED', outputs = ?, outputs_ref = ?, ended_at = ?, duration_ms = ?,"
        " metadata = NULL, model = NULL, tokens = NULL, prompt_tokens = NULL, completion_tokens = NULL,"
        " cost = NULL, price_unknown = 0, error = NULL, error_code = NULL, owner = NULL, lease_until = NULL"
        " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'")

    def _apply(self, o: Outcome, tx: _Tx, req: ClaimRequest | None = None, room: list | None = None,
               claimed: list | None = None) -> bool:
        c = self.conn
        cl = o.claim
        duration_ms = int(round((o.ended_at - o.started_at) * 1000))
        kind = o.kind
        if o.call_id is not None:
            self._settle_call(o)
        if kind == "completed":
            md = o.metadata
            data, inline, ref = self._place_outputs(o.outputs)
            if md:
                if "cost" in md or "model" in md or "tokens" in md:
                    cost = md.get("cost")
                    billing = (md.get("model"), md.get("provider"), md.get("tokens"), md.get("prompt_tokens"),
                               md.get("completion_tokens"), cost,
                               1 if (md.get("price_unknown") or ("cost" in md and cost is None)) else 0)
                else:
                    billing = (None, None, None, None, None, None, 0)
                cur = c.execute(self._COMPLETE, (inline, ref, o.ended_at, duration_ms, _dumps(md), *billing,
                                                 cl.rowid, cl.epoch))
            else:
                cur = c.execute(self._COMPLETE_PLAIN, (inline, ref, o.ended_at, duration_ms, cl.rowid, cl.epoch))
            if cur.rowcount == 0:
                return False  # the lease was lost: nothing of ours is written, the winner's outputs stay
            if ref:
                self._write_large_outputs(cl.run_id, cl.step_id, data)
            if o.log:
                self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
            if not cl.dependents or self._release_dependents(
                    cl.run_id, cl.dependents, o.ended_at, tx, req, room, claimed, cl.carried + 1) != HANDED_OVER:
                tx.close(cl.run_id, 1 + cl.carried)
            # else: the step that continues this chain carries the count; the run's row is not
            # written at every link of a chain.
            return True
        if kind == "retry":
            cur = c.execute(
                "UPDATE steps SET status = 'QUEUED', due_at = ?, error = ?, error_code = ?, ended_at = ?,"
                " duration_ms = ?, error_count = error_count + 1, owner = NULL, lease_until = NULL"
                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.due_at, o.error, o.error_code, o.ended_at, duration_ms, cl.rowid, cl.epoch))
            if cur.rowcount and o.log:
                self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
        elif kind == "released":
            # Handed back at shutdown: to the queue at once, the attempt not counted.
            cur = c.execute(
                "UPDATE steps SET status = 'QUEUED', due_at = ?, attempts = MAX(attempts - 1, 0), owner = NULL,"
                " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.due_at or o.ended_at, cl.rowid, cl.epoch))
        elif kind == "failed":
            md = o.metadata or None
            cur = c.execute(
                "UPDATE steps SET status = 'FAILED', error = ?, error_code = ?, ended_at = ?, duration_ms = ?,"
                " error_count = error_count + 1, metadata = COALESCE(?, metadata), owner = NULL, lease_until = NULL"
                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.error, o.error_code, o.ended_at, duration_ms, _dumps(md) if md else None, cl.rowid, cl.epoch))
            if cur.rowcount:
                if o.log:
                    self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
                tx.close(cl.run_id, 1 + cl.carried + self._skip_downstream(cl.run_id, cl.step_id, o.ended_at))
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        if cur.rowcount == 0:
            return False
        tx.touched.add(cl.run_id)
        return True

    def _settle_call(self, o: Outcome) -> None:
        """The call's fate, whatever became of the step: an answer whose step was taken over
        meanwhile (cancelled, recovered) was still billed, so it stays on the record, priced."""
        c = self.conn
        if o.call_state == "answered":
            c.execute("UPDATE calls SET state = CASE WHEN EXISTS (SELECT 1 FROM steps WHERE rowid = ? AND epoch = ?"
                      " AND status = 'RUNNING') THEN 'answered' ELSE 'discarded' END, cost = ?, settled_at = ?"
                      " WHERE id = ? AND state IN ('sent', 'unconfirmed')",
                      (o.claim.rowid, o.claim.epoch, o.call_cost, o.ended_at, o.call_id))
        else:
            c.execute("UPDATE calls SET state = ?, settled_at = ?, reason = ? WHERE id = ? AND state = 'sent'",
                      (o.call_state or "unconfirmed", o.ended_at, o.error, o.call_id))

    # ---- the call journal ----------------------------------------------------

    def journal_call(self, rowid: int, epoch: int, attempt: int, provider: str | None, model: str | None,
                     prompt_tokens: int | None, max_output_tokens: int | None, cost_max: float | None,
                     pid: int, now: float) -> int | None:
        """Record a provider call before it is sent; None when the step is no longer ours (do not send)."""
        with self.transaction():
            row = self.conn.execute(
                "INSERT INTO calls (run_id, step_id, epoch, attempt, provider, model, prompt_tokens,"
                " max_output_tokens, cost_max, owner_pid, sent_at, state) SELECT run_id, step_id, epoch, ?, ?, ?, ?,"
                " ?, ?, ?, ?, 'sent' FROM steps WHERE rowid = ? AND epoch = ? AND status = 'RUNNING' RETURNING id",
                (attempt, provider, model, prompt_tokens, max_output_tokens, cost_max, pid, now, rowid,
                 epoch)).fetchone()
            return row[0] if row else None

    def calls(self, run_id: str) -> list[dict]:
        return self._dict_rows("SELECT * FROM calls WHERE run_id = ? ORDER BY id", (run_id,))

    def unconfirmed_since(self, since: float, run_id: str | None = None) -> dict[str, dict]:
        """Calls that may have been billed but whose answer was never recorded, per provider:
        {provider: {"calls": n, "cost_max": USD or None when a bound is unknown}}; with the
        calls answered after their step was taken over (state `discarded`, their cost known)."""
        where, args = "state IN ('unconfirmed', 'discarded') AND sent_at >= ?", [since]
        if run_id is not None:
            where += " AND run_id = ?"
            args.append(run_id)
        rows = self.conn.execute(
            "SELECT provider, COUNT(*), SUM(CASE WHEN state = 'discarded' THEN cost ELSE cost_max END),"
            " SUM(CASE WHEN state = 'discarded' THEN cost IS NULL ELSE cost_max IS NULL END)"
            f" FROM calls WHERE {where} GROUP BY provider", args).fetchall()
        if run_id is None:
            rows += self.conn.execute("SELECT provider, COUNT(*), SUM(cost), SUM(cost IS NULL) FROM deleted_spend"
                                      " WHERE kind = 'call' AND at >= ? GROUP BY provider", (since,)).fetchall()
        out: dict[str, dict] = {}
        for provider, n, bound, unknown in rows:
            v = out.setdefault(provider or "unknown", {"calls": 0, "cost_max_known": 0.0, "unpriced": 0})
            v["calls"] += n
            v["cost_max_known"] += bound or 0.0
            v["unpriced"] += unknown or 0
            v["cost_max"] = None if v["unpriced"] else v["cost_max_known"]
        return out

    def unconfirmed_cost(self, since: float = 0.0, run_id: str | None = None) -> float:
        """What budgets count for those calls: their upper bound (known part)."""
        return sum(v["cost_max_known"] for v in self.unconfirmed_since(since, run_id).values())

    def _release_dependents(self, run_id: str, dependents_json: str, now: float, tx: _Tx,
                            req: ClaimRequest | None = None, room: list | None = None,
                            claimed: list | None = None, carry: int = 0) -> int:
        """One dependency of each dependent is done; those with none left are claimed
        (when `req` has room and their group has no limit) or queued. Returns how many
        became ready."""
        c = self.conn
        deps = decode_dependents(dependents_json)
        if len(deps) == 1:  # a chain: one statement on one row, no index touched
            dep_id, action, provider = deps[0]
            if (req is not None and room[0] > 0 and action not in req.limited_actions
                    and (provider is None or provider not in req.limited_providers)):
                row = c.execute(self._CHAIN_NEXT, (run_id, dep_id)).fetchone()
                if row is None:
                    return 0
                if row[0] > 1:
                    c.execute("UPDATE steps SET waiting_on = waiting_on - 1 WHERE rowid = ?", (row[1],))
                    return 0
                c.execute(self._CLAIM_ROW, (req.owner, req.pid, req.start, req.host, req.lease_until, now, carry,
                                            row[1]))
                cl = Claimed(*row[1:])
                cl.epoch += 1
                cl.attempts += 1
                cl.carried += carry
                claimed.append(cl)
                room[0] -= 1
                return HANDED_OVER
            left = c.execute("UPDATE steps SET waiting_on = waiting_on - 1 WHERE run_id = ? AND step_id = ?"
                             " AND status = 'PENDING' RETURNING waiting_on", (run_id, dep_id)).fetchone()
            ready = [deps[0]] if left is not None and left[0] <= 0 else []
        else:
            c.executemany("UPDATE steps SET waiting_on = waiting_on - 1 WHERE run_id = ? AND step_id = ?"
                          " AND status = 'PENDING'", [(run_id, d[0]) for d in deps])
            ready = []
            for i in range(0, len(deps), 500):
                chunk = [d[0] for d in deps[i:i + 500]]
                ready += c.execute(f"SELECT step_id, action, provider FROM steps WHERE run_id = ? AND step_id IN"
                                   f" ({','.join('?' * len(chunk))}) AND status = 'PENDING' AND waiting_on <= 0",
                                   (run_id, *chunk)).fetchall()
        if not ready:
            return 0
        take: list[str] = []
        if req is not None and room[0] > 0:
            for dep_id, action, provider in ready:
                if len(take) < room[0] and action not in req.limited_actions and (
                        provider is None or provider not in req.limited_providers):
                    take.append(dep_id)
        if take:
            rows = c.execute(f"UPDATE steps SET {self._CLAIM_SET} WHERE run_id = ? AND step_id IN"
                             f" ({','.join('?' * len(take))}) AND status = 'PENDING' RETURNING {self._CLAIM_COLS}",
                             (req.owner, req.pid, req.start, req.host, req.lease_until, now, run_id, *take)).fetchall()
            claimed.extend(Claimed(*r) for r in rows)
            room[0] -= len(rows)
            tx.started.add(run_id)
        rest = [d[0] for d in ready if d[0] not in set(take)] if take else [d[0] for d in ready]
        for i in range(0, len(rest), 500):
            chunk = rest[i:i + 500]
            c.execute(f"UPDATE steps SET status = 'QUEUED', due_at = ? WHERE run_id = ? AND step_id IN"
                      f" ({','.join('?' * len(chunk))}) AND status = 'PENDING'", (now, run_id, *chunk))
        return len(ready)

    def _queue_ready(self, run_id: str, now: float) -> int:
        """Recount every PENDING step's open dependencies and queue those with none left."""
        c = self.conn
        rows = c.execute("SELECT step_id, deps, status FROM steps WHERE run_id = ?", (run_id,)).fetchall()
        done = {step_id for step_id, _, status in rows if status == "COMPLETED"}
        recount, ready = [], []
        for step_id, deps, status in rows:
            if status == "PENDING":
                missing = sum(1 for d in json.loads(deps) if d not in done)
                recount.append((missing, run_id, step_id))
                if not missing:
                    ready.append(step_id)
        c.executemany("UPDATE steps SET waiting_on = ? WHERE run_id = ? AND step_id = ?", recount)
        return self._set_status(run_id, ready, "QUEUED", "due_at = ?", (now,), ("PENDING",))

    def _skip_downstream(self, run_id: str, step_id: str, now: float) -> int:
        """Every step downstream of a failed one is SKIPPED (a walk over `dependents`, on failure only)."""
        rows = self.conn.execute("SELECT step_id, dependents FROM steps WHERE run_id = ?", (run_id,)).fetchall()
        graph = {sid: [d[0] for d in decode_dependents(deps)] for sid, deps in rows}
        down, todo = set(), list(graph.get(step_id, ()))
        while todo:
            sid = todo.pop()
            if sid not in down:
                down.add(sid)
                todo.extend(graph.get(sid, ()))
        return self._set_status(run_id, sorted(down), "SKIPPED", "ended_at = ?, error = ?",
                                (now, f"skipped: upstream step '{step_id}' failed"),
                                ("PENDING", "QUEUED", "WAITING_FOR_INPUT"))

    def _set_status(self, run_id: str, step_ids: list[str], status: str, extra: str, extra_args: tuple,
                    only_from: tuple) -> int:
        changed = 0
        frm = ",".join(f"'{s}'" for s in only_from)
        for i in range(0, len(step_ids), 500):
            chunk = step_ids[i:i + 500]
            changed += self.conn.execute(
                f"UPDATE steps SET status = ?, {extra} WHERE run_id = ? AND status IN ({frm}) AND step_id IN"
                f" ({','.join('?' * len(chunk))})", (status, *extra_args, run_id, *chunk)).rowcount
        return changed

    def _log(self, run_id: str, step_id: str, ts: float, line: str) -> None:
        self.conn.execute("INSERT INTO step_logs (run_id, step_id, ts, line) VALUES (?,?,?,?)",
                          (run_id, step_id, ts, line))

    def append_log(self, run_id: str, step_id: str, ts: float, line: str) -> None:
        with self.transaction():
            self._log(run_id, step_id, ts, line)

    # ---- leases and recovery ------------------------------------------------

    def renew_leases(self, held: Iterable[tuple[int, int]], until: float) -> set[tuple[int, int]]:
        """Extend the leases of the (rowid, epoch) pairs we hold; return those still ours."""
        kept = set()
        with self.transaction():
            c = self.conn
            for rowid, epoch in held:
                if c.execute("UPDATE steps SET lease_until = ? WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                             (until, rowid, epoch)).rowcount:
                    kept.add((rowid, epoch))
        return kept

    def running_steps(self) -> list[RunningRow]:
        rows = self.conn.execute("SELECT rowid, run_id, step_id, owner, owner_pid, owner_start, owner_host, epoch,"
                                 f" lease_until, crash_count, carried, provider FROM steps WHERE {ACTIVE_RUNS}"
                                 " AND status = 'RUNNING'").fetchall()
        return [RunningRow(*r) for r in rows]

    def requeue_orphan(self, row: RunningRow, now: float, why: str, *, max_strikes: int) -> tuple[str, str] | None:
        try:
            return self._requeue_orphan(row, now, why, max_strikes)
        except _Stale:
            return None

    def _requeue_orphan(self, row: RunningRow, now: float, why: str, max_strikes: int) -> tuple[str, str]:
        """Requeue (or dead-letter) one orphan, if it is still the one we saw: (outcome, log line).

        A strike counts only when the step's side effect had started: for a model step, a
        call journaled as sent under this claim (it may have been billed, so it becomes
        `unconfirmed`); a step killed before it sent anything goes back to the queue as if
        never claimed. Steps without a provider strike at every crash, as they ran at once."""
        with self.transaction() as tx:
            c = self.conn
            sent = c.execute("UPDATE calls SET state = 'unconfirmed', settled_at = ?, reason = ?"
                             " WHERE run_id = ? AND step_id = ? AND state = 'sent' RETURNING epoch",
                             (now, f"no answer recorded: {why}", row.run_id, row.step_id)).fetchall()
            strike = row.provider is None or any(epoch == row.epoch for (epoch,) in sent)
            stamp = f"Recovered from orphaned RUNNING state at {_iso(now)}: {why}"
            crashes = row.crash_count + 1
            if not strike:
                cur = c.execute("UPDATE steps SET status = 'QUEUED', due_at = ?, attempts = MAX(attempts - 1, 0),"
                                " epoch = epoch + 1, owner = NULL, lease_until = NULL"
                                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'", (now, row.rowid, row.epoch))
                outcome, line = "requeued", f"{stamp}; requeued without a strike (no provider call had been sent)"
            elif crashes < max_strikes:
                cur = c.execute("UPDATE steps SET status = 'QUEUED', due_at = ?, crash_count = crash_count + 1,"
                                " epoch = epoch + 1, owner = NULL, lease_until = NULL"
                                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'", (now, row.rowid, row.epoch))
                outcome = "requeued"
                line = f"{stamp}; requeued (crash recovery {crashes} of {max_strikes})"
            else:
                reason = (f"dead-lettered: the step's worker died {crashes} times while running it ({why}); "
                          f"not retried automatically so it cannot spend money at every start. "
                          f"Fix the cause, then `hybrid-engine retry {row.run_id}`.")
                cur = c.execute("UPDATE steps SET status = 'FAILED', crash_count = crash_count + 1, error = ?,"
                                " error_code = 'dead_lettered', ended_at = ?, epoch = epoch + 1, owner = NULL,"
                                " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                                (reason, now, row.rowid, row.epoch))
                outcome = "dead_lettered"
                line = f"{stamp}; crash {crashes} of {max_strikes}, step failed (dead-lettered)"
            if cur.rowcount == 0:
                raise _Stale()  # another process got there first: undo the call update with the rest
            if sent:
                line += f"; {len(sent)} provider call(s) sent without a recorded answer are kept as unconfirmed"
            self._log(row.run_id, row.step_id, now, line)
            if outcome == "dead_lettered":
                tx.close(row.run_id, 1 + row.carried + self._skip_downstream(row.run_id, row.step_id, now))
            else:
                tx.touched.add(row.run_id)
            return outcome, line

    def delete_stale_steps(self) -> int:
        """Queue entries whose run is gone (deleted by a process without foreign keys)."""
        with self.transaction():
            cur = self.conn.execute("DELETE FROM steps WHERE status = 'QUEUED'"
                                    " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = steps.run_id)")
            return cur.rowcount

    def open_actions(self) -> list[str]:
        """Actions that steps of open runs may still run (O(steps of open runs))."""
        return [r[0] for r in self.conn.execute(
            f"SELECT DISTINCT action FROM steps WHERE {ACTIVE_RUNS} AND status IN ('PENDING','QUEUED','RUNNING')")]

    def has_queued(self) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE status = 'QUEUED' LIMIT 1").fetchone() is not None

    def has_running(self) -> bool:
        return self.conn.execute(f"SELECT 1 FROM steps WHERE {ACTIVE_RUNS} AND status = 'RUNNING' LIMIT 1").fetchone() is not None

    def next_due(self) -> float | None:
        row = self.conn.execute("SELECT MIN(due_at) FROM steps WHERE status = 'QUEUED'").fetchone()
        return row[0] if row else None

    def has_ready(self, now: float) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE status = 'QUEUED' AND due_at <= ? LIMIT 1",
                                 (now,)).fetchone() is not None

    # ---- user actions: retry, cancel, delete --------------------------------

    def retry_run(self, run_id: str, now: float, line: str, budget_usd: float | None = None) -> int:
        """Re-open failed, skipped and cancelled steps; completed ones are kept (not re-billed).
        A new run budget, when given, is set in the same transaction, before any step can start."""
        with self.transaction() as tx:
            c = self.conn
            if budget_usd is not None:
                c.execute("UPDATE runs SET budget_usd = ? WHERE id = ?", (budget_usd, run_id))
            rows = c.execute("SELECT step_id, action, external FROM steps WHERE run_id = ?"
                             " AND status IN ('FAILED','SKIPPED','CANCELLED')", (run_id,)).fetchall()
            from .adapters import SPECS
            for step_id, action, external in rows:
                spec = SPECS.get(action)
                status = "WAITING_FOR_INPUT" if spec is not None and spec.input_slot and not external else "PENDING"
                c.execute("UPDATE steps SET status = ?, error = NULL, error_code = NULL, error_count = 0,"
                          " crash_count = 0, carried = 0, due_at = NULL, started_at = NULL, ended_at = NULL,"
                          " duration_ms = NULL, owner = NULL, lease_until = NULL, epoch = epoch + 1"
                          " WHERE run_id = ? AND step_id = ?", (status, run_id, step_id))
                self._log(run_id, step_id, now, line)
            self._queue_ready(run_id, now)
            started = c.execute("SELECT 1 FROM steps WHERE run_id = ? AND status = 'COMPLETED' AND external = 0"
                                " AND action != 'capture' LIMIT 1", (run_id,)).fetchone() is not None
            c.execute("UPDATE runs SET status = ?, error = NULL, error_code = NULL, open_steps = open_steps + ?"
                      " WHERE id = ?", ("RUNNING" if started else "PENDING", len(rows), run_id))
            tx.touched.add(run_id)
            return len(rows)

    def cancel_run(self, run_id: str, now: float, line: str) -> int:
        with self.transaction() as tx:
            c = self.conn
            rows = c.execute(f"UPDATE steps SET status = 'CANCELLED', ended_at = ?, epoch = epoch + 1, owner = NULL,"
                             f" lease_until = NULL, error = 'cancelled by the user'"
                             f" WHERE run_id = ? AND status IN {_OPEN_SQL} RETURNING step_id", (now, run_id)).fetchall()
            for (step_id,) in rows:
                self._log(run_id, step_id, now, line)
            # A call in flight is not recalled by cancelling: it may be billed, and its answer is dropped.
            c.execute("UPDATE calls SET state = 'unconfirmed', settled_at = ?, reason = 'cancelled while the call"
                      " was in flight' WHERE run_id = ? AND state = 'sent'", (now, run_id))
            c.execute("UPDATE runs SET status = 'CANCELLED', error = 'cancelled by the user', error_code = 'cancelled',"
                      " open_steps = 0 WHERE id = ? AND status NOT IN ('COMPLETED','FAILED','CANCELLED')", (run_id,))
            tx.touched.add(run_id)
            return len(rows)

    def delete_run(self, run_id: str) -> bool:
        """The run and all it holds, except what it spent (see deleted_spend)."""
        with self.transaction():
            c = self.conn
            c.execute("INSERT INTO deleted_spend (kind, provider, model, at, cost, estimated)"
                      " SELECT 'step', provider, model, ended_at, cost, COALESCE(CASE WHEN json_valid(metadata)"
                      " THEN json_extract(metadata, '$.cost_estimated') END, 0) = 1 FROM steps"
                      " WHERE run_id = ? AND status = 'COMPLETED' AND (cost IS NOT NULL OR price_unknown = 1)",
                      (run_id,))
            c.execute("INSERT INTO deleted_spend (kind, provider, model, at, cost)"
                      " SELECT 'call', provider, model, sent_at, CASE WHEN state = 'discarded' THEN cost"
                      " ELSE cost_max END FROM calls WHERE run_id = ? AND state IN ('sent', 'unconfirmed', 'discarded')",
                      (run_id,))
            return c.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    # ---- reading ------------------------------------------------------------

    def _dict_rows(self, sql: str, args: tuple) -> list[dict]:
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def run_row(self, run_id: str) -> dict | None:
        rows = self._dict_rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        return rows[0] if rows else None

    def runs_with_prefix(self, prefix: str, limit: int = 2) -> list[tuple[str]]:
        """Run ids starting with `prefix`, taken literally (no LIKE wildcards); uses the primary key."""
        return self.conn.execute("SELECT id FROM runs WHERE id >= ? AND substr(id, 1, ?) = ? ORDER BY id LIMIT ?",
                                 (prefix, len(prefix), prefix, limit)).fetchall()

    def run_budget(self, run_id: str) -> float | None:
        row = self.conn.execute("SELECT budget_usd FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def run_info(self, run_id: str) -> tuple[str, str, float] | None:
        return self.conn.execute("SELECT name, template, created_at FROM runs WHERE id = ?", (run_id,)).fetchone()

    def step_rows(self, run_id: str) -> list[dict]:
        return self._dict_rows("SELECT * FROM steps WHERE run_id = ? ORDER BY pos", (run_id,))

    def outputs(self, run_id: str, step_ids: Iterable[str] | None = None) -> dict[str, dict]:
        c = self.conn
        if step_ids is None:
            rows = c.execute("SELECT s.step_id, COALESCE(s.outputs, o.data) FROM steps s LEFT JOIN outputs o"
                             " ON o.run_id = s.run_id AND o.step_id = s.step_id AND s.outputs_ref = 1"
                             " WHERE s.run_id = ? AND s.status = 'COMPLETED'", (run_id,)).fetchall()
        else:
            ids = list(step_ids)
            if not ids:
                return {}
            rows = c.execute(f"SELECT s.step_id, COALESCE(s.outputs, o.data) FROM steps s LEFT JOIN outputs o"
                             f" ON o.run_id = s.run_id AND o.step_id = s.step_id AND s.outputs_ref = 1"
                             f" WHERE s.run_id = ? AND s.step_id IN ({','.join('?' * len(ids))})"
                             f" AND s.status = 'COMPLETED'", (run_id, *ids)).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows if r[1] is not None}

    def logs(self, run_id: str) -> dict[str, list[tuple[float, str]]]:
        out: dict[str, list[tuple[float, str]]] = {}
        for step_id, ts, line in self.conn.execute(
                "SELECT step_id, ts, line FROM step_logs WHERE run_id = ? ORDER BY id", (run_id,)):
            out.setdefault(step_id, []).append((ts, line))
        return out

    # A run's row is not written at every link of a chain, so "updated" also looks at its steps.
    _SUMMARY = ("SELECT r.id, r.name, r.template, r.status, r.created_at,"
                " MAX(r.updated_at, COALESCE(MAX(s.started_at), 0), COALESCE(MAX(s.ended_at), 0)), r.error,"
                " COUNT(s.step_id), COALESCE(SUM(s.status = 'COMPLETED'), 0),"
                " COALESCE(SUM(CASE WHEN s.status = 'COMPLETED' THEN s.tokens END), 0),"
                " COALESCE(SUM(CASE WHEN s.status = 'COMPLETED' THEN s.cost END), 0),"
                " COALESCE(SUM(s.status = 'COMPLETED' AND s.price_unknown = 1), 0),"
                " COALESCE(SUM(s.status = 'FAILED'), 0), r.budget_usd, r.error_code"
                " FROM runs r LEFT JOIN steps s ON s.run_id = r.id")
    SUMMARY_FIELDS = ("id", "name", "template", "status", "created_at", "updated_at", "error", "total_steps",
                      "completed_steps", "total_tokens", "total_cost", "unknown_cost_steps", "failed_steps",
                      "budget_usd", "error_code")

    def _summaries(self, where: str, args: tuple, tail: str = "") -> list[dict]:
        rows = self.conn.execute(f"{self._SUMMARY} {where} GROUP BY r.id {tail}", args).fetchall()
        return [dict(zip(self.SUMMARY_FIELDS, r)) for r in rows]

    def run_summaries(self, limit: int = 50, offset: int = 0) -> list[dict]:
        return self._summaries("WHERE r.id IN (SELECT id FROM runs ORDER BY created_at DESC, rowid DESC"
                               " LIMIT ? OFFSET ?)", (limit, offset), "ORDER BY r.created_at DESC, r.rowid DESC")

    def run_summary(self, run_id: str) -> dict | None:
        rows = self._summaries("WHERE r.id = ?", (run_id,))
        return rows[0] if rows else None

    def active_or_recent(self, since: float, known: Iterable[str] = ()) -> list[tuple[str, float, str, int]]:
        """(id, last change, status, completed steps) of runs that are open, created since `since`, or in `known`:
        what an event feed must look at, without an index that every step change would touch."""
        ids = list(known)
        marks = ",".join("?" * len(ids)) or "NULL"
        return self.conn.execute(
            f"SELECT r.id, MAX(r.updated_at, COALESCE((SELECT MAX(MAX(COALESCE(s.started_at, 0)),"
            f" MAX(COALESCE(s.ended_at, 0))) FROM steps s WHERE s.run_id = r.id), 0)), r.status,"
            f" (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'COMPLETED') FROM runs r"
            f" WHERE r.status IN ('PENDING','RUNNING') OR r.created_at >= ? OR r.id IN ({marks})",
            (since, *ids)).fetchall()

    def cost_breakdown(self, run_id: str) -> dict[str, float]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT model, SUM(cost) FROM steps WHERE run_id = ? AND status = 'COMPLETED' AND model IS NOT NULL"
            " AND cost IS NOT NULL GROUP BY model ORDER BY model", (run_id,))}

    def cost_by_provider(self, run_id: str) -> dict[str, float]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT provider, SUM(cost) FROM steps WHERE run_id = ? AND status = 'COMPLETED' AND provider IS NOT NULL"
            " AND cost IS NOT NULL GROUP BY provider ORDER BY provider", (run_id,))}

    def run_cost(self, run_id: str) -> float:
        return self.conn.execute("SELECT COALESCE(SUM(cost), 0) FROM steps WHERE run_id = ? AND status = 'COMPLETED'",
                                 (run_id,)).fetchone()[0]

    def _summed(self, sql: str, deleted_sql: str, since: float) -> dict:
        """Per-key sums over the live steps and the deleted runs' spend alike."""
        out: dict = {}
        for key, value in (self.conn.execute(sql, (since,)).fetchall()
                           + self.conn.execute(deleted_sql, (since,)).fetchall()):
            out[key or "unknown"] = out.get(key or "unknown", 0) + value
        return out

    def spend_since(self, since: float) -> dict[str, float]:
        """Known cost of completed model steps since a time, per provider."""
        return self._summed(
            "SELECT provider, SUM(cost) FROM steps WHERE cost IS NOT NULL AND ended_at >= ? AND status = 'COMPLETED'"
            " GROUP BY provider",
            "SELECT provider, SUM(cost) FROM deleted_spend WHERE kind = 'step' AND at >= ? AND cost IS NOT NULL"
            " GROUP BY provider", since)

    def estimated_since(self, since: float) -> dict[str, float]:
        """The part of spend_since priced from our own token count (the provider's usage was
        missing or impossible), per provider: spend counts it and says it is estimated."""
        return self._summed(
            "SELECT provider, SUM(cost) FROM steps WHERE cost IS NOT NULL AND ended_at >= ? AND status = 'COMPLETED'"
            " AND CASE WHEN json_valid(metadata) THEN json_extract(metadata, '$.cost_estimated') END = 1"
            " GROUP BY provider",
            "SELECT provider, SUM(cost) FROM deleted_spend WHERE kind = 'step' AND at >= ? AND cost IS NOT NULL"
            " AND estimated = 1 GROUP BY provider", since)

    def unpriced_since(self, since: float) -> dict[str, int]:
        """Completed model steps since a time whose price is unknown, per model: spend cannot
        count them, so it says how many there are rather than let them pass for $0."""
        return self._summed(
            "SELECT model, COUNT(*) FROM steps WHERE price_unknown = 1 AND ended_at >= ? AND status = 'COMPLETED'"
            " GROUP BY model",
            "SELECT model, COUNT(*) FROM deleted_spend WHERE kind = 'step' AND at >= ? AND cost IS NULL"
            " GROUP BY model", since)

    # ---- capture de-duplication (schema 2; added with the host's `capture` dedupe) ----------
    # Used by Service.capture: look up, then (in the same BEGIN IMMEDIATE) start the run and
    # record it, so two processes re-sending one capture_id still make one run.

    def capture_run(self, capture_id: str) -> tuple[str, str | None] | None:
        """(run_id, step_id) of the run a capture_id already made, or None."""
        return self.conn.execute("SELECT run_id, step_id FROM captures WHERE capture_id = ?",
                                 (capture_id,)).fetchone()

    def record_capture(self, capture_id: str, run_id: str, step_id: str | None) -> None:
        with self.transaction():
            self.conn.execute("INSERT INTO captures (capture_id, run_id, step_id) VALUES (?, ?, ?)",
                              (capture_id, run_id, step_id))

    # ---- end of capture de-duplication -------------------------------------------------------
