"""Template validation and planning against template size: time and peak memory for 1k,
10k and 100k steps.

Run: python bench/template_size.py [--sizes 1000,10000,100000] [--rounds 3] [--mem-cap-gb 4]

For each shape and size, in a fresh process per measurement (so each peak is its own):

1. `validate + plan`: templates.validate() and plans.template_plan() on the parsed
   document, what `validate`, `run` and the host's template watcher do after parsing.
   Sizes over the step limit (10,000) are measured with the limit lifted in that process,
   to show the cost stays linear past it; a real load refuses them (column 2).
2. `load file`: templates.load_file() + template_plan() from a JSON file, parsing included. Over the
   limits this is the time to refuse, and the reason.

Shapes: `chain` (each step depends on the one before), `chain+refs` (the same, and every
step reads the first step's output, as steps read the captured page: references to a step
further up than a direct dependency), `chain+far` (every step reads the step two above
it: each reference goes past a direct dependency to a different step, the worst case for
the ancestry check), `fan` (one root, n-2 parallel steps, one step that depends on all of
them). Times are CPU seconds of the child (wall seconds too: on a shared machine those move
with the load). The ratio column is CPU us/step at that size over CPU us/step at the
smallest size: a linear cost stays near 1 (the first size also carries fixed costs); a
quadratic one grows ~10x from 1k to 10k steps.

Each child runs under an address-space cap (--mem-cap-gb) and a time limit (--timeout),
so a quadratic regression is reported as "over the cap" instead of taking the machine down.
Peak memory is the growth of the child's max RSS during the measured call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = Path(__file__).resolve().parents[1] / "host"
SHAPES = ("chain", "chain+refs", "chain+far", "fan")


def make(shape: str, n: int) -> dict:
    steps = [{"id": "s0", "action": "noop"}]
    if shape == "fan":
        steps += [{"id": f"s{i}", "action": "noop", "dependencies": ["s0"]} for i in range(1, n - 1)]
        steps.append({"id": "sink", "action": "noop", "dependencies": [f"s{i}" for i in range(1, n - 1)]})
    else:
        for i in range(1, n):
            step = {"id": f"s{i}", "action": "noop", "dependencies": [f"s{i - 1}"]}
            if shape == "chain+refs":
                step.update(action="template", params={"template": "{{ steps.s0.outputs.value }}"})
            elif shape == "chain+far" and i >= 2:
                step.update(params={"value": f"{{{{ steps.s{i - 2}.outputs.value }}}}"})
            steps.append(step)
    return {"name": f"{shape}-{n}", "steps": steps}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: str) -> None:
    """One measurement in this process; prints one JSON line."""
    sys.path.insert(0, str(HOST))
    from hybrid_engine import templates
    from hybrid_engine.plans import template_plan
    from hybrid_engine.errors import TemplateError

    if mode == "validate":
        data = json.loads(Path(path).read_text())
        if hasattr(templates, "MAX_STEPS"):
            templates.MAX_STEPS = 10**9  # measured past the limit on purpose (see the docstring)
        base = _maxrss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        template_plan(templates.validate(data, path))
        print(json.dumps({"s": time.perf_counter() - t0, "cpu": time.process_time() - c0, "mb": _maxrss_mb() - base}))
        return
    base = _maxrss_mb()
    t0 = time.perf_counter()
    try:
        template_plan(templates.load_file(path))
        refused = None
    except TemplateError as exc:
        refused = exc.message.split(": ", 1)[1].splitlines()[0]
    elapsed = time.perf_counter() - t0
    print(json.dumps({"s": elapsed, "mb": _maxrss_mb() - base, "refused": refused}))


def measure(mode: str, path: Path, cap_gb: float, timeout: float) -> dict:
    def limit():
        cap = int(cap_gb * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "HYBRID_ENGINE_HOME": str(path.parent / "home")}
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True,
                              text=True, timeout=timeout, preexec_fn=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"over the {cap_gb:g} GB cap" if "MemoryError" in last else last[:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--mem-cap-gb", type=float, default=4.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"median of {args.rounds} rounds, one fresh process per measurement (cpu range: min-max of the rounds); "
          f"peak = growth of max RSS during the call; cap {args.mem_cap_gb:g} GB, {args.timeout:.0f} s")
    print(f"{'shape':<11} {'steps':>7} | {'validate+plan':>13} {'cpu s':>8} {'cpu range':>13} {'us/step':>8} {'ratio':>6} {'peak MB':>8} | "
          f"{'load file+plan':>14} {'peak MB':>8}  result")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            first = None
            for n in sizes:
                path = Path(tmp) / f"{shape}-{n}.json"
                path.write_text(json.dumps(make(shape, n)))
                val, load = [], []
                for _ in range(args.rounds):
                    val.append(measure("validate", path, args.mem_cap_gb, args.timeout))
                    load.append(measure("load", path, args.mem_cap_gb, args.timeout))
                row = f"{shape:<11} {n:>7} | "
                if any("error" in r for r in val):
                    row += f"{next(r['error'] for r in val if 'error' in r):>61} | "
                else:
                    wall = statistics.median(r["s"] for r in val)
                    cpu = statistics.median(r["cpu"] for r in val)
                    per = cpu / n * 1e6
                    first = first or per
                    spread = f"{min(r['cpu'] for r in val):.3f}-{max(r['cpu'] for r in val):.3f}"
                    row += (f"{wall:>11.3f} s {cpu:>8.3f} {spread:>13} {per:>8.1f} {per / first:>6.2f}"
                            f" {max(r['mb'] for r in val):>8.1f} | ")
                if any("error" in r for r in load):
                    row += next(r["error"] for r in load if "error" in r)
                else:
                    s = statistics.median(r["s"] for r in load)
                    refused = load[0]["refused"]
                    row += (f"{s * 1e3:>11.1f} ms {max(r['mb'] for r in load):>8.1f}  "
                            + (f"refused: {refused}" if refused else "loaded"))
                print(row, flush=True)
                path.unlink()


if __name__ == "__main__":
    main()
