"""Per-step overhead of the engine against the floor of one SQLite WAL commit per step.

Run: python bench/engine_overhead.py [--steps 500] [--repeat 5]

Both sides run in this one process, interleaved, on the same disk: the floor is a
plain loop that inserts one small row per step and commits it (WAL,
synchronous=NORMAL, as the engine's store). The engine side creates a run of N
no-op steps (a chain, then a fan-out) and executes it with the real executor.
Medians over --repeat rounds, and the best round of each side: noise on a shared machine
only ever adds time, so the best-of-rounds ratio is the closest reading of the engine's own
cost, and the median says what a loaded machine sees. The targets hold for both; the spread
is printed so a reader can judge noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from floor import wal_commits  # noqa: E402


def floor(folder: Path, n: int) -> float:
    return wal_commits(folder, n) / n


def engine(folder: Path, n: int, shape: str) -> tuple[float, float, float]:
    os.environ["HYBRID_ENGINE_HOME"] = str(folder / f"home-{shape}-{time.monotonic_ns()}")
    from hybrid_engine.service import Service
    from hybrid_engine.templates import validate

    if shape == "chain":
        steps = [{"id": f"s{i}", "action": "noop", "dependencies": [f"s{i - 1}"] if i else []} for i in range(n)]
    else:
        steps = [{"id": "root", "action": "noop"}] + [
            {"id": f"s{i}", "action": "noop", "dependencies": ["root"]} for i in range(n - 1)]
    tpl = validate({"name": shape, "steps": steps}, "bench")
    svc = Service()
    t0 = time.perf_counter()
    run_id = svc.create_run(tpl)
    created = time.perf_counter() - t0
    ex = svc.make_executor()
    t0 = time.perf_counter()
    asyncio.run(ex.run(until_idle=True))
    elapsed = time.perf_counter() - t0
    assert svc.summary(run_id)["status"] == "COMPLETED"
    t0 = time.perf_counter()
    svc.create_run(tpl)  # a later run of the same template copies the saved plan
    again = time.perf_counter() - t0
    svc.store.close()
    return elapsed / n, created / n, again / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engine(folder, 50, "chain")  # warm imports
        results = {"floor": [], "chain": [], "fanout": [], "chain_create": [], "fanout_create": [],
                   "chain_again": [], "fanout_again": []}
        for _ in range(args.repeat):
            results["floor"].append(floor(folder, args.steps))
            for shape in ("chain", "fanout"):
                run, first, again = engine(folder, args.steps, shape)
                results[shape].append(run)
                results[shape + "_create"].append(first)
                results[shape + "_again"].append(again)
    med = {k: statistics.median(v) for k, v in results.items()}
    spread = {k: (max(v) - min(v)) / statistics.median(v) * 100 for k, v in results.items()}
    print(f"steps per run: {args.steps}, rounds: {args.repeat}, python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}")
    print(f"floor (one WAL commit per step): {med['floor'] * 1e6:8.1f} us/step  (spread {spread['floor']:.0f}%)")
    for shape, target in (("chain", 3.0), ("fanout", 2.0)):
        ratio = med[shape] / med["floor"]
        best = min(results[shape]) / min(results["floor"])
        per_round = [e / f for e, f in zip(results[shape], results["floor"])]
        print(f"engine {shape:6s} execution:       {med[shape] * 1e6:8.1f} us/step  (spread {spread[shape]:.0f}%)"
              f"  ratio {ratio:.2f}x median, {best:.2f}x best of rounds"
              f" (rounds {min(per_round):.2f}-{max(per_round):.2f})"
              f"  target <= {target:.0f}x  median {'OK' if ratio <= target else 'MISSED'},"
              f" best {'OK' if best <= target else 'MISSED'}")
        print(f"engine {shape:6s} run creation:    {med[shape + '_create'] * 1e6:8.1f} us/step for a template's first run"
              f" (saves its plan), {med[shape + '_again'] * 1e6:.1f} us/step for a later one (one transaction each)")


if __name__ == "__main__":
    main()
