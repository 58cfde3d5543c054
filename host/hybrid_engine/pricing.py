"""Token usage -> USD.

Prices come from genai-prices' bundled data only: `genai_prices.calc_price` reads the
snapshot shipped inside the package unless an `UpdatePrices` updater was started,
and nothing in Hybrid Engine starts one, so no price is ever fetched at run time.
Input, cached input and output are priced separately; genai-prices applies
long-context tiers from the total input tokens and date/time-of-day prices (DeepSeek's
off-peak hours) from the request time, which callers pass in.

What the providers report, and how it maps (all counts are totals, parts included):
  OpenAI    prompt_tokens (cached_tokens inside), completion_tokens (reasoning inside)
  DeepSeek  prompt_tokens = prompt_cache_hit_tokens + prompt_cache_miss_tokens;
            hits are priced as cache reads
  Gemini    prompt_token_count (+ tool_use_prompt_token_count), cached_content_token_count;
            output = candidates_token_count + thoughts_token_count: thoughts bill as output

User overrides in config.toml win over genai-prices:
    [prices."my-model"]           # or [prices."deepseek/deepseek-chat"] for one provider
    input_per_mtok = 0.5
    cached_input_per_mtok = 0.1   # optional, defaults to input_per_mtok
    output_per_mtok = 1.5
Local models cost 0 (source "local") unless an override prices them (a paid
OpenAI-compatible service used through local_chat). A model with no known price costs None with
`price_unknown=True`: unknown is never reported as $0.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

log = logging.getLogger(__name__)

# Hybrid Engine provider -> genai-prices provider id.
PROVIDER_IDS = {"openai": "openai", "deepseek": "deepseek", "gemini": "google"}
LOCAL_PROVIDERS = frozenset({"local"})
MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0  # every input token, cached ones included
    completion_tokens: int = 0  # every output token, reasoning / thoughts included
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache
    reasoning_tokens: int = 0  # the part of completion_tokens spent thinking
    cache_write_tokens: int = 0  # input tokens written to a cache (billed extra by some)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Cost:
    usd: float | None
    input_usd: float | None = None
    output_usd: float | None = None
    source: str | None = None  # "genai-prices", "override", "local"; None: unknown
    priced_as: str | None = None  # the model id the price belongs to

    @property
    def price_unknown(self) -> bool:
        return self.usd is None

    def as_metadata(self) -> dict:
        return {"cost": self.usd, "price_unknown": self.price_unknown,
                "input_cost": self.input_usd, "output_cost": self.output_usd,
                "price_source": self.source, "priced_as": self.priced_as}


UNKNOWN = Cost(None)


def _override(model: str, provider: str, config: dict | None):
    """The [prices."<model>"] entry (or "<provider>/<model>"), checked. A bad table is refused
    before any call (ChatAdapter._config); here, pricing a call already made, it is skipped
    with a warning rather than booked as a negative or nan figure."""
    from . import settings
    from .config import ConfigError

    try:
        prices = settings.prices(config)
    except ConfigError as exc:
        log.warning("price overrides not used: %s", exc)
        return None
    except Exception as exc:  # noqa: BLE001 - an unreadable config.toml must not fail a paid call
        log.warning("price overrides not read: %s", exc)
        return None
    for key in (f"{provider}/{model}", model):
        entry = prices.get(key)
        if entry is not None:
            return entry
    return None


def _price_override(entry, model: str, usage: Usage) -> Cost:
    rate_in = Decimal(str(entry.input_per_mtok))
    rate_out = Decimal(str(entry.output_per_mtok))
    rate_cached = Decimal(str(entry.cached_input_per_mtok)) if entry.cached_input_per_mtok is not None \
        else rate_in
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    input_usd = ((usage.prompt_tokens - cached) * rate_in + cached * rate_cached) / MTOK
    output_usd = usage.completion_tokens * rate_out / MTOK
    return Cost(float(input_usd + output_usd), float(input_usd), float(output_usd),
                "override", model)


def genai_usage(usage: Usage):
    """Our usage as genai-prices' Usage (totals, with the cached and reasoning parts)."""
    from genai_prices import Usage as GPUsage

    fields = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
    if usage.cached_tokens:
        fields["cache_read_tokens"] = min(usage.cached_tokens, usage.prompt_tokens)
    if usage.cache_write_tokens:
        fields["cache_write_tokens"] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        fields["output_reasoning_tokens"] = min(usage.reasoning_tokens, usage.completion_tokens)
    return GPUsage(**fields)


def price(model: str, provider: str, usage: Usage, when: datetime | None = None,
          config: dict | None = None) -> Cost:
    """The cost of one call. `when` is the request time (UTC); None: now."""
    entry = _override(model, provider, config)
    if entry is not None:
        cost = _price_override(entry, model, usage)
        if cost is not None:
            return cost
    if provider in LOCAL_PROVIDERS:
        return Cost(0.0, 0.0, 0.0, "local", model)
    provider_id = PROVIDER_IDS.get(provider)
    if provider_id is None or not model:
        return UNKNOWN
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        from genai_prices import calc_price

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calc = calc_price(genai_usage(usage), model, provider_id=provider_id,
                              genai_request_timestamp=when)
    except LookupError:
        return UNKNOWN
    except Exception as exc:  # a data or usage shape genai-prices rejects: unknown, not 0
        log.warning("no price for %s/%s: %s", provider, model, exc)
        return UNKNOWN
    return Cost(float(calc.total_price), float(calc.input_price), float(calc.output_price),
                "genai-prices", calc.model.id)


def model_context_window(model: str, provider: str) -> int | None:
    """genai-prices' context window for a model, if it knows one."""
    provider_id = PROVIDER_IDS.get(provider)
    if provider_id is None or not model:
        return None
    try:
        from genai_prices import data_snapshot

        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
    except Exception:
        return None
    return info.context_window


def price_known(model: str, provider: str, config: dict | None = None) -> bool:
    return not price(model, provider, Usage(1, 1), config=config).price_unknown


def prices_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("genai-prices")
    except Exception:
        return None


__all__ = ["Usage", "Cost", "UNKNOWN", "price", "genai_usage", "model_context_window",
           "price_known", "prices_version", "PROVIDER_IDS"]
