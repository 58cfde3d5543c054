"""pdf_text on files that yield no text: each says why, whatever was read before it."""

from __future__ import annotations

import pytest

from hybrid_engine.pdf import PdfError, pdf_text
from pdf_writer import empty_pdf, locked_pdf, text_pdf


def _refusal(data: bytes) -> PdfError:
    with pytest.raises(PdfError) as info:
        pdf_text(data)
    return info.value


def test_a_pdf_behind_a_password_is_refused_as_encrypted():
    assert _refusal(locked_pdf()).code == "pdf_encrypted"


def test_a_pdf_with_no_pages_says_so():
    err = _refusal(empty_pdf())
    assert err.code == "bad_pdf" and "no pages" in err.message and "Success" not in err.message


def test_a_pdf_read_after_an_encrypted_one_is_not_called_encrypted():
    _refusal(locked_pdf())
    err = _refusal(empty_pdf())  # PDFium's last error is still the password one
    assert err.code == "bad_pdf"


def test_a_pdf_with_more_pages_than_are_read_is_refused_before_any_is_read(monkeypatch):
    from hybrid_engine import pdf

    monkeypatch.setattr(pdf, "MAX_PDF_PAGES", 2)
    err = _refusal(text_pdf([["one"], ["two"], ["three"]]))
    assert err.code == "pdf_too_large" and "3 pages, over the 2" in err.message


def test_pdfium_is_only_called_by_one_thread_at_a_time(monkeypatch):
    """PDFium crashes or corrupts the process when two threads call it at once, even on two
    documents: whoever is inside holds the process-wide lock, so a second thread waits."""
    import pypdfium2

    from hybrid_engine import pdf

    held = []
    real = pypdfium2.PdfDocument

    def opening(data, *args, **kwargs):
        held.append(not pdf._PDFIUM_LOCK.acquire(blocking=False))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(pypdfium2, "PdfDocument", opening)
    assert pdf_text(text_pdf([["one page"]]))["pages"] == 1
    assert held == [True]
