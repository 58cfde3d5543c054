"""The acceptance flow in real headless Chromium and Firefox ESR, the same steps in both
(whole_flow.py): send two pages, find one in the library by a word of its summary, save it
as a note and read its front matter back, see the first page already sent and reuse its
result at $0, set a missing key in Options and see pre-flight turn green."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_world import FIREFOX
from flow_browsers import ChromiumBrowser, FirefoxBrowser
from whole_flow import flow, install_templates

pytestmark = pytest.mark.e2e


def test_whole_flow_in_chromium(he, site, chromium_factory):
    install_templates(he)
    timings = flow(ChromiumBrowser(chromium_factory()), he, site)
    print("chromium steps (s):", timings)


def test_whole_flow_in_firefox(he, site, extension_dir):
    from test_firefox import Firefox

    if not Path(FIREFOX).exists():
        pytest.fail(f"{FIREFOX} is missing: apt-get install -y firefox-esr")
    install_templates(he)
    he.register_firefox()
    ff = Firefox(he, extension_dir)
    try:
        timings = flow(FirefoxBrowser(ff), he, site)
    finally:
        ff.close()
    print("firefox steps (s):", timings)
