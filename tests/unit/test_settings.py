"""settings.py: every config.toml setting with its type and range; one message names them all."""

from __future__ import annotations

import math

import pytest

from hybrid_engine import settings
from hybrid_engine.config import ConfigError


@pytest.mark.parametrize("conf,where,allowed", [
    ({"executor": {"concurrency": 0}}, "[executor] concurrency", "a whole number >= 1"),
    ({"executor": {"concurrency": "eight"}}, "[executor] concurrency", "a whole number >= 1"),
    ({"executor": {"concurrency": True}}, "[executor] concurrency", "a whole number >= 1"),
    ({"executor": {"lease_s": 0}}, "[executor] lease_s", "> 0"),
    ({"executor": {"action_concurrency": {"openai_chat": -1}}}, "[executor.action_concurrency] openai_chat", ">= 1"),
    ({"providers": {"local": {"concurrency": 0}}}, "[providers.local] concurrency", ">= 1"),
    ({"providers": {"openai": {"timeout_s": -5}}}, "[providers.openai] timeout_s", "> 0"),
    ({"providers": {"openai": {"base_url": "api.openai.com"}}}, "[providers.openai] base_url", "http"),
    ({"providers": {"opneai": {}}}, "[providers]", "one of openai"),
    ({"budgets": {"daily_usd": math.nan}}, "[budgets] daily_usd", "finite number of USD >= 0"),
    ({"budgets": {"monthly_usd": math.inf}}, "[budgets] monthly_usd", "finite number of USD >= 0"),
    ({"budgets": {"daily_usd": -1}}, "[budgets] daily_usd", ">= 0"),
    ({"budgets": {"unknown_price": "maybe"}}, "[budgets] unknown_price", "'refuse' or 'allow'"),
    ({"prices": {"gpt-4o": {"input_per_mtok": -2.5, "output_per_mtok": 10}}},
     '[prices."gpt-4o"] input_per_mtok', ">= 0"),
    ({"prices": {"gpt-4o": {"input_per_mtok": 2.5}}}, '[prices."gpt-4o"] output_per_mtok', "missing"),
    ({"models": {"llama3.1": {"context_window": 0}}}, '[models."llama3.1"] context_window', ">= 1"),
    ({"sites": {"match": "*.a.com"}}, "[[sites]]", "an array of tables"),
    ({"sites": [{"match": "*.a.com", "rule": "sometimes"}]}, "[[sites]] #1 rule", "one of never, local_only"),
    ({"sites": [{"match": "*.a.com", "rule": "never"}, {"rule": "never"}]}, "[[sites]] #2 match", "missing"),
    ({"sites": [{"match": "a.*.com", "rule": "never"}]}, "[[sites]] #1 match", "a host name"),
    ({"sites": [{"match": "10.0.0.0/33", "rule": "never"}]}, "[[sites]] #1 match", "a CIDR network"),
    ({"sites": [{"match": "", "rule": "never"}]}, "[[sites]] #1 match", "a non-empty string"),
    ({"sites": ["*.a.com"]}, "[[sites]] #1", "a table with match and rule"),
])
def test_a_bad_setting_names_the_file_the_key_and_the_range(he_home, conf, where, allowed):
    with pytest.raises(ConfigError) as info:
        settings.load(conf)
    message = str(info.value)
    assert message.startswith(str(he_home / "config.toml")) and where in message and allowed in message


def test_every_bad_setting_is_named_in_one_message(he_home):
    with pytest.raises(ConfigError) as info:
        settings.load({"executor": {"concurrency": 0}, "budgets": {"daily_usd": math.nan}})
    assert "[executor] concurrency" in str(info.value) and "[budgets] daily_usd" in str(info.value)


def test_good_settings_come_back_typed_and_unknown_keys_are_left_alone(he_home):
    s = settings.load({"executor": {"concurrency": 4, "backoff_base_s": 1, "future_knob": "x"},
                       "providers": {"local": {"base_url": "http://127.0.0.1:1/v1", "timeout_s": 30}},
                       "budgets": {"daily_usd": 1, "unknown_price": "Allow"},
                       "prices": {"m": {"input_per_mtok": 0, "output_per_mtok": 1}}, "notes": {"folder": "n"}})
    assert s.executor.concurrency == 4 and s.executor.backoff_base_s == 1.0
    assert s.providers["local"].timeout_s == 30.0 and s.budgets == settings.BudgetSettings(1.0, None, "allow")
    assert s.prices["m"] == settings.PriceOverride(0.0, 1.0, None)


def test_site_rules_come_back_in_file_order(he_home):
    rules = settings.load({"sites": [{"match": "*.bank.example", "rule": "never"},
                                     {"match": "10.0.0.0/8", "rule": "local_only"}]}).sites
    assert [(r.match, r.rule) for r in rules] == [("*.bank.example", "never"), ("10.0.0.0/8", "local_only")]


@pytest.mark.parametrize("url", ["http://", "https:///v1", "http://x\nfoo = 1", "https://ok.example/ #x",
                                 "http://a.example:99999/", "http://a.example\x00/"])
def test_a_base_url_without_a_host_or_with_spaces_or_control_characters_is_refused(he_home, url):
    with pytest.raises(ConfigError) as info:
        settings.load({"providers": {"openai": {"base_url": url}}})
    assert "[providers.openai] base_url" in str(info.value) and "http" in str(info.value)
