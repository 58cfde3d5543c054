"""Parts of the HTTP API that need no server: which Host headers are ours, telemetry off."""

from __future__ import annotations

import pytest

from hybrid_engine.httpapi.server import allowed_hosts, is_loopback


def test_a_loopback_server_answers_to_127_0_0_1_and_localhost_with_its_port_only():
    assert allowed_hosts("127.0.0.1", 7717) == {"127.0.0.1:7717", "localhost:7717"}


def test_an_ipv6_loopback_server_answers_to_its_bracketed_address_too():
    assert "[::1]:7717" in allowed_hosts("::1", 7717)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                            ("example.org", False)])
def test_only_loopback_addresses_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_fastapis_telemetry_is_off_even_when_the_environment_asks_for_it(monkeypatch):
    from hybrid_engine.httpapi.app import build_app

    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    app = build_app(None, on_work=lambda: None, db_path=lambda: None)
    assert app._telemetry["auto_configure"] is False and not app._native_telemetry.enabled()
