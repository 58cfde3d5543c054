"""Whether a provider's token usage can be billed as reported, and our own count when not.

A reply was paid for whatever its `usage` says. A provider (or a proxy, or an
OpenAI-compatible server) that leaves usage out, reports zeros or negative numbers,
or claims far more output than the request allowed would otherwise book the call at
$0 (or at nonsense), and budgets that sum step costs would let later calls through.
So a reply's usage is checked, and when it is not usable the call is priced from our
own count instead: the prompt as sent (exact where we hold the model's tokenizer) and
the text that came back, reasoning included. That figure is labelled estimated.

Only the counts are checked here; pricing stays in pricing.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import pricing, tokens

# A provider may count a stop token or some framing past the limit it was given; an
# answer reported far beyond it is not a count of what was generated.
OVERRUN_FACTOR = 1.5
OVERRUN_SLACK = 64
# No model writes this many tokens in one answer; beyond it a count is garbage even for
# a model whose own output limit we do not know.
ABSURD_OUTPUT_TOKENS = 1_000_000
# A provider refuses a prompt longer than the model's context window, so one it answered
# cannot have been far longer; nor can any prompt be this long.
ABSURD_PROMPT_TOKENS = 100_000_000
# Tokenizers differ between vendors, but not by half: a count below this share of our
# own lower bound for the same text is not a count of what was sent (or written).
UNDERRUN_SHARE = 0.5
# What of a provider's raw usage is kept on the record.
RECORD_DEPTH = 3
RECORD_STRING = 80
RECORD_ITEMS = 32


@dataclass(frozen=True)
class Estimate:
    usage: pricing.Usage
    exact_prompt: bool  # the prompt was counted with the model's own tokenizer
    tokenizer: str  # the vocabulary counted with, or "heuristic"


def _negatives(raw: Any, path: str = "") -> list[str]:
    if isinstance(raw, bool):
        return []
    if isinstance(raw, (int, float)):
        return [f"{path or 'usage'}={raw:g}"] if raw < 0 else []
    found: list[str] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            found += _negatives(value, f"{path}.{key}" if path else str(key))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            found += _negatives(value, f"{path}[{i}]")
    return found


def problem(*, raw: dict | None, usage: pricing.Usage, reported_total: int | None,
            prompt: str, system: str | None, text: str, reasoning: str | None,
            max_tokens: int | None, max_output: int | None,
            context_window: int | None, prompt_floor: int = 0, answer_floor: int = 0) -> str | None:
    """What makes a reply's usage unusable for billing, in words; None when it is usable.

    `usage` is what the adapter read (negative or non-numeric fields read as 0), `raw` the
    provider's usage object as sent (None: the reply had none), `reported_total` its own
    total when it gives one. `max_output` and `context_window` are the model's documented
    limits, where known. `prompt_floor` and `answer_floor` are the lower bounds of our own
    count of the prompt as sent and of the visible answer: a reply that claims a fraction
    of them (one token for a long page) would otherwise make the call nearly free.
    """
    if raw is None:
        return "the reply carried no token usage"
    negative = _negatives(raw)
    if negative:
        return f"negative token counts ({', '.join(negative[:3])})"
    if usage.prompt_tokens <= 0 and (prompt or system):
        return "zero prompt tokens for a prompt that was not empty"
    if usage.completion_tokens <= 0 and (text or reasoning):
        return "zero completion tokens for an answer that was not empty"
    if usage.prompt_tokens < prompt_floor * UNDERRUN_SHARE:
        return (f"{usage.prompt_tokens:,} prompt tokens for a prompt we count at no fewer "
                f"than {prompt_floor:,}")
    if usage.completion_tokens < answer_floor * UNDERRUN_SHARE:
        return (f"{usage.completion_tokens:,} completion tokens for an answer we count at no "
                f"fewer than {answer_floor:,}")
    window = context_window * OVERRUN_FACTOR + OVERRUN_SLACK if context_window else ABSURD_PROMPT_TOKENS
    if usage.prompt_tokens > min(window, ABSURD_PROMPT_TOKENS):
        return (f"{usage.prompt_tokens:,} prompt tokens, more than the model's context window "
                f"({context_window:,}) takes" if context_window else
                f"{usage.prompt_tokens:,} prompt tokens, more than any model takes")
    # Reasoning may or may not count against max_tokens depending on the provider;
    # the visible answer always does.
    answer = usage.completion_tokens - usage.reasoning_tokens
    if max_tokens is not None and answer > max_tokens * OVERRUN_FACTOR + OVERRUN_SLACK:
        return (f"{usage.completion_tokens:,} completion tokens for a request capped at "
                f"max_tokens {max_tokens:,}")
    ceiling = max(max_output or 0, max_tokens or 0)
    limit = ceiling * OVERRUN_FACTOR + OVERRUN_SLACK if ceiling else ABSURD_OUTPUT_TOKENS
    if usage.completion_tokens > min(limit, ABSURD_OUTPUT_TOKENS):
        return (f"{usage.completion_tokens:,} completion tokens, more than the model can write "
                f"in one answer ({ceiling:,})" if ceiling else
                f"{usage.completion_tokens:,} completion tokens, more than any model writes "
                "in one answer")
    if reported_total is not None and reported_total != usage.total_tokens:
        return (f"a total of {reported_total:,} tokens that is not prompt + completion "
                f"({usage.prompt_tokens:,} + {usage.completion_tokens:,})")
    return None


def estimate(*, prompt: str, system: str | None, text: str, reasoning: str | None,
             model: str, provider: str, cut_at: int | None = None) -> Estimate:
    """Our own count of a call: the prompt as sent with its chat framing, and the answer.

    Hidden reasoning (a model that thinks without returning the thoughts) cannot be
    counted, so for such a model the figure is a floor, except for an answer cut at
    max_tokens (`cut_at`): that one used the whole limit. Cached input is priced as
    uncached, which can only raise the figure.
    """
    sent = tokens.count_chat_tokens(prompt, system, model, provider)
    answer = tokens.count_tokens(text, model, provider).tokens if text else 0
    thought = tokens.count_tokens(reasoning, model, provider).tokens if reasoning else 0
    completion = max(answer + thought, cut_at or 0)
    return Estimate(pricing.Usage(prompt_tokens=sent.tokens, completion_tokens=completion,
                                  reasoning_tokens=completion - answer),
                    exact_prompt=sent.exact,
                    tokenizer=sent.encoding if sent.method == "bpe" else "heuristic")


def record(raw: Any, depth: int = 0) -> Any:
    """The provider's usage for the record, bounded: it comes from outside and is kept in
    the step's metadata, so long strings are cut and deep or wide structures trimmed."""
    if raw is None or isinstance(raw, (bool, int)):
        return raw
    if isinstance(raw, float):  # NaN and infinities are not JSON: the extension could not read them
        return raw if math.isfinite(raw) else str(raw)
    if isinstance(raw, str):
        return raw[:RECORD_STRING]
    if depth >= RECORD_DEPTH:
        return "..."
    if isinstance(raw, dict):
        return {str(k)[:RECORD_STRING]: record(v, depth + 1)
                for k, v in list(raw.items())[:RECORD_ITEMS]}
    if isinstance(raw, (list, tuple)):
        return [record(v, depth + 1) for v in list(raw)[:RECORD_ITEMS]]
    return str(raw)[:RECORD_STRING]


__all__ = ["Estimate", "problem", "estimate", "record"]
