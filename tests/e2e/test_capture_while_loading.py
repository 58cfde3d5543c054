"""A page whose parsing is done but whose third-party loads are not (a news page's deferred
ad scripts and trackers) is read at once: the capture injects immediately and waits only
for the parser, in Chromium and in Firefox ESR. Injected at document_idle instead, it
would wait for DOMContentLoaded, that is for every deferred script to arrive."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from e2e_world import wait_for
from test_chromium import wait_js
from test_firefox import firefox  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

# Parsed at once; its deferred third-party script (which holds DOMContentLoaded back) and
# its tracking pixel (which holds the load event back) arrive only when the test says so.
PAGE = b"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Still loading</title>
<script defer src="/ads.js"></script></head>
<body><article><h1>Still loading</h1><p id="lead">The article text is here long before the ads.</p></article>
<img src="/tracker.gif" alt=""></body></html>"""


@pytest.fixture
def slow_site():
    """A page whose one image is answered only when the test lets it go."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path in ("/tracker.gif", "/ads.js"):
                release.wait(120)
                self.send_response(204)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/page.html", release
    release.set()
    server.shutdown()
    server.server_close()


def test_chromium_estimates_a_page_whose_images_are_still_loading(chromium, he, slow_site):
    url, release = slow_site
    tab = chromium.ctx.new_page()
    tab.goto(url, wait_until="commit")
    tab.wait_for_function("document.readyState === 'interactive'")
    popup = chromium.popup(url)
    wait_js(popup, "performance.getEntriesByName('popup:estimate-shown').length > 0")
    assert popup.inner_text("#page-title") == "Still loading"
    assert tab.evaluate("document.readyState") == "interactive"  # ads.js still holds DOMContentLoaded back
    release.set()


def test_firefox_estimates_a_page_whose_images_are_still_loading(firefox, he, slow_site):  # noqa: F811
    url, release = slow_site
    firefox.open_tab(url)
    firefox.open_tab(f"{firefox.base}/popup/popup.html")
    wait_for(lambda: firefox.js("return document.getElementById('connection').dataset.status;") == "connected",
             30, 0.2, "the background to reach the host")
    tab_id = wait_for(lambda: firefox.js("const tabs = await W.browser.tabs.query({});"
                                         "const t = tabs.find(t => t.url === arguments[0]);"
                                         "return t && t.status === 'loading' ? t.id : null;", [url]),
                      30, 0.2, "the page's tab, still loading")
    firefox.m.navigate(f"{firefox.base}/popup/popup.html?tab={tab_id}")
    wait_for(lambda: firefox.js("return performance.getEntriesByName('popup:estimate-shown').length > 0;"),
             30, 0.2, "the estimate")
    assert firefox.js("return document.getElementById('page-title').textContent;") == "Still loading"
    still = firefox.js("const t = await W.browser.tabs.get(arguments[0]); return t.status;", [tab_id])
    assert still == "loading"  # the estimate did not wait for the image
    release.set()
