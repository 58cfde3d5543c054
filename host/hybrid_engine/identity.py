"""Who the extension is: the pinned Chrome id and the Firefox add-on id.

Chrome derives an unpacked extension's id from the manifest's ``key`` (base64 of a
DER SubjectPublicKeyInfo): sha256 of the DER, first 32 hex digits, each digit 0-f
mapped to a-p. Pinning the key pins the id, so the host manifest's allowed_origins
can name it before the extension is ever loaded. Only the public key lives here; the
private half was never kept (Chrome does not need it to load an unpacked extension,
and the Web Store signs with its own).

Firefox identifies the add-on by ``browser_specific_settings.gecko.id`` instead.
"""

from __future__ import annotations


# Public key (RSA-2048, DER SubjectPublicKeyInfo, base64), also in extension/manifest.json "key".
EXTENSION_KEY = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvg5LMNJvlUqjcHScbI3kB0A0avC8bV5Ekec6/S6U3pqb"
    "al7SZIH0nfN62AgXyKh/6dVMLUSGBHonAwmtbJnOOOduzruedg1GcdNLTW1wYPVsF00VZSiB/1WGe8rtfO/9b6Qd"
    "FtcA7Lml1t+oNYdbPALtZjH5QBO1hlpkDD2Tj51zlFkpxBG64FBY2R1ehpDBaIaaZEBiUhduCbAmV9ey8y0PKH/y"
    "GLUg1Vh+xpR78aH2Ne4Pbi+d9OkNY0yaqofCV0taVdhCLCIyNoI1tO3KYI0ef3plUb3aDFn81Fe47FPjT0bk1qJK"
    "uAKLpbK9H+ZxKO9Jw6qyAtRkrtcLPVJd+wIDAQAB"
)

FIREFOX_EXTENSION_ID = "hybrid-engine@hybrid-engine.org"

_ID_ALPHABET = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


def id_from_hex(hex_digits: str) -> str:
    """Map hex digits 0-f to letters a-p, the way Chrome spells extension ids."""
    return hex_digits.lower().translate(_ID_ALPHABET)


def extension_id_from_key(key_b64: str) -> str:
    """The Chrome extension id for a manifest ``key`` (base64 DER public key)."""
    import base64
    import binascii
    import hashlib

    try:
        der = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"extension key is not valid base64: {exc}") from exc
    return id_from_hex(hashlib.sha256(der).hexdigest()[:32])


def is_chrome_extension_id(value: str) -> bool:
    return len(value) == 32 and all("a" <= ch <= "p" for ch in value)


CHROME_SCHEME = "chrome-extension://"


def chrome_origin(extension_id: str) -> str:
    """``chrome-extension://<id>/`` with the trailing slash Chrome requires."""
    return f"{CHROME_SCHEME}{extension_id}/"


def chrome_origin_id(origin: str) -> str | None:
    """The id in ``chrome-extension://<32 letters a-p>/``, the trailing slash optional; else None.

    Callers that must insist on the slash (a host manifest's allowed_origins, which Chrome
    compares exactly) check ``origin.endswith("/")`` themselves. Plain string tests, no regex,
    so the host can check its caller with it before its first reply.
    """
    if not origin.startswith(CHROME_SCHEME):
        return None
    ext_id = origin[len(CHROME_SCHEME):]
    if ext_id.endswith("/"):
        ext_id = ext_id[:-1]
    return ext_id if is_chrome_extension_id(ext_id) else None


def is_gecko_id(value: str) -> bool:
    """A Firefox add-on id: ``name@domain`` or a ``{uuid}``."""
    import re

    return re.fullmatch(r"\{[0-9a-fA-F-]{36}\}|[A-Za-z0-9._+-]*@[A-Za-z0-9._-]+", value) is not None


# extension_id_from_key(EXTENSION_KEY), spelled out: the host checks its caller before its
# first reply, and hashing the key there would cost an OpenSSL load (a test keeps them equal).
CHROME_EXTENSION_ID = "nlkheheibdjgljjkppadijobigcmmhij"
CHROME_ORIGIN = chrome_origin(CHROME_EXTENSION_ID)

__all__ = [
    "EXTENSION_KEY",
    "CHROME_EXTENSION_ID",
    "CHROME_ORIGIN",
    "FIREFOX_EXTENSION_ID",
    "extension_id_from_key",
    "id_from_hex",
    "is_chrome_extension_id",
    "chrome_origin",
    "chrome_origin_id",
    "is_gecko_id",
    "CHROME_SCHEME",
]
