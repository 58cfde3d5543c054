"""Usage -> USD: genai-prices' bundled data, overrides, local, unknown."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

from hybrid_engine import pricing
from hybrid_engine.pricing import Usage, price


def reference(model, provider_id, when=None, **usage):
    from genai_prices import Usage as GPUsage, calc_price

    return float(calc_price(GPUsage(**usage), model, provider_id=provider_id,
                            genai_request_timestamp=when or datetime.now(UTC)).total_price)


@pytest.fixture(autouse=True)
def _home(he_home):
    return he_home


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pricing tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_prices_come_from_bundled_data_without_network(no_network):
    from genai_prices import data_snapshot

    cost = price("gpt-4o", "openai", Usage(1_000, 100))
    assert cost.usd == pytest.approx((1_000 * 2.5 + 100 * 10) / 1e6)
    assert data_snapshot.get_snapshot().from_auto_update is False


def test_cached_input_is_priced_as_cache_reads():
    when = datetime(2026, 3, 2, 12, tzinfo=UTC)
    cost = price("gpt-4o-mini", "openai", Usage(10_000, 500, cached_tokens=6_000), when)
    assert cost.usd == pytest.approx(reference("gpt-4o-mini", "openai", when, input_tokens=10_000,
                                               cache_read_tokens=6_000, output_tokens=500))
    assert cost.usd < price("gpt-4o-mini", "openai", Usage(10_000, 500), when).usd
    assert cost.input_usd + cost.output_usd == pytest.approx(cost.usd)


def test_deepseek_cache_hits_and_the_request_time_matter():
    usage = Usage(20_000, 1_000, cached_tokens=15_000)
    night = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)   # DeepSeek prices differ by time of day
    day = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    for when in (night, day):
        assert price("deepseek-chat", "deepseek", usage, when).usd == pytest.approx(reference(
            "deepseek-chat", "deepseek", when, input_tokens=20_000, cache_read_tokens=15_000,
            output_tokens=1_000))
    assert price("deepseek-chat", "deepseek", usage, night).usd != \
        price("deepseek-chat", "deepseek", usage, day).usd


def test_gemini_thoughts_are_output_and_long_context_tiers_apply():
    when = datetime(2026, 3, 2, 12, tzinfo=UTC)
    thoughts = price("gemini-2.5-flash", "gemini", Usage(5_000, 1_300, reasoning_tokens=1_000), when)
    assert thoughts.usd == pytest.approx(reference("gemini-2.5-flash", "google", when,
                                                   input_tokens=5_000, output_tokens=1_300))
    short = price("gemini-2.5-pro", "gemini", Usage(100_000, 0), when).usd
    long = price("gemini-2.5-pro", "gemini", Usage(300_000, 0), when).usd
    assert long / 300_000 > short / 100_000  # past 200k tokens every input token costs more
    assert long == pytest.approx(reference("gemini-2.5-pro", "google", when, input_tokens=300_000,
                                           output_tokens=0))


def test_unknown_price_is_none_never_zero():
    for model, provider in [("my-finetune", "openai"), ("deepseek-v9-imaginary-xyz", "openai"),
                            ("gpt-4o", "nowhere"), ("", "openai")]:
        cost = price(model, provider, Usage(1_000, 100))
        assert cost.usd is None and cost.price_unknown is True
        assert cost.as_metadata()["cost"] is None and cost.as_metadata()["price_unknown"] is True


def test_local_models_cost_zero_and_say_local():
    cost = price("llama3.1:8b", "local", Usage(50_000, 2_000))
    assert cost.usd == 0.0 and cost.source == "local" and not cost.price_unknown


def test_override_wins_and_prices_parts_separately(write_config):
    write_config("""
        [prices."gpt-4o"]
        input_per_mtok = 2
        cached_input_per_mtok = 1
        output_per_mtok = 8
        [prices."deepseek/my-model"]
        input_per_mtok = 0.5
        output_per_mtok = 1
        [prices."llama3.1"]
        input_per_mtok = 0.1
        output_per_mtok = 0.1
    """)
    cost = price("gpt-4o", "openai", Usage(1_000, 100, cached_tokens=400))
    assert cost.usd == pytest.approx((600 * 2 + 400 * 1 + 100 * 8) / 1e6) and cost.source == "override"
    assert price("my-model", "deepseek", Usage(1_000, 1_000, cached_tokens=500)).usd == \
        pytest.approx((1_000 * 0.5 + 1_000 * 1) / 1e6)  # cached defaults to the input price
    assert price("my-model", "openai", Usage(1, 1)).price_unknown  # another provider's key
    assert price("llama3.1", "local", Usage(1_000_000, 0)).usd == pytest.approx(0.1)


def test_incomplete_override_falls_back_to_genai_prices(write_config):
    write_config('[prices."gpt-4o"]\ninput_per_mtok = 2\n')
    assert price("gpt-4o", "openai", Usage(1_000, 0)).source == "genai-prices"


def test_broken_config_does_not_break_pricing(write_config):
    write_config("[prices\nthis is not toml")
    assert price("gpt-4o", "openai", Usage(1_000, 0)).usd == pytest.approx(0.0025)


def test_context_window_from_genai_prices():
    assert pricing.model_context_window("gpt-4o", "openai") == 128_000
    assert pricing.model_context_window("no-such-model", "openai") is None
