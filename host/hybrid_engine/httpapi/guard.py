"""What every request passes before any route sees it.

Any web page the user visits may send requests to 127.0.0.1, and a DNS-rebinding page may
even make its requests same-origin with a name of its own that resolves to 127.0.0.1. So,
in this order, before a byte of the body is read:

  Host      must name this server (127.0.0.1 or localhost with its port): a rebound name is
            refused, whatever else the request carries.
  Origin    a request a web page sends carries one; only this server's own origin is
            served (the docs page). Scripts and launchers send none.
  token     `Authorization: Bearer TOKEN` on every route; the docs also take it as the
            password of HTTP Basic, so a person can open them in a browser.
  body      at most MAX_BODY bytes: a Content-Length over it is refused at once, a chunked
            body is counted as it arrives and refused when it goes over.

No CORS header is ever sent: a page on another origin can neither read a response nor
send the token (its preflight fails). Refusals are JSON in the host's error shape.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging

from .. import MAX_INCOMING
from ..errors import BadRequest, Forbidden, TooLarge

log = logging.getLogger(__name__)

MAX_BODY = MAX_INCOMING  # the native host's limit for one message: 64 MiB
UNAUTHORIZED = "unauthorized"  # HTTP only: the native host has no token to miss
DOC_PATHS = frozenset({"/docs", "/openapi.json"})


def error_body(code: str, message: str, **fields) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, **fields}}, separators=(",", ":")).encode("utf-8")


async def send_error(send, status: int, code: str, message: str, headers: list | None = None) -> None:
    body = error_body(code, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app, *, token: str, hosts: set[str], max_body: int = MAX_BODY):
        self.app = app
        self._token = token.encode("utf-8")
        self.hosts = {h.lower() for h in hosts}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websockets: refuse before anything
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in headers and name in (b"host", b"authorization", b"content-length", b"origin"):
                return await send_error(send, 400, BadRequest.code, f"header {name.decode()}: sent twice")
            headers[name] = value
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.hosts:
            shown = host[:100] or "(none)"
            return await send_error(send, 403, Forbidden.code,
                                    f"Host header {shown!r} is not this server; expected one of "
                                    f"{', '.join(sorted(self.hosts))} (other names are refused against DNS rebinding)")
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1").lower() not in self.origins:
            return await send_error(send, 403, Forbidden.code,
                                    f"requests from web pages are refused (Origin {origin.decode('latin-1')[:100]!r}); "
                                    "call the API from a script or a local tool")
        path = scope.get("path", "")
        if not self._authorised(headers.get(b"authorization", b""), docs=path in DOC_PATHS):
            challenge = b'Basic realm="Hybrid Engine API docs (password: the token)"' if path in DOC_PATHS \
                else b'Bearer realm="Hybrid Engine"'
            return await send_error(send, 401, UNAUTHORIZED,
                                    "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                                    "(`hybrid-engine serve --show-token` prints it)",
                                    headers=[(b"www-authenticate", challenge)])
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            body = await self._read_body(headers, receive, send)
            if body is None:
                return
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if body and ctype != b"application/json":
                # A form or text/plain body is what a page can send without a preflight.
                return await send_error(send, 415, BadRequest.code, f"Content-Type {ctype.decode('latin-1')[:60] or '(none)'!r}: "
                                        "send the body as application/json")
            receive = _replay(body, receive)
        return await self.app(scope, receive, send)

    def _authorised(self, header: bytes, *, docs: bool) -> bool:
        scheme, _, value = header.strip().partition(b" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == b"bearer":
            return hmac.compare_digest(value, self._token)
        if scheme == b"basic" and docs:  # a browser's login dialog: any user name, the token as password
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(decoded.partition(b":")[2], self._token)
        return False

    async def _read_body(self, headers: dict, receive, send) -> bytes | None:
        """The whole body, or None after answering 400/413 (the connection is then closed)."""
        limit = self.max_body
        close = [(b"connection", b"close")]
        raw = headers.get(b"content-length")
        if raw is not None:
            text = raw.decode("latin-1").strip()
            if not text.isdigit():
                await send_error(send, 400, BadRequest.code, f"Content-Length: expected a number of bytes, got {text[:40]!r}",
                                 headers=close)
                return None
            if int(text) > limit:
                await send_error(send, 413, TooLarge.code, f"request body of {int(text)} bytes is over the "
                                 f"{limit} byte ({limit // 2**20} MiB) limit", headers=close)
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(send, 413, TooLarge.code, f"request body is over the {limit} byte "
                                 f"({limit // 2**20} MiB) limit", headers=close)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, for streaming responses
    return replay
