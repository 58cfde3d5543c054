"""Text of a PDF, page by page, for a model to summarise and cite.

A captured or `--input` PDF travels and is stored as base64 text (JSON frames and the
store's outputs hold text), so the bytes are decoded here, when `extract_text` runs.
Each page's text is preceded by a `[page N]` line: a model asked to cite pages can,
and a reader can check the citation against the file.

The library is pypdfium2 (PDFium, the engine in Chrome's viewer), chosen by measurement
(bench/pdf_text.py): on ten real pages printed to PDF by Chromium plus two manuals from
/usr/share/doc, 88 PDF pages in all, its text scored word F1 0.974 against the pages'
own text, pypdf 0.905 and pdfminer.six 0.894 (both join or split words at line ends),
and it took 1.1 s for all of them against 14.3 s (pypdf) and 51.6 s (pdfminer.six).
It is imported inside `pdf_text`: the host must answer its first message before any
heavy import.
"""

from __future__ import annotations

import base64
import binascii
import threading

from .errors import BadRequest

__all__ = ["MAX_PDF_PAGES", "PDF_BASE64_MAGIC", "PdfError", "decode_pdf", "is_pdf_base64", "pdf_text"]

# base64 of "%PDF-": how a stored PDF is told from text without decoding it.
PDF_BASE64_MAGIC = "JVBERi0"
# A PDF may have a little junk before its header (readers look in the first 1 KiB).
_HEADER_WINDOW = 1024
# Pages read from one PDF. Far more than any book a model is asked about (5,000 pages is ~2.5M
# tokens), far fewer than a small hostile file can declare: 100,000 pages sharing one content
# stream fit in 16 MB and took 71 s to read, on the host's estimate as well as in the run.
MAX_PDF_PAGES = 5_000
_PDFIUM_LOCK = threading.Lock()
# The trailer's (or cross-reference stream's) key of an encrypted file.
_ENCRYPTED = b"/Encrypt"


class PdfError(Exception):
    """A PDF that yields no text: `code` says why (bad_pdf, pdf_encrypted, pdf_no_text, pdf_too_large)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


def is_pdf_base64(text: str) -> bool:
    return isinstance(text, str) and text.lstrip()[:len(PDF_BASE64_MAGIC)] == PDF_BASE64_MAGIC


def decode_pdf(content: str, *, field: str = "content") -> bytes:
    """The bytes of a base64 PDF, or BadRequest naming the field (checked when a PDF comes in)."""
    try:
        data = base64.b64decode("".join(content.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{field}: a PDF (application/pdf) must be sent as base64 of the file's bytes: {exc}",
                         field=field) from exc
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise BadRequest(f"{field}: not a PDF file (no %PDF- header in its first {_HEADER_WINDOW} bytes)",
                         field=field)
    return data


def pdf_text(data: bytes) -> dict:
    """{text, title, pages, pages_without_text} of a PDF's bytes; PdfError when none can be had.

    Pages without a text layer keep their number (the markers stay true to the file) and
    are counted; a file where no page has text is a scan, refused with code pdf_no_text,
    because sending a model an empty prompt would cost money and answer nothing.

    One PDF at a time in the process: PDFium must not be called from two threads at once,
    not even on different documents ("would crash or corrupt the process", pypdfium2's
    documentation), and the host reads PDFs on worker threads (a run's extract_text) while
    an estimate reads another on a handler thread.
    """
    with _PDFIUM_LOCK:
        return _pdf_text(data)


def _pdf_text(data: bytes) -> dict:
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        text = str(exc)
        # PDFium's error code is kept per process and a failure that sets none leaves the last
        # one in place: "password" is believed only of a file that is encrypted, and a failure
        # that reports "Success" is a document PDFium finds nothing in (no pages).
        if "password" in text.lower() and _ENCRYPTED in data:
            raise PdfError("the PDF is protected by a password; open it, save a copy without one and send that",
                           "pdf_encrypted") from exc
        if "password" in text.lower() or "success" in text.lower():
            text = "it has no pages, or its page tree is damaged"
        raise PdfError(f"the PDF cannot be read ({text})", "bad_pdf") from exc
    try:
        if len(doc) > MAX_PDF_PAGES:
            raise PdfError(f"the PDF has {len(doc):,} pages, over the {MAX_PDF_PAGES:,} read from one file; "
                           "save the pages you need as a PDF of their own and send that", "pdf_too_large")
        parts, empty = [], 0
        for index in range(len(doc)):
            page = doc[index]
            try:
                textpage = page.get_textpage()
                body = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n").strip()
                textpage.close()
            finally:
                page.close()
            if not body:
                empty += 1
                continue
            parts.append(f"[page {index + 1}]\n{body}")
        count = len(doc)
        title = (doc.get_metadata_dict().get("Title") or "").strip()
    finally:
        doc.close()
    if not parts:
        raise PdfError(f"the PDF's {count} page(s) have no text layer (a scan or images of text?): "
                       "nothing to send to a model; run it through OCR first", "pdf_no_text")
    return {"text": "\n\n".join(parts), "title": title, "pages": count, "pages_without_text": empty}
