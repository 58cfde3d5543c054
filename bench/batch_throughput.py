"""A batch over the 130-page corpus against a provider limited to 600 requests a minute that
answers 429 above it: every run completes, no 429 reaches a step's final status, and the
throughput is printed as a ratio to the limit.

Run: python bench/batch_throughput.py [CORPUS] [--rpm 600] [--window-s 1] [--engine-rpm N|0] [--extract]

CORPUS defaults to ../shared/corpus (its readability/*/source.html pages). The fake OpenAI
provider runs in its own process with a sliding-window limit: --rpm requests a minute,
enforced as rpm * window_s / 60 requests per `--window-s` seconds (1 s by default: 10 a
second for 600 a minute, a stricter test than a minute's window, which 130 requests would
never fill). The engine's own pacing is `[providers.openai] rpm` = --engine-rpm (default:
the same as the limit; 0 turns it off to show the 429 path alone). Throughput is measured
at the provider: accepted requests over the time from the first to the last, against the
limit; target >= 0.9 (within 10%). `--extract` puts an extract_text step before the model
step, as the bundled templates do (on a busy 2-core machine the extraction, not the limit,
may then set the pace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
FAKE = ROOT / "tests" / "integration"


def start_fake(requests: int, window_s: float) -> tuple[subprocess.Popen, str]:
    code = ("import sys, json\n"
            f"sys.path.insert(0, {str(FAKE)!r})\n"
            "import fake_provider\n"
            "fake_provider._Handler.disable_nagle_algorithm = True\n"
            "fake = fake_provider.FakeProvider().start()\n"
            f"fake.limit('openai', requests={requests}, window_s={window_s!r})\n"
            "print(fake.url, flush=True)\n"
            "sys.stdin.read()\n"
            "ok = sorted(r.started for r in fake.requests_for('openai') if r.status == 200)\n"
            "print(json.dumps({'accepted': len(ok), 'refused': fake.rate_limited,\n"
            "                  'span_s': ok[-1] - ok[0] if len(ok) > 1 else 0.0}), flush=True)\n"
            "fake.close()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def corpus_pages(corpus: Path) -> list[Path]:
    pages = sorted(corpus.glob("readability/*/source.html")) or sorted(corpus.glob("*/source.html"))
    if not pages:
        raise SystemExit(f"{corpus}: no readability/*/source.html pages")
    return pages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--rpm", type=float, default=600)
    ap.add_argument("--window-s", type=float, default=1.0)
    ap.add_argument("--engine-rpm", type=float, default=None)
    ap.add_argument("--extract", action="store_true")
    args = ap.parse_args()
    pages = corpus_pages(Path(args.corpus))
    per_window = max(1, round(args.rpm * args.window_s / 60))
    home = Path(tempfile.mkdtemp(prefix="he-batch-"))
    os.environ["HYBRID_ENGINE_HOME"] = str(home)
    engine_rpm = args.rpm if args.engine_rpm is None else args.engine_rpm
    (home / "config.toml").write_text(f"[executor]\nconcurrency = 32\n[providers.openai]\nrpm = {engine_rpm:g}\n"
                                      "tpm = 0\n", encoding="utf-8")
    proc, url = start_fake(per_window, args.window_s)
    os.environ["OPENAI_API_KEY"] = "sk-fake-openai"
    os.environ["OPENAI_BASE_URL"] = f"{url}/openai/v1"

    from hybrid_engine.batches import Batches
    from hybrid_engine.pagetitle import html_title
    from hybrid_engine.inputs import read_input_file
    from hybrid_engine.service import Service

    steps = [{"id": "page", "action": "capture"}]
    if args.extract:
        steps.append({"id": "text", "action": "extract_text", "dependencies": ["page"],
                      "params": {"html": "{{ steps.page.outputs.content }}"}})
        prompt = "Summarise in one line:\n\n{{ steps.text.outputs.title }}"
    else:
        prompt = "Summarise in one line the page titled: {{ steps.page.outputs.title }}"
    steps.append({"id": "sum", "action": "openai_chat", "dependencies": [steps[-1]["id"]],
                  "params": {"model": "gpt-4o-mini", "prompt": prompt, "max_tokens": 60}})
    template = home / "digest.json"
    template.write_text(json.dumps({"name": "digest", "steps": steps}))

    svc = Service()
    batches = Batches(svc)
    batch_id = batches.create(str(template), parallel=64)
    for path in pages:
        content, ctype = read_input_file(str(path))
        batches.add_page(batch_id, {"content": content, "content_type": ctype,
                                    "title": html_title(content) or path.parent.name}, source=str(path))
    batches.resume(batch_id)
    started = time.perf_counter()
    try:
        asyncio.run(svc.make_executor().run(until_idle=True))
    finally:
        out, _ = proc.communicate("", timeout=30)
    elapsed = time.perf_counter() - started
    stats = json.loads(out.strip().splitlines()[-1])
    view = batches.view(batch_id)
    finals = [svc.run_document(i["run_id"]) for i in view["items"] if i["run_id"]]
    final_429 = sum(1 for d in finals for s in d["steps"] if s["status"] == "FAILED" and "429" in (s["error"] or ""))
    retries = sum(s["execution_metrics"]["retries"] for d in finals for s in d["steps"])
    limit_per_s = args.rpm / 60
    rate = (stats["accepted"] - 1) / stats["span_s"] if stats["span_s"] else float("nan")
    c = view["counts"]
    print(f"batch of {c['total']} pages ({c['duplicate']} duplicates), provider limit {args.rpm:g} rpm as "
          f"{per_window} per {args.window_s:g} s, engine rpm {engine_rpm:g}{', with extract_text' if args.extract else ''}")
    print(f"  completed {c['completed']}, failed {c['failed']}, 429s answered {stats['refused']}, "
          f"429s in a final status {final_429}, retries counted {retries}, wall {elapsed:.1f} s")
    print(f"  throughput {rate * 60:.0f} rpm over {stats['accepted']} calls in {stats['span_s']:.1f} s: "
          f"ratio to the limit {rate / limit_per_s:.3f} (target >= 0.9)")
    ok = c["completed"] == c["total"] - c["duplicate"] and final_429 == 0 and rate / limit_per_s >= 0.9
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
