"""sites.py: which [[sites]] rule covers a page, however its URL spells the host."""

from __future__ import annotations

import pytest

from hybrid_engine.sites import (DEFAULTS, PatternError, SiteRule, check_pattern, host_of, is_local_address,
                                 is_local_provider, rules_for, strip_query)

RULES = (SiteRule("*.bank.example", "never"), SiteRule("mail.example", "local_only"),
         SiteRule("10.0.0.0/8", "never"), SiteRule("fc00::/7", "never"), SiteRule("*.bücher.example", "never"),
         SiteRule("shop.example", "strip_query"), SiteRule("*.shop.example", "local_only"))


@pytest.mark.parametrize("url", [
    "https://bank.example/", "https://online.bank.example/login", "https://ONLINE.Bank.Example/",
    "https://online.bank.example./", "https://online.bank.example:8443/x?y#z", "online.bank.example/path",
    "https://user:pw@bank.example/", "http://10.1.2.3/admin", "http://10.1.2.3:8080/", "http://[::ffff:10.0.0.1]/",
    "http://[fd12:3456::1]/", "https://www.bücher.example/", "https://www.xn--bcher-kva.example/",
])
def test_a_never_pattern_covers_the_host_however_it_is_written(url):
    assert rules_for(url, RULES) == {"never"}


@pytest.mark.parametrize("url", [
    "https://notbank.example/", "https://bank.example.evil.test/", "https://example.org/?u=bank.example",
    "http://11.0.0.1/", "http://[fe80::1]/", "file:///home/me/bank.example.html", "about:blank",
    "data:text/html,bank.example", "", None, "http://[::1", "https://mail.example.org/",
])
def test_a_host_outside_every_pattern_gets_no_rule(url):
    assert rules_for(url, RULES) == frozenset()


def test_a_plain_host_pattern_does_not_cover_its_subdomains():
    assert rules_for("https://mail.example/", RULES) == {"local_only"}
    assert rules_for("https://eu.mail.example/", RULES) == frozenset()


def test_several_rules_can_cover_one_page():
    assert rules_for("https://shop.example/?q=1", RULES) == {"strip_query", "local_only"}


@pytest.mark.parametrize("url", [
    "https://online.bank.example\\@evil.test/", "https:online.bank.example/x", "https:/\\bank.example/",
    "https://bank%2Eexample/", "https://bank.example\u3002/", "blob:https://bank.example/0f0e",
    "view-source:https://bank.example/", "https://ba\tnk.example/",
])
def test_a_url_a_browser_reads_as_a_never_page_is_one_for_the_host_too(url):
    assert rules_for(url, RULES) == {"never"}


def test_host_of_normalises_case_trailing_dot_port_and_unicode():
    assert host_of("HTTPS://WWW.Bücher.Example.:443/a") == "www.xn--bcher-kva.example"
    assert host_of("mailto:someone@example.org") is None


@pytest.mark.parametrize("match", ["a.*.com", "*", "*.", "http://a.com/", "a.com:80", "10.0.0.0/40", "a..b", "a b"])
def test_a_bad_pattern_says_what_a_pattern_looks_like(match):
    with pytest.raises(PatternError):
        check_pattern(match)


def test_strip_query_keeps_scheme_host_and_path_only():
    assert strip_query("https://u@shop.example:8443/cart/1?session=abc&x=1#pay") == "https://u@shop.example:8443/cart/1"
    assert strip_query("https://shop.example/") == "https://shop.example/"


@pytest.mark.parametrize("host,local", [
    ("localhost", True), ("127.0.0.1", True), ("[::1]", True), ("192.168.1.20", True), ("10.0.0.5", True),
    ("172.20.0.2", True), ("169.254.1.1", True), ("ollama.local", True), ("gpu.internal", True),
    ("api.openai.com", False), ("8.8.8.8", False), ("172.32.0.1", False), (None, False),
])
def test_local_addresses_are_this_machine_and_the_private_network(host, local):
    assert is_local_address(host) is local


def test_only_the_local_provider_on_a_local_address_is_local():
    assert is_local_provider("local", "http://127.0.0.1:11434/v1")
    assert not is_local_provider("local", "https://ollama.example.com/v1")
    assert not is_local_provider("openai", "http://127.0.0.1:4000/v1")  # a proxy may forward to the cloud


@pytest.mark.parametrize("base_url", ["http://localhost\\@api.example.com/v1", "http://127.0.0.1\\@8.8.8.8:11434/v1"])
def test_a_base_url_an_http_client_sends_to_a_public_host_is_not_local(base_url):
    assert not is_local_provider("local", base_url)


def test_every_offered_default_is_a_valid_pattern_and_rule():
    for match, rule, _why in DEFAULTS:
        check_pattern(match)
        assert rule in ("never", "local_only", "strip_query")
