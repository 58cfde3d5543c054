"""The fake provider itself: what it counts as a request is what the tests' kill logic reads."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit


def _raw_post(fake, body: bytes, declared: int) -> bytes:
    """POST to the fake's OpenAI endpoint, sending `body` under a Content-Length of `declared`,
    then stop sending; return everything the fake answers before it closes the connection."""
    url = urlsplit(fake.base_url("openai"))
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n").encode()
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_request_whose_client_dies_mid_body_is_not_counted(fake_provider):
    """A worker killed while sending leaves a truncated body; a server would not act on it,
    and a test that reads requests' bodies must never see one."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "run x: y"}]}).encode()
    assert _raw_post(fake_provider, body[:10], declared=len(body)) == b""
    assert fake_provider.requests_for("openai") == []


def test_whole_request_on_a_raw_socket_is_counted_with_its_body(fake_provider):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "run x: y"}]}).encode()
    assert _raw_post(fake_provider, body, declared=len(body)).startswith(b"HTTP/1.1 200")
    [request] = fake_provider.requests_for("openai")
    assert request.body["messages"][-1]["content"] == "run x: y"
