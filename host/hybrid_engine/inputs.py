"""Pages and files as the engine takes them in: content types, metadata, text from bytes.

Shared by the host's capture and estimate, the command line's run, ingest and estimate,
and the service's ingest: a content type, a metadata object or a file is refused here,
with what was wrong and where, before any run is created.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import BadRequest

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's runs.list 2 ms
if TYPE_CHECKING:
    from typing import Any

CONTENT_TYPES = ("text/html", "text/plain", "text/markdown", "application/xhtml+xml", "application/json",
                 "application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp")
# Types whose content is base64 of the file's bytes, not text.
BINARY_TYPES = ("application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp")
# Short names are taken anywhere a MIME type is, and stored as the MIME type.
CONTENT_TYPE_NAMES = {"text": "text/plain", "html": "text/html", "json": "application/json",
                      "markdown": "text/markdown", "pdf": "application/pdf"}
MAX_CONTENT_BYTES = 64 * 1024 * 1024
# A PDF travels as base64 text (4 characters per 3 bytes), which must fit MAX_CONTENT_BYTES.
MAX_PDF_BYTES = MAX_CONTENT_BYTES // 4 * 3


def content_type(value: str | None, *, field: str = "content_type", default: str = "text/html") -> str:
    """A supported MIME type (parameters such as charset dropped) for a MIME type or a short name."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string such as text/html", field=field)
    base = value.split(";")[0].strip().lower()
    base = CONTENT_TYPE_NAMES.get(base, base)
    if base not in CONTENT_TYPES:
        raise BadRequest(f"{field}: {value[:80]!r} is not supported (use one of {', '.join(CONTENT_TYPES)}, "
                         f"or {', '.join(CONTENT_TYPE_NAMES)})", field=field)
    return base


MAX_METADATA_DEPTH = 32  # nesting levels of a capture's or an ingest's metadata (the object itself is 1)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def nested_deeper(value: Any, limit: int) -> bool:
    """Whether dicts/lists nest deeper than `limit`, without recursion (no RecursionError on any input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def check_text(value: Any, field: str) -> None:
    """BadRequest naming `field` when a string in `value` (keys too) cannot be stored as UTF-8.

    A JSON string may spell a lone UTF-16 surrogate (\\ud800, half an emoji cut by a script);
    json.loads keeps it, and only the store's write would fail, as an internal error.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadRequest(f"{field}: holds a lone UTF-16 surrogate (U+{ord(item[exc.start]):04X} at "
                                 f"character {exc.start}), which is not text; send UTF-8 text", field=field) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_metadata(text: str, *, what: str = "--metadata") -> dict:
    """A JSON object given as text; its nesting is counted before json parses it (which would recurse)."""
    depth = deepest = 0
    for ch in re.sub(r"[^\[\]{}]", "", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_METADATA_DEPTH:
            raise BadRequest(f"{what}: nested deeper than {MAX_METADATA_DEPTH} levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what}: not JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:  # the count above was fooled somehow: still a clear error
        raise BadRequest(f"{what}: nested deeper than {MAX_METADATA_DEPTH} levels") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"{what}: expected a JSON object")
    return value



_IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                   ".webp": "image/webp"}
_SUFFIX_TYPES = {".html": "text/html", ".htm": "text/html", ".xhtml": "application/xhtml+xml", ".md": "text/markdown",
                 ".markdown": "text/markdown", ".txt": "text/plain", ".text": "text/plain", ".json": "application/json"}
# Where a page declares its encoding: <meta charset>, <meta http-equiv content="...; charset=...">, or an
# XML declaration. Browsers look in the first 1024 bytes (the HTML standard's prescan).
_PRESCAN_BYTES = 1024
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""", re.I)
# Labels the HTML standard maps elsewhere: Latin-1 and ASCII mean windows-1252; a UTF-16 label in a
# page that was read as bytes cannot be right, so it means UTF-8; UTF-7 is not decoded at all.
_CHARSET_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                    "l1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "iso_8859-1": "cp1252",
                    "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8", "utf-7": None, "utf7": None}


def read_input_file(path: str, *, limit: int | None = None) -> tuple[str, str]:
    """Content and a content type guessed from the file name.

    A `.pdf` (or a file that starts with a PDF header) comes back as base64 of its bytes,
    typed application/pdf, as a PDF capture from the browser does; `extract_text` reads it.

    The size is checked before the file is read: a regular file over `limit` is refused
    from its stat; anything else (a pipe, a device such as /dev/zero) is read up to
    limit + 1 bytes and refused past the limit.
    """
    import stat as stat_

    p = Path(path)
    if limit is None:
        limit = MAX_PDF_BYTES if p.suffix.lower() == ".pdf" or p.suffix.lower() in _IMAGE_SUFFIXES \
            else MAX_CONTENT_BYTES
    try:
        with open(p, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat_.S_ISREG(st.st_mode) and st.st_size > limit:
                raise BadRequest(f"{path}: {st.st_size} bytes is over the {limit} byte limit", code="too_large")
            data = fh.read(limit + 1)
    except FileNotFoundError as exc:
        raise BadRequest(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise BadRequest(f"{path}: is a folder, not a file") from exc
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > limit:
        raise BadRequest(f"{path}: more than the {limit} byte limit (not a regular file: stopped reading there)",
                         code="too_large")
    suffix = p.suffix.lower()
    if suffix == ".pdf" or data[:5] == b"%PDF-":
        import base64

        if len(data) > MAX_PDF_BYTES:
            raise BadRequest(f"{path}: {len(data)} bytes is over the {MAX_PDF_BYTES} byte limit for a PDF",
                             code="too_large")
        if b"%PDF-" not in data[:1024]:
            raise BadRequest(f"{path}: not a PDF file (no %PDF- header in its first 1024 bytes)")
        return base64.b64encode(data).decode("ascii"), "application/pdf"
    if suffix in _IMAGE_SUFFIXES:
        import base64

        return base64.b64encode(data).decode("ascii"), _IMAGE_SUFFIXES[suffix]
    ctype = _SUFFIX_TYPES.get(suffix, "text/html")
    return decode_text(data, html=ctype in ("text/html", "application/xhtml+xml")), ctype


def declared_charset(data: bytes) -> str | None:
    """The Python codec a page's own declaration names, or None (no usable declaration)."""
    import codecs

    head = data[:_PRESCAN_BYTES]
    m = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    if m is None:
        return None
    label = m.group(1).decode("ascii").lower()
    label = _CHARSET_ALIASES.get(label, label)
    if label is None:
        return None
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode_text(data: bytes, *, html: bool = False) -> str:
    """Bytes to text without letting one bad byte change how the rest reads.

    A byte-order mark wins, then (for HTML) the page's declared charset; otherwise UTF-8,
    with a bad byte replaced by U+FFFD. Only a file in which not one non-ASCII sequence is
    valid UTF-8 is taken for a legacy single-byte file and read as windows-1252.
    """
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace")
    if html:
        codec = declared_charset(data)
        if codec is not None:
            return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    if not any(ord(ch) > 0x7F and ch != "\ufffd" for ch in text):
        return data.decode("cp1252", errors="replace")
    return text


__all__ = ["BINARY_TYPES", "CONTENT_TYPES", "CONTENT_TYPE_NAMES", "MAX_CONTENT_BYTES", "MAX_PDF_BYTES", "MAX_METADATA_DEPTH", "content_type",
           "declared_charset", "decode_text", "nested_deeper", "parse_metadata", "read_input_file"]
