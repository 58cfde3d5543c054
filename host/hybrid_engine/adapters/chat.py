"""What every chat action shares: parameters, the context-window rule, keys, estimates,
metadata, pricing, and the translation of HTTP failures into step errors.

A provider module (openai.py, gemini.py) subclasses ChatAdapter and implements
`_complete()`, which performs one request through the provider's SDK and either
returns a ChatReply or raises a StepError built with `http_error()` / `transport_error()`.
No SDK is imported here.

    run(params, ctx)
      -> settings (read now, so a key fixed before `retry` is used)
      -> fit_prompt: check the context window; fail, or truncate when asked
      -> no key: PermanentStepError(code="no_provider") naming the variable and the cost
      -> _complete(): one attempt, SDK retries off; the engine owns retries
      -> usage: the provider's, or our own count (labelled estimated) when it is
         missing or cannot be true (usage.py)
      -> price the usage at the request time -> StepResult(outputs, metadata)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from .. import money, pii, pricing, sites, tokens
from ..config import ConfigError, load_config
from ..settings import ProviderSettings, provider_settings
from ..errors import PermanentStepError, StepError
from . import usage as usage_check
from ..safepath import as_text
from ..settings import load as check_settings
from . import ON_OVERFLOW
from .base import Action, StepContext, StepResult
from .failures import http_error, malformed, parse_retry_after, parse_retry_info, transport_error, utc_now

if TYPE_CHECKING:
    from ..images import Image


log = logging.getLogger(__name__)

# A local server that reports fewer prompt tokens than this share of our count has cut
# the prompt to its own context size (Ollama's num_ctx does so without an error).
SERVER_CUT_RATIO = 0.6
SERVER_CUT_MIN_TOKENS = 1024


@dataclass
class ChatRequest:
    model: str
    prompt: str
    system: str | None
    temperature: float | None
    max_tokens: int | None
    timeout_s: float
    image: "Image | None" = None  # images.py; sent beside the prompt to a vision model
    image_detail: str = "high"
    image_tokens: int = 0  # what the image adds to the prompt (images.image_tokens)
    image_tokens_documented: bool = True


@dataclass
class ChatReply:
    text: str
    finish_reason: str | None
    usage: pricing.Usage
    reasoning: str | None = None
    request_id: str | None = None
    response_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The provider's usage object as it came (None: the reply had none) and its own total,
    # so run() can tell usage it can bill from usage that is missing or nonsense.
    raw_usage: dict[str, Any] | None = None
    reported_total: int | None = None



def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- clients, one per event loop ---------------------------------------------------------

class ClientCache:
    """SDK clients hold connection pools bound to the event loop that first used them."""

    def __init__(self) -> None:
        self._by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = \
            weakref.WeakKeyDictionary()

    def get(self, key: tuple, factory: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        clients = self._by_loop.setdefault(loop, {})
        client = clients.get(key)
        if client is None:
            client = clients[key] = factory()
        return client


# ---- the action ------------------------------------------------------------------------

class ChatAdapter(Action):
    provider: str = ""  # settings key and metadata["provider"]
    label: str = ""  # how messages name the provider
    needs_key: bool = True

    # -- subclasses ------------------------------------------------------------------
    def _prepare(self, settings: ProviderSettings, request: ChatRequest) -> None:
        """Import the SDK and build the client before the clock starts."""

    async def _complete(self, request: ChatRequest, settings: ProviderSettings,
                        ctx: StepContext) -> ChatReply:
        raise NotImplementedError

    # -- parameters --------------------------------------------------------------------
    def _request(self, params: dict[str, Any], settings: ProviderSettings | None = None) -> ChatRequest:
        model = params.get("model")
        prompt = params.get("prompt")
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            prompt = as_text(prompt)  # a for_each step's answers, referenced whole: the reduce's text
        if not isinstance(model, str) or not model.strip():
            raise PermanentStepError(f"{self.spec.name}: the `model` parameter is required "
                                     "(the provider's model id, e.g. gpt-4o-mini).", code="bad_params")
        if not isinstance(prompt, str):
            raise PermanentStepError(f"{self.spec.name}: the `prompt` parameter must be text.",
                                     code="bad_params")
        from ..images import bytes_in_text

        found = bytes_in_text(prompt)
        if found:
            raise PermanentStepError(
                f"{self.spec.name}: the prompt holds {found}'s bytes as base64 text, which a model reads as tokens of "
                "nothing: read a PDF with an extract_text step first; give an image to a vision model with the "
                "step's `image` parameter.", code="binary_in_prompt")
        system = params.get("system")
        temperature = params.get("temperature")
        max_tokens = params.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise PermanentStepError(f"{self.spec.name}: `max_tokens` must be a positive integer.",
                                     code="bad_params")
        timeout_s = params.get("timeout_s") or (settings.timeout_s if settings else None) \
            or getattr(self.spec, "default_timeout_s", 120.0)
        request = ChatRequest(model=model.strip(), prompt=prompt, system=system or None,
                              temperature=float(temperature) if temperature is not None else None,
                              max_tokens=max_tokens, timeout_s=float(timeout_s))
        if params.get("image"):
            self._attach_image(request, params)
        return request

    def _attach_image(self, request: ChatRequest, params: dict[str, Any]) -> None:
        from ..images import ImageError, image_tokens, read_image

        if self.provider == "deepseek":
            raise PermanentStepError(f"{self.spec.name}: DeepSeek's chat models take no images; use "
                                     "openai_chat, gemini_chat or a local vision model.", code="bad_params")
        detail = params.get("image_detail") or "high"
        if detail not in ("high", "low"):
            raise PermanentStepError(f"{self.spec.name}: image_detail must be 'high' or 'low', not {detail!r}.",
                                     code="bad_params")
        try:
            image = read_image(params["image"])
        except ImageError as exc:
            raise PermanentStepError(exc.message, code=exc.code) from exc
        request.image, request.image_detail = image, detail
        request.image_tokens, request.image_tokens_documented = image_tokens(
            request.model, self.provider, image.width, image.height, detail)

    def _redact(self, request: ChatRequest, params: dict[str, Any], settings: ProviderSettings) -> dict | None:
        """The template's `redact:` kinds replaced in what goes to a cloud model (a local one gets
        the text as it is); how many of each, or None when nothing was asked."""
        kinds = params.get("redact")
        if not kinds or sites.is_local_provider(self.provider, settings.base_url):
            return None
        request.prompt, counts = pii.scrub(request.prompt, kinds)
        if request.system:
            request.system, more = pii.scrub(request.system, kinds)
            for kind, n in more.items():
                counts[kind] = counts.get(kind, 0) + n
        return counts

    def outgoing(self, params: dict[str, Any]) -> dict[str, Any]:
        """What this step would send, as run() builds it: for the user to see before it goes."""
        config = self._config(strict=False)
        try:
            settings = provider_settings(self.provider, config)
        except ConfigError:
            settings = provider_settings(self.provider, config, keys_file=False)
        request = self._request(params, settings)
        counts = self._redact(request, params, settings)
        return {"provider": self.provider, "model": request.model,
                "local": sites.is_local_provider(self.provider, settings.base_url),
                "system": request.system, "prompt": request.prompt, "redacted": counts or {}}

    @staticmethod
    def _on_overflow(params: dict[str, Any]) -> str:
        value = params.get("on_overflow") or "fail"
        if value not in ON_OVERFLOW:
            raise PermanentStepError(f"on_overflow must be 'fail', 'truncate' or 'map_reduce', not {value!r}.",
                                     code="bad_params")
        return value

    # -- the context-window rule ---------------------------------------------------------
    def fit_prompt(self, request: ChatRequest, on_overflow: str,
                   config: dict | None = None) -> dict[str, Any]:
        """Fail or truncate a prompt that does not fit; returns metadata to record."""
        limits = tokens.model_limits(request.model, self.provider, config)
        window = limits.context_window
        if window is None:
            return {}
        info: dict[str, Any] = {"context_window": window}
        budget = window - (request.max_tokens or 0) - request.image_tokens
        system = request.system or ""
        overhead = tokens.TOKENS_PER_MESSAGE * (2 if system else 1) + tokens.REPLY_PRIMING
        if tokens.max_tokens_bound(request.prompt) + tokens.max_tokens_bound(system) + overhead <= budget:
            return info  # cannot overflow: every token covers at least one byte
        count = tokens.count_chat_tokens(request.prompt, system, request.model, self.provider)
        if count.tokens <= budget:
            return info
        reserved = f", {request.max_tokens:,} of them kept for the answer" if request.max_tokens else ""
        approx = "" if count.exact else "about "
        if on_overflow != "truncate":
            raise PermanentStepError(
                f"The prompt is {approx}{count.tokens:,} tokens but {request.model} accepts at most "
                f"{budget:,} (its context window is {window:,} tokens{reserved}). Nothing was sent. "
                "Set `on_overflow: truncate` on the step to send the first part of it, "
                "or choose a model with a larger context window.",
                code="context_overflow",
                metadata={"provider": self.provider, "model": request.model,
                          "prompt_tokens_estimated": count.tokens, "context_window": window})
        prompt_count = tokens.count_tokens(request.prompt, request.model, self.provider)
        fixed = count.tokens - prompt_count.tokens
        margin = 1.0 if count.exact else 1.0 / (1.0 + count.slack / 2)
        target = int(math.floor((budget - fixed) * margin))
        if target <= 0:
            raise PermanentStepError(
                f"The system message alone is {approx}{fixed:,} tokens, more than the "
                f"{budget:,} {request.model} takes; nothing can be kept of the prompt.",
                code="context_overflow", metadata={"provider": self.provider, "model": request.model})
        encoding, _ = tokens.encoding_for(request.model, self.provider)
        kept_text, kept, total = tokens.truncate(request.prompt, target, encoding)
        request.prompt = kept_text
        share = kept / total if total else 1.0
        info.update({"truncated": True, "truncated_by": "engine",
                     "prompt_kept_share": round(share, 4),
                     "prompt_tokens_before_truncation": total, "prompt_tokens_kept": kept,
                     "prompt_chars_kept": len(kept_text)})
        return info

    def _server_cut(self, request: ChatRequest, reported: int, on_overflow: str,
                    meta: dict[str, Any]) -> None:
        """A local server that read far fewer tokens than we sent has cut the prompt."""
        if self.provider != "local" or not reported:
            return
        if tokens.max_tokens_bound(request.prompt) < SERVER_CUT_MIN_TOKENS:
            return
        sent = tokens.count_chat_tokens(request.prompt, request.system, request.model,
                                        self.provider).tokens
        if sent < SERVER_CUT_MIN_TOKENS or reported >= sent * SERVER_CUT_RATIO:
            return
        share = reported / sent
        if on_overflow != "truncate":
            raise PermanentStepError(
                f"The local server read only {reported:,} of about {sent:,} prompt tokens: it cut "
                "the prompt to its own context size (Ollama's num_ctx, LM Studio's context "
                "length), so the answer would cover part of the page only. Raise the context "
                "size on the server, or set `on_overflow: truncate` on the step and "
                f'`[models."{request.model}"] context_window` in config.toml.',
                code="context_overflow",
                metadata={**meta, "prompt_tokens_estimated": sent})
        meta.update({"truncated": True, "truncated_by": "server",
                     "prompt_kept_share": round(share, 4),
                     "prompt_tokens_before_truncation": sent})

    def _call_bound(self, request: ChatRequest, config: dict) -> dict[str, Any]:
        """What the journal records before the request goes: the most this call can cost."""
        count = tokens.count_chat_tokens(request.prompt, request.system, request.model, self.provider)
        max_out = request.max_tokens or tokens.model_limits(request.model, self.provider, config).max_output_tokens
        cost = pricing.price(request.model, self.provider, pricing.Usage(count.high + request.image_tokens, max_out),
                             config=config)
        return {"provider": self.provider, "model": request.model, "prompt_tokens": count.tokens + request.image_tokens,
                "max_output_tokens": max_out, "cost_max": None if cost.price_unknown else cost.usd}

    # -- keys and estimates ----------------------------------------------------------------
    def estimate(self, params: dict[str, Any]) -> dict:
        """Prompt tokens and a cost range, offline; never calls the provider."""
        request = self._request(params)
        on_overflow = params.get("on_overflow") or "fail"
        config = self._config(strict=False)
        limits = tokens.model_limits(request.model, self.provider, config)
        count = tokens.count_chat_tokens(request.prompt, request.system, request.model, self.provider)
        max_out = request.max_tokens or limits.max_output_tokens
        extra = request.image_tokens
        low, high = count.low + extra, count.high + extra
        fits = True
        if limits.context_window is not None:
            budget = limits.context_window - (request.max_tokens or 0)
            fits = count.tokens + extra <= budget
            if not fits and on_overflow == "truncate":
                low, high = min(low, budget), min(high, budget)
        cost_min = pricing.price(request.model, self.provider, pricing.Usage(low, 0), config=config)
        cost_max = pricing.price(request.model, self.provider, pricing.Usage(high, max_out),
                                 config=config)
        return {
            "provider": self.provider, "model": request.model,
            "prompt_tokens": count.tokens + extra, "prompt_tokens_min": low, "prompt_tokens_max": high,
            "max_output_tokens": max_out,
            **({"image_tokens": extra, "image_tokens_estimated": not request.image_tokens_documented}
               if request.image is not None else {}),
            "cost_min": cost_min.usd, "cost_max": cost_max.usd,
            "price_unknown": cost_max.price_unknown, "price_source": cost_max.source,
            "tokenizer": count.encoding if count.method == "bpe" else "heuristic",
            "exact": count.exact, "context_window": limits.context_window,
            "fits": fits, "on_overflow": on_overflow,
            **({} if fits else {"warning": (
                f"the prompt is {'' if count.exact else 'about '}{count.tokens:,} tokens, over the "
                f"{limits.context_window:,}-token context window of {request.model}: "
                + ("it will be truncated" if on_overflow == "truncate" else
                   "it will be summarised in parts, then combined" if on_overflow == "map_reduce" else
                   "the step will fail unless it sets on_overflow: truncate or map_reduce"))}),
        }

    def _safe_estimate(self, params: dict[str, Any]) -> dict | None:
        try:
            return self.estimate(params)
        except Exception:  # the estimate only decorates a message
            return None

    def _cost_phrase(self, params: dict[str, Any], est: dict | None = None) -> str:
        est = est if est is not None else self._safe_estimate(params)
        if est is None:
            return ""
        what = f"{est['model']}, about {est['prompt_tokens']:,} prompt tokens, " \
               f"up to {est['max_output_tokens']:,} output tokens"
        if est["price_unknown"]:
            return f" This step's price is unknown ({what})."
        return f" This step would have cost about {money.usd(est['cost_min'])} to {money.usd(est['cost_max'])} ({what})."

    def _no_key(self, settings: ProviderSettings, params: dict[str, Any]) -> PermanentStepError:
        est = self._safe_estimate(params)
        metadata = {"provider": self.provider, "model": params.get("model"),
                    "key_env": settings.key_env}
        if est is not None:
            metadata["estimate"] = est
        return PermanentStepError(
            f"No {self.label} API key. Set {settings.key_env}, or run "
            f"`hybrid-engine keys set {self.provider}` (a host started by the browser does not "
            f"see variables exported in your shell).{self._cost_phrase(params, est)}",
            code="no_provider", metadata=metadata)

    # -- running -------------------------------------------------------------------------
    def _config(self, strict: bool = True) -> dict:
        """config.toml, read once per call so every part of it sees the same settings, and
        checked (with this provider's key) before anything is sent."""
        try:
            conf = load_config()
            if strict:
                check_settings(conf)
                provider_settings(self.provider, conf)  # a broken keys.json, said here
            return conf
        except ConfigError as exc:  # say so, do not retry: the user has to fix a file
            if not strict:
                return {}
            raise PermanentStepError(f"{self.label} settings could not be read: {exc}",
                                     code="bad_config") from exc

    async def run(self, params: dict[str, Any], ctx: StepContext) -> StepResult:
        config = self._config()
        settings = provider_settings(self.provider, config)
        request = self._request(params, settings)
        redacted = self._redact(request, params, settings)
        on_overflow = self._on_overflow(params)
        if self.needs_key and not settings.api_key:
            raise self._no_key(settings, params)
        if tokens.max_tokens_bound(request.prompt) > 200_000:
            fit = await asyncio.to_thread(self.fit_prompt, request, on_overflow, config)
        else:
            fit = self.fit_prompt(request, on_overflow, config)
        if fit.get("truncated"):
            ctx.log(f"prompt truncated to fit {request.model}'s context window: kept "
                    f"{fit['prompt_kept_share']:.0%} ({fit['prompt_tokens_kept']:,} of "
                    f"{fit['prompt_tokens_before_truncation']:,} tokens)")
        self._prepare(settings, request)
        if ctx.journal is not None:
            if tokens.max_tokens_bound(request.prompt) > 20_000:
                bound = await asyncio.to_thread(self._call_bound, request, config)
            else:
                bound = self._call_bound(request, config)
            await ctx.journal(**bound)
        started = utc_now()
        t0 = time.perf_counter()
        try:
            reply = await self._complete(request, settings, ctx)
        except StepError as exc:
            exc.metadata.setdefault("provider", self.provider)
            exc.metadata.setdefault("model", request.model)
            exc.metadata.setdefault("duration_ms", round((time.perf_counter() - t0) * 1000))
            exc.metadata.setdefault("timestamp", iso(started))
            raise
        duration_ms = round((time.perf_counter() - t0) * 1000)
        usage, billing = await self._billable_usage(request, reply, config)
        cost = pricing.price(request.model, self.provider, usage, started, config)
        if billing.get("usage_source") == "estimated":
            # A local model's $0 does not depend on the count; any other figure does.
            billing["cost_estimated"] = cost.usd is not None and cost.source != "local"
            ctx.log(f"{self.label} gave no usable token usage ({billing['usage_problem']}): "
                    f"priced from our own count of {usage.prompt_tokens:,} prompt and "
                    f"{usage.completion_tokens:,} completion tokens, "
                    + ("price unknown" if cost.usd is None else "free (local model)"
                       if cost.source == "local" else f"about {money.usd(cost.usd)} (estimated)"))
        meta: dict[str, Any] = {
            "provider": self.provider,
            "model": request.model,
            "response_model": reply.response_model,
            "tokens": usage.total_tokens,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            **cost.as_metadata(),
            **billing,
            "duration_ms": duration_ms,
            "timestamp": iso(started),
            "request_id": reply.request_id,
            "finish_reason": reply.finish_reason,
            "attempt": ctx.attempt,
        }
        meta.update(fit)
        meta.update(reply.extra)
        if redacted is not None:
            meta["redacted"] = redacted
        if reply.finish_reason == "length":
            limit = f"max_tokens {request.max_tokens:,}" if request.max_tokens else \
                "the model's output limit"
            ctx.log(f"the answer was cut at {limit} (finish_reason: length): it is incomplete; "
                    "raise max_tokens on the step for the whole answer")
        if self.provider == "local" and billing["usage_source"] == "provider":
            await asyncio.to_thread(self._server_cut, request, usage.prompt_tokens, on_overflow, meta)
        if cost.price_unknown:
            ctx.log(f"no price known for {self.provider} model {request.model}: cost recorded "
                    f'as unknown (set [prices."{request.model}"] in config.toml to price it)')
        outputs: dict[str, Any] = {"text": reply.text, "finish_reason": reply.finish_reason,
                                   "sent": {"system": request.system, "prompt": request.prompt}}
        if reply.reasoning:
            outputs["reasoning"] = reply.reasoning
        return StepResult(outputs=outputs, metadata=meta)

    async def _billable_usage(self, request: ChatRequest, reply: ChatReply,
                              config: dict) -> tuple[pricing.Usage, dict[str, Any]]:
        """The usage to bill and how it was obtained: the provider's, or our own count
        when the provider's is missing or cannot be true (see usage.py)."""
        limits = tokens.model_limits(request.model, self.provider, config)
        # model_limits falls back to a default output limit; only a documented one caps usage.
        documented = limits.source == "table" or limits.max_output_tokens != tokens.DEFAULT_MAX_OUTPUT
        size = tokens.max_tokens_bound(request.prompt) + tokens.max_tokens_bound(reply.text)
        floors = functools.partial(self._count_floors, request, reply.text)
        prompt_floor, answer_floor = await asyncio.to_thread(floors) if size > 200_000 else floors()
        problem = usage_check.problem(
            raw=reply.raw_usage, usage=reply.usage, reported_total=reply.reported_total,
            prompt=request.prompt, system=request.system, text=reply.text,
            reasoning=reply.reasoning, max_tokens=request.max_tokens,
            max_output=limits.max_output_tokens if documented else None,
            context_window=limits.context_window, prompt_floor=prompt_floor, answer_floor=answer_floor)
        if problem is None:
            return reply.usage, {"usage_source": "provider", "cost_estimated": False}
        count = functools.partial(
            usage_check.estimate, prompt=request.prompt, system=request.system, text=reply.text,
            reasoning=reply.reasoning, model=request.model, provider=self.provider,
            cut_at=request.max_tokens if reply.finish_reason == "length" else None)
        est = await asyncio.to_thread(count) if size > 200_000 else count()
        usage = est.usage
        if request.image_tokens:  # our count is of text; the image's tokens are the provider's rule
            import dataclasses

            usage = dataclasses.replace(usage, prompt_tokens=usage.prompt_tokens + request.image_tokens)
        return usage, {
            "usage_source": "estimated", "usage_problem": problem,
            "provider_usage": usage_check.record(reply.raw_usage),
            "estimate_tokenizer": est.tokenizer, "prompt_tokens_exact": est.exact_prompt,
        }

    def _count_floors(self, request: ChatRequest, text: str) -> tuple[int, int]:
        """The least our own count allows for the prompt as sent and for the answer (the
        prompt was counted before it was sent: a cache hit). Nothing for a local server: it is
        free, and its low prompt count is how a prompt it cut to its own context (Ollama's
        num_ctx) is recognised (_server_cut)."""
        if self.provider == "local":
            return 0, 0
        sent = tokens.count_chat_tokens(request.prompt, request.system, request.model, self.provider)
        answer = tokens.count_tokens(text, request.model, self.provider).low if text else 0
        return sent.low, answer


def as_int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def reported_int(value: Any) -> int | None:
    """A count as the provider reported it, sign kept; None when it gave no number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (math.inf, -math.inf):
        return None
    return int(value)


def raw_usage(obj: Any) -> dict[str, Any] | None:
    """An SDK's usage object as a plain dict, for checking and for the record; None when
    the reply had no usage at all."""
    if obj is None:
        return None
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_none=True, warnings=False)
        except Exception:  # a shape the SDK's model cannot dump: keep what we can say
            pass
    return obj if isinstance(obj, dict) else {"value": str(obj)}


__all__ = ["ChatAdapter", "ChatRequest", "ChatReply", "ClientCache", "http_error",
           "transport_error", "malformed", "parse_retry_after", "parse_retry_info", "as_int",
           "reported_int", "raw_usage"]
