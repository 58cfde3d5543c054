"""A page's address as the library reads it: the key "already sent" compares, the site a
run is filed under, and the favicon URL the browser reported, kept only when it is safe to
show.

Page URLs and favicons come from the page and the browser: untrusted. Nothing here fetches
or opens them; they are text to compare and to show.
"""

from __future__ import annotations

MAX_FAVICON = 16_384  # characters: a data: icon of a few KB, not a page smuggled in as one
_IMAGE_TYPES = ("png", "jpeg", "jpg", "gif", "webp", "x-icon", "vnd.microsoft.icon", "svg+xml", "avif", "bmp")


def url_key(url: str | None) -> str | None:
    """The URL without its fragment: a page's own anchors are the same page."""
    if not url:
        return None
    return url.split("#", 1)[0]


def site_of(url: str | None) -> str | None:
    """The URL's host without "www." (no port, no credentials), or None when it has none."""
    if not url:
        return None
    from urllib.parse import urlsplit  # when a page is recorded, not when the host starts

    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.rstrip(".")
    return host[4:] if host.startswith("www.") else host


def safe_favicon(value: object) -> str | None:
    """An http(s) or data:image URL of bounded size, or None: anything else (javascript:,
    file:, chrome:, a data: page) is dropped rather than shown."""
    if not isinstance(value, str) or not value or len(value) > MAX_FAVICON:
        return None
    if any(ch in value for ch in "\r\n\t\"'<> ") and not value.startswith("data:"):
        return None
    low = value[:64].lower()
    if low.startswith("data:image/"):
        kind = low[len("data:image/"):].split(";", 1)[0].split(",", 1)[0]
        return value if kind in _IMAGE_TYPES and "," in value else None
    if low.startswith(("https://", "http://")):
        from urllib.parse import urlsplit

        try:
            return value if urlsplit(value).hostname else None
        except ValueError:
            return None
    return None


__all__ = ["MAX_FAVICON", "safe_favicon", "site_of", "url_key"]
