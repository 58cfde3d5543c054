"""Fixtures for the browser tests live in e2e_world.py (importable by a unique name:
`from conftest import ...` would find tests/integration/conftest.py first)."""

from e2e_world import *  # noqa: F401,F403 - registers the fixtures
from e2e_world import (chromium, chromium_factory, extension_dir, fake_llm, fake_llm_server, he,  # noqa: F401
                       playwright_session, site)
