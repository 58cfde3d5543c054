"""A tiny, deterministic PDF writer for test files (no dependency).

`text_pdf(pages)` writes one page per list item with its lines in Helvetica (a text layer
as any PDF producer writes it); `scanned_pdf(n)` writes pages that hold only an image, as a
scanner does, so they have no text layer. Same input, same bytes: no dates, no ids.
Run `python tests/pdf_writer.py` to rewrite the fixtures in tests/data/pdf/.
"""

from __future__ import annotations

from pathlib import Path


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _document(objects: list[bytes], title: str | None = None) -> bytes:
    """objects[0] is the catalog (1 0 R), objects[1] the page tree (2 0 R)."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    info_ref = b""
    if title is not None:
        objects = objects + [b"<< /Title (" + _escape(title).encode("latin-1") + b") >>"]
        info_ref = b" /Info %d 0 R" % len(objects)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info_ref, xref)
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def text_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    n = len(pages)
    font = 3 + 2 * n  # object number of the shared font
    kids = b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % n]
    for i, lines in enumerate(pages):
        ops = [b"BT /F1 12 Tf 14 TL 72 770 Td"]
        ops += [b"(" + _escape(line).encode("latin-1") + b") Tj T*" for line in lines]
        ops.append(b"ET")
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * i, font))
        objects.append(_stream(b"\n".join(ops)))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    return _document(objects, title)


def scanned_pdf(n: int = 2) -> bytes:
    """Pages that are one grey 8x8 image each: what a scanner without OCR makes."""
    image = 3 + 2 * n
    kids = b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % n]
    for i in range(n):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /XObject << /Im1 %d 0 R >> >> >>" % (4 + 2 * i, image))
        objects.append(_stream(b"q 468 0 0 648 72 72 cm /Im1 Do Q"))
    objects.append(_stream(bytes(range(0, 256, 4)), b" /Type /XObject /Subtype /Image /Width 8 /Height 8 "
                                                   b"/ColorSpace /DeviceGray /BitsPerComponent 8"))
    return _document(objects)


def empty_pdf() -> bytes:
    """A page tree with no pages."""
    return _document([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def locked_pdf() -> bytes:
    """One page behind a user password (the standard security handler, RC4 40-bit): no
    reader opens it without the password, which is not the empty one."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
               b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>"]
    file_id = b"<0123456789abcdef0123456789abcdef>"
    trailer = b"/Root 1 0 R /Encrypt 4 0 R /ID [" + file_id + b" " + file_id + b"]"
    return _document(objects).replace(b"/Root 1 0 R", trailer)


REPORT_PAGES = [
    ["Harbour survey 2026", "The north basin silted up by forty centimetres since the last survey."],
    ["Dredging plan", "Dredging the north basin will take six weeks and cost 1.2 million euros."],
    ["Wildlife", "A colony of terns nests on the breakwater; work stops between April and July."],
]


def fixtures() -> dict[str, bytes]:
    return {"report.pdf": text_pdf(REPORT_PAGES, title="Harbour survey"), "scanned.pdf": scanned_pdf(2)}


if __name__ == "__main__":
    folder = Path(__file__).resolve().parent / "data" / "pdf"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in fixtures().items():
        (folder / name).write_bytes(data)
        print(f"wrote {folder / name} ({len(data)} bytes)")
