"""The only module that speaks SQL.

One SQLite file shared by every process that touches the engine: the hosts of
several browser profiles, CLI workers, a detached worker. WAL with
synchronous=NORMAL survives the process being killed (the common crash: the
browser kills its host); writes take BEGIN IMMEDIATE so a read-then-write never
races another process. Step outputs live in their own table and are written once,
when the step completes: a 5 MB page is never rewritten by a status change.

Claiming is one compare-and-swap UPDATE ... RETURNING that bumps the step's epoch;
every later write by the claimant is conditional on that epoch, so a worker that
lost its lease cannot overwrite the step's new owner.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .models import RunStatus, StepStatus

OPEN_STATUSES = ("PENDING", "QUEUED", "RUNNING", "WAITING_FOR_INPUT")
_OPEN_SQL = "('PENDING','QUEUED','RUNNING','WAITING_FOR_INPUT')"

MIGRATIONS: list[str] = [
    # 1: the initial schema
    f"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('seq', 0);

    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        template    TEXT NOT NULL,
        definition  TEXT NOT NULL,
        status      TEXT NOT NULL,
        budget_usd  REAL,
        error       TEXT,
        error_code  TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        seq         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_created ON runs(created_at);
    CREATE INDEX runs_seq ON runs(seq);

    CREATE TABLE steps (
        run_id        TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id       TEXT NOT NULL,
        pos           INTEGER NOT NULL,
        name          TEXT NOT NULL,
        action        TEXT NOT NULL,
        provider      TEXT,
        params        TEXT NOT NULL,
        deps          TEXT NOT NULL,
        status        TEXT NOT NULL,
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
        PRIMARY KEY (run_id, step_id)
    );
    CREATE INDEX steps_queue ON steps(due_at) WHERE status = 'QUEUED';
    CREATE INDEX steps_running ON steps(owner) WHERE status = 'RUNNING';
    CREATE INDEX steps_open ON steps(run_id) WHERE status IN {_OPEN_SQL};
    CREATE INDEX steps_ended ON steps(ended_at) WHERE status = 'COMPLETED' AND cost IS NOT NULL;

    CREATE TABLE edges (
        run_id  TEXT NOT NULL,
        step_id TEXT NOT NULL,
        dep_id  TEXT NOT NULL,
        PRIMARY KEY (run_id, step_id, dep_id),
        FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX edges_dep ON edges(run_id, dep_id);

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
]

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    pass


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


@dataclass
class Claimed:
    rowid: int
    run_id: str
    step_id: str
    action: str
    provider: str | None
    params: str
    deps: str
    epoch: int
    attempts: int
    error_count: int
    crash_count: int
    max_retries: int
    timeout_s: float | None


@dataclass
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


@dataclass
class _Tx:
    touched: set = field(default_factory=set)


def _secure_create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass


class Store:
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._tx_local = threading.local()
        _secure_create(self.path)
        self._migrate()

    # ---- connections and transactions -------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA cache_size=-16000")
            self._local.conn = conn
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

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """BEGIN IMMEDIATE ... COMMIT; runs touched inside get a new change sequence number."""
        outer = getattr(self._tx_local, "tx", None)
        if outer is not None:
            yield outer
            return
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        tx = _Tx()
        self._tx_local.tx = tx
        try:
            yield tx
            if tx.touched:
                seq = conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value").fetchone()[0]
                from . import clock
                now = clock.now()
                conn.executemany("UPDATE runs SET seq = ?, updated_at = ? WHERE id = ?",
                                 [(seq, now, r) for r in tx.touched])
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        finally:
            self._tx_local.tx = None

    def _migrate(self) -> None:
        conn = self.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer Hybrid Engine (schema {version}, "
                             f"this one knows {SCHEMA_VERSION}); upgrade hybrid-engine")
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
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def data_version(self) -> int:
        """Changes when another connection commits; a cheap 'anything new?' check."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def current_seq(self) -> int:
        return self.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]

    # ---- creating runs and filling slots -----------------------------------

    def create_run(self, run_id: str, name: str, template: str, definition: dict, budget_usd: float | None,
                   steps: list[NewStep], now: float) -> None:
        with self.transaction() as tx:
            c = self.conn
            c.execute("INSERT INTO runs (id, name, template, definition, status, budget_usd, created_at, updated_at)"
                      " VALUES (?, ?, ?, ?, 'PENDING', ?, ?, ?)",
                      (run_id, name, template, json.dumps(definition), budget_usd, now, now))
            c.executemany(
                "INSERT INTO steps (run_id, step_id, pos, name, action, provider, params, deps, status,"
                " max_retries, timeout_s, due_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, s.step_id, i, s.name, s.action, s.provider, json.dumps(s.params), json.dumps(s.deps),
                  s.status.value, s.max_retries, s.timeout_s, now if s.status == StepStatus.QUEUED else None)
                 for i, s in enumerate(steps)])
            c.executemany("INSERT INTO edges (run_id, step_id, dep_id) VALUES (?,?,?)",
                          [(run_id, s.step_id, d) for s in steps for d in s.deps])
            tx.touched.add(run_id)

    def open_slots(self, run_id: str) -> list[str]:
        rows = self.conn.execute("SELECT step_id FROM steps WHERE run_id = ? AND status = 'WAITING_FOR_INPUT'"
                                 " ORDER BY pos", (run_id,)).fetchall()
        return [r[0] for r in rows]

    def fill_slot(self, run_id: str, step_id: str, outputs: dict, metadata: dict, now: float, log: str) -> int | None:
        """Complete a WAITING_FOR_INPUT step with external data; None if it was not waiting."""
        with self.transaction() as tx:
            c = self.conn
            cur = c.execute("UPDATE steps SET status = 'COMPLETED', metadata = ?, started_at = ?, ended_at = ?,"
                            " duration_ms = 0, error = NULL, error_code = NULL"
                            " WHERE run_id = ? AND step_id = ? AND status = 'WAITING_FOR_INPUT'",
                            (json.dumps(metadata), now, now, run_id, step_id))
            if cur.rowcount == 0:
                return None
            c.execute("INSERT OR REPLACE INTO outputs (run_id, step_id, data) VALUES (?,?,?)",
                      (run_id, step_id, json.dumps(outputs, ensure_ascii=False)))
            self._log(run_id, step_id, now, log)
            queued = self._queue_dependents(run_id, step_id, now)
            self._start_run(run_id)
            self._settle_run(run_id)
            tx.touched.add(run_id)
            return queued

    def add_external_step(self, run_id: str, step_id: str, name: str, outputs: dict, metadata: dict,
                          now: float, log: str) -> int:
        with self.transaction() as tx:
            c = self.conn
            pos = c.execute("SELECT COALESCE(MAX(pos), -1) + 1 FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
            c.execute("INSERT INTO steps (run_id, step_id, pos, name, action, params, deps, status, metadata,"
                      " started_at, ended_at, duration_ms, external)"
                      " VALUES (?, ?, ?, ?, 'capture', '{}', '[]', 'COMPLETED', ?, ?, ?, 0, 1)",
                      (run_id, step_id, pos, name, json.dumps(metadata), now, now))
            c.execute("INSERT INTO outputs (run_id, step_id, data) VALUES (?,?,?)",
                      (run_id, step_id, json.dumps(outputs, ensure_ascii=False)))
            self._log(run_id, step_id, now, log)
            queued = self._queue_ready(run_id, now)
            self._start_run(run_id)
            self._settle_run(run_id)
            tx.touched.add(run_id)
            return queued

    def step_exists(self, run_id: str, step_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE run_id = ? AND step_id = ?",
                                 (run_id, step_id)).fetchone() is not None

    # ---- claiming and settling ---------------------------------------------

    _CLAIM_COLS = ("rowid, run_id, step_id, action, provider, params, deps, epoch, attempts, error_count,"
                   " crash_count, max_retries, timeout_s")

    def _claim(self, req: ClaimRequest, now: float) -> list[Claimed]:
        if req.limit <= 0:
            return []
        where = ["status = 'QUEUED'", "due_at <= ?"]
        args: list[Any] = [now]
        ex_a, ex_p = list(req.exclude_actions), list(req.exclude_providers)
        if ex_a:
            where.append(f"action NOT IN ({','.join('?' * len(ex_a))})")
            args += ex_a
        if ex_p:
            where.append(f"(provider IS NULL OR provider NOT IN ({','.join('?' * len(ex_p))}))")
            args += ex_p
        sql = (f"UPDATE steps SET status = 'RUNNING', owner = ?, owner_pid = ?, owner_start = ?, owner_host = ?,"
               f" epoch = epoch + 1, lease_until = ?, attempts = attempts + 1, started_at = ?, ended_at = NULL"
               f" WHERE rowid IN (SELECT rowid FROM steps WHERE {' AND '.join(where)} ORDER BY due_at LIMIT ?)"
               f" RETURNING {self._CLAIM_COLS}")
        rows = self.conn.execute(sql, [req.owner, req.pid, req.start, req.host, req.lease_until, now, *args,
                                       req.limit]).fetchall()
        claimed = [Claimed(*r) for r in rows]
        for run_id in {c.run_id for c in claimed}:
            self._start_run(run_id)
        return claimed

    def claim(self, req: ClaimRequest, now: float) -> list[Claimed]:
        with self.transaction() as tx:
            claimed = self._claim(req, now)
            tx.touched.update(c.run_id for c in claimed)
            return claimed

    def settle(self, outcomes: list[Outcome], req: ClaimRequest | None, now: float) -> tuple[list[bool], list[Claimed]]:
        """Apply outcomes and claim the next batch, all in one commit.

        Returns, per outcome, whether it was applied (False: the lease was lost and
        another owner has the step), and the newly claimed steps.
        """
        with self.transaction() as tx:
            applied = [self._apply(o, tx) for o in outcomes]
            claimed = self._claim(req, now) if req is not None else []
            tx.touched.update(c.run_id for c in claimed)
            return applied, claimed

    def _apply(self, o: Outcome, tx: _Tx) -> bool:
        c = self.conn
        cl = o.claim
        duration_ms = int(round((o.ended_at - o.started_at) * 1000))
        if o.kind == "completed":
            md = o.metadata or {}
            cost = md.get("cost")
            cur = c.execute(
                "UPDATE steps SET status = 'COMPLETED', ended_at = ?, duration_ms = ?, metadata = ?, model = ?,"
                " provider = COALESCE(?, provider), tokens = ?, prompt_tokens = ?, completion_tokens = ?, cost = ?,"
                " price_unknown = ?, error = NULL, error_code = NULL, owner = NULL, lease_until = NULL"
                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.ended_at, duration_ms, json.dumps(md) if md else None, md.get("model"), md.get("provider"),
                 md.get("tokens"), md.get("prompt_tokens"), md.get("completion_tokens"),
                 cost, 1 if (md.get("price_unknown") or ("cost" in md and cost is None)) else 0,
                 cl.rowid, cl.epoch))
            if cur.rowcount == 0:
                return False
            c.execute("INSERT OR REPLACE INTO outputs (run_id, step_id, data) VALUES (?,?,?)",
                      (cl.run_id, cl.step_id, json.dumps(o.outputs or {}, ensure_ascii=False)))
            if o.log:
                self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
            self._queue_dependents(cl.run_id, cl.step_id, o.ended_at)
            self._settle_run(cl.run_id)
        elif o.kind == "retry":
            cur = c.execute(
                "UPDATE steps SET status = 'QUEUED', due_at = ?, error = ?, error_code = ?, ended_at = ?,"
                " duration_ms = ?, error_count = error_count + 1, owner = NULL, lease_until = NULL"
                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.due_at, o.error, o.error_code, o.ended_at, duration_ms, cl.rowid, cl.epoch))
            if cur.rowcount == 0:
                return False
            if o.log:
                self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
        elif o.kind == "released":
            # Not attempted at all (shutdown before start): back to the queue, attempt not counted.
            cur = c.execute(
                "UPDATE steps SET status = 'QUEUED', due_at = ?, attempts = MAX(attempts - 1, 0), owner = NULL,"
                " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.due_at or o.ended_at, cl.rowid, cl.epoch))
            if cur.rowcount == 0:
                return False
        elif o.kind == "failed":
            md = o.metadata or None
            cur = c.execute(
                "UPDATE steps SET status = 'FAILED', error = ?, error_code = ?, ended_at = ?, duration_ms = ?,"
                " error_count = error_count + 1, metadata = COALESCE(?, metadata), owner = NULL, lease_until = NULL"
                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.error, o.error_code, o.ended_at, duration_ms, json.dumps(md) if md else None,
                 cl.rowid, cl.epoch))
            if cur.rowcount == 0:
                return False
            if o.log:
                self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
            self._skip_downstream(cl.run_id, cl.step_id, o.ended_at)
            self._settle_run(cl.run_id)
        else:  # pragma: no cover - programming error
            raise ValueError(o.kind)
        tx.touched.add(cl.run_id)
        return True

    def _queue_dependents(self, run_id: str, step_id: str, now: float) -> int:
        cur = self.conn.execute(
            "UPDATE steps SET status = 'QUEUED', due_at = ? WHERE run_id = ? AND status = 'PENDING'"
            " AND step_id IN (SELECT step_id FROM edges WHERE run_id = ? AND dep_id = ?)"
            " AND NOT EXISTS (SELECT 1 FROM edges e JOIN steps d ON d.run_id = e.run_id AND d.step_id = e.dep_id"
            "   WHERE e.run_id = steps.run_id AND e.step_id = steps.step_id AND d.status != 'COMPLETED')",
            (now, run_id, run_id, step_id))
        return cur.rowcount

    def _queue_ready(self, run_id: str, now: float) -> int:
        cur = self.conn.execute(
            "UPDATE steps SET status = 'QUEUED', due_at = ? WHERE run_id = ? AND status = 'PENDING'"
            " AND NOT EXISTS (SELECT 1 FROM edges e JOIN steps d ON d.run_id = e.run_id AND d.step_id = e.dep_id"
            "   WHERE e.run_id = steps.run_id AND e.step_id = steps.step_id AND d.status != 'COMPLETED')",
            (now, run_id))
        return cur.rowcount

    def _skip_downstream(self, run_id: str, step_id: str, now: float) -> int:
        cur = self.conn.execute(
            "WITH RECURSIVE down(sid) AS ("
            "  SELECT step_id FROM edges WHERE run_id = :r AND dep_id = :s"
            "  UNION SELECT e.step_id FROM edges e JOIN down ON e.dep_id = down.sid WHERE e.run_id = :r)"
            " UPDATE steps SET status = 'SKIPPED', ended_at = :now,"
            "   error = 'skipped: upstream step ' || quote(:s) || ' failed'"
            " WHERE run_id = :r AND step_id IN (SELECT sid FROM down) AND status IN ('PENDING','QUEUED','WAITING_FOR_INPUT')",
            {"r": run_id, "s": step_id, "now": now})
        return cur.rowcount

    def _start_run(self, run_id: str) -> None:
        self.conn.execute("UPDATE runs SET status = 'RUNNING' WHERE id = ? AND status = 'PENDING'", (run_id,))

    def _settle_run(self, run_id: str) -> str | None:
        """Close the run when no step is open; the final status follows from the steps."""
        c = self.conn
        if c.execute(f"SELECT 1 FROM steps WHERE run_id = ? AND status IN {_OPEN_SQL} LIMIT 1",
                     (run_id,)).fetchone():
            return None
        statuses = {r[0] for r in c.execute("SELECT DISTINCT status FROM steps WHERE run_id = ?", (run_id,))}
        if "FAILED" in statuses:
            final = RunStatus.FAILED
            err = c.execute("SELECT step_id, error, error_code FROM steps WHERE run_id = ? AND status = 'FAILED'"
                            " ORDER BY ended_at LIMIT 1", (run_id,)).fetchone()
            message, code = f"step '{err[0]}' failed: {err[1]}", err[2]
        elif "CANCELLED" in statuses:
            final, message, code = RunStatus.CANCELLED, "cancelled", "cancelled"
        else:
            final, message, code = RunStatus.COMPLETED, None, None
        c.execute("UPDATE runs SET status = ?, error = ?, error_code = ? WHERE id = ? AND status NOT IN"
                  " ('COMPLETED','FAILED','CANCELLED')", (final.value, message, code, run_id))
        return final.value

    def _log(self, run_id: str, step_id: str, ts: float, line: str) -> None:
        self.conn.execute("INSERT INTO step_logs (run_id, step_id, ts, line) VALUES (?,?,?,?)",
                          (run_id, step_id, ts, line))

    def append_log(self, run_id: str, step_id: str, ts: float, line: str) -> None:
        with self.transaction():
            self._log(run_id, step_id, ts, line)

    # ---- leases and recovery ------------------------------------------------

    def renew_leases(self, owner: str, until: float) -> set[tuple[int, int]]:
        """Extend this owner's leases; return the (rowid, epoch) it still holds."""
        with self.transaction():
            rows = self.conn.execute("UPDATE steps SET lease_until = ? WHERE owner = ? AND status = 'RUNNING'"
                                     " RETURNING rowid, epoch", (until, owner)).fetchall()
        return {(r[0], r[1]) for r in rows}

    def running_steps(self) -> list[RunningRow]:
        rows = self.conn.execute("SELECT rowid, run_id, step_id, owner, owner_pid, owner_start, owner_host, epoch,"
                                 " lease_until, crash_count FROM steps WHERE status = 'RUNNING'").fetchall()
        return [RunningRow(*r) for r in rows]

    def requeue_orphan(self, row: RunningRow, now: float, line: str, *, dead_letter: str | None) -> str | None:
        """Requeue (or, with dead_letter, fail) one orphan, if it is still the one we saw."""
        with self.transaction() as tx:
            c = self.conn
            if dead_letter is None:
                cur = c.execute("UPDATE steps SET status = 'QUEUED', due_at = ?, crash_count = crash_count + 1,"
                                " epoch = epoch + 1, owner = NULL, lease_until = NULL"
                                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'", (now, row.rowid, row.epoch))
                outcome = "requeued"
            else:
                cur = c.execute("UPDATE steps SET status = 'FAILED', crash_count = crash_count + 1, error = ?,"
                                " error_code = 'dead_lettered', ended_at = ?, epoch = epoch + 1, owner = NULL,"
                                " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                                (dead_letter, now, row.rowid, row.epoch))
                outcome = "dead_lettered"
            if cur.rowcount == 0:
                return None
            self._log(row.run_id, row.step_id, now, line)
            if dead_letter is not None:
                self._skip_downstream(row.run_id, row.step_id, now)
                self._settle_run(row.run_id)
            tx.touched.add(row.run_id)
            return outcome

    def delete_stale_steps(self) -> int:
        """Open steps whose run is gone (a run deleted by a process without foreign keys)."""
        with self.transaction():
            cur = self.conn.execute(f"DELETE FROM steps WHERE status IN {_OPEN_SQL}"
                                    " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = steps.run_id)")
            return cur.rowcount

    def has_queued(self) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE status = 'QUEUED' LIMIT 1").fetchone() is not None

    def has_running(self) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE status = 'RUNNING' LIMIT 1").fetchone() is not None

    def next_due(self) -> float | None:
        row = self.conn.execute("SELECT MIN(due_at) FROM steps WHERE status = 'QUEUED'").fetchone()
        return row[0] if row else None

    def ready_count(self, now: float) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM steps WHERE status = 'QUEUED' AND due_at <= ?",
                                 (now,)).fetchone()[0]

    # ---- user actions: retry, cancel, delete --------------------------------

    def retry_run(self, run_id: str, now: float, line: str) -> int:
        """Re-open failed, skipped and cancelled steps; completed ones are kept (not re-billed)."""
        with self.transaction() as tx:
            c = self.conn
            rows = c.execute("SELECT step_id, action, external FROM steps WHERE run_id = ?"
                             " AND status IN ('FAILED','SKIPPED','CANCELLED')", (run_id,)).fetchall()
            from .adapters import SPECS
            for step_id, action, external in rows:
                spec = SPECS.get(action)
                status = "WAITING_FOR_INPUT" if spec is not None and spec.input_slot and not external else "PENDING"
                c.execute("UPDATE steps SET status = ?, error = NULL, error_code = NULL, error_count = 0,"
                          " crash_count = 0, due_at = NULL, started_at = NULL, ended_at = NULL,"
                          " duration_ms = NULL, owner = NULL, lease_until = NULL, epoch = epoch + 1"
                          " WHERE run_id = ? AND step_id = ?", (status, run_id, step_id))
                self._log(run_id, step_id, now, line)
            self._queue_ready(run_id, now)
            c.execute("UPDATE runs SET status = CASE WHEN EXISTS (SELECT 1 FROM steps WHERE run_id = :r AND status"
                      " IN ('QUEUED','RUNNING')) OR EXISTS (SELECT 1 FROM steps WHERE run_id = :r AND status ="
                      " 'COMPLETED' AND external = 0 AND action != 'capture') THEN 'RUNNING' ELSE 'PENDING' END,"
                      " error = NULL, error_code = NULL WHERE id = :r", {"r": run_id})
            self._settle_run(run_id)
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
            c.execute("UPDATE runs SET status = 'CANCELLED', error = 'cancelled by the user', error_code = 'cancelled'"
                      " WHERE id = ? AND status NOT IN ('COMPLETED','FAILED','CANCELLED')", (run_id,))
            tx.touched.add(run_id)
            return len(rows)

    def fail_run(self, run_id: str, message: str, code: str, now: float) -> None:
        with self.transaction() as tx:
            self.conn.execute("UPDATE runs SET status = 'FAILED', error = ?, error_code = ? WHERE id = ?",
                              (message, code, run_id))
            tx.touched.add(run_id)

    def delete_run(self, run_id: str) -> bool:
        with self.transaction():
            return self.conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    # ---- reading ------------------------------------------------------------

    def run_row(self, run_id: str) -> dict | None:
        c = self.conn
        c.row_factory = sqlite3.Row
        try:
            row = c.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        finally:
            c.row_factory = None
        return dict(row) if row else None

    def run_info(self, run_id: str) -> tuple[str, str, float] | None:
        return self.conn.execute("SELECT name, template, created_at FROM runs WHERE id = ?", (run_id,)).fetchone()

    def step_rows(self, run_id: str) -> list[dict]:
        c = self.conn
        c.row_factory = sqlite3.Row
        try:
            rows = c.execute("SELECT rowid AS rowid_, * FROM steps WHERE run_id = ? ORDER BY pos", (run_id,)).fetchall()
        finally:
            c.row_factory = None
        return [dict(r) for r in rows]

    def outputs(self, run_id: str, step_ids: Iterable[str] | None = None) -> dict[str, dict]:
        if step_ids is None:
            rows = self.conn.execute("SELECT step_id, data FROM outputs WHERE run_id = ?", (run_id,)).fetchall()
        else:
            ids = list(step_ids)
            if not ids:
                return {}
            rows = self.conn.execute(f"SELECT step_id, data FROM outputs WHERE run_id = ? AND step_id IN"
                                     f" ({','.join('?' * len(ids))})", (run_id, *ids)).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def output_sizes(self, run_id: str) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT step_id, length(data) FROM outputs WHERE run_id = ?", (run_id,))}

    def logs(self, run_id: str) -> dict[str, list[tuple[float, str]]]:
        out: dict[str, list[tuple[float, str]]] = {}
        for step_id, ts, line in self.conn.execute(
                "SELECT step_id, ts, line FROM step_logs WHERE run_id = ? ORDER BY id", (run_id,)):
            out.setdefault(step_id, []).append((ts, line))
        return out

    _SUMMARY = ("SELECT r.id, r.name, r.template, r.status, r.created_at, r.updated_at, r.error, r.seq,"
                " (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id),"
                " (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'COMPLETED'),"
                " (SELECT COALESCE(SUM(tokens), 0) FROM steps s WHERE s.run_id = r.id AND s.status = 'COMPLETED'),"
                " (SELECT COALESCE(SUM(cost), 0) FROM steps s WHERE s.run_id = r.id AND s.status = 'COMPLETED'),"
                " (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'COMPLETED'"
                "   AND s.price_unknown = 1),"
                " (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'FAILED'),"
                " r.budget_usd, r.error_code FROM runs r")
    SUMMARY_FIELDS = ("id", "name", "template", "status", "created_at", "updated_at", "error", "seq", "total_steps",
                      "completed_steps", "total_tokens", "total_cost", "unknown_cost_steps", "failed_steps",
                      "budget_usd", "error_code")

    def run_summaries(self, limit: int = 50, offset: int = 0) -> list[dict]:
        rows = self.conn.execute(self._SUMMARY + " ORDER BY r.created_at DESC, r.rowid DESC LIMIT ? OFFSET ?",
                                 (limit, offset)).fetchall()
        return [dict(zip(self.SUMMARY_FIELDS, r)) for r in rows]

    def run_summary(self, run_id: str) -> dict | None:
        row = self.conn.execute(self._SUMMARY + " WHERE r.id = ?", (run_id,)).fetchone()
        return dict(zip(self.SUMMARY_FIELDS, row)) if row else None

    def changed_since(self, seq: int, limit: int = 200) -> list[dict]:
        rows = self.conn.execute(self._SUMMARY + " WHERE r.seq > ? ORDER BY r.seq LIMIT ?", (seq, limit)).fetchall()
        return [dict(zip(self.SUMMARY_FIELDS, r)) for r in rows]

    def count_runs(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

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

    def spend_since(self, since: float) -> dict[str, float]:
        """Known cost of completed model steps since a time, per provider."""
        return {r[0] or "unknown": r[1] for r in self.conn.execute(
            "SELECT provider, SUM(cost) FROM steps WHERE status = 'COMPLETED' AND cost IS NOT NULL AND ended_at >= ?"
            " GROUP BY provider", (since,))}
