"""The baseline every engine benchmark divides by: one SQLite WAL commit per step.

WAL and synchronous=NORMAL, as the engine's store; one small row per step, each in its own
BEGIN IMMEDIATE ... COMMIT. Shared so that every bench measures the same floor.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

SETTINGS = "journal_mode=wal synchronous=NORMAL"


def wal_commits(folder: Path, n: int, tag: str = "") -> float:
    """Seconds for n steps, one commit each."""
    path = folder / f"floor-{tag}{time.monotonic_ns()}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE steps (run_id TEXT, step_id TEXT, status TEXT, outputs TEXT)")
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO steps VALUES (?, ?, 'COMPLETED', ?)", ("r", f"s{i}", '{"value": null}'))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed
