"""Main-text extraction quality on the whole corpus, and the time a large page takes.

Run: python bench/extract_quality.py [CORPUS]   (default ../shared/corpus/readability,
relative to the project root; tests/data/corpus/readability holds 11 of its pages)

For every page (<corpus>/<page>/source.html with Readability's expected.html and
expected-metadata.json): extract_main's text scored against Readability's by word-overlap
F1 (tests/extract_score.py, the same scorer tests/unit/test_extract_quality.py uses on
its 11 pages), whether the title equals Readability's, crashes and empty results. On the
130 pages of Mozilla Readability's test suite the mean F1 measured 0.944 and 114 titles
matched (trafilatura 2.3.1); the bench exits 1 below 0.92 or 105 titles, or on a crash
or an empty page. Then a synthetic 5 MB article: extraction seconds next to the seconds
for lxml alone to parse the same page (the floor any extraction pays), best of 3.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests"))

MEAN_F1_FLOOR = 0.92
TITLES_FLOOR = 105


def big_page() -> str:
    rng = random.Random(7)
    vocabulary = ("sourdough starters are small ecosystems of wild yeast and lactic acid bacteria the "
                  "bacteria make acid that keeps other microbes out").split()
    paragraphs = "".join(f"<p>Note {i}: {' '.join(rng.choices(vocabulary, k=90))}.</p>\n" for i in range(9500))
    return (f"<!DOCTYPE html><html><head><title>Long notes</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<article><h1>Long notes</h1>{paragraphs}</article></body></html>")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default="../shared/corpus/readability",
                    help="folder of <page>/source.html + expected.html, relative to the project root")
    args = ap.parse_args()
    corpus = (ROOT / args.corpus).resolve()

    from extract_score import pages, same_title, score
    from hybrid_engine.extract import extract_main

    folders = pages(corpus) if corpus.is_dir() else []
    if not folders:
        print(f"bench/extract_quality.py: no pages at {corpus}/*/source.html (pass the corpus folder)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = {page.name: score(page, extract_main) for page in folders}
    elapsed = time.perf_counter() - t0
    crashed = {name: r["error"] for name, r in results.items() if "error" in r}
    scored = {name: r for name, r in results.items() if "f1" in r}
    empty = [name for name, r in scored.items() if not r["result"]["text"].strip()]
    f1 = {name: r["f1"] for name, r in scored.items()}
    titles = sum(same_title(r["result"]["title"], r["title"]) for r in scored.values())
    mean = statistics.mean(f1.values())
    worst = sorted(f1.items(), key=lambda item: item[1])[:5]

    print(f"extract_quality: {len(results)} pages from {corpus}, extracted in {elapsed:.1f} s")
    print(f"  mean word F1 {mean:.4f} (floor {MEAN_F1_FLOOR}), median {statistics.median(f1.values()):.4f}")
    print(f"  worst: {', '.join(f'{name} {score_:.3f}' for name, score_ in worst)}")
    print(f"  titles equal to Readability's: {titles} of {len(scored)} (floor {TITLES_FLOOR} on the 130 pages)")
    print(f"  crashes: {len(crashed)} {crashed or ''}; empty texts: {len(empty)} {empty or ''}")

    import lxml.html

    html = big_page()
    extract_times, parse_times = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        lxml.html.fromstring(html)
        parse_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        text = extract_main(html)["text"]
        extract_times.append(time.perf_counter() - t0)
    print(f"\n  a {len(html) / 1e6:.1f} MB article: extract_main {min(extract_times):.2f} s, lxml parse alone "
          f"{min(parse_times):.2f} s ({min(extract_times) / min(parse_times):.0f}x; best of 3; "
          f"{'whole' if 'Note 9499:' in text else 'CUT'})")

    full_corpus = len(results) >= 130
    failed = bool(crashed or empty) or (full_corpus and (mean < MEAN_F1_FLOOR or titles < TITLES_FLOOR))
    if not full_corpus:
        print(f"  (floors apply to the full 130-page corpus; this one has {len(results)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
