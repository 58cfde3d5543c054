"""Images for vision models: bytes from a capture, their type and size, and what they cost in tokens.

A captured image travels and is stored as base64 (or a data: URL); a chat step's `image`
parameter takes either. The type is read from the bytes, not from what the page claimed,
and the size from the file's header, so pricing needs no image library.

Image tokens, as the providers document them:
- OpenAI, tile models (gpt-4o, gpt-4.1, gpt-4.5, o1, o3, gpt-5 ...): detail "low" costs
  the base; "high" scales the image to fit 2048x2048, then its short side to 768, and adds a
  per-tile price for each 512x512 tile (gpt-4o: 85 + 170 per tile; gpt-4o-mini: 2833 +
  5667 per tile, priced so that its cheaper tokens cost the same per image).
- OpenAI, patch models (gpt-4.1-mini, gpt-4.1-nano, o4-mini): one token per 32x32 patch,
  at most 1536 (scaled down to fit), times a model multiplier (1.62, 2.46, 1.72).
- Gemini: 258 tokens for an image up to 384x384; a larger one is cut into 768x768 tiles
  of 258 tokens each.
A model not listed is counted with gpt-4o's tile prices and the figure says it is estimated.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass

from .errors import BadRequest

__all__ = ["MAX_IMAGE_BYTES", "Image", "address_label", "bytes_in_text", "image_tokens", "is_image_base64",
           "read_image"]

# OpenAI takes images up to 20 MB, Gemini up to 20 MB of inline data in a request.
MAX_IMAGE_BYTES = 20 * 1024 * 1024

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?;base64,", re.I)

# (base, per tile) for OpenAI's tile formula, by model id prefix (longest first wins).
_TILE_MODELS = {"gpt-4o-mini": (2833, 5667), "gpt-4o": (85, 170), "gpt-4.1": (85, 170), "gpt-4.5": (85, 170),
                "chatgpt-4o": (85, 170), "gpt-5": (70, 140), "o1": (75, 150), "o3": (75, 150)}
# multiplier for OpenAI's 32-pixel patch formula
_PATCH_MODELS = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72}


@dataclass(frozen=True)
class Image:
    data: bytes
    media_type: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"


class ImageError(BadRequest):
    """An image a step cannot send: code bad_image or image_too_large."""

    code = "bad_image"


def read_image(value: str, *, field: str = "params.image") -> Image:
    """The image in a base64 string or data: URL; ImageError naming `field` when it is not one."""
    if not isinstance(value, str) or not value.strip():
        raise ImageError(f"{field}: expected an image as base64 or a data: URL", field=field)
    text = value.strip()
    if re.match(r"^(?:https?|file|blob):", text, re.I):
        raise ImageError(f"{field}: got the image's address, not its bytes (the browser could not fetch it; "
                         "the capture's image_missing says why): nothing was sent", field=field)
    m = _DATA_URL.match(text)
    if m:
        text = text[m.end():]
    elif text.startswith("data:"):
        raise ImageError(f"{field}: only base64 data: URLs are taken", field=field)
    if len(text) > MAX_IMAGE_BYTES // 3 * 4 + 4:
        raise ImageError(f"{field}: the image is over the {MAX_IMAGE_BYTES // (1024 * 1024)} MiB that "
                         "providers take", code="image_too_large", field=field)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{field}: not base64 ({exc})", field=field) from exc
    media_type, size = _sniff(data)
    if media_type is None:
        raise ImageError(f"{field}: not a PNG, JPEG, GIF or WebP image", field=field)
    if size is None:
        raise ImageError(f"{field}: a {media_type} whose size cannot be read (damaged?)", field=field)
    return Image(data, media_type, *size)


def address_label(url: str) -> str:
    """An image's address as kept beside its bytes: a data: URL is those bytes over again (up to
    20 MB, counted by no size check, and sent as text by a prompt that names image_url), so it
    is kept as its type alone."""
    if url[:5].lower() != "data:":
        return url
    return url.split(",", 1)[0][:100] + ",…"


# A file's bytes as base64 inside text: a PDF's or an image's first bytes, then at least 3 KB more.
_FILE_MAGICS = {"JVBERi0": "a PDF", "iVBORw0KGgo": "an image", "/9j/": "an image", "R0lGOD": "an image",
                "UklGR": "an image"}
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=\s]{4000}")
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def bytes_in_text(text: str) -> str | None:
    """"a PDF" or "an image" when `text` holds one's bytes as base64 (a capture put whole into a
    prompt), else None: a model reads them as thousands of tokens of nothing, at full price."""
    for magic, what in _FILE_MAGICS.items():
        at = text.find(magic)
        while at != -1:
            if (at == 0 or text[at - 1] not in _BASE64_CHARS) and _BASE64_RUN.match(text, at + len(magic)):
                return what
            at = text.find(magic, at + 1)
    return None


def is_image_base64(text: str) -> bool:
    """Whether `text` is a stored image (base64 of a PNG, JPEG, GIF or WebP, or a data:image URL):
    what a text step must not read as words."""
    if not isinstance(text, str):
        return False
    head = text.lstrip()[:64]
    if head[:11].lower() == "data:image/":
        return True
    try:
        data = base64.b64decode(head[:16], validate=True)
    except (binascii.Error, ValueError):
        return False
    return _sniff(data + b"\0" * 16)[0] is not None


def _sniff(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", (struct.unpack(">II", data[16:24]) if len(data) >= 24 else None)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif", (struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", _webp_size(data)
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg", _jpeg_size(data)
    return None, None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _prefix(model: str, table: dict):
    for key in sorted(table, key=len, reverse=True):
        if model.lower().startswith(key):
            return table[key]
    return None


def image_tokens(model: str, provider: str, width: int, height: int, detail: str = "high") -> tuple[int, bool]:
    """(tokens the image adds to the prompt, whether that figure is the provider's documented rule)."""
    if provider == "gemini":
        if width <= 384 and height <= 384:
            return 258, True
        return math.ceil(width / 768) * math.ceil(height / 768) * 258, True
    patch = _prefix(model, _PATCH_MODELS)
    if patch is not None:
        patches = math.ceil(width / 32) * math.ceil(height / 32)
        if patches > 1536:
            shrink = math.sqrt(1536 * 32 * 32 / (width * height))
            w, h = width * shrink, height * shrink
            # A side under one patch still takes one (a strip 1 px wide rounded to no patch at all).
            shrink *= min(max(1, math.floor(w / 32)) / (w / 32), max(1, math.floor(h / 32)) / (h / 32))
            patches = min(1536, math.ceil(width * shrink / 32) * math.ceil(height * shrink / 32))
        return math.ceil(patches * patch), True
    tile = _prefix(model, _TILE_MODELS)
    known = tile is not None and provider == "openai"
    base, per_tile = tile or (85, 170)
    if detail == "low":
        return base, known
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return base + per_tile * math.ceil(w / 512) * math.ceil(h / 512), known
