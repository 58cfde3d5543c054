"""A loopback stand-in for the model providers, for tests that use the real SDKs.

One threaded HTTP server on 127.0.0.1 (a random free port) answers like:
  OpenAI     POST /openai/v1/chat/completions            (JSON, or SSE with "stream": true)
  DeepSeek   POST /deepseek/chat/completions             (adds prompt_cache_hit_tokens,
                                                          reasoning_content)
  local      POST /local/v1/chat/completions             (Ollama / LM Studio style)
  Gemini     POST /gemini/{v1beta|v1}/models/{m}:generateContent
             POST /gemini/{v1beta|v1}/models/{m}:streamGenerateContent?alt=sse

    fake = FakeProvider().start()
    fake.base_url("openai")            # -> http://127.0.0.1:PORT/openai/v1
    fake.env()                         # keys + base URLs for every provider, for os.environ
    fake.script("openai", status=429, headers={"Retry-After": "2"})   # next reply only
    fake.script("gemini", usage={"prompt_tokens": 900, "thoughts_tokens": 300}, times=3)
    fake.set_default("deepseek", latency=0.2)
    fake.requests                      # every request: provider, path, body, model, times
    fake.max_in_flight                 # concurrency high-water mark
    fake.hold(); fake.wait_requests(1); fake.release()   # keep answers back until released
    fake.allow(1)                      # while held: let the next held answer through
    fake.limit("openai", requests=10, window_s=1.0)  # a sliding-window limit: 429 above it
    fake.rate_limited                  # how many requests it answered 429 that way
    fake.close()

A reply is a Reply: status, latency (seconds, before anything is sent), headers, text,
usage (prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens / thoughts_tokens,
total_tokens to report a total that is not the sum; any of them zero, negative or absurd
as given; usage=None leaves usage out of the reply, as some servers do),
usage_for (a function of the request body that returns the usage, e.g. counted from the
prompt as sent), reasoning, finish_reason, retry_delay (Gemini RetryInfo), body (raw bytes/str sent as is:
garbage), error (message for an error status). Scripted replies are used once each,
in order, per provider; then the provider's default applies.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

PROVIDERS = ("openai", "deepseek", "local", "gemini")
KEYS = {"openai": "sk-fake-openai", "deepseek": "sk-fake-deepseek", "gemini": "fake-gemini-key",
        "local": ""}


@dataclass
class Reply:
    status: int = 200
    latency: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # None: "reply from <provider> <model>"
    usage: dict[str, int] | None = field(default_factory=dict)  # None: the reply has no usage
    usage_for: Any = None  # body -> usage dict: wins over `usage`
    reasoning: str | None = None
    finish_reason: str = "stop"
    retry_delay: str | None = None  # Gemini RetryInfo retryDelay, e.g. "2s"
    body: bytes | str | None = None  # sent verbatim (a garbage body)
    content_type: str = "application/json"
    error: str | None = None  # the message of an error status


@dataclass
class Request:
    provider: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    model: str | None
    stream: bool
    started: float
    ended: float | None = None
    status: int | None = None
    generation: int = 0


DEFAULT_USAGE = {"prompt_tokens": 120, "completion_tokens": 30}


class FakeProvider:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._gate = threading.Event()  # cleared by hold(): every answer waits for release()
        self._gate.set()
        self._permits = 0  # answers allow() lets through while held
        self._abort = threading.Event()  # set by reset()/close(): replies still waiting give up
        self._generation = 0
        self._scripts: dict[str, list[Reply]] = {p: [] for p in PROVIDERS}
        self._defaults: dict[str, Reply] = {p: Reply() for p in PROVIDERS}
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._limits: dict[str, tuple[int, float]] = {}
        self._window: dict[str, list[float]] = {p: [] for p in PROVIDERS}
        self.rate_limited = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeProvider:
        fake = self

        class Handler(_Handler):
            provider_server = fake

        server = _Server(("127.0.0.1", 0), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._abort.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        assert self._server is not None, "call start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def base_url(self, provider: str) -> str:
        return {"openai": f"{self.url}/openai/v1", "deepseek": f"{self.url}/deepseek",
                "local": f"{self.url}/local/v1", "gemini": f"{self.url}/gemini"}[provider]

    def env(self) -> dict[str, str]:
        """Variables that point every provider here, with fake keys."""
        return {
            "OPENAI_API_KEY": KEYS["openai"], "OPENAI_BASE_URL": self.base_url("openai"),
            "DEEPSEEK_API_KEY": KEYS["deepseek"], "DEEPSEEK_BASE_URL": self.base_url("deepseek"),
            "GEMINI_API_KEY": KEYS["gemini"], "GEMINI_BASE_URL": self.base_url("gemini"),
            "HYBRID_ENGINE_LOCAL_BASE_URL": self.base_url("local"),
        }

    # ---- behaviour -------------------------------------------------------------------------
    def script(self, provider: str, *, times: int = 1, **fields: Any) -> None:
        """Queue `times` replies for the provider's next requests."""
        with self._lock:
            self._scripts[provider].extend(Reply(**fields) for _ in range(times))

    def set_default(self, provider: str | None = None, **fields: Any) -> None:
        with self._lock:
            for p in ([provider] if provider else PROVIDERS):
                self._defaults[p] = replace(self._defaults[p], **fields)

    def reset(self) -> None:
        """Forget scripts, defaults and requests; replies still held back are dropped."""
        with self._lock:
            self._abort.set()
            self._abort = threading.Event()
            self._gate.set()
            self._permits = 0
            self._generation += 1
            self._scripts = {p: [] for p in PROVIDERS}
            self._defaults = {p: Reply() for p in PROVIDERS}
            self.requests = []
            self.in_flight = 0
            self.max_in_flight = 0
            self._limits = {}
            self._window = {p: [] for p in PROVIDERS}
            self.rate_limited = 0

    def limit(self, provider: str, *, requests: int, window_s: float = 60.0) -> None:
        """At most `requests` accepted per sliding `window_s` seconds; the rest get 429 with a
        Retry-After for when the oldest accepted request leaves the window (a provider's
        requests-per-minute limit, scaled to a window a test can wait out)."""
        with self._lock:
            self._limits[provider] = (requests, window_s)
            self._window[provider] = []

    def _over_limit(self, provider: str) -> float | None:
        """Seconds until a request would be accepted, or None (accepted and counted)."""
        with self._lock:
            limit = self._limits.get(provider)
            if limit is None:
                return None
            requests, window_s = limit
            now = time.monotonic()
            accepted = [t for t in self._window[provider] if t > now - window_s]
            self._window[provider] = accepted
            if len(accepted) >= requests:
                self.rate_limited += 1
                return max(0.001, accepted[0] + window_s - now)
            accepted.append(now)
            return None

    def hold(self) -> None:
        """From now on requests are received and recorded but not answered until release()."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()
        with self._lock:
            self._arrived.notify_all()

    def allow(self, n: int = 1) -> None:
        """While held: let the next `n` requests that wait (or arrive) be answered."""
        with self._lock:
            self._permits += n
            self._arrived.notify_all()

    def _pass_gate(self, abort: threading.Event) -> bool:
        """Wait until released or allowed; False when reset() or close() came first."""
        with self._arrived:
            while not self._gate.is_set():
                if self._permits > 0:
                    self._permits -= 1
                    return True
                if abort.is_set():
                    return False
                self._arrived.wait(0.05)
            return True

    def wait_requests(self, n: int, timeout: float = 60.0, provider: str | None = None) -> list[Request]:
        """Block until at least n requests (of the provider) have arrived; they are returned."""
        def seen() -> list[Request]:
            return [r for r in self.requests if provider is None or r.provider == provider]
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(seen()) >= n, timeout):
                raise AssertionError(f"timed out waiting for {n} request(s); got {len(seen())}")
            return seen()

    def requests_for(self, provider: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.provider == provider]

    # ---- used by the handler ---------------------------------------------------------------
    def _next_reply(self, provider: str) -> Reply:
        with self._lock:
            queue = self._scripts[provider]
            return queue.pop(0) if queue else self._defaults[provider]

    def _enter(self, request: Request) -> threading.Event:
        with self._lock:
            request.generation = self._generation
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._arrived.notify_all()
            return self._abort

    def _leave(self, request: Request) -> None:
        with self._lock:
            if request.generation == self._generation:  # not a straggler from before reset()
                self.in_flight -= 1

    @staticmethod
    def _sleep(seconds: float, abort: threading.Event) -> bool:
        """Wait; False when reset() or close() came first."""
        return not abort.wait(seconds) if seconds > 0 else not abort.is_set()


# ---- response bodies ------------------------------------------------------------------------

def _openai_usage(provider: str, usage: dict[str, int]) -> dict:
    u = {**DEFAULT_USAGE, **usage}
    prompt, completion = u["prompt_tokens"], u["completion_tokens"]
    cached, reasoning = u.get("cached_tokens", 0), u.get("reasoning_tokens", 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": u.get("total_tokens", prompt + completion),
                           "prompt_tokens_details": {"cached_tokens": cached},
                           "completion_tokens_details": {"reasoning_tokens": reasoning}}
    if provider == "deepseek":  # DeepSeek's own cache fields
        out["prompt_cache_hit_tokens"] = cached
        out["prompt_cache_miss_tokens"] = prompt - cached
    return out


def _openai_body(provider: str, model: str, reply: Reply, text: str) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    body = {
        "id": f"chatcmpl-fake-{provider}-{time.monotonic_ns()}",
        "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason,
                     "logprobs": None}],
        "system_fingerprint": "fp_fake",
    }
    if reply.usage is not None:
        body["usage"] = _openai_usage(provider, reply.usage)
    return body


def _gemini_usage(usage: dict[str, int]) -> dict:
    u = {**DEFAULT_USAGE, **usage}
    out = {"promptTokenCount": u["prompt_tokens"], "candidatesTokenCount": u["completion_tokens"]}
    thoughts = u.get("thoughts_tokens", u.get("reasoning_tokens", 0))
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    if u.get("cached_tokens"):
        out["cachedContentTokenCount"] = u["cached_tokens"]
    out["totalTokenCount"] = u.get("total_tokens", u["prompt_tokens"] + u["completion_tokens"] + thoughts)
    return out


_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}


def _gemini_body(model: str, reply: Reply, text: str) -> dict:
    body = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": _GEMINI_FINISH.get(reply.finish_reason, reply.finish_reason),
                        "index": 0}],
        "modelVersion": model,
        "responseId": f"fake-gemini-{time.monotonic_ns()}",
    }
    if reply.usage is not None:
        body["usageMetadata"] = _gemini_usage(reply.usage)
    return body


_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                 403: "permission_error", 404: "invalid_request_error", 429: "rate_limit_error",
                 500: "server_error", 503: "server_error"}


def _error_body(provider: str, reply: Reply) -> dict:
    message = reply.error or f"fake {provider} error {reply.status}"
    if provider == "gemini":
        err: dict[str, Any] = {"code": reply.status, "message": message,
                               "status": _STATUS_NAMES.get(reply.status, "UNKNOWN")}
        if reply.retry_delay:
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                               "retryDelay": reply.retry_delay}]
        return {"error": err}
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(reply.status)
    return {"error": {"message": message, "type": _OPENAI_TYPES.get(reply.status, "api_error"),
                      "param": None, "code": code}}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default listen backlog (5) refuses a 50-call fan-out
    daemon_threads = True
    block_on_close = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    provider_server: FakeProvider

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # health checks, model lists: not modelled
        self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        fake = self.provider_server
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client died while sending (a killed worker): no request arrived
            self.close_connection = True
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        provider, model, stream = self._route(parts.path, body)
        if provider is None:
            self._send(404, {"error": {"message": f"no fake endpoint at {parts.path}"}})
            return
        request = Request(provider=provider, method="POST", path=parts.path, query=parts.query,
                          headers={k.lower(): v for k, v in self.headers.items()}, body=body,
                          model=model, stream=stream, started=time.monotonic())
        abort = fake._enter(request)
        try:
            if not fake._pass_gate(abort):
                self.close_connection = True
                return
            wait = fake._over_limit(provider)
            reply = fake._next_reply(provider) if wait is None else Reply(
                status=429, headers={"retry-after-ms": str(int(wait * 1000) + 1)},
                error="Rate limit reached for requests (fake sliding window)")
            if not fake._sleep(reply.latency, abort):
                self.close_connection = True
                return
            request.status = reply.status
            if reply.usage_for is not None:
                reply = replace(reply, usage=reply.usage_for(body))
            self._respond(provider, model or "", stream, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer
        finally:
            request.ended = time.monotonic()
            fake._leave(request)

    @staticmethod
    def _route(path: str, body: Any) -> tuple[str | None, str | None, bool]:
        body = body if isinstance(body, dict) else {}
        for provider, suffix in (("openai", "/openai/v1/chat/completions"),
                                 ("deepseek", "/deepseek/chat/completions"),
                                 ("deepseek", "/deepseek/v1/chat/completions"),
                                 ("local", "/local/v1/chat/completions")):
            if path == suffix:
                return provider, body.get("model"), bool(body.get("stream"))
        if path.startswith("/gemini/") and "/models/" in path and ":" in path:
            model, _, method = path.split("/models/", 1)[1].partition(":")
            if method in ("generateContent", "streamGenerateContent"):
                return "gemini", model, method == "streamGenerateContent"
        return None, None, False

    def _respond(self, provider: str, model: str, stream: bool, reply: Reply) -> None:
        headers = dict(reply.headers)
        if reply.body is not None:
            data = reply.body.encode() if isinstance(reply.body, str) else reply.body
            self._send_bytes(reply.status, data, reply.content_type, headers)
            return
        if reply.status >= 400:
            self._send(reply.status, _error_body(provider, reply), headers)
            return
        text = reply.text if reply.text is not None else f"reply from {provider} {model}"
        headers.setdefault("x-request-id", f"req-fake-{provider}-{time.monotonic_ns()}")
        if provider == "gemini":
            body = _gemini_body(model, reply, text)
            if stream:
                self._send_sse(reply.status, [body], headers, done=False)
            else:
                self._send(reply.status, body, headers)
            return
        body = _openai_body(provider, model, reply, text)
        if not stream:
            self._send(reply.status, body, headers)
            return
        chunks = []
        base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": 0, "delta": {},
                                            "finish_reason": reply.finish_reason}]})
        if "usage" in body:
            chunks.append({**base, "choices": [], "usage": body["usage"]})
        self._send_sse(reply.status, chunks, headers, done=True)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers or {})

    def _send_bytes(self, status: int, data: bytes, content_type: str,
                    headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_sse(self, status: int, events: list[dict], headers: dict[str, str], *,
                  done: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        if done:
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


__all__ = ["FakeProvider", "Reply", "Request", "KEYS", "PROVIDERS"]
