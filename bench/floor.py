"""The baseline every engine benchmark divides by: one SQLite WAL commit per step.

WAL and synchronous=NORMAL, as the engine's store; one small row per step, each in its own
BEGIN IMMEDIATE ... COMMIT. Shared so that every bench measures the same floor.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

SETTINGS = "journal_mode=wal synchronous=NORMAL"


def raw_db(path: Path, schema: str) -> sqlite3.Connection:
    """A plain SQLite file with the store's journal settings: what every bench's raw side writes to."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(schema)
    return conn


def wal_commits(folder: Path, n: int, tag: str = "") -> float:
    """Seconds for n steps, one commit each."""
    return wal_commits_timed(folder, n, tag)[0]


def wal_commits_timed(folder: Path, n: int, tag: str = "") -> tuple[float, float]:
    """Seconds for n steps, one commit each: (wall clock, CPU time of this process)."""
    conn = raw_db(folder / f"floor-{tag}{time.monotonic_ns()}.db",
                  "CREATE TABLE steps (run_id TEXT, step_id TEXT, status TEXT, outputs TEXT)")
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO steps VALUES (?, ?, 'COMPLETED', ?)", ("r", f"s{i}", '{"value": null}'))
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.close()
    return elapsed, cpu
