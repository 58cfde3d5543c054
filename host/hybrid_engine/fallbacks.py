"""A model step's `fallback:` models, tried in order when the first choice cannot answer.

    fallback: [gpt-4o-mini]                                  another model, same provider
    fallback: [{provider: openai, model: gpt-4o-mini}]       another provider's model
    fallback: [{provider: local, model: llama3.2}, gpt-4o-mini]

Three things move a step on to its next choice:
  - "retries exhausted": a transient error (5xx, timeout) on the attempt that used the
    step's last retry: the fallbacks are tried at once, in the same attempt;
  - "provider down": the provider cannot be reached (connection refused, DNS): the next
    choice is tried at once, whatever retries remain, since waiting rarely mends it;
  - "budget": a budget (run, batch, daily, monthly) cannot afford the first choice; the
    first choice it can afford starts instead, and nothing is sent to the others.
A choice whose provider has no API key set is passed over for the next (nothing was sent).
A 429 is not one of them: it pauses its provider and the step waits for it (ratelimit.py).
A permanent error (a bad key, an unknown model) is the template's to fix, not a fallback's.

What answered, why, and each attempt (its model, error and what its call cost: 0 when
refused or never sent, its bound when its fate is unknown) go into the step's metadata
under "fallback"; every call sent is also a row of the call journal. Only the template
chooses fallbacks: an entry may not be a reference, so page data never picks a provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .errors import StepBudgetExceeded, StepError, TransientStepError

CHAT_ACTIONS = {"openai": "openai_chat", "deepseek": "deepseek_chat", "local": "local_chat",
                "gemini": "gemini_chat"}
ENTRY_KEYS = ("provider", "model", "max_tokens")
DOWN_CODES = frozenset({"provider_unreachable"})
UNSET_CODES = frozenset({"no_provider"})  # no key for that provider: nothing was sent, the next goes
HELD_CODES = frozenset({"rate_limited", "provider_paused"})  # the provider's pause, not a fallback's cue


def problem(value: Any) -> str | None:
    """What is wrong with a template's `fallback:` value, or None."""
    if not isinstance(value, list) or not value:
        return "expected a list of models: a model id, or {provider, model}"
    for i, entry in enumerate(value):
        where = f"entry {i + 1}"
        if isinstance(entry, str):
            if not entry.strip() or "{{" in entry:
                return f"{where}: expected a model id (not a reference: only the template picks models)"
            continue
        if not isinstance(entry, dict):
            return f"{where}: expected a model id or a table {{provider, model}}"
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            return f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ENTRY_KEYS)})"
        model, provider = entry.get("model"), entry.get("provider")
        if not isinstance(model, str) or not model.strip() or "{{" in model:
            return f"{where}: `model` must be a model id (not a reference)"
        if provider is not None and provider not in CHAT_ACTIONS:
            return f"{where}: provider {provider!r} is not one of {', '.join(CHAT_ACTIONS)}"
        max_tokens = entry.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            return f"{where}: `max_tokens` must be a positive whole number"
    return None


@dataclass
class Choice:
    """One model a step may use: the action that calls it and the params it runs with."""

    action: Any
    params: dict
    provider: str
    model: str

    def label(self) -> str:
        return f"{self.model} ({self.provider})"


def choices(action: Any, params: dict, load: Callable[[str], Any]) -> list[Choice]:
    """The first choice, then each fallback, as the step would run them."""
    base = {k: v for k, v in params.items() if k != "fallback"}
    out = [Choice(action, base, action.spec.provider, str(base.get("model")))]
    for entry in params.get("fallback") or []:
        if isinstance(entry, str):
            entry = {"model": entry}
        provider = entry.get("provider") or action.spec.provider
        fb_action = action if provider == action.spec.provider else load(CHAT_ACTIONS[provider])
        fb_params = {**base, "model": entry["model"]}
        if entry.get("max_tokens"):
            fb_params["max_tokens"] = entry["max_tokens"]
        out.append(Choice(fb_action, fb_params, provider, entry["model"]))
    return out


@dataclass
class Start:
    """Where a step begins: a budget may have ruled out the first choices."""

    index: int = 0
    reason: str | None = None
    attempts: list[dict] = field(default_factory=list)


def affordable(options: list[Choice], check: Callable[[Choice], None], refused: StepBudgetExceeded) -> Start:
    """The first fallback every budget lets start, given that the first choice was refused.
    Raises the first refusal when none fits: that message names the budget to raise."""
    attempts = [_attempt(options[0], refused, "budget", None)]
    for i, option in enumerate(options[1:], start=1):
        try:
            check(option)
        except StepBudgetExceeded as exc:
            attempts.append(_attempt(option, exc, "budget", None))
            continue
        return Start(i, "budget", attempts)
    raise refused


async def run(options: list[Choice], start: Start, *, error_count: int, max_retries: int,
              call: Callable[[Choice], Awaitable[Any]], check: Callable[[Choice], Awaitable[None]],
              abandon: Callable[[BaseException], Awaitable[float | None]], log: Callable[[str], None]) -> Any:
    """Run the step's choices from `start.index` on; the first answer wins.

    `call` runs one choice (one request, under the step's timeout), `check` holds a later
    choice to the budgets before it is sent, `abandon` settles the call journal's row of a
    failed attempt and returns what it may have cost."""
    attempts = list(start.attempts)
    reason = start.reason
    last_retry = error_count + 1 > max_retries
    i = start.index
    while True:
        option = options[i]
        if i > start.index:
            try:
                await check(option)
            except StepBudgetExceeded as exc:
                attempts.append(_attempt(option, exc, "budget", None))
                if i + 1 < len(options):
                    i += 1
                    continue
                raise
        try:
            result = await call(option)
        except TransientStepError as exc:
            if exc.code in HELD_CODES or i + 1 >= len(options):
                raise _with_record(exc, attempts)
            why = "provider down" if exc.code in DOWN_CODES else "retries exhausted" if last_retry else None
            if why is None:
                raise _with_record(exc, attempts)
            cost = await abandon(exc)
            attempts.append(_attempt(option, exc, why, cost))
            log(f"{option.label()} failed ({exc.message.rstrip('.')}): {why}; trying {options[i + 1].label()}")
            reason, i = why, i + 1
            continue
        except StepError as exc:
            if exc.code not in UNSET_CODES or i + 1 >= len(options):
                raise _with_record(exc, attempts)
            cost = await abandon(exc)
            attempts.append(_attempt(option, exc, "no key", 0.0 if cost is None else cost))
            log(f"{option.label()} has no API key set: trying {options[i + 1].label()}")
            reason, i = reason or "no key", i + 1
            continue
        md = dict(result.metadata or {})
        md["fallback"] = {"answered_by": {"provider": option.provider, "model": option.model},
                          "choice": i + 1, "reason": reason, "attempts": attempts}
        result.metadata = md
        if i > 0:
            log(f"answered by fallback {option.label()} (choice {i + 1}, {reason})")
        return result


def _attempt(option: Choice, exc: BaseException, why: str, cost: float | None) -> dict:
    return {"provider": option.provider, "model": option.model, "moved_on": why,
            "error_code": getattr(exc, "code", None), "error": getattr(exc, "message", str(exc)),
            "cost": cost}


def _with_record(exc: StepError, attempts: list[dict]) -> StepError:
    if attempts:
        exc.metadata = {**(exc.metadata or {}), "fallback": {"answered_by": None, "attempts": attempts}}
    return exc


__all__ = ["CHAT_ACTIONS", "Choice", "Start", "affordable", "choices", "problem", "run"]
