"""openai_chat, deepseek_chat and local_chat: POST {base}/chat/completions through the
official openai SDK (AsyncOpenAI), imported on first call.

The SDK's own retries are off (max_retries=0): the engine retries transient errors
with its policy and records every attempt. Errors are translated here, most specific
first, into TransientStepError (429, 408/409, 5xx, timeouts, connection errors; with
the Retry-After / retry-after-ms delay) or PermanentStepError (other 4xx, a malformed
response).

DeepSeek is OpenAI-compatible (default base https://api.deepseek.com); it reports
cache hits as `prompt_cache_hit_tokens` (priced as cache reads) and the reasoning of
deepseek-reasoner as `message.reasoning_content` (returned as the `reasoning` output).
local_chat talks to any OpenAI-compatible local server (Ollama, LM Studio, llama.cpp);
it needs no key and costs nothing.
"""

from __future__ import annotations

import os
from typing import Any

from .. import settings as config_settings
from ..config import ConfigError
from ..settings import ProviderSettings
from ..errors import PermanentStepError
from ..redact import public_url
from . import get_spec
from .base import StepContext
from .chat import ChatAdapter, ChatReply, ChatRequest, ClientCache, as_int, raw_usage, reported_int
from .failures import http_error, malformed, transport_error
from .. import pricing

_clients = ClientCache()


def _field(obj: Any, name: str) -> Any:
    """An attribute of an SDK object, extra (provider-specific) fields included."""
    if obj is None:
        return None
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


class OpenAICompatibleChat(ChatAdapter):
    max_tokens_param = "max_tokens"

    def _client(self, settings: ProviderSettings, timeout_s: float):
        import openai

        # Key and base URL always explicit: given None, the SDK would read OPENAI_API_KEY and
        # OPENAI_BASE_URL itself, and a DeepSeek or local step could go out under OpenAI's key.
        if self.needs_key and not settings.api_key:
            raise RuntimeError(f"{self.label} client requested without a key")  # run() says no_provider first
        api_key = settings.api_key or "not-needed"  # a local server takes any key
        key = (settings.base_url, api_key)
        return _clients.get(key, lambda: openai.AsyncOpenAI(
            api_key=api_key, base_url=settings.base_url, max_retries=0, timeout=timeout_s))

    def _prepare(self, settings: ProviderSettings, request: ChatRequest) -> None:
        self._client(settings, request.timeout_s)

    def _messages(self, request: ChatRequest) -> list[dict[str, str]]:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        if request.image is not None:  # a vision model: the text and the image in one user message
            messages.append({"role": "user", "content": [
                {"type": "text", "text": request.prompt},
                {"type": "image_url", "image_url": {"url": request.image.data_url, "detail": request.image_detail}}]})
        else:
            messages.append({"role": "user", "content": request.prompt})
        return messages

    async def _complete(self, request: ChatRequest, settings: ProviderSettings,
                        ctx: StepContext) -> ChatReply:
        import openai

        client = self._client(settings, request.timeout_s)
        kwargs: dict[str, Any] = {"model": request.model, "messages": self._messages(request)}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs[self.max_tokens_param] = request.max_tokens
        try:
            raw = await client.chat.completions.with_raw_response.create(
                **kwargs, timeout=request.timeout_s)
            completion = raw.parse()
        except openai.APITimeoutError as exc:
            raise transport_error(self, exc, request.model, request.timeout_s, settings,
                                  timed_out=True) from exc
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc, request, settings) from exc
        except openai.APIStatusError as exc:
            raise http_error(self, exc.status_code, exc.body, exc.response.headers, request.model,
                             settings, fallback=exc.message) from exc
        except (openai.APIResponseValidationError, ValueError, TypeError) as exc:
            raise malformed(self, request.model, f"{type(exc).__name__}: {exc}") from exc
        return self._reply(completion, raw.headers, request.model)

    def _unreachable(self, exc: Exception, request: ChatRequest, settings: ProviderSettings):
        return transport_error(self, exc, request.model, request.timeout_s, settings,
                               timed_out=False)

    def _reply(self, completion: Any, headers: Any, model: str) -> ChatReply:
        choices = getattr(completion, "choices", None)
        if isinstance(completion, (str, bytes)) or not choices:
            shown = completion if isinstance(completion, (str, bytes)) else "no choices"
            raise malformed(self, model, repr(shown)[:200])
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise malformed(self, model, "a choice without a message")
        text = message.content or ""
        reasoning = _field(message, "reasoning_content") or _field(message, "reasoning")
        usage = getattr(completion, "usage", None)
        prompt = as_int(_field(usage, "prompt_tokens"))
        completion_tokens = as_int(_field(usage, "completion_tokens"))
        cached = as_int(_field(usage, "prompt_cache_hit_tokens")) or as_int(
            _field(_field(usage, "prompt_tokens_details"), "cached_tokens"))
        reasoning_tokens = as_int(_field(_field(usage, "completion_tokens_details"),
                                         "reasoning_tokens"))
        extra: dict[str, Any] = {}
        request_id = (headers.get("x-request-id") if headers is not None else None) \
            or getattr(completion, "id", None)
        return ChatReply(
            text=text, finish_reason=getattr(choice, "finish_reason", None),
            usage=pricing.Usage(prompt_tokens=prompt, completion_tokens=completion_tokens,
                                cached_tokens=min(cached, prompt),
                                reasoning_tokens=min(reasoning_tokens, completion_tokens)),
            reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
            request_id=request_id, response_model=getattr(completion, "model", None), extra=extra,
            raw_usage=raw_usage(usage), reported_total=reported_int(_field(usage, "total_tokens")))


class OpenAIChat(OpenAICompatibleChat):
    provider = "openai"
    label = "OpenAI"
    spec = get_spec("openai_chat")
    # max_tokens is refused by OpenAI's reasoning models (o-series, gpt-5);
    # max_completion_tokens works for every current chat model.
    max_tokens_param = "max_completion_tokens"


class DeepSeekChat(OpenAICompatibleChat):
    provider = "deepseek"
    label = "DeepSeek"
    spec = get_spec("deepseek_chat")


class LocalChat(OpenAICompatibleChat):
    provider = "local"
    label = "The local model server"
    spec = get_spec("local_chat")
    needs_key = False

    @staticmethod
    def _configured() -> bool:
        if os.environ.get("HYBRID_ENGINE_LOCAL_BASE_URL"):
            return True
        try:
            return bool(config_settings.provider("local").base_url)
        except ConfigError:
            return False

    def _no_server_metadata(self, request: ChatRequest, settings: ProviderSettings) -> dict:
        meta: dict[str, Any] = {"provider": self.provider, "model": request.model,
                                "base_url": public_url(settings.base_url)}
        est = self._safe_estimate({"model": request.model, "prompt": request.prompt,
                                   "system": request.system, "max_tokens": request.max_tokens})
        if est is not None:
            meta["estimate"] = est
        return meta

    def _unreachable(self, exc: Exception, request: ChatRequest, settings: ProviderSettings):
        if not self._configured():
            return PermanentStepError(
                f"No local model server is set up: nothing answers at {public_url(settings.base_url)} "
                "(Ollama's default address). Start Ollama or LM Studio, or set "
                "HYBRID_ENGINE_LOCAL_BASE_URL (or base_url under [providers.local] in "
                "config.toml) to your server's OpenAI-compatible URL.",
                code="no_provider", metadata=self._no_server_metadata(request, settings))
        return transport_error(self, exc, request.model, request.timeout_s, settings,
                               timed_out=False)


__all__ = ["OpenAIChat", "DeepSeekChat", "LocalChat", "OpenAICompatibleChat"]
