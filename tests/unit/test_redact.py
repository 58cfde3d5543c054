"""redact.py: configured keys and URL credentials are masked wherever they appear."""

from __future__ import annotations

import json

from hybrid_engine.redact import public_url, redact


def test_url_password_and_key_like_query_parameters_are_masked(he_home):
    text = "GET https://user:secret-pw@host.example/v1?api-key=XYZ123&x=1&access_token=tok456 failed"
    masked = redact(text)
    assert "secret-pw" not in masked and "XYZ123" not in masked and "tok456" not in masked
    assert "https://user:***@host.example/v1?api-key=***&x=1&access_token=***" in masked


def test_keys_from_keys_json_and_config_toml_are_masked(he_home):
    he_home.mkdir(parents=True)
    (he_home / "keys.json").write_text(json.dumps({"openai": "stored-0123456789"}), encoding="utf-8")
    (he_home / "config.toml").write_text('[providers.gemini]\napi_key = "conf-0123456789"\n', encoding="utf-8")
    masked = redact("keys stored-0123456789 and conf-0123456789 leaked")
    assert masked == "keys *** and *** leaked"


def test_a_shown_base_url_has_no_credentials_or_query():
    assert public_url("https://u:p@host:8080/v1?key=abc") == "https://host:8080/v1"


def test_a_stored_key_with_surrounding_whitespace_is_masked_as_it_is_used(he_home):
    he_home.mkdir(parents=True)
    (he_home / "keys.json").write_text(json.dumps({"local": "  stored-0123456789\n"}), encoding="utf-8")
    (he_home / "config.toml").write_text('[providers.gemini]\napi_key = " conf-0123456789 "\n', encoding="utf-8")
    assert redact("keys stored-0123456789 and conf-0123456789 leaked") == "keys *** and *** leaked"


def test_basic_auth_credentials_echoed_by_a_proxy_are_masked(he_home):
    # httpx sends a base URL's user:password@ as an Authorization: Basic header.
    import base64

    echoed = base64.b64encode(b"me:hunter2-secret").decode()
    assert redact(f"401: bad header Authorization: Basic {echoed}") == "401: bad header Authorization: Basic ***"


def test_a_configured_key_that_appears_url_encoded_is_masked(he_home):
    he_home.mkdir(parents=True)
    (he_home / "keys.json").write_text(json.dumps({"local": "abc+def/ghi=jkl"}), encoding="utf-8")
    assert redact("GET /v1/models?k=abc%2Bdef%2Fghi%3Djkl failed") == "GET /v1/models?k=*** failed"
