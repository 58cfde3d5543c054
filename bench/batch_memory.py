"""Peak memory of a 500-page batch against that of a 1-page batch: pages are streamed to the
store, not held, so the two should be close.

Run: python bench/batch_memory.py [CORPUS] [--pages 500] [--no-extract]

Each size runs in a fresh process that does what `hybrid-engine batch --wait` does: reads the
pages one by one into a batch, then executes it with the executor of that process (capture
-> extract_text -> a model step, against the fake OpenAI provider in a process of its own,
unpaced). Pages are the corpus's readability/*/source.html (default ../shared/corpus), used
in turn, each copy made distinct by a comment so that none is a duplicate. Printed: peak RSS
(ru_maxrss) of each process and their ratio; target <= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "bench"))


def child(corpus: Path, pages: int, extract: bool) -> dict:
    import asyncio

    from batch_throughput import corpus_pages, start_fake

    home = Path(tempfile.mkdtemp(prefix="he-batchmem-"))
    os.environ["HYBRID_ENGINE_HOME"] = str(home)
    (home / "config.toml").write_text("[executor]\nconcurrency = 16\n[providers.openai]\ntier = \"unlimited\"\n")
    proc, url = start_fake(1_000_000, 1.0)
    os.environ["OPENAI_API_KEY"] = "sk-fake-openai"
    os.environ["OPENAI_BASE_URL"] = f"{url}/openai/v1"
    from hybrid_engine.batches import Batches
    from hybrid_engine.inputs import read_input_file
    from hybrid_engine.service import Service

    steps = [{"id": "page", "action": "capture"}]
    prompt = "Summarise: {{ steps.page.outputs.title }}"
    if extract:
        steps.append({"id": "text", "action": "extract_text", "dependencies": ["page"],
                      "params": {"html": "{{ steps.page.outputs.content }}"}})
        prompt = "Summarise in 3 bullets:\n\n{{ steps.text.outputs.text }}"
    steps.append({"id": "sum", "action": "openai_chat", "dependencies": [steps[-1]["id"]],
                  "params": {"model": "gpt-4o-mini", "prompt": prompt, "max_tokens": 100, "on_overflow": "truncate"}})
    template = home / "digest.json"
    template.write_text(json.dumps({"name": "digest", "steps": steps}))
    files = corpus_pages(corpus)
    svc = Service()
    batches = Batches(svc)
    batch_id = batches.create(str(template))
    started = time.perf_counter()
    for n in range(pages):
        content, ctype = read_input_file(str(files[n % len(files)]))
        batches.add_page(batch_id, {"content": content + f"\n<!-- copy {n} -->", "content_type": ctype,
                                    "title": f"page {n}"}, source=f"{files[n % len(files)]}#{n}")
        del content
    batches.resume(batch_id)
    try:
        asyncio.run(svc.make_executor().run(until_idle=True))
    finally:
        proc.communicate("", timeout=30)
    view = batches.view(batch_id, items=False)
    return {"pages": pages, "completed": view["counts"]["completed"], "seconds": time.perf_counter() - started,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--pages", type=int, default=500)
    ap.add_argument("--no-extract", action="store_true")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(Path(args.corpus), args.child, not args.no_extract)))
        return 0
    results = {}
    for n in (1, args.pages):
        cmd = [sys.executable, __file__, args.corpus, "--child", str(n)] + (["--no-extract"] if args.no_extract else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[n] = json.loads(out.strip().splitlines()[-1])
    one, many = results[1], results[args.pages]
    ratio = many["peak_rss_kb"] / one["peak_rss_kb"]
    print(f"peak RSS: 1 page {one['peak_rss_kb'] / 1024:.0f} MiB, {many['pages']} pages "
          f"{many['peak_rss_kb'] / 1024:.0f} MiB ({many['completed']} completed in {many['seconds']:.0f} s)"
          f"{'' if not args.no_extract else ', without extract_text'}")
    print(f"  ratio {ratio:.2f}x (target <= 1.5x)")
    return 0 if ratio <= 1.5 and many["completed"] == many["pages"] else 1


if __name__ == "__main__":
    sys.exit(main())
