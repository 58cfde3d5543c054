"""Which PDF text library the host uses: speed and text quality, measured side by side.

Run: python bench/pdf_text.py [CORPUS] [PDF ...]
  CORPUS (default ../shared/corpus/readability, relative to the project root): a few of
  its pages are printed to multi-page PDFs by headless Chromium (real fonts, real layout,
  a text layer as browsers write it), and each library's text is scored against the
  page's visible text by word F1 (tests/extract_score.py). Extra PDF files (for example
  the manuals under /usr/share/doc) are timed and their word counts compared.

For each of pypdf, pdfminer.six and pypdfium2: seconds per PDF (best of 3) and mean word
F1. The host uses the library that wins on quality, then speed (see hybrid_engine/pdf.py).
pypdf and pdfminer.six are not project dependencies: `pip install pypdf pdfminer.six` to
compare (a library that is not installed is left out, and says so). Needs /usr/bin/chromium
and playwright (the test extra) to print the corpus pages.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
PAGES = ("wikipedia", "mozilla-1", "nytimes-1", "medium-1", "ars-1", "guardian-1", "bbc-1", "lwn-1", "rtl-1", "qq")


def pypdf_text(data: bytes) -> list[str]:
    import io

    import pypdf

    return [p.extract_text() or "" for p in pypdf.PdfReader(io.BytesIO(data)).pages]


def pdfminer_text(data: bytes) -> list[str]:
    import io

    from pdfminer.high_level import extract_text
    from pdfminer.pdfpage import PDFPage

    n = sum(1 for _ in PDFPage.get_pages(io.BytesIO(data)))
    return [extract_text(io.BytesIO(data), page_numbers=[i]) for i in range(n)]


def pdfium_text(data: bytes) -> list[str]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(data)
    try:
        return [doc[i].get_textpage().get_text_bounded() for i in range(len(doc))]
    finally:
        doc.close()


LIBRARIES = {"pypdf": pypdf_text, "pdfminer.six": pdfminer_text, "pypdfium2": pdfium_text}


def print_pdfs(corpus: Path, out: Path) -> list[tuple[str, bytes, str]]:
    """(name, pdf bytes, reference text) for the corpus pages, printed by Chromium."""
    from extract_score import visible_text
    from playwright.sync_api import sync_playwright

    made = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else
                   route.continue_())
        for name in PAGES:
            expected = corpus / name / "expected.html"
            if not expected.is_file():
                continue
            page.goto(expected.as_uri())
            data = page.pdf(format="A4")
            made.append((name, data, visible_text(expected.read_text(encoding="utf-8", errors="replace"))))
        browser.close()
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default="../shared/corpus/readability")
    ap.add_argument("pdfs", nargs="*", help="more PDF files to time")
    args = ap.parse_args()
    from extract_score import word_f1

    corpus = (ROOT / args.corpus).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        printed = print_pdfs(corpus, Path(tmp))
    files = [(Path(p).name, Path(p).read_bytes(), None) for p in args.pdfs]
    if not printed and not files:
        print(f"bench/pdf_text.py: no pages at {corpus} and no PDF files given", file=sys.stderr)
        return 2
    pages_total = sum(len(pdfium_text(d)) for _, d, _ in printed + files)
    print(f"pdf_text: {len(printed)} printed corpus pages + {len(files)} files, {pages_total} PDF pages")
    rows = {}
    for lib, fn in LIBRARIES.items():
        try:
            fn(printed[0][1] if printed else files[0][1])
        except ImportError:
            print(f"  {lib:13s} not installed (pip install {lib}): left out")
            continue
        f1s, seconds, words = [], 0.0, 0
        for name, data, reference in printed + files:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                text = "\n".join(fn(data))
                best = min(best, time.perf_counter() - t0)
            seconds += best
            words += len(text.split())
            if reference is not None:
                f1s.append(word_f1(text, reference))
        rows[lib] = (statistics.mean(f1s) if f1s else float("nan"), seconds, words)
    if not rows:
        return 2
    fastest = min(s for _, s, _ in rows.values())
    for lib, (f1, seconds, words) in rows.items():
        print(f"  {lib:13s} mean word F1 {f1:.4f}   {seconds:6.2f} s in all ({seconds / fastest:5.1f}x the fastest)"
              f"   {words} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
