"""Ingesting over the HTTP API against the same ingest through the service layer in-process.

Run: python bench/http_ingest.py [--ingests 1000] [--rounds 10] [--size 2000]

One temp HYBRID_ENGINE_HOME. `hybrid-engine serve --port 0` runs as a subprocess; this
process holds a Service on the same data folder. Each side gets --ingests runs waiting on a
capture slot (made before timing) and fills each with a page of --size bytes, in --rounds
rounds interleaved side by side (HTTP, then in-process, then HTTP...), so both see the same
machine and the same growing database. The HTTP side is what a script
does: one keep-alive connection (http.client), POST /workflows/{id}/external-data with the
bearer token, JSON in and out. Printed: microseconds per ingest on each side (median over
rounds, with min-max), and the ratio HTTP / in-process with the range of per-round ratios.
What the ratio shows is the price of the transport: HTTP parsing, the guard, FastAPI's
validation and JSON, and the loopback round trip, on top of the same store write.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))


def start_server(env: dict) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "hybrid_engine", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if not found:
        proc.kill()
        raise SystemExit("serve did not print its address")
    return proc, int(found.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ingests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--size", type=int, default=2000, help="bytes of each page")
    args = ap.parse_args()
    per_round = max(1, args.ingests // args.rounds)

    folder = Path(tempfile.mkdtemp(prefix="he-bench-http-"))
    home = folder / "home"
    os.environ["HYBRID_ENGINE_HOME"] = str(home)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "host") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    from hybrid_engine.service import Service
    from hybrid_engine.templates import validate

    svc = Service()
    tpl = validate({"name": "slot", "steps": [{"id": "page", "action": "capture"}]}, "bench")
    warm = 20
    with svc.store.transaction():
        http_runs = [svc.create_run(tpl) for _ in range(warm + per_round * args.rounds)]
        local_runs = [svc.create_run(tpl) for _ in range(warm + per_round * args.rounds)]
    page = ("<p>" + "Lorem ipsum dolor sit amet, é ü 漢字. " * (args.size // 30 + 1))[:args.size]

    def body(i: int) -> dict:
        return {"content": page, "source_url": f"https://example.org/{i}", "content_type": "html",
                "metadata": {"n": i}}

    proc, port = start_server(env)
    try:
        token = (home / "http-token").read_text().strip()
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def over_http(i: int) -> None:
            conn.request("POST", f"/workflows/{http_runs[i]}/external-data", body=json.dumps(body(i)), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise SystemExit(f"HTTP {resp.status}: {data[:300]!r}")

        def in_process(i: int) -> None:
            svc.ingest(local_runs[i], body(i))

        for i in range(warm):  # warm-up: imports, the first connection, SQLite caches
            over_http(i)
            in_process(i)
        http_t, local_t = [], []
        for r in range(args.rounds):
            first = warm + r * per_round  # each side fills its own runs: run i gets page i
            for side, out in ((over_http, http_t), (in_process, local_t)):
                t0 = time.perf_counter()
                for i in range(first, first + per_round):
                    side(i)
                out.append((time.perf_counter() - t0) / per_round)
        conn.close()
    finally:
        proc.terminate()
        proc.wait(30)
    total = per_round * args.rounds
    h, loc = statistics.median(http_t), statistics.median(local_t)
    ratios = sorted(a / b for a, b in zip(http_t, local_t))
    print(f"{total} ingests of {args.size} bytes on each side, {args.rounds} interleaved rounds of {per_round}")
    print(f"in-process (Service.ingest):          {loc * 1e6:8.0f} us/ingest (rounds {min(local_t) * 1e6:.0f}-"
          f"{max(local_t) * 1e6:.0f})")
    print(f"HTTP (keep-alive, POST external-data):{h * 1e6:8.0f} us/ingest (rounds {min(http_t) * 1e6:.0f}-"
          f"{max(http_t) * 1e6:.0f})")
    print(f"ratio HTTP / in-process: {h / loc:.2f} (per-round ratios {ratios[0]:.2f}-{ratios[-1]:.2f})")
    print(f"throughput over HTTP: {1 / h:.0f} ingests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
