"""The native host as the browser sees it: a subprocess, real frames on real pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybrid_engine import protocol
from hybrid_engine.identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID

from host_client import HostClient, host_env
from polling import wait_for

HEAVY = {"pydantic", "yaml", "openai", "google.genai", "genai_prices", "trafilatura"}
CONTRACT_TYPES = {"hello", "templates.list", "capture", "external_data.add", "external_data.list", "runs.list",
                  "runs.get", "runs.output", "runs.retry", "runs.cancel", "runs.subscribe", "estimate", "spend"}
PAGE = """<!doctype html><html><head><title>Tidal pools</title></head><body>
<nav>Home | About</nav><article><h1>Tidal pools</h1>
<p>Tidal pools are rocky pools on the sea shore which are separated from the sea at low tide.</p>
<p>Many animals such as sea stars, mussels and clams live in them and survive the changing conditions.</p>
<p>Their inhabitants must cope with waves, currents, heat and the exposure to the air twice a day.</p>
</article><footer>(c) someone</footer></body></html>"""


@pytest.fixture
def home(he_home) -> Path:
    from hybrid_engine.templates import seed_templates

    seed_templates(he_home / "templates")
    return he_home


def write_template(home: Path, name: str, steps: list[dict], **extra) -> str:
    path = home / "templates" / f"{name}.json"
    path.write_text(json.dumps({"name": name, "steps": steps, **extra}), encoding="utf-8")
    return name


@pytest.fixture
def host(home):
    with HostClient(home) as client:
        client.call("hello", protocol=1)
        yield client
        assert client.stdout_problems == []


def step_of(doc: dict, step_id: str) -> dict:
    return next(s for s in doc["steps"] if s["id"] == step_id)


def run_status(home: Path, run_id: str) -> str | None:
    """Read the run's status from a fresh Service (another process's view of the store)."""
    from hybrid_engine.service import Service

    svc = Service()
    try:
        return svc.summary(run_id)["status"]
    finally:
        svc.store.close()


# ---- hello, hygiene, origin -----------------------------------------------------------

def test_hello_comes_before_any_heavy_import_and_runs_list_needs_none(home):
    with HostClient(home) as h:
        reply = h.request("hello", protocol=1)
        assert reply["ok"] is True and reply["id"] == 1 and reply["version"]
        result = reply["result"]
        assert result["protocol"] == 1 and result["version"] == reply["version"]
        assert CONTRACT_TYPES <= set(result["capabilities"]["types"])
        assert result["heavy_modules_loaded"] == []  # measured in the host when the reply was built
        assert h.call("runs.list")["runs"] == []
        status = h.call("host.status")
        assert not HEAVY & set(status["heavy_modules_loaded"]), status
        assert h.stdout_problems == []


def test_every_reply_carries_the_host_version(host):
    from hybrid_engine import __version__

    assert host.request("runs.list")["version"] == __version__
    assert host.request("no.such.type")["version"] == __version__


def test_a_stray_print_at_startup_goes_to_stderr_never_to_the_pipe(home):
    env = host_env(home)  # chatty_library/sitecustomize.py prints when the host's transport is imported
    env["PYTHONPATH"] = str(Path(__file__).parent / "chatty_library") + os.pathsep + env["PYTHONPATH"]
    with HostClient(home, env=env) as h:
        assert h.call("hello", protocol=1)["protocol"] == 1
        assert h.call("runs.list")["runs"] == []
        h.close()
        assert h.stdout_problems == []
        err = h.stderr()
        assert "stray print from the host" in err
        assert "stray fd-1 write from the host" in err


def test_wrong_chrome_extension_is_forbidden_and_gets_nothing_else(home):
    with HostClient(home, args=["chrome-extension://" + "a" * 32 + "/"]) as h:
        err = h.error("hello", protocol=1)
        assert err["code"] == "forbidden" and "a" * 32 in err["message"]
        assert h.error("runs.list")["code"] == "forbidden"
        assert h.close() == 0


@pytest.mark.parametrize("args", [
    [f"chrome-extension://{CHROME_EXTENSION_ID}/"],
    [f"chrome-extension://{CHROME_EXTENSION_ID}/", "--parent-window=0"],  # Chrome on Windows
    ["/home/u/.mozilla/native-messaging-hosts/hybrid_engine.json", FIREFOX_EXTENSION_ID],
    [],  # a terminal or a test: no origin, no check
], ids=["pinned-chrome", "chrome-windows", "firefox", "no-origin"])
def test_allowed_callers_are_served(home, args):
    with HostClient(home, args=args) as h:
        assert h.call("hello", protocol=1)["protocol"] == 1
        assert h.call("runs.list")["runs"] == []


def test_firefox_with_another_add_on_id_is_forbidden(home):
    with HostClient(home, args=["/x/hybrid_engine.json", "someone-else@example.org"]) as h:
        assert h.error("hello", protocol=1)["code"] == "forbidden"


def test_an_id_registered_with_install_extension_id_is_accepted(home, tmp_path):
    other = "b" * 32
    env = host_env(home, {"HOME": str(tmp_path / "user"), "XDG_CONFIG_HOME": str(tmp_path / "user" / ".config")})
    proc = subprocess.run([sys.executable, "-m", "hybrid_engine", "install", "--browser", "chromium",
                           "--extension-id", other], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with HostClient(home, args=[f"chrome-extension://{other}/"]) as h:
        assert h.call("hello", protocol=1)["protocol"] == 1


# ---- every message type, end to end ----------------------------------------------------

def test_capture_runs_to_completion_with_events_then_get_and_output(host):
    assert host.call("runs.subscribe")["subscribed"] is True
    names = {t["name"]: t for t in host.call("templates.list")["templates"]}
    assert names["page-text"]["has_capture_slot"] is True
    result = host.call("capture", template="page-text",
                       page={"content": PAGE, "source_url": "https://example.org/pools", "content_type": "text/html",
                             "title": "Tidal pools", "selection": None})
    run_id = result["run_id"]
    assert result["step_id"] == "page" and result["queued_dependents"] == 1
    done = host.wait_event(lambda e: e.get("event") == "run.updated" and e["run"]["id"] == run_id
                           and e["run"]["status"] == "COMPLETED", what="run.updated COMPLETED")
    assert done["run"]["completed_steps"] == done["run"]["total_steps"] == 3
    doc = host.call("runs.get", run_id=run_id)
    assert doc["status"] == "COMPLETED" and [s["status"] for s in doc["steps"]] == ["COMPLETED"] * 3
    assert step_of(doc, "page")["outputs"]["source_url"] == "https://example.org/pools"
    note = host.call("runs.output", run_id=run_id, step_id="note")
    assert note["step_id"] == "note" and "sea stars" in note["outputs"]["text"]
    assert "Source: https://example.org/pools" in note["outputs"]["text"]
    assert run_id in [r["id"] for r in host.call("runs.list", limit=10, offset=0)["runs"]]


def test_the_engine_starts_even_while_requests_never_stop_coming(host):
    from hybrid_engine.host import ENGINE_DELAY_MAX_S, ENGINE_QUIET_S

    assert ENGINE_DELAY_MAX_S <= 1.0
    run_id = host.call("capture", template="page-text", page={"content": PAGE})["run_id"]
    deadline = time.monotonic() + 60  # a guard against hanging, not a bound: the run ends in about a second
    status = None
    while time.monotonic() < deadline:  # never quiet for ENGINE_QUIET_S: a request every few ms
        status = host.call("runs.get", run_id=run_id)["status"]
        if status == "COMPLETED":
            break
        time.sleep(ENGINE_QUIET_S / 10)
    assert status == "COMPLETED"


def test_external_data_add_fills_the_slot_of_a_waiting_run_and_list_shows_it(host, cli):
    run_id = cli("run", "page-text", check=True).stdout.strip()
    assert host.call("runs.get", run_id=run_id)["status"] == "PENDING"
    resp = host.call("external_data.add", workflow_id=run_id, content=PAGE, source_url="https://example.org/p",
                     content_type="text/html", metadata={"kind": "page"})
    assert resp["workflow_id"] == run_id and resp["step_id"] == "page" and resp["status"] == "COMPLETED"
    assert resp["queued_dependents"] == 1 and isinstance(resp["message"], str)
    host.wait_run(run_id)
    listed = host.call("external_data.list", workflow_id=run_id)
    assert listed["workflow_id"] == run_id and listed["count"] == 1
    assert listed["external_steps"][0]["outputs"]["content"] == PAGE
    assert host.error("external_data.add", workflow_id=run_id, content="late")["code"] == "conflict"


def test_retry_resumes_a_failed_run_and_cancel_stops_one(host, home):
    write_template(home, "flaky", [{"id": "page", "action": "capture"},
                                   {"id": "once", "action": "fail", "dependencies": ["page"],
                                    "params": {"message": "first try fails", "times": 1}}])
    write_template(home, "slow", [{"id": "page", "action": "capture"},
                                  {"id": "nap", "action": "sleep", "dependencies": ["page"], "params": {"seconds": 30}}])
    run_id = host.call("capture", template="flaky", page={"content": "x"})["run_id"]
    failed = host.wait_run(run_id, "FAILED")
    assert step_of(failed, "once")["error"] == "first try fails"
    summary = host.call("runs.retry", run_id=run_id)
    assert summary["id"] == run_id and summary["status"] in ("RUNNING", "PENDING", "COMPLETED")
    host.wait_run(run_id, "COMPLETED")
    assert host.error("runs.retry", run_id=run_id)["code"] == "conflict"

    slow = host.call("capture", template="slow", page={"content": "x"})["run_id"]
    wait_for(lambda: step_of(host.call("runs.get", run_id=slow), "nap")["status"] == "RUNNING", what="nap RUNNING")
    cancelled = host.call("runs.cancel", run_id=slow)
    assert cancelled["id"] == slow and cancelled["status"] == "CANCELLED"


def test_estimate_counts_model_steps_without_calling_a_model(host, home):
    write_template(home, "digest", [
        {"id": "page", "action": "capture"},
        {"id": "text", "action": "extract_text", "dependencies": ["page"],
         "params": {"html": "{{ steps.page.outputs.content }}"}},
        {"id": "sum", "action": "openai_chat", "dependencies": ["text"],
         "params": {"model": "gpt-4o-mini", "prompt": "Summarise:\n\n{{ steps.text.outputs.text }}", "max_tokens": 200}},
    ])
    est = host.call("estimate", template="digest", page={"content": PAGE}, timeout=60)
    (step,) = est["steps"]
    assert step["step_id"] == "sum" and step["model"] == "gpt-4o-mini"
    assert step["prompt_tokens"] > 20 and step["max_output_tokens"] == 200
    assert step["cost_max"] is None or step["cost_max"] >= step["cost_min"]
    assert host.call("runs.list")["runs"] == []  # nothing ran


def test_spend_reports_today_this_month_and_budgets(host):
    spend = host.call("spend")
    assert spend["today"] == 0 and spend["this_month"] == 0
    assert "daily_budget_usd" in spend and "monthly_budget_usd" in spend
    assert spend["today_unpriced_steps"] == {} and spend["this_month_unpriced_steps"] == {}


def test_retry_with_a_budget_that_is_not_a_number_is_a_bad_request_naming_the_field(host):
    bad = host.error("runs.retry", run_id="nope-nope", budget_usd="a lot")
    assert bad["code"] == "bad_request" and bad["field"] == "budget_usd"
    assert host.call("hello", protocol=1)["protocol"] == 1  # still serving


def test_not_found_for_unknown_runs_steps_and_templates(host):
    assert host.error("runs.get", run_id="nope-nope")["code"] == "not_found"
    assert host.error("runs.retry", run_id="nope-nope")["code"] == "not_found"
    assert host.error("capture", template="no-such-template", page={"content": "x"})["code"] == "not_found"
    run_id = host.call("capture", template="page-text", page={"content": PAGE})["run_id"]
    assert host.error("runs.output", run_id=run_id, step_id="nope")["code"] == "not_found"


# ---- malformed input --------------------------------------------------------------------

def _frame(body: bytes) -> bytes:
    return protocol.HEADER.pack(len(body)) + body


def test_each_bad_message_gets_its_code_and_the_host_keeps_serving(host):
    seen = 0

    def unmatched(raw: bytes) -> dict:
        nonlocal seen
        host.send_raw(raw)
        seen += 1
        reply = host.next_unmatched(seen)
        assert reply["ok"] is False and reply["id"] is None
        assert host.call("hello", protocol=1)["protocol"] == 1  # still serving
        return reply["error"]

    assert unmatched(_frame(b'{"id": 1, "type": "hello", "x": "\xff\xfe"}'))["code"] == "bad_frame"
    assert unmatched(_frame(b'{"id": 1, "type": ')) ["code"] == "bad_json"
    assert unmatched(_frame(b""))["code"] == "bad_json"
    assert unmatched(_frame(b"NaN"))["code"] == "bad_json"
    for not_object in (b"[1, 2]", b'"hello"', b"42", b"null"):
        assert unmatched(_frame(not_object))["code"] == "bad_request"
    missing_id = unmatched(_frame(b'{"type": "hello"}'))
    assert missing_id["code"] == "bad_request" and "id" in missing_id["message"]
    assert unmatched(_frame(b'{"id": {"a": 1}, "type": "hello"}'))["code"] == "bad_request"
    assert unmatched(_frame(b'{"id": true, "type": "hello"}'))["code"] == "bad_request"

    def by_id(message: dict) -> dict:
        host.send(message)
        reply = host.reply(message["id"])
        assert reply["ok"] is False
        return reply["error"]

    err = by_id({"id": "m1"})
    assert err["code"] == "bad_request" and err["message"].startswith("type")
    assert by_id({"id": "m2", "type": 7})["code"] == "bad_request"
    err = by_id({"id": "m3", "type": "runs.explode"})
    assert err["code"] == "unknown_type" and "runs.explode" in err["message"]

    wrong_fields = [
        ({"type": "hello", "protocol": "1"}, "protocol"),
        ({"type": "runs.list", "limit": "5"}, "limit"),
        ({"type": "runs.list", "limit": True}, "limit"),
        ({"type": "runs.list", "offset": -1}, "offset"),
        ({"type": "runs.get"}, "run_id"),
        ({"type": "runs.get", "run_id": 5}, "run_id"),
        ({"type": "runs.output", "run_id": "x", "step_id": ["a"]}, "step_id"),
        ({"type": "runs.retry", "run_id": None}, "run_id"),
        ({"type": "capture", "page": {"content": "x"}}, "template"),
        ({"type": "capture", "template": "page-text"}, "page"),
        ({"type": "capture", "template": "page-text", "page": "x"}, "page"),
        ({"type": "capture", "template": "page-text", "page": {"content": 5}}, "page.content"),
        ({"type": "capture", "template": "page-text", "page": {"title": "no content"}}, "page.content"),
        ({"type": "capture", "template": "page-text", "page": {"content": "x", "source_url": 1}}, "page.source_url"),
        ({"type": "capture", "template": "page-text", "page": {"content": "x", "content_type": "video/mp4"}},
         "page.content_type"),
        ({"type": "external_data.add", "content": "x"}, "workflow_id"),
        ({"type": "external_data.add", "workflow_id": "x", "content": "x", "metadata": []}, "metadata"),
        ({"type": "external_data.list", "workflow_id": 3}, "workflow_id"),
        ({"type": "estimate", "template": "page-text", "page": {"content": None}}, "page.content"),
    ]
    for i, (message, name) in enumerate(wrong_fields):
        err = by_id({"id": f"f{i}", **message})
        assert err["code"] == "bad_request", (message, err)
        assert err["message"].startswith(name + ":"), (message, err)
    assert host.call("runs.list")["runs"] == []  # none of those created anything


def test_a_reply_too_large_to_frame_is_too_large(host):
    huge_id = "i" * (protocol.MAX_OUTGOING + 10)  # no chunk envelope can carry this id
    host.send({"id": huge_id, "type": "hello", "protocol": 1})
    err = host.next_unmatched(1)["error"]
    assert err["code"] == "too_large"
    assert host.call("hello", protocol=1)["protocol"] == 1


@pytest.mark.parametrize("raw, replies", [
    (protocol.HEADER.pack(protocol.MAX_INCOMING + 1) + b"{}", True),  # oversized declared length
    (protocol.HEADER.pack(100) + b'{"id": 1, "ty', True),  # truncated body
    (b"\x05\x00", True),  # truncated header
], ids=["oversized-length", "truncated-body", "truncated-header"])
def test_a_stream_that_cannot_be_resynchronised_is_closed_cleanly(home, raw, replies):
    with HostClient(home) as h:
        assert h.call("hello", protocol=1)["protocol"] == 1
        h.send_raw(raw)
        if raw.startswith(protocol.HEADER.pack(protocol.MAX_INCOMING + 1)):
            err = h.next_unmatched(1)["error"]  # answered before anything else, stdin still open
            assert err["code"] == "bad_frame" and str(protocol.MAX_INCOMING) in err["message"]
            assert h.wait(60) == 0  # it exits by itself: stdin is still open
        else:
            h.close_stdin()
            assert h.wait(60) == 0
            assert h.next_unmatched(1)["error"]["code"] == "bad_frame"
        h.close()
        assert h.stdout_problems == []
        assert "Traceback" not in h.stderr()


# ---- the first frame (read by hostboot, handed to host.py when it is not a plain hello) ---

def test_a_first_message_other_than_hello_is_answered_by_the_full_host(home):
    with HostClient(home) as h:
        assert h.call("runs.list")["runs"] == []
        assert h.call("hello", protocol=1)["protocol"] == 1
        assert h.stdout_problems == []


@pytest.mark.parametrize("message, code", [
    ({"id": 1.5, "type": "hello"}, None),  # a float id is a valid id: answered by host.py alike
    ({"id": "first", "type": "hello", "protocol": 0}, "bad_request"),
    ({"id": "first", "type": "hello", "protocol": "1"}, "bad_request"),
], ids=["float-id", "protocol-0", "protocol-string"])
def test_a_first_hello_boot_does_not_take_gets_the_full_hosts_answer(home, message, code):
    with HostClient(home) as h:
        h.send(message)
        reply = h.reply(message["id"])
        if code is None:
            assert reply["ok"] is True and reply["result"]["protocol"] == 1
        else:
            assert reply["ok"] is False and reply["error"]["code"] == code and reply["error"]["field"] == "protocol"
        assert h.call("runs.list")["runs"] == []


@pytest.mark.parametrize("raw, code", [
    (protocol.HEADER.pack(9) + b'{"id": 1,', "bad_json"),
    (protocol.HEADER.pack(2) + b"\xff\xfe", "bad_frame"),  # not UTF-8
    (protocol.HEADER.pack(2) + b"[]", "bad_request"),  # not an object
], ids=["bad-json", "bad-utf8", "not-an-object"])
def test_a_malformed_first_frame_gets_its_error_and_the_host_serves_on(home, raw, code):
    with HostClient(home) as h:
        h.send_raw(raw)
        assert h.next_unmatched(1)["error"]["code"] == code
        assert h.call("hello", protocol=1)["protocol"] == 1
        assert h.stdout_problems == []


@pytest.mark.parametrize("raw", [
    protocol.HEADER.pack(protocol.MAX_INCOMING + 1) + b"{}",
    protocol.HEADER.pack(100) + b'{"id": 1, "ty',
    b"\x05\x00",
], ids=["oversized-length", "truncated-body", "truncated-header"])
def test_a_broken_first_frame_is_answered_and_the_host_exits_cleanly(home, raw):
    with HostClient(home) as h:
        h.send_raw(raw)
        h.close_stdin()
        assert h.wait(60) == 0
        assert h.next_unmatched(1)["error"]["code"] == "bad_frame"
        h.close()
        assert h.stdout_problems == []
        assert "Traceback" not in h.stderr()


def test_an_empty_input_ends_the_host_cleanly(home):
    """How soon is bench/host_startup.py's ("exit after stdin closes")."""
    with HostClient(home) as h:
        h.close_stdin()
        assert h.wait(60) == 0
        h.close()  # the reader has seen all of stdout
        assert h.stdout_problems == [] and h.frame_sizes == []  # nothing was asked, nothing is said


def test_a_first_hello_with_nan_gets_bad_json_as_any_other_frame_would(home):
    with HostClient(home) as h:
        h.send_raw(protocol.frame(b'{"id":1,"type":"hello","x":NaN}'))
        assert h.next_unmatched(1)["error"]["code"] == "bad_json"
        assert h.call("hello", protocol=1)["protocol"] == 1


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_sigterm_before_the_first_frame_still_hands_queued_work_to_a_worker(home, cli):
    name = write_template(home, "queued", [{"id": "a", "action": "noop", "params": {"value": 1}}])
    run_id = cli("run", name, check=True).stdout.strip()  # queued, nothing executes it yet
    with HostClient(home) as h:
        wait_for(lambda: _catches_sigterm(h.proc.pid), timeout=60, what="the host's signal handlers")
        h.proc.send_signal(signal.SIGTERM)
        assert h.wait(60) == 0
        assert h.stdout_problems == []
    wait_for(lambda: run_status(home, run_id) == "COMPLETED", timeout=60, what="the worker to finish the run")
    assert "background worker started" in (home / "logs" / "hybrid-engine.log").read_text()


def test_what_is_logged_before_the_engine_starts_reaches_the_log_file(home):
    with HostClient(home) as h:
        h.call("hello", protocol=1)
        h.call("capture", template="page-text", page={"content": PAGE, "metadata": {"capture_id": "cap-early-1"}})
        h.close_stdin()  # at once: the engine waits for the host to be quiet before it starts
        assert h.wait(60) == 0
    from hybrid_engine import __version__

    text = (home / "logs" / "hybrid-engine.log").read_text()
    assert "capture cap-early-1 made run" in text and f"host {__version__} started" in text


# ---- large replies -----------------------------------------------------------------------

def test_a_5_mb_step_output_arrives_in_chunks_of_at_most_1_mib_and_reassembles_exactly(host, home):
    write_template(home, "echo", [{"id": "page", "action": "capture"},
                                  {"id": "copy", "action": "noop", "dependencies": ["page"],
                                   "params": {"value": "{{ steps.page.outputs.content }}"}}])
    unit = "Grüße 🌊 tide \"pool\" \\ <p>\n"  # multi-byte, astral (surrogate pair in JS) and escaped characters
    content = (unit * (5 * 1024 * 1024 // len(unit.encode("utf-8")) + 1))
    assert len(content.encode("utf-8")) > 5 * 1024 * 1024
    run_id = host.call("capture", template="echo", page={"content": content, "content_type": "text/plain"},
                       timeout=60)["run_id"]
    host.wait_run(run_id)
    before = len(host.chunk_frames)
    msg_id = host.next_id()
    host.send({"id": msg_id, "type": "runs.output", "run_id": run_id, "step_id": "copy"})
    reply = host.reply(msg_id, timeout=60)
    assert reply["ok"] is True
    assert reply["result"]["outputs"]["value"] == content  # byte for byte, after reassembly
    chunks = [c for c in host.chunk_frames[before:] if c["id"] == msg_id]
    assert len(chunks) >= 5 and [c["chunk"] for c in chunks] == list(range(len(chunks)))
    assert all(c["chunks"] == len(chunks) for c in chunks)
    assert max(host.frame_sizes) <= protocol.MAX_OUTGOING
    doc = host.call("runs.get", run_id=run_id)  # the run document cuts long outputs and says so
    assert step_of(doc, "copy")["outputs_truncated"] is True


# ---- lifetime ----------------------------------------------------------------------------

def _side_effect_template(home: Path, name: str, log: Path, seconds: float = 2.0) -> str:
    return write_template(home, name, [
        {"id": "page", "action": "capture"},
        {"id": "nap", "action": "sleep", "dependencies": ["page"], "params": {"seconds": seconds}},
        {"id": "mark", "action": "write_file", "dependencies": ["nap"],
         "params": {"path": str(log), "content": "{{ run.id }}\n", "append": True}},
    ])


@pytest.mark.parametrize("how", ["stdin-closed", "sigterm"])
def test_the_host_exits_while_a_step_is_running_and_the_run_still_completes(home, tmp_path, fake_provider, how):
    """Shown by order: the model call is held by the fake until after the host has exited,
    so the host cannot have waited for it. (How soon it exits is bench/host_startup.py's.)"""
    log = tmp_path / "marks.txt"
    write_template(home, "ask", [
        {"id": "page", "action": "capture"},
        {"id": "ask", "action": "openai_chat", "dependencies": ["page"],
         "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.page.outputs.content }}"}},
        {"id": "mark", "action": "write_file", "dependencies": ["ask"],
         "params": {"path": str(log), "content": "{{ run.id }}\n", "append": True}},
    ])
    fake_provider.hold()
    try:
        with HostClient(home, extra_env=fake_provider.env()) as h:
            h.call("hello", protocol=1)
            run_id = h.call("capture", template="ask", page={"content": "x"})["run_id"]
            (call,) = fake_provider.wait_requests(1)
            if how == "sigterm":
                h.proc.send_signal(signal.SIGTERM)
            else:
                h.close_stdin()
            assert h.wait(60) == 0
            assert call.ended is None  # the step is still running in the background worker
            assert "Traceback" not in h.stderr()
    finally:
        fake_provider.release()
    wait_for(lambda: run_status(home, run_id) == "COMPLETED", timeout=60, what="the worker to finish the run")
    assert log.read_text().splitlines() == [run_id]
    assert len(fake_provider.requests) == 1  # the call was made once
    assert "background worker started" in (home / "logs" / "hybrid-engine.log").read_text()


def test_a_host_killed_mid_step_does_not_interrupt_or_repeat_it(home, tmp_path):
    log = tmp_path / "marks.txt"
    name = _side_effect_template(home, "nap", log, seconds=1.5)
    first = HostClient(home)
    try:
        first.call("hello", protocol=1)
        run_id = first.call("capture", template=name, page={"content": "x"})["run_id"]
        wait_for(lambda: step_of(first.call("runs.get", run_id=run_id), "nap")["status"] == "RUNNING",
                 what="nap RUNNING")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.close()
    wait_for(lambda: run_status(home, run_id) == "COMPLETED", timeout=60, what="the worker to finish the run")
    from hybrid_engine.service import Service

    doc = Service().run_document(run_id)
    nap = step_of(doc, "nap")
    assert nap["execution_metrics"]["crash_recoveries"] == 0 and nap["execution_metrics"]["attempts"] == 1
    assert not any(line.startswith("Recovered") for line in nap["logs"])
    assert log.read_text().splitlines() == [run_id]


def test_a_worker_killed_mid_step_is_replaced_and_the_new_one_recovers_the_step(home, tmp_path):
    log = tmp_path / "marks.txt"
    name = _side_effect_template(home, "nap", log, seconds=1.5)
    with HostClient(home, extra_env={"HYBRID_ENGINE_WORKER_LINGER_S": "30"}) as h:
        h.call("hello", protocol=1)
        run_id = h.call("capture", template=name, page={"content": "x"})["run_id"]
        wait_for(lambda: step_of(h.call("runs.get", run_id=run_id), "nap")["status"] == "RUNNING",
                 what="nap RUNNING")
        killed = h.call("host.status")["worker"]["pid"]
        os.kill(killed, signal.SIGKILL)
        doc = h.wait_run(run_id, timeout=120)  # the host's watchdog starts another worker
        replacement = h.call("host.status")["worker"]["pid"]
    nap = step_of(doc, "nap")
    assert any(line.startswith("Recovered from orphaned RUNNING state") for line in nap["logs"])
    assert nap["execution_metrics"]["crash_recoveries"] == 1
    assert replacement != killed
    assert log.read_text().splitlines() == [run_id]


def test_two_hosts_on_one_store_run_each_step_once_and_both_see_each_others_runs(home, tmp_path):
    log = tmp_path / "effects.txt"
    fan = [{"id": "page", "action": "capture"}] + [
        {"id": f"w{i}", "action": "write_file", "dependencies": ["page"],
         "params": {"path": str(log), "content": "{{ run.id }} " + f"w{i}\n", "append": True}} for i in range(12)]
    write_template(home, "fan", fan)
    with HostClient(home) as a, HostClient(home) as b:
        for h in (a, b):
            h.call("hello", protocol=1)
            h.call("runs.subscribe")
        runs_a = [a.call("capture", template="fan", page={"content": "a"})["run_id"] for _ in range(3)]
        runs_b = [b.call("capture", template="fan", page={"content": "b"})["run_id"] for _ in range(3)]
        for run_id in runs_a + runs_b:
            a.wait_run(run_id)
        for watcher, others in ((a, runs_b), (b, runs_a)):
            for run_id in others:
                watcher.wait_event(lambda e, r=run_id: e.get("event") == "run.updated" and e["run"]["id"] == r
                                   and e["run"]["status"] == "COMPLETED", what=f"COMPLETED event for {run_id}")
    lines = log.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 6 * 12  # every step ran, none twice


def test_runs_started_by_another_process_produce_events(host, cli):
    host.call("runs.subscribe")
    run_id = cli("run", "page-text", check=True).stdout.strip()
    event = host.wait_event(lambda e: e.get("event") == "run.updated" and e["run"]["id"] == run_id,
                            what="run.updated for a CLI run")
    assert event["run"]["status"] == "PENDING" and event["version"]


def test_events_come_only_after_subscribe(host, cli):
    # Shown by order: events report changes in the order they were made, so had the host
    # sent any before subscribe, those for the first run would come before the second's.
    before = host.call("capture", template="page-text", page={"content": PAGE})["run_id"]
    host.wait_run(before)
    assert host.events == []
    host.call("runs.subscribe")
    after = cli("run", "page-text", check=True).stdout.strip()
    host.wait_event(lambda e: e.get("event") == "run.updated" and e["run"]["id"] == after,
                    what="run.updated for the run made after subscribe")
    assert before not in [e["run"]["id"] for e in host.events if e.get("event") == "run.updated"]


def test_templates_changed_event_for_a_change_made_right_after_subscribe(host, home):
    host.call("runs.subscribe")
    write_template(home, "brand-new", [{"id": "a", "action": "noop"}])
    event = host.wait_event(lambda e: e.get("event") == "templates.changed"
                            and "brand-new" in [t["name"] for t in e["templates"]], timeout=15,
                            what="templates.changed")
    assert isinstance(event["errors"], list)


# ---- doctor's launch check ----------------------------------------------------------------

def test_doctor_launches_the_installed_host_and_gets_hello(home, tmp_path):
    user = tmp_path / "user"
    env = host_env(home, {"HOME": str(user), "XDG_CONFIG_HOME": str(user / ".config")})
    proc = subprocess.run([sys.executable, "-m", "hybrid_engine", "install", "--browser", "chromium"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = user / ".config" / "chromium" / "NativeMessagingHosts" / "hybrid_engine.json"
    launcher = json.loads(manifest.read_text())["path"]

    from hybrid_engine import install

    # Room on a busy machine; how soon a host answers is bench/host_startup.py's.
    check = install.check_host(launcher, [f"chrome-extension://{CHROME_EXTENSION_ID}/"], timeout=60)
    assert check.ok, check.problem
    assert check.reply["result"]["protocol"] == 1

    proc = subprocess.run([sys.executable, "-m", "hybrid_engine", "doctor", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    report = json.loads(proc.stdout)
    codes = [f["code"] for f in report["findings"]]
    assert "host_no_answer" not in codes, report
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert proc.returncode == (1 if errors else 0)
    assert not [f for f in errors if "chromium" in f["browser"]], errors

    os.chmod(launcher, 0o644)  # a planted fault: doctor says so and exits 1
    proc = subprocess.run([sys.executable, "-m", "hybrid_engine", "doctor"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "launcher_not_executable" in proc.stdout and "chmod 755" in proc.stdout


# ---- failures inside the host ----------------------------------------------------------------

def test_an_unexpected_failure_is_internal_with_no_traceback_and_the_host_keeps_serving(he_home):
    from hybrid_engine.store import Store

    store = Store(he_home / "engine.db")  # a run row no code path expects: listing runs fails unexpectedly
    store.conn.execute("INSERT INTO runs (id, name, template, status, open_steps, created_at, updated_at)"
                       " VALUES ('r1', 'n', 't', 'PENDING', 0, 'not a time', 'not a time')")
    store.close()
    with HostClient(he_home) as h:
        assert h.call("hello", protocol=1)["protocol"] == 1
        err = h.error("runs.list")
        assert err["code"] == "internal" and "Traceback" not in err["message"]
        assert "hybrid-engine.log" in err["message"]  # where the details are
        assert h.call("hello", protocol=1)["protocol"] == 1
        assert h.close() == 0
        assert h.stdout_problems == []
    assert "Traceback" in (he_home / "logs" / "hybrid-engine.log").read_text()


def test_a_broken_config_file_is_reported_as_bad_config_naming_the_file(home):
    (home / "config.toml").write_text("[budgets\ndaily_usd = 1\n", encoding="utf-8")
    with HostClient(home) as h:
        err = h.error("spend")
        assert err["code"] == "bad_config" and "config.toml" in err["message"]
        assert h.call("runs.list")["runs"] == []


# ---- config, doctor, capture de-duplication ---------------------------------------------------

def _raw_session(home: Path, messages: list[dict], extra_env: dict | None = None) -> tuple[bytes, dict]:
    """Send `messages` to a real host; every byte it wrote to stdout until all were answered and it
    exited, and the replies by id."""
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "hybrid_engine", "host"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=host_env(home, extra_env))
    raw, replies, wanted = bytearray(), {}, {m["id"] for m in messages}

    def read() -> None:
        assembler = protocol.Reassembler()
        while True:
            header = proc.stdout.read(protocol.HEADER.size)
            if len(header) < protocol.HEADER.size:
                raw.extend(header)
                return
            body = proc.stdout.read(protocol.HEADER.unpack(header)[0])
            raw.extend(header + body)
            whole = assembler.feed(protocol.decode_message(body))
            if whole is not None and "ok" in whole:
                replies[whole["id"]] = whole
            if wanted <= set(replies):
                proc.stdin.close()  # all answered: now the browser goes away

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.stdin.write(b"".join(_frame(json.dumps(m).encode("utf-8")) for m in messages))
    proc.stdin.flush()
    reader.join(60)
    try:
        assert not reader.is_alive(), f"no answer to all of {sorted(wanted)}; got {sorted(replies)}"
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read().decode("utf-8", "replace")
    assert not proc.stdout.read(), stderr[-2000:]  # nothing after the last frame
    return bytes(raw), replies


def test_config_reports_which_providers_have_a_key_and_never_the_key(home):
    import uuid

    from hybrid_engine import config

    env_key = f"sk-envkey-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    stored_key = f"sk-stored-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    conf_key = f"AIza-conf-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    url_secret = uuid.uuid4().hex
    config.set_key("deepseek", stored_key)  # what `hybrid-engine keys set deepseek` does
    (home / "config.toml").write_text(f"""
[providers.gemini]
api_key = "{conf_key}"
[providers.local]
base_url = "http://me:{url_secret}@127.0.0.1:8080/v1?token={url_secret}"
concurrency = 2
[budgets]
daily_usd = 1.5
monthly_usd = 20
[executor]
concurrency = 8
""", encoding="utf-8")
    raw, replies = _raw_session(home, [{"id": 1, "type": "hello", "protocol": 1}, {"id": 2, "type": "config"},
                                       {"id": 3, "type": "runs.list"}], {"OPENAI_API_KEY": env_key})
    assert replies[1]["ok"] and {"config", "doctor"} <= set(replies[1]["result"]["capabilities"]["types"])
    assert replies[2]["ok"] is True, replies[2]
    conf = replies[2]["result"]
    p = conf["providers"]
    assert p["openai"]["has_key"] is True and p["openai"]["key_source"] == "env"
    assert p["openai"]["key_env"] == "OPENAI_API_KEY"
    assert p["deepseek"]["has_key"] is True and p["deepseek"]["key_source"] == "keys_file"
    assert p["deepseek"]["base_url"] == "https://api.deepseek.com"
    assert p["gemini"]["has_key"] is True and p["gemini"]["key_source"] == "config"
    assert p["local"]["has_key"] is False and p["local"]["key_source"] is None
    assert p["local"]["base_url"] == "http://127.0.0.1:8080/v1" and p["local"]["concurrency"] == 2
    assert conf["budgets"]["daily_usd"] == 1.5 and conf["budgets"]["monthly_usd"] == 20
    assert conf["limits"]["concurrency"] == 8 and conf["limits"]["per_provider"] == {"local": 2}
    assert conf["templates_folder"] == str(home / "templates") and conf["data_folder"] == str(home)
    assert conf["log_file"] == str(home / "logs" / "hybrid-engine.log") and conf["config_file_exists"] is True
    # No key, and no part of one, in anything the host wrote to its stdout (or its log).
    log_text = (home / "logs" / "hybrid-engine.log").read_bytes()
    for secret in (env_key, stored_key, conf_key, url_secret):
        for i in range(len(secret) - 11):
            part = secret[i:i + 12].encode()
            assert part not in raw, f"part of a secret ({part!r}) reached stdout"
            assert part not in log_text, f"part of a secret ({part!r}) reached the log"


def test_doctor_reports_a_planted_bad_manifest_without_launching_anything(home, tmp_path):
    from hybrid_engine import install

    if install.current_os() == install.WINDOWS:
        pytest.skip("manifests are found through the registry on Windows")
    user = tmp_path / "user"
    folder = install.manifest_dirs("chromium", install.current_os(), home=user, config_home=user / ".config")[0]
    folder.mkdir(parents=True)
    missing = tmp_path / "gone" / "hybrid-engine-host"
    manifest = folder / "hybrid_engine.json"
    manifest.write_text(json.dumps({"name": "hybrid_engine", "description": "planted", "path": str(missing),
                                    "type": "stdio",
                                    "allowed_origins": [f"chrome-extension://{CHROME_EXTENSION_ID}"]}))
    with HostClient(home, extra_env={"HOME": str(user), "XDG_CONFIG_HOME": str(user / ".config")}) as h:
        assert "doctor" in h.call("hello", protocol=1)["capabilities"]["types"]
        report = h.call("doctor", timeout=60)
        assert h.error("doctor", extension_ids=[1])["code"] == "bad_request"
        assert h.stdout_problems == []
    assert report["launch_checked"] is False and "launch" in report["note"]
    assert report["ok"] is False and report["errors"] >= 2
    by_code = {f["code"]: f for f in report["findings"]}
    assert set(by_code["launcher_missing"]) == {"code", "severity", "browser", "path", "problem", "fix"}
    assert by_code["launcher_missing"]["path"] == str(missing) and by_code["launcher_missing"]["severity"] == "error"
    assert "chromium" in by_code["launcher_missing"]["browser"] and by_code["launcher_missing"]["fix"]
    assert by_code["origin_no_trailing_slash"]["path"] == str(manifest)
    assert "host_no_answer" not in by_code


def test_a_capture_resent_with_the_same_capture_id_returns_the_run_it_made_even_after_a_restart(home):
    page = {"content": PAGE, "source_url": "https://example.org/pools", "metadata": {"capture_id": "cap-1"}}
    with HostClient(home) as h:
        h.call("hello", protocol=1)
        first = h.call("capture", template="page-text", page=page)
        assert first["duplicate"] is False and first["step_id"] == "page" and first["queued_dependents"] == 1
        again = h.call("capture", template="page-text", page=page)
        assert again == {"run_id": first["run_id"], "step_id": "page", "queued_dependents": 0, "duplicate": True}
        h.wait_run(first["run_id"])
        other = h.call("capture", template="page-text", page={**page, "metadata": {"capture_id": "cap-2"}})
        plain = h.call("capture", template="page-text", page={"content": PAGE})
        assert other["duplicate"] is False and plain["duplicate"] is False
        assert len({first["run_id"], other["run_id"], plain["run_id"]}) == 3
        assert h.error("capture", template="page-text",
                       page={"content": "x", "metadata": {"capture_id": 7}})["code"] == "bad_request"
        assert len(h.call("runs.list")["runs"]) == 3
        assert h.stdout_problems == []
    with HostClient(home) as h:  # a new host process: the mapping was persisted
        h.call("hello", protocol=1)
        after = h.call("capture", template="page-text", page=page)
        assert after == {"run_id": first["run_id"], "step_id": "page", "queued_dependents": 0, "duplicate": True}
        assert len(h.call("runs.list")["runs"]) == 3
        assert step_of(h.call("runs.get", run_id=first["run_id"]), "page")["metadata"]["capture_id"] == "cap-1"
    # Two hosts receiving the same new capture at once still make one run.
    with HostClient(home) as a, HostClient(home) as b:
        for h in (a, b):
            h.call("hello", protocol=1)
        fresh = {**page, "metadata": {"capture_id": "cap-3"}}
        for h in (a, b):
            h.send({"id": "c3", "type": "capture", "template": "page-text", "page": fresh})
        replies = [h.reply("c3") for h in (a, b)]
        assert all(r["ok"] for r in replies), replies
        assert replies[0]["result"]["run_id"] == replies[1]["result"]["run_id"]
        assert sorted(r["result"]["duplicate"] for r in replies) == [False, True]
        assert len(a.call("runs.list")["runs"]) == 4
