"""How a provider's failure becomes a step error: HTTP status and body, transport errors,
Retry-After hints, and replies that are not a chat completion.

Transient failures (429, 5xx, timeouts, refused connections) become TransientStepError
with the wait the provider asked for; the rest PermanentStepError with a code the popup
and CLI explain. Every message is redacted of the key and of secrets in the base URL,
because it is stored in the run and shown to the extension.
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import PermanentStepError, StepError, TransientStepError
from ..redact import public_url, redact, url_secrets
from ..settings import ProviderSettings

if TYPE_CHECKING:
    from .chat import ChatAdapter

DETAIL_LIMIT = 300


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from retry-after-ms / Retry-After (seconds or an HTTP date)."""
    if not headers:
        return None
    get = headers.get
    value = get("retry-after-ms") or get("Retry-After-Ms")
    if value:
        try:
            seconds = float(value) / 1000.0
        except ValueError:
            seconds = None
        if seconds is not None and math.isfinite(seconds):  # "inf" or "nan" is no hint
            return max(0.0, seconds)
    value = get("retry-after") or get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - utc_now()).total_seconds())


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*s\s*$")


def parse_retry_info(body: Any) -> float | None:
    """google.rpc.RetryInfo's retryDelay ("17s", "0.5s" or {seconds, nanos}) in an error body."""
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    for item in details:
        if not isinstance(item, dict) or not str(item.get("@type", "")).endswith("RetryInfo"):
            continue
        delay = item.get("retryDelay")
        if isinstance(delay, str):
            m = _DURATION.match(delay)
            if m:
                return float(m.group(1))
        elif isinstance(delay, dict):
            try:  # the server's words: garbage is no hint, not a crash of the error's handling
                seconds = float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
            except (TypeError, ValueError):
                return None
            return max(0.0, seconds) if math.isfinite(seconds) else None
    return None


def error_detail(body: Any, fallback: str = "", secrets: tuple[str, ...] = ()) -> str:
    """The provider's own words from an error body, short and on one line, secrets masked
    before the cut (half a key, cut at the limit, could no longer be found)."""
    message = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            message = err.get("message") or err.get("status")
        elif isinstance(err, str):
            message = err
    elif isinstance(body, str):
        message = body
    text = redact(" ".join(str(message or fallback or "").split()), secrets)
    if len(text) > DETAIL_LIMIT:
        text = text[:DETAIL_LIMIT] + "..."
    if text and not text.endswith((".", "!", "?", "...")):
        text += "."
    return text


def _error_code(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("code") or err.get("type") or err.get("status") or "")
    return ""


def http_error(adapter: ChatAdapter, status: int, body: Any, headers: Any, model: str,
               settings: ProviderSettings, fallback: str = "") -> StepError:
    """A provider's HTTP error status as a transient or permanent step error."""
    label, provider = adapter.label, adapter.provider
    detail = error_detail(body, fallback, _secrets(settings)) or "no details."
    code = _error_code(body).lower()
    meta = {"provider": provider, "model": model, "http_status": status}
    retry_after = parse_retry_after(headers)
    if retry_after is None:
        retry_after = parse_retry_info(body)
    if status == 429:
        if "insufficient_quota" in code or "insufficient_quota" in detail.lower():
            return PermanentStepError(
                f"{label} says the account has no quota left (HTTP 429 insufficient_quota): "
                f"{detail} Add credit or raise the limit in the provider's console; "
                "retrying will not help.", code="provider_quota", metadata=meta)
        wait = f" The provider asks to wait {retry_after:g} s." if retry_after is not None else ""
        meta["retry_after"] = retry_after
        return TransientStepError(f"{label} rate limit (HTTP 429): {detail}{wait}",
                                  retry_after=retry_after, code="rate_limited", metadata=meta)
    if status >= 500 or status in (408, 409):
        return TransientStepError(f"{label} server error (HTTP {status}): {detail}",
                                  retry_after=retry_after,
                                  code="provider_unavailable", metadata=meta)
    lowered = detail.lower()
    if status == 401 or status in (400, 403) and "api key" in lowered and any(
            word in lowered for word in ("not valid", "invalid", "expired", "incorrect")):
        return PermanentStepError(
            f"{label} rejected the API key (HTTP {status}): {detail} Check {settings.key_env}, "
            f"or store a new key with `hybrid-engine keys set {provider}`.",
            code="provider_auth", metadata=meta)
    if status == 403:
        return PermanentStepError(
            f"{label} refused the request (HTTP 403): {detail} The key may not have access "
            f"to model '{model}', or the service is not offered where you are.",
            code="provider_forbidden", metadata=meta)
    if status == 404:
        return PermanentStepError(
            f"{label} does not know model '{model}' at {_shown_url(settings)} "
            f"(HTTP 404): {detail} Check the model id and the base URL"
            + (f" (for Ollama: `ollama pull {model}`)." if provider == "local" else "."),
            code="provider_not_found", metadata=meta)
    hint = ""
    if "context" in lowered and ("length" in lowered or "window" in lowered) or "too long" in lowered \
            or "maximum" in lowered and "token" in lowered:
        hint = (" The prompt is longer than the model accepts: set `on_overflow: truncate` "
                "on the step, or choose a model with a larger context window.")
    return PermanentStepError(f"{label} rejected the request (HTTP {status}): {detail}{hint}",
                              code="provider_rejected", metadata=meta)


def transport_error(adapter: ChatAdapter, exc: BaseException, model: str, timeout_s: float,
                    settings: ProviderSettings, *, timed_out: bool) -> StepError:
    meta = {"provider": adapter.provider, "model": model}
    if timed_out:
        return TransientStepError(
            f"{adapter.label} did not answer within {timeout_s:g} s (timeout).",
            code="provider_timeout", metadata=meta)
    cause = exc.__cause__ or exc.__context__
    reason = f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause and str(cause) else "")
    reason = redact(" ".join(reason.split()), _secrets(settings))
    if len(reason) > DETAIL_LIMIT:
        reason = reason[:DETAIL_LIMIT] + "..."
    if _refused(exc):
        meta["not_sent"] = True  # nothing reached the provider: not billed
    return TransientStepError(
        f"{adapter.label} could not be reached at {_shown_url(settings)}: "
        f"{reason}.", code="provider_unreachable", metadata=meta)


def _refused(exc: BaseException) -> bool:
    """The connection was never made (refused, no such host): the request was not sent."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError) or type(exc).__name__ == "ConnectError":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _secrets(settings: ProviderSettings) -> tuple[str, ...]:
    """This call's own key and URL credentials, masked even where no other source knows them."""
    return ((settings.api_key,) if settings.api_key else ()) + \
        tuple(url_secrets(settings.base_url or ""))


def _shown_url(settings: ProviderSettings) -> str:
    return public_url(settings.base_url) or "its default URL"


def malformed(adapter: ChatAdapter, model: str, what: str) -> PermanentStepError:
    what = redact(" ".join(str(what).split()))[:DETAIL_LIMIT]
    return PermanentStepError(
        f"{adapter.label} sent a response that is not a valid chat completion ({what}). "
        "The provider or a proxy in between answered with something else; check the base URL.",
        code="provider_bad_response", metadata={"provider": adapter.provider, "model": model})
