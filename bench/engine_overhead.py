"""Per-step overhead of the engine against the floor of one SQLite WAL commit per step.

Run: python bench/engine_overhead.py [--steps 500] [--repeat 5]

Both sides run in this one process, interleaved, on the same disk: the floor is a
plain loop that inserts one small row per step and commits it (WAL,
synchronous=NORMAL, as the engine's store). The engine side creates a run of N
no-op steps (a chain, then a fan-out) and executes it with the real executor.

A chain of pure inline steps (no-ops, templates) settles up to executor.LINKS_PER_COMMIT
links in one commit (the executor's _settle_here says why that is safe), so it is also run
with a commit per link ("chain, a commit per link"): what the commits cost, for comparison.

Three readings of each ratio, because noise on a shared machine only ever adds time:
- median: the engine's median us/step over the rounds divided by the floor's median; what
  a loaded machine sees.
- best of rounds: the engine's fastest round divided by the floor's fastest round (each
  side's least disturbed round, not the best of the per-round ratios, which would pick a
  round where only the floor was slowed down). On a quiet machine, the closest reading of
  the engine's own cost; on a busy one it reads high, since a floor round (~15 ms) finds a
  quiet moment more often than an engine round (~50-70 ms) does.
- CPU: the same fastest-round ratio over the process's CPU time, which time spent waiting
  for a core does not count: the reading to trust when the machine is busy (`uptime` says).
The per-round range is of the ratios of the two sides measured in the same round.

A run's fixed cost (a 1-step run: the executor's thread and connection, its first claim, the
run's closing, the event loop's start and stop) is spread over the run's steps in the ratios
above; it is also printed on its own, with what each step costs beyond it (the run minus a
1-step run, over N - 1 steps), so that a change to either shows as what it is.
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

from floor import wal_commits_timed  # noqa: E402


def floor(folder: Path, n: int) -> tuple[float, float]:
    wall, cpu = wal_commits_timed(folder, n)
    return wall / n, cpu / n


def engine(folder: Path, n: int, shape: str) -> tuple[float, float, float, float]:
    os.environ["HYBRID_ENGINE_HOME"] = str(folder / f"home-{shape}-{time.monotonic_ns()}")
    from hybrid_engine import executor
    from hybrid_engine.service import Service
    from hybrid_engine.templates import validate

    grouped = executor.LINKS_PER_COMMIT
    if shape == "chain1":  # the same chain with a commit per link, for the cost of the commits
        executor.LINKS_PER_COMMIT = 1
    if shape.startswith("chain") or n == 1:
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
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        asyncio.run(ex.run(until_idle=True))
    finally:
        executor.LINKS_PER_COMMIT = grouped
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert svc.summary(run_id)["status"] == "COMPLETED"
    t0 = time.perf_counter()
    svc.create_run(tpl)  # a later run of the same template copies the saved plan
    again = time.perf_counter() - t0
    svc.store.close()
    return elapsed / n, cpu / n, created / n, again / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engine(folder, 50, "chain")  # warm imports
        results: dict[str, list[float]] = {k: [] for k in (
            "floor", "floor_cpu", "chain", "chain_cpu", "chain1", "chain1_cpu", "fanout", "fanout_cpu",
            "chain_create", "chain1_create", "fanout_create", "chain_again", "chain1_again", "fanout_again", "one")}
        for _ in range(args.repeat):
            wall, cpu = floor(folder, args.steps)
            results["floor"].append(wall)
            results["floor_cpu"].append(cpu)
            results["one"].append(engine(folder, 1, "chain")[0])
            for shape in ("chain", "chain1", "fanout"):
                run, run_cpu, first, again = engine(folder, args.steps, shape)
                results[shape].append(run)
                results[shape + "_cpu"].append(run_cpu)
                results[shape + "_create"].append(first)
                results[shape + "_again"].append(again)
    med = {k: statistics.median(v) for k, v in results.items()}
    spread = {k: (max(v) - min(v)) / statistics.median(v) * 100 for k, v in results.items()}
    print(f"steps per run: {args.steps}, rounds: {args.repeat}, python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version},"
          f" load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"floor (one WAL commit per step): {med['floor'] * 1e6:8.1f} us/step  (spread {spread['floor']:.0f}%),"
          f" CPU {min(results['floor_cpu']) * 1e6:.1f} us/step at best")
    n = args.steps
    one, one_best = med["one"], min(results["one"])
    print(f"a run's fixed cost (a 1-step run):  {one * 1e3:8.2f} ms median, {one_best * 1e3:.2f} ms best:"
          f" {one / n * 1e6:.1f} us/step of a {n}-step run, {one / n / med['floor']:.2f}x the floor")
    for shape, target in (("chain", 3.0), ("chain1", None), ("fanout", 2.0)):
        label = {"chain1": "chain, a commit per link"}.get(shape, shape)
        ratio = med[shape] / med["floor"]
        best = min(results[shape]) / min(results["floor"])
        cpu = min(results[shape + "_cpu"]) / min(results["floor_cpu"])
        per_round = [e / f for e, f in zip(results[shape], results["floor"])]
        verdict = "  (for comparison: no target)" if target is None else (
            f"  target <= {target:.0f}x  median {'OK' if ratio <= target else 'MISSED'},"
            f" best {'OK' if best <= target else 'MISSED'}, CPU {'OK' if cpu <= target else 'MISSED'}")
        print(f"engine {label} execution: {med[shape] * 1e6:8.1f} us/step  (spread {spread[shape]:.0f}%)"
              f"  ratio {ratio:.2f}x median, {best:.2f}x best of rounds, {cpu:.2f}x CPU"
              f" (rounds {min(per_round):.2f}-{max(per_round):.2f}){verdict}")
        beyond = (med[shape] * n - one) / (n - 1)
        beyond_best = (min(results[shape]) * n - one_best) / (n - 1)
        print(f"engine {label} beyond that: {beyond * 1e6:8.1f} us/step"
              f"  ratio {beyond / med['floor']:.2f}x median, {beyond_best / min(results['floor']):.2f}x best of rounds")
        if shape != "chain1":
            print(f"engine {label} run creation: {med[shape + '_create'] * 1e6:8.1f} us/step for a template's first"
                  f" run (saves its plan), {med[shape + '_again'] * 1e6:.1f} us/step for a later one (one transaction each)")

if __name__ == "__main__":
    main()
