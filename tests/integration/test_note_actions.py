"""save_note and webhook through the engine: the real executor and store, the real OpenAI SDK
against the loopback fake provider, a real HTTP receiver on 127.0.0.1 for the webhook.

Notes are read back from disk and their front matter parsed with yaml.safe_load.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from hybrid_engine.errors import TemplateError
from hybrid_engine.templates import validate

FAST_RETRIES = "[executor]\nbackoff_base_s = 0.05\nbackoff_cap_s = 0.2\n"
HOSTILE_TITLE = 'Part 1: "the plan"\n---\nevil: true\n# not a heading'


def drain(service):
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))


def write_template(folder: Path, steps: list[dict], name: str = "notes-test") -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "steps": steps}, sort_keys=False), encoding="utf-8")
    return str(path)


def note_steps(**note_params) -> list[dict]:
    return [
        {"id": "page", "action": "capture"},
        {"id": "summary", "action": "openai_chat", "dependencies": ["page"],
         "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.page.outputs.content }}"}},
        {"id": "note", "action": "save_note", "dependencies": ["summary"],
         "params": {"content": "{{ steps.summary.outputs.text }}", "tags": ["clipping", "two words"], **note_params}},
    ]


def capture_run(service, template: str, title: str = "A page", url: str = "https://example.org/a") -> str:
    return service.start(template, content="<p>Some text</p>", source_url=url, title=title,
                         content_type="text/html")["run_id"]


def front_matter_of(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def note_path(service, run_id: str) -> Path:
    doc = service.run_document(run_id)
    step = next(s for s in doc["steps"] if s["id"] == "note")
    assert step["status"] == "COMPLETED", step["error"]
    return Path(step["outputs"]["path"])


@pytest.fixture
def vault(tmp_path, write_config):
    folder = tmp_path / "vault"
    write_config(f'[notes]\nfolder = "{folder}"\n')
    return folder


# ---- save_note -------------------------------------------------------------------------------

def test_note_front_matter_survives_a_hostile_title_and_parses_back(service, fake_provider_env, vault, tmp_path):
    fake_provider_env.script("openai", text="- point one\n---\n- point two",
                             usage={"prompt_tokens": 1000, "completion_tokens": 100})
    run_id = capture_run(service, write_template(tmp_path, note_steps()), title=HOSTILE_TITLE)
    drain(service)
    path = note_path(service, run_id)
    assert path.parent == vault
    meta, body = front_matter_of(path)
    assert meta["title"] == 'Part 1: "the plan" --- evil: true # not a heading'  # one line, whole
    assert "evil" not in meta
    assert meta["url"] == "https://example.org/a"
    assert meta["workflow"] == "notes-test" and meta["models"] == ["gpt-4o-mini"]
    assert meta["tags"] == ["clipping", "two-words"] and meta["run"] == run_id
    assert meta["captured_at"]
    assert body.strip() == "- point one\n---\n- point two"


def test_note_cost_is_exact_and_never_zero_for_a_sent_call(service, fake_provider_env, vault, tmp_path):
    fake_provider_env.script("openai", usage={"prompt_tokens": 1000, "completion_tokens": 100})
    run_id = capture_run(service, write_template(tmp_path, note_steps()))
    drain(service)
    meta, _ = front_matter_of(note_path(service, run_id))
    assert meta["cost_state"] == "exact"
    assert meta["cost_usd"] == pytest.approx(service.run_document(run_id)["metrics"]["total_cost"])
    assert meta["cost_usd"] > 0 and meta["cost"].startswith("$") and meta["cost"] != "$0"


def test_note_cost_of_an_unpriced_model_is_unknown_not_zero(service, fake_provider_env, tmp_path, write_config):
    folder = tmp_path / "vault"
    write_config(f'[notes]\nfolder = "{folder}"\n[budgets]\nunknown_price = "allow"\n')
    steps = note_steps()
    steps[1]["params"]["model"] = "no-such-model-anywhere"
    run_id = capture_run(service, write_template(tmp_path, steps))
    drain(service)
    meta, _ = front_matter_of(note_path(service, run_id))
    assert meta["cost_state"] == "unknown" and meta["cost"] == "unknown" and meta["cost_usd"] is None


def test_note_file_name_comes_from_the_title_made_safe(service, fake_provider_env, vault, tmp_path):
    run_id = capture_run(service, write_template(tmp_path, note_steps()), title="../../etc/passwd: a/b")
    drain(service)
    path = note_path(service, run_id)
    assert path.parent == vault and path.name == "etc-passwd-a-b.md"


def test_a_second_page_with_the_same_title_gets_its_own_note(service, fake_provider_env, vault, tmp_path):
    template = write_template(tmp_path, note_steps())
    first, second = capture_run(service, template, "Same title"), capture_run(service, template, "Same title")
    drain(service)
    a, b = note_path(service, first), note_path(service, second)
    # Both runs execute at once: whichever saves first takes the plain name, the other is tagged.
    plain, tagged = (a, b) if a.name == "Same-title.md" else (b, a)
    assert plain.name == "Same-title.md" and tagged.name.startswith("Same-title-") and tagged != plain
    assert front_matter_of(a)[0]["run"] == first and front_matter_of(b)[0]["run"] == second


def test_a_pipe_where_the_note_would_go_gets_a_note_beside_it_instead_of_blocking(
        service, fake_provider_env, vault, tmp_path):
    import os

    fake_provider_env.set_default("openai", text="a summary")
    vault.mkdir(parents=True)
    os.mkfifo(vault / "A-page.md")  # nobody writes to it: reading it would wait for ever
    run = capture_run(service, write_template(tmp_path, note_steps()), "A page")
    drain(service)
    path = note_path(service, run)
    assert path.parent == vault and path.name != "A-page.md"
    assert front_matter_of(path)[0]["title"] == "A page"


def test_a_notes_folder_that_is_a_file_fails_the_step_saying_so(service, fake_provider_env, vault, tmp_path):
    fake_provider_env.set_default("openai", text="a summary")
    vault.write_text("not a folder")
    run = capture_run(service, write_template(tmp_path, note_steps()), "A page")
    drain(service)
    step = next(s for s in service.run_document(run)["steps"] if s["id"] == "note")
    assert step["status"] == "FAILED" and f"'{vault}' is a file, not a folder" in step["error"]
    assert vault.read_text() == "not a folder"


def test_a_folder_written_in_the_template_wins_over_the_config(service, fake_provider_env, vault, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    run_id = capture_run(service, write_template(tmp_path, note_steps(folder=str(elsewhere))))
    drain(service)
    assert note_path(service, run_id).parent == elsewhere


def test_a_relative_template_folder_lands_inside_the_notes_folder(service, fake_provider_env, vault, tmp_path):
    run_id = capture_run(service, write_template(tmp_path, note_steps(folder="Clippings/Web")))
    drain(service)
    assert note_path(service, run_id).parent == vault / "Clippings" / "Web"


def test_a_folder_filled_from_page_data_is_refused_when_the_template_loads(tmp_path):
    steps = note_steps(folder="{{ steps.page.outputs.title }}")
    with pytest.raises(TemplateError, match="params.folder"):
        validate({"name": "x", "steps": steps}, "x.yaml")


def test_daily_mode_appends_entries_under_one_front_matter(service, fake_provider_env, vault, tmp_path):
    fake_provider_env.set_default("openai", text="a summary")
    template = write_template(tmp_path, note_steps(mode="daily"))
    runs = [capture_run(service, template, f"Page {i}", f"https://example.org/{i}") for i in range(3)]
    drain(service)
    paths = {note_path(service, r) for r in runs}
    assert len(paths) == 1
    path = paths.pop()
    assert path.name == f"{datetime.now().astimezone().date().isoformat()}.md"
    meta, body = front_matter_of(path)
    assert meta["date"] == path.stem and meta["tags"] == ["clipping", "two-words"]
    assert path.read_text().count("\n---\n") == 1  # the front matter's end, once
    assert sorted(line for line in body.splitlines() if line.startswith("## ")) == [
        "## Page 0", "## Page 1", "## Page 2"]
    assert "[source](https://example.org/1)" in body


def test_a_daily_entry_shows_a_hostile_title_and_url_as_text_not_as_images_or_links(
        service, fake_provider_env, vault, tmp_path):
    fake_provider_env.set_default("openai", text="a summary")
    template = write_template(tmp_path, note_steps(mode="daily"))
    run = capture_run(service, template, "Hi ![x](https://tracker.example/t.png) <img src=https://tracker.example/i>",
                      "https://evil.example/a)![y](https://tracker.example/u.png")
    drain(service)
    _, body = front_matter_of(note_path(service, run))
    heading = next(line for line in body.splitlines() if line.startswith("## "))
    assert heading == r"## Hi \!\[x\]\(https://tracker.example/t.png\) \<img src=https://tracker.example/i\>"
    assert "[source](https://evil.example/a%29!%5By%5D%28https://tracker.example/u.png)" in body


def test_the_bundled_page_to_notes_template_saves_a_note(service, fake_provider_env, vault):
    run_id = service.start("page-to-notes", content="<html><head><title>Bundled</title></head><body><p>Text of "
                           "the page.</p></body></html>", source_url="https://example.org/b", title="Bundled")["run_id"]
    drain(service)
    meta, _ = front_matter_of(note_path(service, run_id))
    assert meta["title"] == "Bundled" and meta["workflow"] == "page-to-notes"


# ---- webhook -------------------------------------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with the statuses it is given, then 200."""

    def __init__(self, statuses=(), redirect_to: str | None = None):
        self.statuses = list(statuses)
        self.redirect_to = redirect_to
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "body": json.loads(body)})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.redirect_to and status in (307, 308):
                    self.send_response(status)
                    self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = b'{"ok": true}' if status == 200 else b"try later"
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def hook_steps(**params) -> list[dict]:
    return [{"id": "page", "action": "capture"},
            {"id": "text", "action": "template", "dependencies": ["page"],
             "params": {"template": "Title: {{ steps.page.outputs.title }}"}},
            {"id": "hook", "action": "webhook", "dependencies": ["text"], "params": params}]


def hook_step(service, run_id):
    return next(s for s in service.run_document(run_id)["steps"] if s["id"] == "hook")


def test_webhook_retries_server_errors_then_posts_the_outputs(service, write_config, tmp_path):
    write_config(FAST_RETRIES)
    with Receiver(statuses=[500, 503]) as rx:
        run_id = capture_run(service, write_template(tmp_path, hook_steps(url=rx.url)), title="Hooked")
        drain(service)
        step = hook_step(service, run_id)
        assert step["status"] == "COMPLETED" and step["outputs"]["status"] == 200
        assert len(rx.requests) == 3 and step["execution_metrics"]["attempts"] == 3
        body = rx.requests[-1]["body"]
        assert body["outputs"] == {"text": {"text": "Title: Hooked"}}  # the capture slot's page stays out
        assert body["page"]["title"] == "Hooked" and body["workflow"] == "notes-test"
        keys = {r["headers"]["Idempotency-Key"] for r in rx.requests}
        assert keys == {f"{run_id}/hook"}  # one key for every attempt: the receiver can drop repeats


def test_webhook_sends_the_data_the_template_chooses(service, tmp_path):
    with Receiver() as rx:
        run_id = capture_run(service, write_template(tmp_path, hook_steps(
            url=rx.url, data={"summary": "{{ steps.text.outputs.text }}"})), title="Chosen")
        drain(service)
        assert hook_step(service, run_id)["status"] == "COMPLETED"
        assert rx.requests[0]["body"]["outputs"] == {"summary": "Title: Chosen"}


def test_webhook_retries_when_nothing_answers(service, write_config, tmp_path):
    write_config(FAST_RETRIES)
    with Receiver() as rx:
        dead = rx.url
    run_id = capture_run(service, write_template(tmp_path, hook_steps(url=dead)))
    drain(service)
    step = hook_step(service, run_id)
    assert step["status"] == "FAILED" and step["execution_metrics"]["attempts"] == 4  # 1 + default 3 retries
    assert "no answer from 127.0.0.1" in step["error"]


def test_webhook_client_error_fails_at_once(service, tmp_path):
    with Receiver(statuses=[404]) as rx:
        run_id = capture_run(service, write_template(tmp_path, hook_steps(url=rx.url)))
        drain(service)
        step = hook_step(service, run_id)
        assert step["status"] == "FAILED" and len(rx.requests) == 1 and "answered 404" in step["error"]


def test_webhook_does_not_follow_a_redirect_to_another_host(service, tmp_path):
    with Receiver() as other, Receiver(statuses=[307], redirect_to=other.url.replace("127.0.0.1", "localhost")) as rx:
        run_id = capture_run(service, write_template(tmp_path, hook_steps(url=rx.url)))
        drain(service)
        step = hook_step(service, run_id)
        assert step["status"] == "FAILED" and "another host" in step["error"]
        assert other.requests == []


def test_webhook_follows_a_307_on_the_same_host(service, tmp_path):
    with Receiver(statuses=[307]) as rx:
        rx.redirect_to = "/moved"
        run_id = capture_run(service, write_template(tmp_path, hook_steps(url=rx.url)))
        drain(service)
        assert hook_step(service, run_id)["status"] == "COMPLETED"
        assert [r["path"] for r in rx.requests] == ["/hook", "/moved"]


def test_webhook_endpoint_named_in_config(service, write_config, tmp_path):
    with Receiver() as rx:
        write_config(f'[webhooks]\nreader = "{rx.url}"\n')
        run_id = capture_run(service, write_template(tmp_path, hook_steps(endpoint="reader")))
        drain(service)
        assert hook_step(service, run_id)["status"] == "COMPLETED" and len(rx.requests) == 1


def test_webhook_url_from_a_reference_is_refused_when_the_template_loads():
    with pytest.raises(TemplateError, match="params.url"):
        validate({"name": "x", "steps": hook_steps(url="{{ steps.page.outputs.source_url }}")}, "x.yaml")


# ---- through the real host: a capture message, the host's background worker, the note on disk --

def test_a_capture_sent_to_the_host_ends_as_a_note_and_a_webhook_post(he_home, fake_provider, write_config, tmp_path):
    from host_client import HostClient

    vault = tmp_path / "vault"
    with Receiver() as rx:
        write_config(f'[notes]\nfolder = "{vault}"\n[webhooks]\nreader = "{rx.url}"\n')
        steps = note_steps() + [{"id": "hook", "action": "webhook", "dependencies": ["note"],
                                 "params": {"endpoint": "reader",
                                            "data": {"note": "{{ steps.note.outputs.path }}"}}}]
        (he_home / "templates").mkdir(parents=True, exist_ok=True)
        write_template(he_home / "templates", steps, name="host-notes")
        with HostClient(he_home, extra_env=fake_provider.env()) as h:
            run_id = h.call("capture", template="host-notes",
                            page={"content": "<p>Text</p>", "source_url": "https://example.org/h",
                                  "title": 'Host: "quoted"', "content_type": "text/html"})["run_id"]
            doc = h.wait_run(run_id)
        path = Path(next(s for s in doc["steps"] if s["id"] == "note")["outputs"]["path"])
        meta, _ = front_matter_of(path)
        assert path.parent == vault and meta["title"] == 'Host: "quoted"' and meta["url"] == "https://example.org/h"
        assert [r["body"]["outputs"] for r in rx.requests] == [{"note": str(path)}]

