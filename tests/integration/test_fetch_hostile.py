"""The URL fetcher against a hostile server: redirects aimed inside this machine, bodies that
never end, encodings it did not ask for. A local HTTP server plays the hostile site."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from hybrid_engine.fetch import fetch_page

PAGE = b"<html><head><title>Tides</title></head><body><p>The tide comes in twice a day.</p></body></html>"


class _Hostile(BaseHTTPRequestHandler):
    stop = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/trickle":  # slowloris: a byte at a time, never done
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>")
            while not self.stop.is_set():
                try:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                except OSError:
                    return
                self.stop.wait(0.05)
        elif path == "/gzipped":  # compressed although the request did not accept any encoding
            body = gzip.compress(b"<html><body>" + b"a" * 100_000 + b"</body></html>")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/photo":  # an image that says it is a page
            body = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 40
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)


def _serve():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hostile():
    _Hostile.stop = threading.Event()
    servers = [_serve(), _serve()]
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    _Hostile.stop.set()
    for s in servers:
        s.shutdown()
        s.server_close()


def test_fetch_does_not_follow_a_redirect_to_a_cloud_metadata_address(hostile):
    got = fetch_page(f"{hostile[0]}/redirect?to=http://169.254.169.254/latest/meta-data/", timeout_s=2)
    assert got.page is None and "169.254.169.254" in got.note and "not followed" in got.note


def test_fetch_does_not_follow_a_redirect_to_another_port_of_this_machine(hostile):
    got = fetch_page(f"{hostile[0]}/redirect?to={hostile[1]}/tides")
    assert got.page is None and "not followed" in got.note and "127.0.0.1" in got.note


def test_fetch_follows_a_redirect_within_the_listed_host_and_port(hostile):
    got = fetch_page(f"{hostile[0]}/redirect?to={hostile[0]}/tides")
    assert got.page is not None and got.page["source_url"] == f"{hostile[0]}/tides"


def test_fetch_fetches_an_address_of_this_machine_the_person_listed(hostile):
    got = fetch_page(f"{hostile[1]}/tides")
    assert got.page is not None and got.page["title"] == "Tides"


def test_fetch_gives_up_on_a_body_that_trickles_in_without_end(hostile):
    got = fetch_page(f"{hostile[0]}/trickle", timeout_s=0.5)
    assert got.page is None and "took longer than 1.5 s" in got.note


def test_fetch_refuses_a_body_compressed_although_no_encoding_was_asked_for(hostile):
    got = fetch_page(f"{hostile[0]}/gzipped")
    assert got.page is None and "Content-Encoding gzip" in got.note


def test_fetch_refuses_binary_bytes_served_as_a_page(hostile):
    got = fetch_page(f"{hostile[0]}/photo")
    assert got.page is None and "said text/html but sent binary data" in got.note


def test_a_url_list_over_the_size_limit_is_refused_not_cut(tmp_path, monkeypatch):
    from hybrid_engine import fetch
    from hybrid_engine.errors import BadRequest

    monkeypatch.setattr(fetch, "MAX_CONTENT_BYTES", 100)
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"https://example.com/page-{n}\n" for n in range(10)))
    with pytest.raises(BadRequest, match="over 100 characters"):
        fetch.read_url_list(str(urls))
