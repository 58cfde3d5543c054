"""What leaving hidden text out costs a capture: readPage (extension/lib/capture.js) against
plain serialisation (outerHTML), side by side in headless Chromium, on generated pages of
N elements (a fifth of them hidden in one of the ways the capture looks for).

    bash bench/run hidden_text [--elements 2000,20000] [--repeat 5]

Prints milliseconds per capture (median) and the ratio to outerHTML; needs /usr/bin/chromium
and playwright (the e2e tests' dependencies).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDERS = ['style="display:none"', 'style="color:#fff"', 'aria-hidden="true"', 'style="opacity:0"',
          'style="position:absolute;left:-9999px"']


def page(n: int) -> str:
    rows = []
    for i in range(n):
        attr = HIDERS[(i // 5) % len(HIDERS)] if i % 5 == 0 else ""
        rows.append(f'<p {attr}>Paragraph {i} with a <a href="/x{i}">link</a> and some words.</p>')
    return f"<!DOCTYPE html><html><head><title>bench</title></head><body><article>{''.join(rows)}</article></body></html>"


def read_page_source() -> str:
    text = (ROOT / "extension" / "lib" / "capture.js").read_text(encoding="utf-8")
    start = text.index("function readPage(maxBytes) {")
    end = text.index("\nfunction readTarget(")
    return text[start:end]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", default="2000,20000")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    source = read_page_source()
    results = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page()
        for n in (int(x) for x in args.elements.split(",")):
            tab.set_content(page(n))
            plain, clean = [], []
            for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
                t0 = time.perf_counter()
                tab.evaluate("() => document.documentElement.outerHTML.length")
                plain.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                out = tab.evaluate(f"() => {{ {source}; const r = readPage(8 * 1024 * 1024); "
                                   "return {hidden: r.hidden, bytes: r.htmlBytes}; }")
                clean.append((time.perf_counter() - t0) * 1000)
            p, c = statistics.median(plain), statistics.median(clean)
            results.append({"elements": n, "outerHTML_ms": round(p, 1), "readPage_ms": round(c, 1),
                            "ratio": round(c / p, 1), "hidden": out["hidden"]})
        browser.close()
    print(json.dumps(results, indent=2))
    assert all(r["hidden"]["elements"] + r["hidden"]["texts"] > 0 for r in results)


if __name__ == "__main__":
    main()
