"""Public pages fetched for `batch --urls`: one GET each, bounded, and honest about pages that
need the browser.

    fetch_page(url) -> Fetched(page=..., ...) | Fetched(needs_browser=True, note=...) | Fetched(note=...)
    fetch_page(url, refuse=why_not)    a redirect to a URL `why_not` names a reason for is not
                                       followed: Fetched(blocked=True, note=the reason)

Bounds: http(s) only, a time limit on every network wait and three of them on the whole body, at most MAX_REDIRECTS redirects (each
to http(s) only, and none onto an address inside this machine or its network unless it stays
on the listed URL's host and port: see _Redirects), at most MAX_CONTENT_BYTES read, and a content type that the engine
takes (HTML, text, Markdown, JSON). A 401 or 403, or a redirect to a sign-in page, means
the page sits behind a login: the browser, with the user's session, is the one to fetch it
(the extension takes these items over). No cookies are sent or kept; the User-Agent says
what we are. The caller checks the URL it asks for against the user's site rules; `refuse`
lets it check every redirect too, before the request to it is made.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from . import __version__
from .inputs import MAX_CONTENT_BYTES, decode_text
from .pagetitle import html_title

TIMEOUT_S = 20.0
MAX_REDIRECTS = 5
BODY_TIMEOUTS = 3  # a page's body must be in within this many network-wait limits
ACCEPTED_TYPES = {"text/html": "text/html", "application/xhtml+xml": "text/html", "text/plain": "text/plain",
                  "text/markdown": "text/markdown", "application/json": "application/json"}
LOGIN_PATH = re.compile(r"(^|[/_.-])(login|log-in|signin|sign-in|sign_in|auth|sso|oauth2?|account/login|"
                        r"accounts/login|session/new|users/sign_in)([/_.?-]|$)", re.IGNORECASE)
USER_AGENT = f"hybrid-engine/{__version__} (+batch --urls)"


@dataclass
class Fetched:
    url: str
    page: dict | None = None
    needs_browser: bool = False
    note: str | None = None
    blocked: bool = False  # a redirect `refuse` named a reason for: not followed


def _origin(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def _inner_address(host: str) -> str | None:
    """The first address of `host` that is not on the public internet (loopback, private,
    link-local such as a cloud's metadata service 169.254.169.254, reserved), or None."""
    import ipaddress
    import socket

    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(info[4][0].split("%")[0])
                         for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]
        except (OSError, UnicodeError, ValueError):
            return None  # not resolvable: the request to it fails on its own
    for address in addresses:
        if not address.is_global or address.is_multicast:
            return str(address)
    return None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """A page may redirect anywhere public, and around its own host and port; a redirect onto
    an address inside this machine or its network (another port of 127.0.0.1, the router, a
    cloud metadata service) is not followed: the person listed a page, and that page must not
    make the host read, and send to a model, what only this machine can reach. A URL the
    person lists on such an address is fetched: that is their own choice."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, refuse: Callable[[str], str | None] | None = None, listed: str = "") -> None:
        self.login: str | None = None
        self.refuse = refuse
        self.refused: str | None = None
        self.inner: str | None = None
        self.listed = _origin(listed)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http URL: {newurl[:100]}", headers, fp)
        why = self.refuse(newurl) if self.refuse is not None else None
        if why:
            self.refused = why
            raise urllib.error.HTTPError(req.full_url, code, "redirect refused", headers, fp)
        host, port = _origin(newurl)
        inner = _inner_address(host) if (host, port) != self.listed else None
        if inner is not None:
            self.inner = (f"redirected to {host}:{port} ({inner}), an address inside this machine or its network: "
                          "not followed")
            raise urllib.error.HTTPError(req.full_url, code, "redirect refused", headers, fp)
        if LOGIN_PATH.search(urlsplit(newurl).path or ""):
            self.login = newurl
            raise urllib.error.HTTPError(newurl, 401, "redirected to a sign-in page", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def url_problem(url: str) -> str | None:
    """Why `url` is not one to fetch, or None. A user:password@ would be stored as the item's
    source, shown in the extension and put in front of a model; a page behind a login is the
    browser's to send, with the person's session."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "expected an http:// or https:// URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL"
    if "@" in parts.netloc:
        return ("a URL with user:password@ in it is not fetched (its password would be stored and shown): "
                "send a page behind a login from the browser")
    return None


def read_url_list(path: str) -> list[str]:
    """One URL a line; blank lines and lines starting with # are skipped."""
    from .errors import BadRequest

    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read(MAX_CONTENT_BYTES + 1)
    except FileNotFoundError as exc:
        raise BadRequest(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{path}: cannot read a list of URLs: {exc}") from exc
    if len(lines) > MAX_CONTENT_BYTES:  # cut here, its last URL would be fetched half-read
        raise BadRequest(f"{path}: a list of URLs over {MAX_CONTENT_BYTES} characters: split it")
    urls = []
    for n, line in enumerate(lines.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        problem = url_problem(line)
        if problem is not None:
            shown = line if "@" not in line else "(a URL with a password, not shown)"
            raise BadRequest(f"{path}, line {n}: {problem}, got {shown[:80]!r}")
        urls.append(line)
    return urls


def fetch_page(url: str, *, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_CONTENT_BYTES,
               refuse: Callable[[str], str | None] | None = None) -> Fetched:
    problem = url_problem(url)
    if problem is not None:
        return Fetched(url, note=problem)
    redirects = _Redirects(refuse, listed=url)
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                                   "Accept": "text/html,text/plain,text/markdown,application/json"})
    try:
        with opener.open(request, timeout=timeout_s) as resp:
            final = resp.geturl()
            mime = (resp.headers.get_content_type() or "").lower()
            if mime not in ACCEPTED_TYPES:
                return Fetched(url, note=f"content type {mime or 'unknown'} is not a page the engine takes "
                                         f"({', '.join(sorted(ACCEPTED_TYPES))})")
            encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":  # none was asked for: these bytes are not the page's text
                return Fetched(url, note=f"sent with Content-Encoding {encoding[:40]}, which was not asked for")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                return Fetched(url, note=f"{int(length)} bytes is over the {max_bytes} byte limit")
            data = _read_by(resp, max_bytes + 1, time.monotonic() + timeout_s * BODY_TIMEOUTS)
            if data is None:
                return Fetched(url, note=f"the page took longer than {timeout_s * BODY_TIMEOUTS:g} s to arrive")
    except urllib.error.HTTPError as exc:
        if redirects.refused:
            return Fetched(url, blocked=True, note=redirects.refused)
        if redirects.inner:
            return Fetched(url, note=redirects.inner)
        if exc.code in (401, 403) or redirects.login:
            where = f" (redirected to {redirects.login[:120]})" if redirects.login else f" (HTTP {exc.code})"
            return Fetched(url, needs_browser=True, note=f"behind a login{where}: send it from the browser")
        return Fetched(url, note=f"HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Fetched(url, note=f"could not fetch: {reason}")
    if len(data) > max_bytes:
        return Fetched(url, note=f"more than the {max_bytes} byte limit")
    if b"\0" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # A server's Content-Type is its word; text has no NUL bytes (UTF-16 starts with its mark).
        return Fetched(url, note=f"said {mime} but sent binary data (NUL bytes): not a page the engine takes")
    ctype = ACCEPTED_TYPES[mime]
    content = decode_text(data, html=ctype == "text/html")
    title = html_title(content) if ctype == "text/html" else None
    return Fetched(url, page={"content": content, "source_url": final, "content_type": ctype,
                              **({"title": title} if title else {})})


def _read_by(resp, limit: int, deadline: float) -> bytes | None:
    """Up to `limit` bytes, or None past `deadline`: the per-wait time limit alone lets a
    server that sends a byte now and then hold a fetch (and the batch behind it) for days."""
    parts, size = [], 0
    while size < limit:
        if time.monotonic() > deadline:
            return None
        chunk = resp.read1(min(65536, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


__all__ = ["Fetched", "MAX_REDIRECTS", "TIMEOUT_S", "fetch_page", "read_url_list", "url_problem"]
