"""What chains settled many links a commit cost another process that writes to the store.

Run: python bench/writer_wait.py [--seconds 3] [--rounds 4]

A chain of pure inline steps settles up to executor.LINKS_PER_COMMIT links in one commit
(executor._settle_here). Its steps are computed before the group takes the write lock, so
the lock is held for the SQL alone; this bench checks that claim from the other side. A worker
process runs 500-step chains back to back; this process, beside it, writes one row, sleeps
2 ms and writes again (as a capture, a cancel or another worker would), timing how long each
write waits for the lock (BEGIN IMMEDIATE). Rounds alternate between the grouped worker and
the same worker with a commit per link (LINKS_PER_COMMIT = 1), each kind first in every other
pair, so both see the same machine. Printed: the writer's wait percentiles for each, their
ratios (grouped / a commit per link), and the chain steps each worker did in its rounds
(whole chains, so a round's count is within a chain of its share).

The waits come in the steps of SQLite's busy handler (it sleeps 1, 2, 5, 10, 15, 20 ... ms
between tries), so a percentile says how many tries found the lock taken: coarse, and a
ratio of percentiles moves between those levels from run to run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HOST = Path(__file__).resolve().parents[1] / "host"

# The worker: chains of N noop steps back to back until the stop file appears; prints the
# steps it ran. "go" once the first run exists, so that the writer starts with the chains.
WORKER = textwrap.dedent("""
    import asyncio, os, sys
    from hybrid_engine import executor
    from hybrid_engine.service import Service
    from hybrid_engine.templates import validate

    executor.LINKS_PER_COMMIT = int(sys.argv[1])
    stop, n = sys.argv[2], int(sys.argv[3])
    svc = Service()
    tpl = validate({"name": "chain", "steps": [{"id": f"s{i}", "action": "noop",
                    "dependencies": [f"s{i - 1}"] if i else []} for i in range(n)]}, "chain.yaml")
    steps, said = 0, False
    while not os.path.exists(stop):
        run_id = svc.create_run(tpl)
        if not said:
            print("go", flush=True)
            said = True
        asyncio.run(svc.make_executor().run(until_idle=True))
        assert svc.summary(run_id)["status"] == "COMPLETED"
        steps += n
    print(steps, flush=True)
""")


def db_path(home: Path) -> str:
    sys.path.insert(0, str(HOST))
    os.environ["HYBRID_ENGINE_HOME"] = str(home)
    from hybrid_engine.service import Service

    svc = Service()  # makes the file and its schema before either side starts
    path = str(svc.store.path)
    svc.store.close()
    return path


def one_round(home: Path, path: str, links: int, seconds: float, steps: int) -> tuple[list[float], int]:
    """The writer's waits (s) while a worker settling `links` links a commit runs chains, and its steps."""
    stop = home / "stop"
    stop.unlink(missing_ok=True)
    env = {**os.environ, "HYBRID_ENGINE_HOME": str(home), "PYTHONPATH": str(HOST)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(links), str(stop), str(steps)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "go", "the worker did not start"  # or it exited: EOF
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_writer (at REAL)")
        waits = []
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            waits.append(time.perf_counter() - t0)
            conn.execute("INSERT INTO bench_writer VALUES (?)", (t0,))
            conn.execute("COMMIT")
            time.sleep(0.002)
        conn.close()
        stop.touch()
        out, _ = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, f"the worker failed ({worker.returncode})"
    return waits, int(out.split()[-1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="each round's length")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of each kind, alternating")
    ap.add_argument("--steps", type=int, default=500, help="steps of each chain")
    args = ap.parse_args()
    sys.path.insert(0, str(HOST))
    from hybrid_engine.executor import LINKS_PER_COMMIT

    kinds = {"grouped": LINKS_PER_COMMIT, "a commit per link": 1}
    waits: dict[str, list[float]] = {k: [] for k in kinds}
    steps = {k: 0 for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        path = db_path(home)
        for r in range(args.rounds):
            for kind, links in (list(kinds.items()) if r % 2 == 0 else list(kinds.items())[::-1]):
                w, n = one_round(home, path, links, args.seconds, args.steps)
                waits[kind] += w
                steps[kind] += n
    print(f"{args.rounds} rounds of {args.seconds:g} s each way, chains of {args.steps} noop steps,"
          f" load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    marks = (50, 90, 99)
    for kind, links in kinds.items():
        w = waits[kind]
        print(f"{kind} ({links} link(s) a commit): {len(w)} writes, wait "
              + ", ".join(f"p{p} {pct(w, p) * 1e3:.2f} ms" for p in marks)
              + f", max {max(w) * 1e3:.1f} ms, mean {statistics.mean(w) * 1e3:.2f} ms;"
              f" chain steps {steps[kind]} ({steps[kind] / (args.rounds * args.seconds):.0f}/s)")
    g, one = waits["grouped"], waits["a commit per link"]
    print("grouped / a commit per link: wait "
          + ", ".join(f"p{p} {pct(g, p) / max(pct(one, p), 1e-9):.2f}x" for p in marks)
          + f", max {max(g) / max(one):.2f}x; chain steps {steps['grouped'] / max(1, steps['a commit per link']):.2f}x")


if __name__ == "__main__":
    main()
