"""Recovery cost against history size, and ingest cost against a raw write.

Run: python bench/recovery_ingest.py [--finished 10000] [--rounds 15]

1. Recovery with N finished runs and 10 orphans, against 10 finished runs and 10
   orphans, in the same process: the ratio shows whether recovery is O(orphans)
   (target <= 1.5) or grows with every run ever kept.
2. Ingesting a 5 MB page into a run's capture slot, against writing the same bytes
   in one SQLite transaction (WAL, synchronous=NORMAL): target <= 3x.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from floor import raw_db  # noqa: E402


def _service(folder: Path, name: str):
    os.environ["HYBRID_ENGINE_HOME"] = str(folder / name)
    from hybrid_engine.service import Service

    return Service()


def _iqr(values: list[float]) -> str:
    """The middle half of the per-round ratios: the noise this bench reports next to each ratio."""
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.2f}-{q[2]:.2f}"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def prepare(svc, finished: int):
    import asyncio

    from hybrid_engine.templates import validate

    done_tpl = validate({"name": "done", "steps": [{"id": f"s{i}", "action": "noop"} for i in range(3)]}, "bench")
    for _ in range(finished):
        svc.create_run(done_tpl)
    asyncio.run(svc.make_executor(limits=None).run(until_idle=True))
    orphan_tpl = validate({"name": "orphan", "steps": [{"id": "a", "action": "noop"}]}, "bench")
    return [svc.create_run(orphan_tpl) for _ in range(10)]


def orphan_all(svc, pid: int) -> None:
    from hybrid_engine import procs
    from hybrid_engine.store import ClaimRequest

    req = ClaimRequest(owner="bench-dead-owner", pid=pid, start=None, host=procs.hostname(),
                       lease_until=time.time() + 3600, limit=10)
    claimed = svc.store.claim(req, time.time() + 1)
    assert len(claimed) == 10, len(claimed)


def time_recovery(svc, pid: int) -> float:
    from hybrid_engine import recovery

    orphan_all(svc, pid)
    t0 = time.perf_counter()
    report = recovery.requeue_orphans(svc.store)
    elapsed = time.perf_counter() - t0
    assert len(report.requeued) == 10, report
    # Reset crash counts so a round never dead-letters.
    with svc.store.transaction():
        svc.store.conn.execute("UPDATE steps SET crash_count = 0 WHERE status = 'QUEUED'")
    return elapsed


def bench_recovery(folder: Path, finished: int, rounds: int) -> None:
    t0 = time.perf_counter()
    big = _service(folder, "big")
    prepare(big, finished)
    small = _service(folder, "small")
    prepare(small, 10)
    print(f"prepared {finished} finished runs in {time.perf_counter() - t0:.1f} s")
    pid = _dead_pid()
    big_t, small_t = [], []
    for _ in range(rounds):
        small_t.append(time_recovery(small, pid))
        big_t.append(time_recovery(big, pid))
    b, s = statistics.median(big_t), statistics.median(small_t)
    print(f"recovery, 10 orphans + 10 finished runs:      {s * 1e3:7.2f} ms (min {min(small_t) * 1e3:.2f}, "
          f"max {max(small_t) * 1e3:.2f})")
    print(f"recovery, 10 orphans + {finished} finished runs: {b * 1e3:7.2f} ms (min {min(big_t) * 1e3:.2f}, "
          f"max {max(big_t) * 1e3:.2f})")
    ratio = b / s
    print(f"ratio {ratio:.2f} (middle half of the per-round ratios {_iqr([x / y for x, y in zip(big_t, small_t)])})"
          f"  target <= 1.5  {'OK' if ratio <= 1.5 else 'MISSED'}")


def bench_ingest(folder: Path, rounds: int) -> None:
    from hybrid_engine.models import ExternalDataRequest
    from hybrid_engine.templates import validate

    page = ("<html><body><article>" + "<p>Lorem ipsum dolor sit amet, é ü 漢字. </p>" * 110_000)[:5_000_000]
    page += "</article></body></html>"
    svc = _service(folder, "ingest")
    tpl = validate({"name": "slot", "steps": [{"id": "page", "action": "capture"},
                                              {"id": "next", "action": "noop", "dependencies": ["page"]}]}, "bench")
    raw = raw_db(folder / "raw.db", "CREATE TABLE pages (id INTEGER PRIMARY KEY, data TEXT)")
    ours, floor = [], []
    for _ in range(rounds):
        run_id = svc.create_run(tpl)
        req = ExternalDataRequest(content=page, source_url="https://example.org/a", content_type="text/html")
        t0 = time.perf_counter()
        resp = svc.ingest(run_id, req)
        ours.append(time.perf_counter() - t0)
        assert resp.queued_dependents == 1
        t0 = time.perf_counter()
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT INTO pages (data) VALUES (?)", (page,))
        raw.execute("COMMIT")
        floor.append(time.perf_counter() - t0)
    o, f = statistics.median(ours), statistics.median(floor)
    size = len(page.encode())
    print(f"ingest {size / 1e6:.1f} MB page into a capture slot: {o * 1e3:7.2f} ms (min {min(ours) * 1e3:.2f},"
          f" max {max(ours) * 1e3:.2f})")
    print(f"raw INSERT of the same bytes, one transaction:  {f * 1e3:7.2f} ms (min {min(floor) * 1e3:.2f},"
          f" max {max(floor) * 1e3:.2f})")
    print(f"ratio {o / f:.2f} (middle half of the per-round ratios {_iqr([x / y for x, y in zip(ours, floor)])})"
          f"  target <= 3  {'OK' if o / f <= 3 else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--finished", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # recovery logs each requeue; not wanted on the console here
    with tempfile.TemporaryDirectory() as tmp:
        bench_recovery(Path(tmp), args.finished, args.rounds)
        bench_ingest(Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
