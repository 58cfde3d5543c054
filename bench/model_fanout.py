"""Fan-out of model calls: 50 model steps against one, timed side by side in one executor.

Run: python bench/model_fanout.py [--rounds 5] [--latency 0.2]

The fake OpenAI provider of tests/integration/fake_provider.py runs in its own process (its
threads do not share our GIL) and answers every request after a fixed latency. One
executor, as the background worker keeps it, runs interleaved rounds of a 1-step run and a
50-step run; printed: the best of each and their ratio (noise only adds time, so the best
rounds are the engine's), with the per-round ratios. Target: 50 calls <= 1.5x one call
(each call journaled before it is sent: one commit per model call).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
FAKE = ROOT / "tests" / "integration"


def start_fake(latency: float) -> tuple[subprocess.Popen, str]:
    code = ("import sys\n"
            f"sys.path.insert(0, {str(FAKE)!r})\n"
            "import fake_provider\n"
            # Headers and body go out in two writes: without TCP_NODELAY a kept-alive
            # connection can wait for a delayed ACK (40 ms) between them.
            "fake_provider._Handler.disable_nagle_algorithm = True\n"
            "fake = fake_provider.FakeProvider().start()\n"
            f"fake.set_default(latency={latency!r})\n"
            "print(fake.url, flush=True)\n"
            "sys.stdin.read()\n"
            "print(fake.max_in_flight, flush=True)\n"
            "fake.close()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="he-fanout-"))
    os.environ["HYBRID_ENGINE_HOME"] = str(home)
    (home / "config.toml").write_text("[executor]\nconcurrency = 50\n", encoding="utf-8")
    proc, url = start_fake(args.latency)
    os.environ["OPENAI_API_KEY"] = "sk-fake-openai"
    os.environ["OPENAI_BASE_URL"] = f"{url}/openai/v1"

    from hybrid_engine.service import Service
    from hybrid_engine.templates import validate

    svc = Service()

    def template(n: int):
        return validate({"name": f"fan{n}", "steps": [
            {"id": f"s{i}", "action": "openai_chat", "params": {"model": "gpt-4o-mini", "prompt": f"p{i}"}}
            for i in range(n)]}, "fanout.yaml")

    async def measure():
        ex = svc.make_executor()
        runner = asyncio.create_task(ex.run())

        async def timed(n: int) -> float:
            run_id = svc.create_run(template(n))
            started = time.perf_counter()
            ex.wake()
            while (status := svc.summary(run_id)["status"]) in ("PENDING", "RUNNING"):
                await asyncio.sleep(0.005)
            if status != "COMPLETED":
                raise SystemExit(f"run {run_id} ended {status}: {svc.summary(run_id)['error']}")
            return time.perf_counter() - started

        await timed(1)  # warm up: SDK imports, prices, the client, the fake's threads
        await timed(50)
        singles, fans = [], []
        for _ in range(args.rounds):
            singles.append(await timed(1))
            fans.append(await timed(50))
        ex.stop()
        await runner
        return singles, fans

    try:
        singles, fans = asyncio.run(measure())
    finally:
        out, _ = proc.communicate("", timeout=10)
    ratios = [f / s for s, f in zip(singles, fans)]
    best = min(fans) / min(singles)
    print(f"fan-out, {args.rounds} rounds, provider latency {args.latency * 1000:.0f} ms: "
          f"one call {min(singles) * 1000:.0f} ms, 50 calls {min(fans) * 1000:.0f} ms (best of each)")
    print(f"  ratio {best:.2f}x (target <= 1.5x); per round {min(ratios):.2f}x..{max(ratios):.2f}x; "
          f"calls in flight at once at the provider: {out.strip()}")
    return 0 if best <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
