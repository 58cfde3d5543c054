"""`hybrid-engine batch` from a terminal: files and folders, URLs fetched from a local HTTP
server (no network), the combined estimate first; and the fetcher's bounds."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hybrid_engine.fetch import fetch_page

TEMPLATE = """\
name: digest
steps:
  - id: page
    action: capture
  - id: sum
    action: openai_chat
    dependencies: [page]
    params: {model: gpt-4o-mini, prompt: "Summarise: {{ steps.page.outputs.content }}", max_tokens: 50}
"""

PAGE = b"<html><head><title>Tides</title></head><body><p>The tide comes in twice a day.</p></body></html>"
ROUTES = {
    "/tides": (200, {"Content-Type": "text/html; charset=utf-8"}, PAGE),
    "/notes.txt": (200, {"Content-Type": "text/plain"}, b"plain notes"),
    "/private": (403, {"Content-Type": "text/html"}, b"forbidden"),
    "/members": (302, {"Location": "/accounts/login?next=/members"}, b""),
    "/accounts/login": (200, {"Content-Type": "text/html"}, b"<form>sign in</form>"),
    "/archive.zip": (200, {"Content-Type": "application/zip"}, b"PK\x03\x04"),
    "/loop": (302, {"Location": "/loop"}, b""),
    "/gone": (404, {"Content-Type": "text/html"}, b"not here"),
}


class _Pages(BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/slow":
            self.release.wait(30)  # answered only when the test says so
        status, headers, body = ROUTES.get(self.path.split("?")[0], (200, {"Content-Type": "text/html"}, PAGE))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site():
    _Pages.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Pages.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def batch_cli(cli, fake_provider, tmp_path):
    cli.env.update(fake_provider.env())
    path = tmp_path / "digest.yaml"
    path.write_text(TEMPLATE)
    return cli, path


def test_batch_over_a_folder_and_files_runs_each_distinct_page_once(batch_cli, tmp_path):
    cli, template = batch_cli
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "a.html").write_bytes(PAGE)
    (folder / "b.txt").write_text("other text")
    (folder / "ignored.bin").write_bytes(b"\0\1")
    (tmp_path / "copy.html").write_bytes(PAGE)  # the same page again
    proc = cli("batch", template, "--inputs", folder, tmp_path / "copy.html", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["counts"]["completed"] == 2 and view["counts"]["duplicate"] == 1 and view["counts"]["total"] == 3
    assert "estimate: 2 page(s)" in proc.stderr
    assert [i["title"] for i in view["items"]] == ["Tides", "b.txt", "Tides"]


def test_batch_estimate_prints_the_combined_estimate_and_leaves_the_batch_paused(batch_cli, tmp_path):
    cli, template = batch_cli
    (tmp_path / "a.html").write_bytes(PAGE)
    proc = cli("batch", template, "--inputs", tmp_path / "a.html", "--estimate", "--budget", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["estimate"]["pages"] == 1 and out["estimate"]["budgets"][0]["kind"] == "batch"
    view = cli.json("batches", out["batch_id"], "--json")
    assert view["status"] == "paused" and view["counts"]["waiting"] == 1


def test_batch_urls_fetches_public_pages_and_leaves_pages_behind_a_login_to_the_browser(batch_cli, site, tmp_path):
    cli, template = batch_cli
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(["# reading list", f"{site}/tides", f"{site}/notes.txt", f"{site}/tides",
                               f"{site}/private", f"{site}/members", f"{site}/archive.zip", ""]))
    proc = cli("batch", template, "--urls", urls, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    states = [(i["source"].removeprefix(site), i["run_status"] or i["state"]) for i in view["items"]]
    assert states == [("/tides", "COMPLETED"), ("/notes.txt", "COMPLETED"), ("/tides", "duplicate"),
                      ("/private", "needs_browser"), ("/members", "needs_browser"), ("/archive.zip", "unreadable")]
    assert view["status"] == "waiting_for_browser"
    assert "behind a login (redirected to" in view["items"][4]["note"]


def test_a_url_list_with_a_line_that_is_not_a_url_is_refused_with_its_line(batch_cli, tmp_path):
    cli, template = batch_cli
    urls = tmp_path / "urls.txt"
    urls.write_text("https://example.com/a\nfile:///etc/passwd\n")
    proc = cli("batch", template, "--urls", urls)
    assert proc.returncode == 2
    assert f"{urls}, line 2: expected an http:// or https:// URL" in proc.stderr and "Traceback" not in proc.stderr


def test_fetch_follows_a_few_redirects_but_not_a_loop(site):
    got = fetch_page(f"{site}/loop")
    assert got.page is None and not got.needs_browser and "HTTP 302" in got.note


def test_fetch_refuses_a_page_over_the_size_cap(site):
    got = fetch_page(f"{site}/tides", max_bytes=20)
    assert got.page is None and "over the 20 byte limit" in got.note


def test_fetch_gives_up_on_a_server_that_does_not_answer_in_time(site):
    got = fetch_page(f"{site}/slow", timeout_s=0.3)
    assert got.page is None and "timed out" in got.note


def test_fetch_reads_a_page_with_its_title_and_final_url(site):
    got = fetch_page(f"{site}/tides")
    assert got.page["title"] == "Tides" and got.page["content_type"] == "text/html"
    assert "twice a day" in got.page["content"] and got.page["source_url"] == f"{site}/tides"


def test_fetch_says_a_missing_page_is_missing(site):
    got = fetch_page(f"{site}/gone")
    assert got.page is None and not got.needs_browser and got.note == "HTTP 404 Not Found"


def test_a_url_list_with_a_password_in_a_url_is_refused_without_showing_it(batch_cli, tmp_path):
    cli, template = batch_cli
    urls = tmp_path / "urls.txt"
    urls.write_text("https://example.com/a\nhttps://alice:hunter2@intranet.example/page\n")
    proc = cli("batch", template, "--urls", urls)
    assert proc.returncode == 2 and f"{urls}, line 2: a URL with user:password@" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_a_link_in_an_inputs_folder_to_a_file_outside_it_is_not_read(batch_cli, tmp_path):
    cli, template = batch_cli
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = hunter2")
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "a.html").write_bytes(PAGE)
    (folder / "notes.txt").symlink_to(secret)
    (folder / "same.html").symlink_to(folder / "a.html")  # a link inside the folder is read
    proc = cli("batch", template, "--inputs", folder, "--estimate", "--json")
    assert proc.returncode == 0, proc.stderr
    view = cli.json("batches", json.loads(proc.stdout)["batch_id"], "--json")
    assert [i["state"] for i in view["items"]] == ["waiting", "unreadable", "duplicate"]
    assert "a link to a file outside" in view["items"][1]["note"]


def test_batches_shows_the_batch_budget_as_money(batch_cli, tmp_path):
    cli, template = batch_cli
    (tmp_path / "a.html").write_bytes(PAGE)
    out = json.loads(cli("batch", template, "--inputs", tmp_path / "a.html", "--estimate", "--budget", "0.5",
                         "--json").stdout)
    shown = cli("batches", out["batch_id"]).stdout
    assert "budget $0.50" in shown and "budget 0.5" not in shown
