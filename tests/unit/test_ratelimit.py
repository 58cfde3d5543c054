"""The per-provider buckets, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from hybrid_engine import settings
from hybrid_engine.config import ConfigError
from hybrid_engine.ratelimit import BACKOFF_DEFAULT_S, Rate, RateLimiter, tier_rate


def test_requests_per_minute_are_spaced_evenly():
    limiter = RateLimiter({"openai": Rate(rpm=600)}, now=0.0)
    assert limiter.wait_s("openai", 10, 0.0) == 0
    limiter.take("openai", 10, 0.0)
    assert limiter.wait_s("openai", 10, 0.0) == pytest.approx(0.1)
    assert limiter.wait_s("openai", 10, 0.1) == 0


def test_a_call_bigger_than_the_token_bucket_goes_when_it_is_full_and_leaves_it_in_debt():
    limiter = RateLimiter({"openai": Rate(tpm=6000)}, now=0.0)  # 100 tokens a second
    assert limiter.wait_s("openai", 5000, 0.0) == 0
    limiter.take("openai", 5000, 0.0)
    assert limiter.wait_s("openai", 50, 0.0) == pytest.approx(49.5)


def test_a_429_pauses_the_provider_for_retry_after_and_only_that_provider():
    limiter = RateLimiter({"openai": Rate(rpm=600)}, now=0.0)
    assert limiter.back_off("openai", 3.0, 10.0) == 13.0
    assert limiter.wait_s("openai", 1, 12.0) == pytest.approx(1.0)
    assert limiter.blocked(12.0) == ["openai"] and limiter.opens_at(12.0) == pytest.approx(13.0)
    assert limiter.wait_s("gemini", 1, 12.0) == 0


def test_a_429_without_retry_after_pauses_for_the_default_even_without_a_configured_rate():
    limiter = RateLimiter({}, now=0.0)
    assert limiter.back_off("deepseek", None, 0.0) == BACKOFF_DEFAULT_S
    assert limiter.blocked(1.0) == ["deepseek"]


def test_a_429_after_a_look_that_found_nothing_blocked_blocks_its_provider_at_the_next_look():
    limiter = RateLimiter({"openai": Rate(rpm=600)}, now=0.0)
    assert limiter.blocked(1.0) == []  # calm: the next looks are answered without looking
    limiter.back_off("deepseek", 30.0, 1.0)
    assert limiter.blocked(2.0) == ["deepseek"]


def test_a_request_taken_after_a_look_that_found_nothing_blocked_counts_at_the_next_look():
    limiter = RateLimiter({"openai": Rate(rpm=1)}, now=0.0)
    assert limiter.blocked(0.0) == []
    limiter.take("openai", 10, 0.0)  # the minute's one request
    assert limiter.blocked(1.0) == ["openai"]
    assert limiter.blocked(60.0) == []


def test_a_tier_gives_its_documented_limits_and_rpm_or_tpm_override_them():
    assert not tier_rate("openai", None, None, None).limited  # not paced unless configured
    assert tier_rate("openai", "tier1", None, None) == Rate(rpm=500, tpm=200_000)
    assert tier_rate("gemini", "free", None, None) == Rate(rpm=10, tpm=250_000)
    assert tier_rate("openai", "tier1", 100, 0) == Rate(rpm=100, tpm=None)
    assert not tier_rate("local", None, None, None).limited


def test_rpm_out_of_range_is_refused_with_the_key_and_the_range():
    with pytest.raises(ConfigError) as err:
        settings.load({"providers": {"openai": {"rpm": -5, "tier": "gold"}}})
    message = str(err.value)
    assert "[providers.openai] rpm: expected a number per minute from 0 (no limit) to 1e9, got -5" in message
    assert "[providers.openai] tier: expected one of free, tier1" in message
