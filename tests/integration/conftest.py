"""Fixtures for the loopback model providers (see fake_provider.py).

    fake_provider        the running fake, reset before and after each test
    fake_provider_env    the same, with every provider's key and base URL in os.environ
                         (on top of tests/conftest.py's he_home); for a subprocess pass
                         {**os.environ, **fake_provider.env()} or cli.env.update(...)
"""

from __future__ import annotations

import pytest

from fake_provider import FakeProvider


@pytest.fixture(scope="session")
def fake_provider_server():
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake_provider(fake_provider_server):
    fake_provider_server.reset()
    yield fake_provider_server
    fake_provider_server.reset()


@pytest.fixture
def fake_provider_env(he_home, fake_provider, monkeypatch):
    for name, value in fake_provider.env().items():
        monkeypatch.setenv(name, value)
    return fake_provider
