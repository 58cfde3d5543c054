"""Library search over many stored runs, against the same FTS5 query issued raw.

Run: python bench/library_search.py [--runs 10000] [--rounds 15]

A temp HYBRID_ENGINE_HOME gets --runs runs of a two-step template (capture, then a
`template` step whose text stands in for a model's summary: ~60 words drawn from a Zipf-like
vocabulary, so some words are in most runs and some in a few), each with a page title and
URL on one of 50 sites. They are made through the service and executed by the executor, so
the index is written the way it always is (page recorded, run finished).

Then, in interleaved rounds (medians, with the spread of the per-round ratios):
  library.search (in process)   library.search(): checks, the quoted FTS5 query, the page
                                of matching ids (newest first), their summaries and views
  host library.search           the same through a running host: a request frame written,
                                the reply frame read (what the library page waits for,
                                minus the browser's messaging)
  raw FTS5                      the same MATCH, newest first, LIMIT 50 with snippets on a plain sqlite3
                                connection to the same file: the floor
for a common word, a rare word, two words, and a prefix; and
  host runs.list (50)           what the popup and the library ask for when they open,
  raw runs read                 against SELECT of the newest 50 runs' rows on a plain connection.
  host round trip (hello)       the floor of any answer through the host: a frame written, a
                                handler thread, a frame read, for a message that reads nothing.
Ratios are printed (of medians, with the middle half of the per-round ratios, and of the best
round of each side: on a shared machine the best rounds are the ones nothing else slowed), the
in-process ones apart from those through the host; for the host, also what is left after its
round-trip floor. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from hybrid_engine import protocol  # noqa: E402

PY = sys.executable
TEMPLATE = {"name": "bench-digest", "steps": [
    {"id": "page", "action": "capture"},
    {"id": "summary", "action": "template", "dependencies": ["page"],
     "params": {"template": "{{ steps.page.outputs.selection }}"}}]}


def vocabulary(rng: random.Random, n: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 10))))
    return sorted(words)


def zipf_words(rng: random.Random, vocab: list[str], k: int) -> list[str]:
    # Weight 1/rank: the first words are in most runs, the last in a handful.
    return rng.choices(vocab, weights=[1 / (i + 1) for i in range(len(vocab))], k=k)


def build(home: Path, n: int, seed: int) -> tuple[list[str], float]:
    os.environ["HYBRID_ENGINE_HOME"] = str(home)
    (home / "templates").mkdir(parents=True, exist_ok=True)
    (home / "templates" / "bench-digest.json").write_text(json.dumps(TEMPLATE), encoding="utf-8")
    from hybrid_engine.service import Service

    rng = random.Random(seed)
    vocab = vocabulary(rng)
    weights = [1 / (i + 1) for i in range(len(vocab))]
    svc = Service()
    t0 = time.perf_counter()
    for i in range(n):
        summary = " ".join(rng.choices(vocab, weights=weights, k=60))
        title = " ".join(rng.choices(vocab, weights=weights, k=6)).title()
        svc.start("bench-digest", content=f"<p>{summary}</p>", source_url=f"https://site{i % 50}.example/{i}",
                  content_type="text/html", title=title, selection=summary)
        if i % 500 == 499:
            asyncio.run(svc.make_executor().run(until_idle=True))
    asyncio.run(svc.make_executor().run(until_idle=True))
    took = time.perf_counter() - t0
    svc.store.close()
    return vocab, took


class Host:
    def __init__(self, env: dict):
        self.proc = subprocess.Popen([PY, "-m", "hybrid_engine", "host"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        self.ids = 0

    def call(self, type_: str, **fields) -> dict:
        self.ids += 1
        self.proc.stdin.write(protocol.frame(protocol.dumps({"id": self.ids, "type": type_, **fields}).encode()))
        self.proc.stdin.flush()
        assembler = protocol.Reassembler()
        while True:
            whole = assembler.feed(protocol.read_message(self.proc.stdout))
            if whole is not None and whole.get("id") == self.ids:
                if not whole.get("ok"):
                    raise RuntimeError(whole)
                return whole["result"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(name: str, ours: list[float], raw: list[float]) -> None:
    ratios = sorted(o / r for o, r in zip(ours, raw))
    q = len(ratios) // 4
    print(f"  {name:<34} {statistics.median(ours) * 1000:8.2f} ms  raw {statistics.median(raw) * 1000:7.3f} ms"
          f"  ratio {statistics.median(ratios):6.1f}x  (middle half {ratios[q]:.1f}-{ratios[-q - 1]:.1f}x;"
          f" best of rounds {min(ours) / min(raw):.1f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--settle", type=float, default=8.0,
                    help="seconds between the host's first answer and the first round (default 8)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="he-library-bench-") as tmp:
        home = Path(tmp) / "home"
        vocab, took = build(home, args.runs, args.seed)
        db = home / "engine.db"
        print(f"{args.runs:,} runs stored and indexed in {took:.1f} s ({took / args.runs * 1000:.2f} ms per run, "
              f"made and executed); engine.db {db.stat().st_size / 1e6:.1f} MB")

        from hybrid_engine import library
        from hybrid_engine.service import Service
        from hybrid_engine.store import fts_query

        svc = Service()
        raw = sqlite3.connect(db)
        env = {**os.environ, "HYBRID_ENGINE_HOME": str(home), "HYBRID_ENGINE_WORKER_LINGER_S": "1"}
        host = Host(env)
        host.call("hello", protocol=1)
        # After its first answer the host loads the estimate's libraries on a thread (seconds of
        # CPU, holding the GIL): a search a person makes comes after that, so the rounds do too.
        time.sleep(args.settle)
        queries = {"common word": vocab[0], "rare word": vocab[-1], "two words": f"{vocab[1]} {vocab[40]}",
                   "prefix": vocab[3][:3]}
        for label, q in queries.items():
            total = library.search(svc, q)["total"]
            print(f"  query {label!r} = {q!r}: {total:,} of {args.runs:,} runs match")
        raw_sql = ("SELECT r.id, snippet(library, -1, '[', ']', '…', 16) FROM library JOIN runs r"
                   " ON r.rowid = library.rowid WHERE library MATCH ? ORDER BY library.rowid DESC LIMIT 50")
        list_sql = "SELECT * FROM runs ORDER BY created_at DESC LIMIT 50"
        samples: dict[str, tuple[list, list]] = {}
        trips: list[float] = []
        for _ in range(args.rounds):
            for label, q in queries.items():
                match = fts_query(q)
                r = timed(lambda: raw.execute(raw_sql, (match,)).fetchall())
                samples.setdefault(f"library.search, {label}", ([], []))
                samples[f"library.search, {label}"][0].append(timed(lambda: library.search(svc, q)))
                samples[f"library.search, {label}"][1].append(r)
                r = timed(lambda: raw.execute(raw_sql, (match,)).fetchall())
                samples.setdefault(f"host library.search, {label}", ([], []))
                samples[f"host library.search, {label}"][0].append(timed(lambda: host.call("library.search", query=q)))
                samples[f"host library.search, {label}"][1].append(r)
            r = timed(lambda: raw.execute(list_sql).fetchall())
            samples.setdefault("host runs.list (50) vs raw read", ([], []))
            samples["host runs.list (50) vs raw read"][0].append(timed(lambda: host.call("runs.list", limit=50)))
            samples["host runs.list (50) vs raw read"][1].append(r)
            trips.append(timed(lambda: host.call("hello", protocol=1)))
        host.close()
        trip = statistics.median(trips)
        print(f"host round trip (hello), the floor of any answer through the host: median {trip * 1000:.2f} ms,"
              f" best {min(trips) * 1000:.2f} ms")
        print(f"medians of {args.rounds} interleaved rounds (ours, raw FTS5 / raw read, ratio):")
        for name, (ours, floor) in samples.items():
            report(name, ours, floor)
            if name.startswith("host "):
                left = [max(o - t, 0.0) for o, t in zip(ours, trips)]
                print(f"  {'':<34}   minus the round trip: {statistics.median(left) * 1000:6.2f} ms,"
                      f" {statistics.median(left) / statistics.median(floor):4.1f}x raw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
