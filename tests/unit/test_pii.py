"""pii.py: personal data replaced before a cloud model step, and what must be left alone."""

from __future__ import annotations

import pytest

from hybrid_engine.pii import KINDS, check_kinds, iban_ok, luhn_ok, scrub


def one(kind, text):
    return scrub(text, [kind])


@pytest.mark.parametrize("text", ["jane.doe@example.org", "j+tag@mail.example.co.uk", "X_Y-1@sub.domain.io",
                                  "jörg.müller@straße.de", "josé+news@correo.example.es"])
def test_an_email_address_is_replaced(text):
    assert one("email", f"write to {text}.") == ("write to [email].", {"email": 1})


@pytest.mark.parametrize("text", ["user@localhost", "@handle", "a@b", "name at example dot org"])
def test_what_is_not_an_email_address_stays(text):
    assert one("email", text) == (text, {})


@pytest.mark.parametrize("text", ["+44 20 7946 0958", "(555) 123-4567", "555-123-4567", "555.123.4567",
                                  "030 1234567", "+4915112345678", "+1 (555) 123-4567"])
def test_a_phone_number_is_replaced(text):
    assert one("phone", f"call {text} today") == ("call [phone] today", {"phone": 1})


@pytest.mark.parametrize("text", ["on 2024-01-15", "order 123456789", "at 192.168.100.200", "costs 1,234,567.89",
                                  "version 1.2.3", "in 2023 2024 2025", "ISBN 978-3-16-148410-0", "call 112",
                                  "pages 10-20", "at 2024-01-15 10:30:45 UTC", "on 2024-01-15 09:30",
                                  "Order #1234 5678 9012", "10 000 000 000 people", "US$ 1 234 567 890"])
def test_dates_prices_addresses_and_counts_are_not_phone_numbers(text):
    assert one("phone", text) == (text, {})


@pytest.mark.parametrize("text", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
                                  "5500 0000 0000 0004", "3782 822463 10005", "4111\u00a01111\u00a01111\u00a01111",
                                  "4111\u202f1111\u202f1111\u202f1111"])
def test_a_card_number_that_passes_luhn_is_replaced(text):
    assert one("card", f"card {text} ok") == ("card [card] ok", {"card": 1})


@pytest.mark.parametrize("text", ["4111 1111 1111 1112", "1234 5678 9012 3456", "0000 0000 0000 0000",
                                  "4111 1111 111", "tracking 12345678901234567890123"])
def test_a_card_like_number_failing_luhn_or_length_stays(text):
    assert one("card", text) == (text, {})


@pytest.mark.parametrize("text", ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
                                  "FR14 2004 1010 0505 0001 3M02 606"])
def test_an_iban_that_passes_mod_97_is_replaced(text):
    assert one("iban", f"pay to {text} now") == ("pay to [iban] now", {"iban": 1})


@pytest.mark.parametrize("text", ["DE89 3704 0044 0532 0130 01", "GB82WEST12345698765433", "AB12 3456",
                                  "ISO9001CERTIFIEDPLANT"])
def test_an_iban_like_string_failing_mod_97_stays(text):
    assert one("iban", text) == (text, {})


@pytest.mark.parametrize("text", ["sk-proj-abcdefghijklmnopqrstuvwxyz0123", "AKIAIOSFODNN7EXAMPLE",
                                  "ghp_" + "a1B2" * 9, "AIza" + "x" * 35, "hf_" + "aB3d" * 9, "sk_test_" + "4eC3" * 6,
                                  "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"])
def test_an_api_key_shaped_string_is_replaced(text):
    assert one("api_key", f"key={text};") == ("key=[api_key];", {"api_key": 1})


@pytest.mark.parametrize("text", ["sk-short", "skip-this-one-please-ok", "AKIA-not-a-key", "the task-runner"])
def test_words_that_only_look_a_little_like_keys_stay(text):
    assert one("api_key", text) == (text, {})


def test_only_the_kinds_asked_for_are_replaced_and_each_is_counted():
    text = "a@b.org, c@d.org, 4111 1111 1111 1111, +44 20 7946 0958"
    assert scrub(text, ["email"]) == ("[email], [email], 4111 1111 1111 1111, +44 20 7946 0958", {"email": 2})
    assert scrub(text, KINDS)[1] == {"email": 2, "card": 1, "phone": 1}


def test_check_digits():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_unknown_kinds_are_named():
    assert check_kinds(["email", "passport", "card", "ssn"]) == ["passport", "ssn"]


def test_a_private_key_block_is_replaced_whole():
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACB=\n-----END OPENSSH PRIVATE KEY-----"
    assert one("api_key", f"key:\n{pem}\nend") == ("key:\n[api_key]\nend", {"api_key": 1})
