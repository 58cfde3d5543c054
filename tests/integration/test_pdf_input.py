"""`run --input file.pdf`: the PDF's text, page by page, reaches extract_text; a PDF that
holds no text, or is not a PDF at all, is refused saying so (exit 2, no run made)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "pdf"


def test_a_pdf_input_gives_its_text_with_page_numbers_to_extract_text(cli):
    doc = cli.json("run", "page-text", "--input", DATA / "harbour-report.pdf", "--wait", "--json")
    assert doc["status"] == "COMPLETED"
    text = {s["id"]: s for s in doc["steps"]}["text"]["outputs"]["text"]
    assert text.index("[Page 1]") < text.index("more copper this spring") < text.index("[Page 2]") \
        < text.index("close the inner basin") < text.index("[Page 3]") < text.index("harbour master")


def test_a_pdf_without_a_text_layer_is_refused_saying_so(cli):
    proc = cli("run", "page-text", "--input", DATA / "scanned.pdf", "--json")
    assert proc.returncode == 2
    assert "scanned.pdf: the PDF's 1 page(s) hold no text, only images" in proc.stderr
    assert cli.json("runs", "--json")["runs"] == []


def test_a_damaged_pdf_is_refused_saying_so(cli, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    proc = cli("run", "page-text", "--input", broken, "--json")
    assert proc.returncode == 2
    assert "broken.pdf: not a readable PDF" in proc.stderr
