"""A web page the user visits cannot use the HTTP API: real headless Chromium, fetch() from
another origin on the same machine, against the real `hybrid-engine serve`."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api_server import ApiServer
from e2e_world import CHROMIUM

pytestmark = pytest.mark.e2e

ATTEMPTS = """async ([api, token]) => {
  const out = {};
  const tryFetch = async (name, url, init) => {
    try {
      const r = await fetch(url, init);
      let text = null;
      try { text = await r.text(); } catch (e) { text = "unreadable: " + e; }
      out[name] = {resolved: true, type: r.type, status: r.status, text};
    } catch (e) {
      out[name] = {resolved: false, error: String(e)};
    }
  };
  await tryFetch("with_token", api + "/workflows", {headers: {Authorization: "Bearer " + token}});
  await tryFetch("plain_get", api + "/workflows", {});
  await tryFetch("post_json", api + "/workflows", {method: "POST", headers: {"Content-Type": "application/json",
      Authorization: "Bearer " + token}, body: JSON.stringify({template: "page-text", content: "from a page"})});
  await tryFetch("no_cors_get", api + "/workflows", {mode: "no-cors"});
  await tryFetch("no_cors_post", api + "/workflows", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({template: "page-text", content: "x"})});
  return out;
}"""


@pytest.fixture
def other_origin(tmp_path):
    """A page served from 127.0.0.1 on another port: another origin than the API's."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<!doctype html><title>elsewhere</title><p>a page</p>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "site")))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


def test_a_page_on_another_origin_cannot_read_any_response_even_knowing_the_token(he_home, other_origin):
    from hybrid_engine.templates import seed_templates
    from playwright.sync_api import sync_playwright

    seed_templates(he_home / "templates")
    with ApiServer(he_home) as api, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                           "--disable-background-networking", "--disable-component-update",
                                           "--disable-sync"])
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            page.goto(other_origin)
            got = page.evaluate(ATTEMPTS, [api.base, api.token])
        finally:
            browser.close()
        for name in ("with_token", "plain_get", "post_json"):  # CORS: the promise rejects, nothing to read
            assert got[name]["resolved"] is False and "Failed to fetch" in got[name]["error"], (name, got[name])
        for name in ("no_cors_get", "no_cors_post"):  # an opaque response: no status, no body
            assert got[name] == {"resolved": True, "type": "opaque", "status": 0, "text": ""}, (name, got[name])
        assert any("CORS policy" in line for line in console), console  # reached, and refused by the browser
        status, runs = api.curl("GET", "/workflows")
        assert status == 200 and runs["runs"] == []  # and nothing the page sent was stored
