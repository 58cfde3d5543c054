"""Batches under the [[sites]] rules: a page of a `never` site is not fetched, stored or sent
(its item says why); `strip_query`, `local_only` and redaction apply to a batch's pages as
they do to one capture.

The CLI and the host as subprocesses (URLs fetched from a local HTTP server, the page's site
told apart by the name it is reached under: 127.0.0.1 or localhost); the rest in-process
against the loopback fake provider.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hybrid_engine.batches import Batches
from hybrid_engine.templates import validate

from host_client import HostClient
from polling import wait_for

TEMPLATE = {"name": "digest", "steps": [
    {"id": "page", "action": "capture"},
    {"id": "sum", "action": "openai_chat", "dependencies": ["page"],
     "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.page.outputs.content }}",
                "max_tokens": 50}}]}
NEVER_LOCALHOST = '[[sites]]\nmatch = "localhost"\nrule = "never"\n'
PUBLIC = b"<html><head><title>Tides</title></head><body><p>The tide comes in twice a day.</p></body></html>"
SECRET = b"<html><head><title>Balance</title></head><body><p>Account 5531 holds ultramarine funds.</p></body></html>"


class _Site(BaseHTTPRequestHandler):
    seen: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Site.seen.append(f"{self.headers.get('Host', '').split(':')[0]}{self.path}")
        port = self.server.server_address[1]
        if self.path == "/out":  # a public page that sends the reader on to the private site
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = SECRET if self.path.startswith("/secret") else PUBLIC
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site():
    _Site.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def batch_cli(cli, fake_provider, tmp_path, write_config):
    write_config(NEVER_LOCALHOST)
    cli.env.update(fake_provider.env())
    path = tmp_path / "digest.json"
    path.write_text(json.dumps(TEMPLATE))
    return cli, path


@pytest.fixture
def batches(service, fake_provider_env, monkeypatch):
    tpl = validate(TEMPLATE, "digest.yaml")
    monkeypatch.setattr(service, "template", lambda ref: tpl)
    return Batches(service)


def drain(service):
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))


def stored_bytes(home) -> bytes:
    """Everything the data folder holds on disk (the database and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in home.glob("engine.db*"))


def test_batch_skips_a_url_whose_site_rule_is_never(batch_cli, site, tmp_path, fake_provider, he_home):
    cli, template = batch_cli
    urls = tmp_path / "urls.txt"
    urls.write_text(f"http://127.0.0.1:{site}/tides\nhttp://localhost:{site}/secret?acct=5531\n")
    proc = cli("batch", template, "--urls", urls, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert [i["run_status"] or i["state"] for i in view["items"]] == ["COMPLETED", "blocked"]
    blocked = view["items"][1]
    assert blocked["note"].startswith("localhost is a site you ruled `never` in [[sites]] of config.toml")
    assert blocked["run_id"] is None and view["counts"]["blocked"] == 1 and view["status"] == "completed"
    assert _Site.seen == ["127.0.0.1/tides"], "the never site was fetched"
    assert "localhost is a site you ruled `never`" in proc.stderr
    assert all("ultramarine" not in json.dumps(r.body) for r in fake_provider.requests)
    assert b"/secret" not in stored_bytes(he_home) and b"5531" not in stored_bytes(he_home)


def test_a_redirect_to_a_site_ruled_never_is_not_followed(batch_cli, site, tmp_path, he_home):
    cli, template = batch_cli
    urls = tmp_path / "urls.txt"
    urls.write_text(f"http://127.0.0.1:{site}/tides\nhttp://127.0.0.1:{site}/out\n")
    proc = cli("batch", template, "--urls", urls, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert [i["run_status"] or i["state"] for i in view["items"]] == ["COMPLETED", "blocked"]
    assert view["items"][1]["note"].startswith("redirected to localhost, a site you ruled `never`")
    assert _Site.seen == ["127.0.0.1/tides", "127.0.0.1/out"], "the redirect to the never site was followed"
    assert b"/secret" not in stored_bytes(he_home)


def test_a_page_from_the_browser_on_a_never_site_is_not_stored_or_sent(he_home, fake_provider, write_config):
    write_config('[[sites]]\nmatch = "*.bank.example"\nrule = "never"\n')
    (he_home / "templates").mkdir(parents=True, exist_ok=True)
    (he_home / "templates" / "digest.json").write_text(json.dumps(TEMPLATE))
    tabs = [{"content": "<p>tide tables</p>", "source_url": "https://example.com/tides", "content_type": "html"},
            {"content": SECRET.decode(), "source_url": "https://my.bank.example/statement?id=5531",
             "content_type": "html", "title": "Balance"}]
    with HostClient(he_home, extra_env=fake_provider.env()) as host:
        host.call("hello", protocol=1)
        est = host.call("batch.estimate", template="digest", pages=tabs)
        assert est["pages"] == 1 and est["blocked_pages"] == 1 and "1 page(s) left out by a site rule" in est["text"]
        batch = host.call("batch.start", template="digest", pages=tabs)
        assert [i["state"] for i in batch["items"]] == ["waiting", "blocked"]
        assert batch["items"][1]["note"].startswith("my.bank.example is a site you ruled `never`")
        assert batch["items"][1]["source"] == "https://my.bank.example/"  # the site, not the page's address
        done = wait_for(lambda: (lambda b: b if b["status"] != "running" else None)(
            host.call("batch.get", batch_id=batch["id"])), what="the batch to finish")
        assert done["status"] == "completed" and done["counts"]["completed"] == 1
        assert host.stdout_problems == []
    assert len(fake_provider.requests) == 1 and "ultramarine" not in json.dumps(fake_provider.requests[0].body)
    assert b"ultramarine" not in stored_bytes(he_home) and b"5531" not in stored_bytes(he_home)


def test_strip_query_applies_to_a_batch_page_as_to_a_single_capture(service, batches, write_config, he_home):
    write_config('[[sites]]\nmatch = "shop.example"\nrule = "strip_query"\n')
    url = "https://shop.example/cart?session=c0ffee#pay"
    b = batches.create("digest", start=True)
    item = batches.add_page(b, {"content": f"<p>Cart</p><a href='{url}'>back</a>", "source_url": url,
                                "content_type": "text/html"})
    assert item["state"] == "waiting"
    drain(service)
    view = batches.view(b)
    assert view["items"][0]["source"] == "https://shop.example/cart"
    page = service.step_outputs(view["items"][0]["run_id"], "page")["outputs"]
    assert page["source_url"] == "https://shop.example/cart" and "c0ffee" not in page["content"]
    assert b"c0ffee" not in stored_bytes(he_home)


def test_a_never_rule_added_while_a_page_waits_blocks_it_when_its_run_would_be_made(
        service, batches, write_config, fake_provider_env):
    b = batches.create("digest")
    batches.add_page(b, {"content": "<p>one</p>", "source_url": "https://example.com/1"})
    batches.add_page(b, {"content": "<p>two</p>", "source_url": "https://later.example/2"})
    write_config('[[sites]]\nmatch = "later.example"\nrule = "never"\n')
    batches.resume(b)
    drain(service)
    view = batches.view(b)
    assert [i["run_status"] or i["state"] for i in view["items"]] == ["COMPLETED", "blocked"]
    assert view["items"][1]["note"].startswith("later.example is a site you ruled `never`")
    assert len(fake_provider_env.requests) == 1


def test_a_local_only_page_in_a_batch_goes_to_no_cloud_model(service, batches, write_config, fake_provider_env):
    write_config('[[sites]]\nmatch = "mail.example"\nrule = "local_only"\n')
    b = batches.create("digest", start=True)
    batches.add_page(b, {"content": "<p>inbox</p>", "source_url": "https://mail.example/inbox"})
    drain(service)
    view = batches.view(b)
    assert view["items"][0]["run_status"] == "FAILED" and "local model only" in view["items"][0]["error"]
    assert fake_provider_env.requests == []


def test_a_batch_page_is_redacted_before_a_cloud_model_as_a_single_capture_is(
        service, fake_provider_env, monkeypatch):
    tpl = validate({**TEMPLATE, "redact": ["email"]}, "digest.yaml")
    monkeypatch.setattr(service, "template", lambda ref: tpl)
    batches = Batches(service)
    b = batches.create("digest", start=True)
    batches.add_page(b, {"content": "<p>Write to jane.doe@example.org</p>", "source_url": "https://example.com/c"})
    drain(service)
    assert batches.view(b)["counts"]["completed"] == 1
    sent = json.dumps(fake_provider_env.requests[0].body)
    assert "jane.doe@example.org" not in sent


def test_the_browser_filling_a_login_page_from_a_never_site_blocks_the_item(service, batches, write_config):
    b = batches.create("digest")
    item = batches.add_unusable(b, "https://intranet.example/report", "needs_browser", "behind a login (HTTP 401)")
    write_config('[[sites]]\nmatch = "*.example"\nrule = "never"\n')
    view = batches.fill(b, item["pos"], {"content": "<p>figures</p>", "source_url": "https://sso.example/report"})
    assert view["items"][0]["state"] == "blocked" and "sso.example is a site you ruled `never`" in view["items"][0]["note"]
    assert service.store.batch_runs(b, ("PENDING", "RUNNING", "COMPLETED")) == []
