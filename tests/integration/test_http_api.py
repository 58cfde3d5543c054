"""The HTTP API (`hybrid-engine serve`) as scripts see it: a real server on 127.0.0.1, curl."""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from api_server import ApiServer
from host_client import HANG_GUARD_S
from polling import wait_for

PAGE = "<html><head><title>Tidal pools</title></head><body><p>Sea stars, mussels and clams live in them.</p></body></html>"


@pytest.fixture
def home(he_home) -> Path:
    from hybrid_engine.templates import seed_templates

    seed_templates(he_home / "templates")
    return he_home


def write_template(home: Path, name: str, steps: list[dict]) -> str:
    (home / "templates" / f"{name}.json").write_text(json.dumps({"name": name, "steps": steps}), encoding="utf-8")
    return name


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One server for the tests that need no data folder of their own (starting one takes seconds)."""
    from hybrid_engine.templates import seed_templates

    home = tmp_path_factory.mktemp("api") / "he-home"
    seed_templates(home / "templates")
    with ApiServer(home) as server:
        yield server


def step_of(doc: dict, step_id: str) -> dict:
    return next(s for s in doc["steps"] if s["id"] == step_id)


# ---- the acceptance checklist, with curl -----------------------------------------------

def test_external_data_posted_with_curl_fills_the_slot_and_the_run_goes_pending_running_completed(
        home, cli, fake_provider):
    name = write_template(home, "digest", [
        {"id": "page", "action": "capture"},
        {"id": "summary", "action": "openai_chat", "dependencies": ["page"],
         "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.page.outputs.content }}"}}])
    run_id = cli("run", name, check=True).stdout.strip()
    fake = fake_provider
    with ApiServer(home, extra_env=fake.env()) as api:
        status, doc = api.curl("GET", f"/workflows/{run_id}")
        assert status == 200 and doc["status"] == "PENDING"
        fake.hold()
        try:
            status, resp = api.curl("POST", f"/workflows/{run_id}/external-data",
                                    json_body={"content": PAGE, "source_url": "https://example.org/pools",
                                               "content_type": "html", "metadata": {"kind": "page"}})
            assert status == 200
            assert {k: resp[k] for k in ("workflow_id", "step_id", "status", "queued_dependents")} == \
                {"workflow_id": run_id, "step_id": "page", "status": "COMPLETED", "queued_dependents": 1}
            status, doc = api.curl("GET", f"/workflows/{run_id}")
            assert step_of(doc, "page")["status"] == "COMPLETED"
            assert step_of(doc, "page")["outputs"]["content"] == PAGE
            assert step_of(doc, "summary")["status"] in ("QUEUED", "RUNNING")
            fake.wait_requests(1)  # the server's background worker sent the dependent's model call
            status, doc = api.curl("GET", f"/workflows/{run_id}")
            assert doc["status"] == "RUNNING" and step_of(doc, "summary")["status"] == "RUNNING"
        finally:
            fake.release()
        done = wait_for(lambda: (d := api.curl("GET", f"/workflows/{run_id}")[1])["status"] == "COMPLETED" and d,
                        timeout=2 * HANG_GUARD_S, what="the run COMPLETED")
        assert step_of(done, "summary")["outputs"]["text"]
        status, listed = api.curl("GET", f"/workflows/{run_id}/external-data")
        assert status == 200 and listed["workflow_id"] == run_id and listed["count"] == 1
        assert [s["id"] for s in listed["external_steps"]] == ["page"]


def test_an_unknown_run_is_404_with_the_hosts_not_found_code(api):
    for method, path, body in (("GET", "/workflows/0123456789abcdef", None),
                               ("GET", "/workflows/0123456789abcdef/external-data", None),
                               ("POST", "/workflows/0123456789abcdef/external-data", {"content": "x"}),
                               ("POST", "/workflows/0123456789abcdef/cancel", None)):
        status, body = api.curl(method, path, json_body=body)
        assert status == 404, (method, path)
        assert body["error"]["code"] == "not_found" and "0123456789abcdef" in body["error"]["message"]


# ---- the other routes ------------------------------------------------------------------

def test_post_workflows_starts_a_run_with_its_page_and_it_completes(api):
    status, started = api.curl("POST", "/workflows", json_body={"template": "page-text", "content": PAGE,
                                                                "title": "Tidal pools"})
    assert status == 201 and started["step_id"] == "page" and started["duplicate"] is False
    run_id = started["run_id"]
    wait_for(lambda: api.curl("GET", f"/workflows/{run_id}")[1]["status"] == "COMPLETED",
             timeout=2 * HANG_GUARD_S, what="the run COMPLETED")
    status, runs = api.curl("GET", "/workflows?limit=5")
    assert status == 200 and runs["limit"] == 5 and run_id in [r["id"] for r in runs["runs"]]


def test_post_workflows_with_the_same_capture_id_returns_the_first_run(api):
    body = {"template": "page-text", "content": PAGE, "capture_id": "cap-1"}
    first = api.curl("POST", "/workflows", json_body=body)[1]
    again = api.curl("POST", "/workflows", json_body=body)[1]
    assert again["run_id"] == first["run_id"] and again["duplicate"] is True


def test_cancel_then_retry_over_http(api):
    name = write_template(api.home, "waits", [{"id": "page", "action": "capture"},
                                          {"id": "nap", "action": "sleep", "dependencies": ["page"],
                                           "params": {"seconds": 0}}])
    run_id = api.curl("POST", "/workflows", json_body={"template": name})[1]["run_id"]
    status, summary = api.curl("POST", f"/workflows/{run_id}/cancel")
    assert status == 200 and summary["status"] == "CANCELLED"
    status, body = api.curl("POST", f"/workflows/{run_id}/external-data", json_body={"content": "late"})
    assert status == 409 and body["error"]["code"] == "conflict"
    status, summary = api.curl("POST", f"/workflows/{run_id}/retry", json_body={"budget_usd": 0.5})
    assert status == 200 and summary["status"] in ("PENDING", "RUNNING", "QUEUED")
    status, body = api.curl("POST", f"/workflows/{run_id}/retry", json_body={"budget_usd": "lots"})
    assert status == 400 and body["error"]["field"] == "budget_usd"


def test_spend_answers_today_and_this_month(api):
    status, spend = api.curl("GET", "/spend")
    assert status == 200 and spend["today"] == 0 and "this_month" in spend


def test_bad_bodies_get_bad_request_naming_what_is_wrong(api):
    status, body = api.curl("POST", "/workflows", data=b"{not json", ctype="application/json")
    assert status == 400 and body["error"]["code"] == "bad_request" and "not valid JSON" in body["error"]["message"]
    status, body = api.curl("POST", "/workflows", json_body={"template": "page-text", "colour": "red"})
    assert status == 400 and body["error"]["field"] == "colour"
    status, body = api.curl("POST", "/workflows", json_body={"template": "no-such-template"})
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = api.curl("GET", "/workflows?limit=0")
    assert status == 400 and "limit" in body["error"]["message"]


def test_a_form_body_is_refused_as_not_json(api):
    status, body = api.curl("POST", "/workflows", data=b"template=page-text",
                            ctype="application/x-www-form-urlencoded")
    assert status == 415 and "application/json" in body["error"]["message"]


def test_an_unknown_route_is_404_json(api):
    status, body = api.curl("GET", "/nothing/here")
    assert status == 404 and body["error"]["code"] == "not_found"


# ---- security ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/workflows", "/spend", "/events", "/docs", "/openapi.json", "/nothing"])
def test_every_route_without_the_token_is_401(api, path):
    status, body = api.curl("GET", path, token=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert "--show-token" in body["error"]["message"]


def test_a_wrong_token_is_401(api):
    status, body = api.curl("GET", "/workflows", token="x" * 43)
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_a_post_without_the_token_stores_nothing(api):
    before = api.curl("GET", "/workflows?limit=1000")[1]["runs"]
    status, _ = api.curl("POST", "/workflows", json_body={"template": "page-text", "content": PAGE}, token=None)
    assert status == 401
    assert api.curl("GET", "/workflows?limit=1000")[1]["runs"] == before


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost:1", "192.168.1.5:{port}"])
def test_a_foreign_host_header_is_refused_even_with_the_token(api, host):
    status, body = api.curl("GET", "/workflows", headers=[f"Host: {host.format(port=api.port)}"])
    assert status == 403 and body["error"]["code"] == "forbidden" and "DNS rebinding" in body["error"]["message"]


def test_localhost_with_the_port_is_a_good_host_header(api):
    status, _ = api.curl("GET", "/workflows", headers=[f"Host: localhost:{api.port}"])
    assert status == 200


def test_a_request_from_another_origin_is_refused_even_with_the_token(api):
    status, body = api.curl("GET", "/workflows", headers=["Origin: https://evil.example"])
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_no_response_carries_a_cors_header(api):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=HANG_GUARD_S)
    for method, headers in (("OPTIONS", {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization"}),
                            ("GET", {"Authorization": f"Bearer {api.token}"}),
                            ("GET", {})):
        conn.request(method, "/workflows", headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")], (method, dict(resp.headers))
    conn.close()


def test_a_body_declared_over_64_mib_is_413_before_it_is_sent(api):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=HANG_GUARD_S)
    conn.putrequest("POST", "/workflows")
    for name, value in (("Authorization", f"Bearer {api.token}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(64 * 2**20 + 1))):
        conn.putheader(name, value)
    conn.endheaders()  # no body at all: the answer must not wait for it
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 413 and body["error"]["code"] == "too_large" and "64 MiB" in body["error"]["message"]
    conn.close()


def test_a_chunked_body_over_64_mib_is_413_when_it_goes_over(api):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=HANG_GUARD_S)
    chunk = b"a" * 2**20
    conn.putrequest("POST", "/workflows")
    for name, value in (("Authorization", f"Bearer {api.token}"), ("Content-Type", "application/json"),
                        ("Transfer-Encoding", "chunked")):
        conn.putheader(name, value)
    conn.endheaders()
    try:
        for _ in range(65):  # one MiB past the limit
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused mid-way: the answer is already waiting
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 413 and body["error"]["code"] == "too_large"
    conn.close()
    assert api.curl("GET", "/workflows")[0] == 200  # the server serves on


def test_the_token_file_is_readable_by_its_owner_alone(api):
    mode = stat.S_IMODE(os.stat(api.home / "http-token").st_mode)
    assert mode == 0o600


def test_show_token_prints_the_servers_token_on_its_last_line(api):
    out = subprocess.run([sys.executable, "-m", "hybrid_engine", "serve", "--show-token"], env=api.env,
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == api.token


def test_show_token_makes_a_token_before_the_first_serve(cli, he_home):
    token = cli("serve", "--show-token", check=True).stdout.splitlines()[-1]
    assert len(token) >= 40 and (he_home / "http-token").read_text().strip() == token


def test_a_non_loopback_address_is_refused_without_the_loud_flag(cli):
    proc = cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert proc.returncode == 2 and "--expose-to-network" in proc.stderr and "Traceback" not in proc.stderr


def test_docs_need_the_token_and_take_it_as_a_basic_password_too(api):
    import base64

    status, page = api.curl("GET", "/docs", raw=True)
    assert status == 200 and b"/workflows/{workflow_id}/external-data" in page
    assert b"<script" not in page and b"http://" not in page and b"https://" not in page  # nothing from elsewhere
    basic = base64.b64encode(f"me:{api.token}".encode()).decode()
    status, spec = api.curl("GET", "/openapi.json", token=None, headers=[f"Authorization: Basic {basic}"])
    assert status == 200 and "/workflows/{workflow_id}/external-data" in spec["paths"]
    status, _ = api.curl("GET", "/workflows", token=None, headers=[f"Authorization: Basic {basic}"])
    assert status == 401  # the API itself takes the bearer token only


# ---- run updates as server-sent events ----------------------------------------------------

def _sse_events(resp):
    """(event, data) pairs as they arrive."""
    event, data = None, []
    while True:
        line = resp.fp.readline()
        if not line:
            return
        line = line.decode("utf-8").rstrip("\r\n")
        if not line:
            if event:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_events_stream_run_updates_until_the_run_completes(api):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=HANG_GUARD_S)
    conn.request("GET", "/events", headers={"Authorization": f"Bearer {api.token}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(resp)
    assert next(events)[0] == "ready"  # subscribed: what is committed from now on is reported
    run_id = api.curl("POST", "/workflows", json_body={"template": "page-text", "content": PAGE})[1]["run_id"]
    seen = []
    for event, data in events:
        assert event == "run.updated"
        if data["run"]["id"] == run_id:
            seen.append(data["run"]["status"])
            if data["run"]["status"] == "COMPLETED":
                break
    assert seen[-1] == "COMPLETED"
    conn.close()


def test_events_of_an_unknown_run_are_404(api):
    status, body = api.curl("GET", "/events?workflow_id=0123456789abcdef")
    assert status == 404 and body["error"]["code"] == "not_found"


# ---- the CLI and the host without the server's libraries ------------------------------------

def test_the_cli_and_the_host_do_not_import_fastapi_or_uvicorn():
    code = ("import sys, hybrid_engine.cli as c; c.build_parser(); import hybrid_engine.handlers, hybrid_engine.host; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_token_file_others_could_read_is_made_private_when_used(cli, he_home):
    token = cli("serve", "--show-token", check=True).stdout.splitlines()[-1]
    os.chmod(he_home / "http-token", 0o644)
    assert cli("serve", "--show-token", check=True).stdout.splitlines()[-1] == token
    assert stat.S_IMODE(os.stat(he_home / "http-token").st_mode) == 0o600


# ---- the background worker -------------------------------------------------------------------

def test_work_queued_before_the_server_started_is_run_while_it_serves(home, cli, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    run_id = cli("run", "page-text", "--input", page, check=True).stdout.strip()
    with ApiServer(home) as api:
        wait_for(lambda: api.curl("GET", f"/workflows/{run_id}")[1]["status"] == "COMPLETED",
                 timeout=2 * HANG_GUARD_S, what="the queued run COMPLETED")


def test_a_burst_of_captures_starts_one_background_worker(home):
    with ApiServer(home, extra_env={"HYBRID_ENGINE_WORKER_LINGER_S": "60"}) as api:
        runs = [api.curl("POST", "/workflows", json_body={"template": "page-text", "content": PAGE})[1]["run_id"]
                for _ in range(10)]
        for run_id in runs:
            wait_for(lambda: api.curl("GET", f"/workflows/{run_id}")[1]["status"] == "COMPLETED",
                     timeout=2 * HANG_GUARD_S, what=f"run {run_id} COMPLETED")
    log = (home / "logs" / "hybrid-engine.log").read_text(encoding="utf-8")
    assert log.count("background worker started") == 1
    from hybrid_engine import worker

    holder = worker.WorkerLock(home / worker.LOCK_NAME).holder()  # the lingering worker: stopped here
    if holder:
        os.kill(holder, 15)


def test_a_port_in_use_is_a_clear_error_without_a_traceback(api, cli):
    proc = cli("serve", "--port", str(api.port))
    assert proc.returncode == 2 and f"127.0.0.1:{api.port}" in proc.stderr and "--port N" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_stops_the_server_cleanly_even_with_an_event_stream_open(home):
    api = ApiServer(home)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=HANG_GUARD_S)
        conn.request("GET", "/events", headers={"Authorization": f"Bearer {api.token}"})
        assert next(_sse_events(conn.getresponse()))[0] == "ready"
    finally:
        code = api.close()
    assert code == 0 and "Traceback" not in api.stderr(), api.stderr()
    conn.close()


def test_a_damaged_database_is_503_naming_the_file_and_the_server_serves_on(home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "engine.db").write_bytes(b"this is not a database" * 100)
    with ApiServer(home) as api:
        for _ in range(2):
            status, body = api.curl("GET", "/workflows")
            assert status == 503 and body["error"]["code"] == "store_corrupt"
            assert str(home / "engine.db") in body["error"]["message"]
        assert "Traceback" not in api.stderr()
