"""gemini_chat: Gemini's generateContent through google-genai's async client
(`client.aio.models.generate_content`), imported on first call.

The client is built with the key always given (never None: the SDK would read
GOOGLE_API_KEY, which Chromium exports with its own key, or GEMINI_API_KEY itself), an
explicit api_version (v1beta, or [providers.gemini] api_version in config.toml), vertexai=False (so GOOGLE_GENAI_USE_VERTEXAI in the
environment cannot redirect it), the base URL from GEMINI_BASE_URL / config when set,
and retry_options with a single attempt: the SDK retries nothing, not even connection
errors, and the engine's policy rules. 429s carry the delay from Retry-After or from
the google.rpc.RetryInfo detail of the error body.

Usage: input = prompt_token_count (+ tool_use_prompt_token_count), cached =
cached_content_token_count, output = candidates_token_count + thoughts_token_count:
thinking is billed as output, and reported as reasoning_tokens.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import pricing
from .. import settings as config_settings
from ..config import ConfigError
from ..settings import ProviderSettings
from . import get_spec
from .base import StepContext
from .chat import ChatAdapter, ChatReply, ChatRequest, ClientCache, as_int, raw_usage, reported_int
from .failures import http_error, malformed, transport_error

DEFAULT_API_VERSION = "v1beta"

_clients = ClientCache()

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
           "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
           "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "error",
           "OTHER": "other", "LANGUAGE": "other"}


def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeout classes, other transport classes) of whichever httpx the SDK uses."""
    timeouts: list[type] = []
    transport: list[type] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        for attr, bucket in (("TimeoutException", timeouts), ("TransportError", transport)):
            cls = getattr(module, attr, None)
            if isinstance(cls, type):
                bucket.append(cls)
    return tuple(timeouts), tuple(transport)


def _drop_env_key_notice(record: logging.LogRecord) -> bool:
    """google-genai looks at the environment even when given a key, and logs "Both
    GOOGLE_API_KEY and GEMINI_API_KEY are set. Using GOOGLE_API_KEY." That is not so here
    (the client is given its key); the line would only mislead whoever reads the log."""
    return "Using GOOGLE_API_KEY" not in str(record.msg)


logging.getLogger("google_genai._api_client").addFilter(_drop_env_key_notice)


def _api_version() -> str:
    try:
        return config_settings.provider("gemini").api_version or DEFAULT_API_VERSION
    except ConfigError:  # reported, before any call, by ChatAdapter._config
        return DEFAULT_API_VERSION


class GeminiChat(ChatAdapter):
    provider = "gemini"
    label = "Gemini"
    spec = get_spec("gemini_chat")

    def _client(self, settings: ProviderSettings, timeout_s: float):
        from google import genai
        from google.genai import types

        api_version = _api_version()
        # Never None or empty: google-genai would then take GOOGLE_API_KEY (Chromium's own key
        # on Debian and Ubuntu) or GEMINI_API_KEY from the environment by itself.
        if not settings.api_key:
            raise RuntimeError("Gemini client requested without a key")  # run() says no_provider first

        def make():
            options = types.HttpOptions(
                api_version=api_version, timeout=int(timeout_s * 1000),
                retry_options=types.HttpRetryOptions(attempts=1))
            if settings.base_url:
                options.base_url = settings.base_url
            return genai.Client(api_key=settings.api_key, vertexai=False, http_options=options)

        return _clients.get((settings.base_url, settings.api_key, api_version), make)

    def _prepare(self, settings: ProviderSettings, request: ChatRequest) -> None:
        self._client(settings, request.timeout_s)

    async def _complete(self, request: ChatRequest, settings: ProviderSettings,
                        ctx: StepContext) -> ChatReply:
        from google.genai import errors, types

        client = self._client(settings, request.timeout_s)
        config = types.GenerateContentConfig(
            system_instruction=request.system or None,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            http_options=types.HttpOptions(timeout=int(request.timeout_s * 1000),
                                           retry_options=types.HttpRetryOptions(attempts=1)),
        )
        timeouts, transport = _transport_errors()
        contents: Any = request.prompt
        if request.image is not None:  # inline_data beside the text
            contents = [request.prompt, types.Part.from_bytes(data=request.image.data,
                                                              mime_type=request.image.media_type)]
        try:
            response = await client.aio.models.generate_content(
                model=request.model, contents=contents, config=config)
        except errors.APIError as exc:
            headers = getattr(getattr(exc, "response", None), "headers", None)
            body = exc.details if isinstance(exc.details, dict) else {"message": exc.message}
            raise http_error(self, int(exc.code or 0), body, headers, request.model, settings,
                             fallback=str(exc.message or exc.status or "")) from exc
        except timeouts as exc:
            raise transport_error(self, exc, request.model, request.timeout_s, settings,
                                  timed_out=True) from exc
        except transport as exc:
            raise transport_error(self, exc, request.model, request.timeout_s, settings,
                                  timed_out=False) from exc
        except (ValueError, TypeError, KeyError) as exc:  # unparsable body, pydantic errors
            raise malformed(self, request.model, f"{type(exc).__name__}: {exc}") from exc
        return self._reply(response, request.model)

    def _reply(self, response: Any, model: str) -> ChatReply:
        from ..errors import PermanentStepError

        candidates = getattr(response, "candidates", None) or []
        feedback = getattr(response, "prompt_feedback", None)
        block = getattr(feedback, "block_reason", None) if feedback else None
        if not candidates:
            if block:
                raise PermanentStepError(
                    f"Gemini refused the prompt ({_enum_name(block)}): "
                    f"{getattr(feedback, 'block_reason_message', None) or 'no details'}.",
                    code="provider_rejected", metadata={"provider": self.provider, "model": model})
            raise malformed(self, model, "no candidates")
        candidate = candidates[0]
        texts, thoughts = [], []
        content = getattr(candidate, "content", None)
        for part in (getattr(content, "parts", None) or []):
            text = getattr(part, "text", None)
            if not text:
                continue
            (thoughts if getattr(part, "thought", False) else texts).append(text)
        raw_finish = _enum_name(getattr(candidate, "finish_reason", None))
        finish = _FINISH.get(raw_finish, raw_finish.lower() if raw_finish else None)
        meta = getattr(response, "usage_metadata", None)
        prompt = as_int(getattr(meta, "prompt_token_count", 0)) + \
            as_int(getattr(meta, "tool_use_prompt_token_count", 0))
        thought_tokens = as_int(getattr(meta, "thoughts_token_count", 0))
        output = as_int(getattr(meta, "candidates_token_count", 0)) + thought_tokens
        cached = as_int(getattr(meta, "cached_content_token_count", 0))
        extra: dict[str, Any] = {}
        if raw_finish and finish != raw_finish.lower():
            extra["provider_finish_reason"] = raw_finish
        return ChatReply(
            text="".join(texts), finish_reason=finish,
            usage=pricing.Usage(prompt_tokens=prompt, completion_tokens=output,
                                cached_tokens=min(cached, prompt), reasoning_tokens=thought_tokens),
            reasoning="".join(thoughts) or None,
            request_id=getattr(response, "response_id", None),
            response_model=getattr(response, "model_version", None), extra=extra,
            raw_usage=raw_usage(meta),
            reported_total=reported_int(getattr(meta, "total_token_count", None)))


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "name", None) or getattr(value, "value", None) or value)


__all__ = ["GeminiChat", "DEFAULT_API_VERSION"]
