"""webhook: POST a run's outputs as JSON to a URL that the template or config.toml names.

The URL is never data: `url` is written out in the template (a reference there is refused
when the template loads, and never rendered), or `endpoint` names an entry of
`[webhooks]` in config.toml. Answers:

    2xx                      done; the status and the start of the answer are the outputs
    307/308 to the same      followed (at most 3 times); a redirect anywhere else, or a
      scheme, host and port  301/302/303 (which would turn the POST into a GET), is refused
    408, 425, 429, 5xx,      TransientStepError: the executor retries with its backoff
      no connection, timeout (honouring Retry-After); every attempt carries the same
                             Idempotency-Key (run/step), so a receiver can drop repeats
    other 4xx                PermanentStepError: sending it again cannot help
"""

from __future__ import annotations

import json
from urllib.parse import urljoin, urlsplit

from .. import __version__
from ..errors import PermanentStepError, TransientStepError
from .base import StepContext, StepResult, SyncAction

DEFAULT_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
ANSWER_KEPT = 2000  # characters of the receiver's answer kept in the step's outputs
TRANSIENT_STATUSES = frozenset({408, 425, 429})


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def target_url(params: dict) -> str:
    from .. import settings

    url, endpoint = params.get("url"), params.get("endpoint")
    if (url is None) == (endpoint is None):
        raise PermanentStepError("webhook: give exactly one of params.url (written out in the template) or "
                                 "params.endpoint (a name from [webhooks] in config.toml)", code="bad_param")
    if endpoint is not None:
        hooks = settings.webhooks()
        if endpoint not in hooks:
            raise PermanentStepError(f"params.endpoint: '{str(endpoint)[:60]}' is not in [webhooks] of config.toml "
                                     f"(names there: {', '.join(sorted(hooks)) or 'none'})", code="bad_param")
        url = hooks[endpoint]
    if not isinstance(url, str) or "{{" in url or _origin(url)[0] not in ("http", "https") or not _origin(url)[1]:
        raise PermanentStepError("params.url: expected an http:// or https:// URL written out in the template",
                                 code="bad_param")
    return url.strip()


def post_json(url: str, body: bytes, headers: dict, timeout: float) -> tuple[int, dict, bytes]:
    """One POST without proxies or redirects: (status, headers in lower case, answer)."""
    import http.client

    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(1 << 20)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


class Webhook(SyncAction):
    """Runs in a worker thread (spec.blocking) under the step's timeout."""

    def compute(self, params, ctx: StepContext) -> StepResult:
        url = target_url(params)
        facts = ctx.run_facts(with_outputs="data" not in params) if ctx.run_facts else {}
        payload = {
            "run_id": ctx.run_id,
            "step_id": ctx.step_id,
            "workflow": facts.get("workflow"),
            "page": facts.get("page"),
            "models": facts.get("models"),
            "cost_usd": facts.get("cost_usd"),
            "cost_state": facts.get("cost_state"),
            "outputs": params["data"] if "data" in params else facts.get("outputs", {}),
        }
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": f"hybrid-engine/{__version__}",
                   "Idempotency-Key": f"{ctx.run_id}/{ctx.step_id}"}
        timeout = float(params.get("timeout_s") or DEFAULT_TIMEOUT_S)
        start = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                status, answer_headers, answer = post_json(url, body, headers, timeout)
            except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS, a broken answer
                raise TransientStepError(f"webhook: no answer from {_origin(url)[1]}: {exc}", code="webhook_unreachable") from exc
            except Exception as exc:  # noqa: BLE001 - http.client's own (e.g. RemoteDisconnected is OSError; BadStatusLine is not)
                raise TransientStepError(f"webhook: bad answer from {_origin(url)[1]}: {type(exc).__name__}",
                                         code="webhook_unreachable") from exc
            if status in (307, 308) and answer_headers.get("location"):
                nxt = urljoin(url, answer_headers["location"])
                if _origin(nxt) != start:
                    raise PermanentStepError(f"webhook: {_origin(url)[1]} redirected to another host "
                                             f"({_origin(nxt)[1] or 'none'}); not followed", code="webhook_redirect")
                url = nxt
                continue
            break
        else:
            raise PermanentStepError(f"webhook: more than {MAX_REDIRECTS} redirects", code="webhook_redirect")
        text = answer.decode("utf-8", "replace")[:ANSWER_KEPT]
        if 200 <= status < 300:
            ctx.log(f"webhook answered {status}")
            return StepResult(outputs={"status": status, "response": text})
        if status >= 500 or status in TRANSIENT_STATUSES:
            raise TransientStepError(f"webhook: {start[1]} answered {status}", code="webhook_failed",
                                     retry_after=_retry_after(answer_headers.get("retry-after")))
        if 300 <= status < 400:
            raise PermanentStepError(f"webhook: {start[1]} answered {status} (a redirect that would turn the POST "
                                     "into a GET); not followed", code="webhook_redirect")
        raise PermanentStepError(f"webhook: {start[1]} answered {status}: {text[:200]}", code="webhook_failed")
