"""Which library reads a PDF's text: speed and word-F1 of pypdf, pypdfium2 and pdfminer.six.

Run: python bench/pdf_text.py [PDF_FOLDER]   (needs the three libraries in the venv:
pip install pypdf pypdfium2 pdfminer.six; only the chosen one is a dependency)

Quality: each page of tests/data/corpus/readability printed to PDF by headless Chromium
(the bench prints them itself into a temporary folder: a real browser's PDFs, with the
page's fonts, columns and right-to-left text) and scored against the visible text of the
same expected.html by word-overlap F1 (tests/extract_score.py, the scorer of the
extraction benches). Speed: seconds to read every page of every PDF, the printed ones plus
any in PDF_FOLDER (e.g. the manuals in /usr/share/doc), best of 3, next to the fastest.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from extract_score import visible_text, word_f1  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus" / "readability"


def read_pypdf(path: Path) -> list[str]:
    import pypdf

    return [page.extract_text() or "" for page in pypdf.PdfReader(path).pages]


def read_pypdfium2(path: Path) -> list[str]:
    import pypdfium2

    doc = pypdfium2.PdfDocument(path)
    try:
        return [doc[i].get_textpage().get_text_range() for i in range(len(doc))]
    finally:
        doc.close()


def read_pdfminer(path: Path) -> list[str]:
    from pdfminer.high_level import extract_text

    return extract_text(str(path)).split("\f")


READERS = {"pypdf": read_pypdf, "pypdfium2": read_pypdfium2, "pdfminer.six": read_pdfminer}


def print_corpus(folder: Path) -> dict[Path, str]:
    """expected.html of each corpus page printed to PDF by Chromium -> its reference text."""
    out = {}
    for page in sorted(p for p in CORPUS.iterdir() if (p / "expected.html").exists()):
        pdf = folder / f"{page.name}.pdf"
        subprocess.run(["chromium", "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--no-pdf-header-footer",
                        f"--print-to-pdf={pdf}", (page / "expected.html").as_uri()],
                       capture_output=True, timeout=120, check=False)
        if pdf.exists():
            out[pdf] = visible_text((page / "expected.html").read_text(encoding="utf-8"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", help="more PDFs to time (no reference text)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        refs = print_corpus(Path(tmp))
        extra = sorted(Path(args.folder).glob("*.pdf")) if args.folder else []
        pdfs = list(refs) + extra
        pages = sum(len(read_pypdfium2(p)) for p in pdfs)
        print(f"{len(refs)} printed corpus pages scored, {len(pdfs)} PDFs ({pages} pages) timed")
        rows = []
        for name, read in READERS.items():
            try:
                read(pdfs[0])
            except ImportError:
                print(f"{name}: not installed here (pip install {name}); left out")
                continue
            scores = [word_f1("\n".join(read(pdf)), ref) for pdf, ref in refs.items()]
            best = min(_timed(read, pdfs) for _ in range(3))
            rows.append((name, statistics.mean(scores), min(scores), best))
        fastest = min(r[3] for r in rows)
        print(f"{'library':14} {'mean F1':>8} {'worst F1':>9} {'seconds':>8} {'x fastest':>10}")
        for name, mean, worst, secs in rows:
            print(f"{name:14} {mean:8.3f} {worst:9.3f} {secs:8.3f} {secs / fastest:10.1f}")
    return 0


def _timed(read, pdfs) -> float:
    t = time.perf_counter()
    for pdf in pdfs:
        read(pdf)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
