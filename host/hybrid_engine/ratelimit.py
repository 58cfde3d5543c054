"""Requests and tokens per minute, per provider: paced before a call is sent, and a 429
backs off the whole provider, so a batch slows down instead of failing.

    limiter = RateLimiter({"openai": Rate(rpm=500, tpm=200_000)})
    limiter.wait_s("openai", tokens, now)   seconds until a call of `tokens` may go (0: now)
    limiter.take("openai", tokens, now)     book the call
    limiter.back_off("openai", seconds, now)  the provider said 429: nobody sends until then
    limiter.blocked(now)                    providers whose steps are not worth claiming now

One limiter per executor, i.e. per process. The browser's work runs in the data folder's
one background worker (worker.lock), so its calls share one limiter; a foreground
`run --wait` or `batch` in another process paces itself separately, and whatever the two
send together above the provider's limit comes back as 429s, which back both off. Buckets
rather than a shared ledger in SQLite: a write per call would cost more than the call's
bookkeeping everywhere else.

Requests are spaced evenly (a bucket of one request): providers enforce their per-minute
limits over shorter windows too (OpenAI says a limit may be quantised, 600 requests a
minute enforced as 10 a second), so a burst at the start would draw 429s; spaced, no
window of any length sees more than one request above its share. Tokens come in a bucket
of one second's worth, booked with each call's prompt tokens (its answer's are not known
before it comes; a provider that counts `max_tokens` too answers 429 when that is too
much, which pauses it); a call bigger than the bucket may go when the bucket is full and
leaves it in debt, so a long prompt under a small limit waits instead of never going.
"""

from __future__ import annotations

from dataclasses import dataclass

# Documented per provider tier (README "Provider limits"): what a new account of that tier
# gets for its usual small model. `tier` in [providers.NAME] picks a row; rpm / tpm override.
# None: no engine-side limit (429s still back the provider off).
TIER_DEFAULTS: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "openai": {"free": (3, 40_000), "tier1": (500, 200_000), "tier2": (5_000, 2_000_000),
               "tier3": (5_000, 4_000_000), "tier4": (10_000, 10_000_000), "tier5": (30_000, 150_000_000),
               "unlimited": (None, None)},
    "gemini": {"free": (10, 250_000), "tier1": (1_000, 1_000_000), "tier2": (2_000, 3_000_000),
               "tier3": (10_000, 8_000_000), "unlimited": (None, None)},
    "deepseek": {"unlimited": (None, None)},  # DeepSeek publishes no fixed limit
    "local": {"unlimited": (None, None)},  # your own machine: concurrency is the limit
}
# Not paced unless config.toml names a tier or a rate: a limit the account does not have
# would slow every fan-out for nothing, and a 429 pauses the provider anyway.
DEFAULT_TIER = {"openai": "unlimited", "gemini": "unlimited", "deepseek": "unlimited", "local": "unlimited"}
BACKOFF_DEFAULT_S = 5.0  # a 429 without Retry-After
BACKOFF_CAP_S = 120.0
WORTH_CLAIMING_S = 0.25  # a provider that opens sooner than this is claimed for now


@dataclass(frozen=True)
class Rate:
    rpm: float | None = None
    tpm: float | None = None

    @property
    def limited(self) -> bool:
        return bool(self.rpm) or bool(self.tpm)


def tier_rate(provider: str, tier: str | None, rpm: float | None, tpm: float | None) -> Rate:
    """A provider's limits: its tier's row, with rpm / tpm from config.toml over it (0: none)."""
    default_rpm, default_tpm = TIER_DEFAULTS.get(provider, {}).get(tier or DEFAULT_TIER.get(provider, ""),
                                                                   (None, None))
    rpm = default_rpm if rpm is None else rpm
    tpm = default_tpm if tpm is None else tpm
    return Rate(rpm=rpm or None, tpm=tpm or None)


class _Bucket:
    __slots__ = ("rate_s", "size", "level", "at")

    def __init__(self, per_minute: float, now: float, size: float | None = None) -> None:
        self.rate_s = per_minute / 60.0
        self.size = size if size is not None else max(1.0, self.rate_s)
        self.level = self.size
        self.at = now

    def _fill(self, now: float) -> None:
        if now > self.at:
            self.level = min(self.size, self.level + (now - self.at) * self.rate_s)
            self.at = now

    def wait_s(self, amount: float, now: float) -> float:
        self._fill(now)
        need = min(amount, self.size)
        return 0.0 if self.level >= need else (need - self.level) / self.rate_s

    def take(self, amount: float, now: float) -> None:
        self._fill(now)
        self.level -= amount


class _Gate:
    __slots__ = ("requests", "tokens", "paused_until", "rate_limited")

    def __init__(self, rate: Rate, now: float) -> None:
        self.requests = _Bucket(rate.rpm, now, size=1.0) if rate.rpm else None
        self.tokens = _Bucket(rate.tpm, now) if rate.tpm else None
        self.paused_until = 0.0
        self.rate_limited = 0  # 429s seen, for the run's log and the bench


class RateLimiter:
    """Not thread-safe: the executor's event loop is its only user."""

    def __init__(self, rates: dict[str, Rate] | None = None, now: float = 0.0) -> None:
        self._gates: dict[str, _Gate] = {}
        # Nothing was blocked when last asked and nothing was taken or paused since: time only
        # refills buckets and ends pauses, so nothing is blocked now either. (Asked at every
        # turn of the executor's loop, taken at every call sent.)
        self._calm = False
        self.rates = {name: rate for name, rate in (rates or {}).items() if rate.limited}
        for name, rate in self.rates.items():
            self._gates[name] = _Gate(rate, now)

    def _gate(self, provider: str, now: float) -> _Gate:
        gate = self._gates.get(provider)
        if gate is None:  # no rate configured: only 429s pause it
            gate = self._gates[provider] = _Gate(Rate(), now)
        return gate

    @property
    def providers(self) -> frozenset[str]:
        """Providers whose steps go through the queue, so that a paused one is not claimed."""
        return frozenset(self.rates)

    def wait_s(self, provider: str, tokens: int, now: float) -> float:
        gate = self._gates.get(provider)
        if gate is None:
            return 0.0
        wait = max(0.0, gate.paused_until - now)
        if gate.requests is not None:
            wait = max(wait, gate.requests.wait_s(1, now))
        if gate.tokens is not None:
            wait = max(wait, gate.tokens.wait_s(tokens, now))
        return wait

    def take(self, provider: str, tokens: int, now: float) -> None:
        gate = self._gates.get(provider)
        if gate is None:
            return
        self._calm = False
        if gate.requests is not None:
            gate.requests.take(1, now)
        if gate.tokens is not None:
            gate.tokens.take(tokens, now)

    def back_off(self, provider: str, retry_after: float | None, now: float) -> float:
        """The provider answered 429: nobody here sends to it before the returned time."""
        gate = self._gate(provider, now)
        self._calm = False
        gate.rate_limited += 1
        wait = min(BACKOFF_CAP_S, retry_after if retry_after and retry_after > 0 else BACKOFF_DEFAULT_S)
        gate.paused_until = max(gate.paused_until, now + wait)
        if gate.requests is not None:  # the window the provider counted is full: start it empty
            gate.requests.level = min(gate.requests.level, 0.0)
        return gate.paused_until

    def blocked(self, now: float) -> list[str]:
        """Providers that cannot send for a while: their steps stay queued."""
        if self._calm:
            return []
        names = [name for name, gate in self._gates.items()
                 if gate.paused_until - now > WORTH_CLAIMING_S
                 or gate.requests is not None and gate.requests.wait_s(1, now) > WORTH_CLAIMING_S]
        self._calm = not names
        return names

    def opens_at(self, now: float) -> float | None:
        """When the first blocked provider can send again (the executor wakes then)."""
        times = [now + max(gate.paused_until - now, gate.requests.wait_s(1, now) if gate.requests else 0.0)
                 for name, gate in self._gates.items() if name in self.blocked(now)]
        return min(times) if times else None

    def rate_limited_count(self, provider: str) -> int:
        gate = self._gates.get(provider)
        return gate.rate_limited if gate else 0


__all__ = ["BACKOFF_CAP_S", "BACKOFF_DEFAULT_S", "DEFAULT_TIER", "Rate", "RateLimiter", "TIER_DEFAULTS",
           "tier_rate"]
