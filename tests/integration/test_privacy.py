"""Privacy through every way in: [[sites]] rules, what is sent, redaction before cloud steps.

The host as a subprocess speaking frames, the CLI as a subprocess, the real openai SDK
against the loopback fake provider (a cloud provider there, `local` a local server).
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from hybrid_engine.errors import SiteRefused
from hybrid_engine.templates import validate

from host_client import HostClient
from pdf_writer import text_pdf

DATA = Path(__file__).resolve().parents[1] / "data" / "privacy"
PAGE = "<html><head><title>Account</title></head><body><article><h1>Statement</h1>" \
       "<p>Write to jane.doe@example.org or call +44 20 7946 0958 about card 4111 1111 1111 1111.</p>" \
       "<p>Order 123456789 shipped on 2024-01-15.</p></article></body></html>"
SITES = """
[[sites]]
match = "*.bank.example"
rule = "never"

[[sites]]
match = "mail.example"
rule = "local_only"

[[sites]]
match = "shop.example"
rule = "strip_query"
"""


def template(name="digest", action="openai_chat", model="gpt-4o-mini", **extra):
    return {"name": name, **extra, "steps": [
        {"id": "page", "action": "capture"},
        {"id": "text", "action": "extract_text", "dependencies": ["page"],
         "params": {"html": "{{ steps.page.outputs.content }}"}},
        {"id": "sum", "action": action, "dependencies": ["text"],
         "params": {"model": model, "system": "You summarise pages.",
                    "prompt": "Summarise {{ steps.page.outputs.source_url }}:\n\n{{ steps.text.outputs.text }}",
                    "max_tokens": 100}}]}


@pytest.fixture
def home(he_home, write_config):
    write_config(SITES)
    (he_home / "templates").mkdir(parents=True, exist_ok=True)
    return he_home


def put_template(home, data):
    (home / "templates" / f"{data['name']}.json").write_text(json.dumps(data), encoding="utf-8")
    return data["name"]


def drain(service):
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))


def step(doc, step_id):
    return next(s for s in doc["steps"] if s["id"] == step_id)


# ---- never: no way in takes the page ---------------------------------------------------------

def test_a_never_site_is_refused_by_the_hosts_capture_and_no_run_is_made(home):
    put_template(home, template())
    with HostClient(home) as host:
        host.call("hello", protocol=1)
        err = host.error("capture", template="digest",
                         page={"content": PAGE, "source_url": "https://Online.BANK.example./login?x=1"})
        assert err["code"] == "site_never" and "online.bank.example" in err["message"]
        assert "never" in err["message"] and err["field"] == "source_url"
        assert host.call("runs.list")["runs"] == []


def test_a_never_site_is_refused_by_run_source_url_on_the_command_line(home, cli, tmp_path):
    put_template(home, template())
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    proc = cli("run", "digest", "--input", page, "--source-url", "https://bank.example:8443/")
    assert proc.returncode == 2 and "bank.example" in proc.stderr and "never" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cli.json("runs", "--json")["runs"] == []


def test_a_never_site_is_refused_by_ingest_into_a_waiting_run(home, service):
    put_template(home, template())
    run_id = service.create_run("digest")
    with pytest.raises(SiteRefused):
        service.ingest(run_id, {"content": PAGE, "source_url": "http://x.bank.example/"})
    assert service.open_slots(run_id) == ["page"]


def test_a_never_site_is_refused_by_estimate_too(home, service):
    put_template(home, template())
    with pytest.raises(SiteRefused):
        service.estimate("digest", {"content": PAGE, "source_url": "https://bank.example/"})


# ---- strip_query ------------------------------------------------------------------------------

def test_strip_query_drops_the_query_and_fragment_from_the_url_stored_and_sent(home, service, fake_provider_env):
    put_template(home, template())
    run_id = service.start("digest", content=PAGE, source_url="https://shop.example/cart?session=s3cr3t#pay")["run_id"]
    drain(service)
    doc = service.run_document(run_id, cut=None)
    assert step(doc, "page")["outputs"]["source_url"] == "https://shop.example/cart"
    assert step(doc, "page")["metadata"]["source_url"] == "https://shop.example/cart"
    (request,) = fake_provider_env.requests
    assert "s3cr3t" not in json.dumps(request.body) and "https://shop.example/cart:" in json.dumps(request.body)


# ---- local_only -------------------------------------------------------------------------------

def test_a_local_only_page_never_produces_a_request_to_the_cloud_provider(home, service, fake_provider_env):
    put_template(home, template())
    run_id = service.start("digest", content=PAGE, source_url="https://mail.example/inbox/1")["run_id"]
    drain(service)
    doc = service.run_document(run_id)
    sum_step = step(doc, "sum")
    assert doc["status"] == "FAILED" and sum_step["error_code"] == "site_local_only"
    assert "mail.example" in sum_step["error"] and "nothing was sent" in sum_step["error"]
    assert fake_provider_env.requests == []
    assert "calls" not in sum_step  # nothing journaled: no call was ever about to go


def test_a_local_only_page_runs_on_a_local_model(home, service, fake_provider_env):
    put_template(home, template(name="local", action="local_chat", model="llama3.2"))
    run_id = service.start("local", content=PAGE, source_url="https://mail.example/inbox/1")["run_id"]
    drain(service)
    assert service.run_document(run_id)["status"] == "COMPLETED"
    assert [r.provider for r in fake_provider_env.requests] == ["local"]


def test_a_local_provider_at_a_public_address_is_not_local(home, service, fake_provider_env, monkeypatch):
    monkeypatch.setenv("HYBRID_ENGINE_LOCAL_BASE_URL", "https://ollama.example.com/v1")
    put_template(home, template(name="local", action="local_chat", model="llama3.2"))
    run_id = service.start("local", content=PAGE, source_url="https://mail.example/inbox/1")["run_id"]
    drain(service)
    assert step(service.run_document(run_id), "sum")["error_code"] == "site_local_only"
    assert fake_provider_env.requests == []


def test_a_rule_added_while_a_run_waits_applies_to_it(home, service, fake_provider_env, write_config):
    write_config("")
    put_template(home, template())
    run_id = service.start("digest", content=PAGE, source_url="https://mail.example/inbox/1")["run_id"]
    write_config(SITES)
    drain(service)
    assert step(service.run_document(run_id), "sum")["error_code"] == "site_local_only"
    assert fake_provider_env.requests == []


def test_estimate_says_a_local_only_page_blocks_its_cloud_step(home, service):
    put_template(home, template())
    (est,) = service.estimate("digest", {"content": PAGE, "source_url": "https://mail.example/1"})["steps"]
    assert "local_only" in est["blocked"] and "mail.example" in est["blocked"]


# ---- what is sent -----------------------------------------------------------------------------

def test_what_estimate_shows_as_sent_equals_what_the_provider_received_byte_for_byte(
        home, service, fake_provider_env):
    put_template(home, template(redact=["email", "phone", "card"]))
    page = {"content": PAGE, "source_url": "https://example.org/statement", "content_type": "text/html"}
    (est,) = service.estimate("digest", page)["steps"]
    shown = est["sent"]
    assert shown["provider"] == "openai" and shown["model"] == "gpt-4o-mini" and shown["local"] is False
    service.start("digest", **page)
    drain(service)
    (request,) = fake_provider_env.requests
    messages = request.body["messages"]
    assert messages[0] == {"role": "system", "content": shown["system"]}
    assert messages[1]["role"] == "user"
    assert messages[1]["content"].encode("utf-8") == shown["prompt"].encode("utf-8")
    assert request.model == shown["model"]


def test_the_run_document_keeps_what_each_model_step_sent(home, service, fake_provider_env):
    put_template(home, template())
    run_id = service.start("digest", content=PAGE, source_url="https://example.org/s")["run_id"]
    drain(service)
    sent = step(service.run_document(run_id, cut=None), "sum")["outputs"]["sent"]
    (request,) = fake_provider_env.requests
    assert sent == {"system": request.body["messages"][0]["content"], "prompt": request.body["messages"][1]["content"]}


def test_estimate_show_prompt_prints_the_prompt_provider_and_model(home, cli, tmp_path, fake_provider_env):
    put_template(home, template())
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    out = cli("estimate", "digest", "--input", page, "--source-url", "https://example.org/s", "--show-prompt",
              check=True).stdout
    assert "sum: openai gpt-4o-mini" in out
    assert "system: You summarise pages." in out
    assert "Summarise https://example.org/s:" in out and "jane.doe@example.org" in out


# ---- redaction --------------------------------------------------------------------------------

def test_redaction_replaces_personal_data_before_a_cloud_step_and_counts_it(home, service, fake_provider_env):
    put_template(home, template(redact=["email", "phone", "card", "iban", "api_key"]))
    run_id = service.start("digest", content=PAGE, source_url="https://example.org/s")["run_id"]
    drain(service)
    (request,) = fake_provider_env.requests
    body = json.dumps(request.body)
    assert "jane.doe@example.org" not in body and "4111 1111 1111 1111" not in body and "7946" not in body
    assert "[email]" in body and "[card]" in body and "[phone]" in body
    assert "123456789" in body and "2024-01-15" in body  # not personal data
    doc = service.run_document(run_id)
    assert step(doc, "sum")["metadata"]["redacted"] == {"email": 1, "phone": 1, "card": 1}
    assert doc["redacted"] == {"email": 1, "phone": 1, "card": 1}


def test_redaction_leaves_the_text_of_a_local_step_as_it_is(home, service, fake_provider_env):
    put_template(home, template(name="local", action="local_chat", model="llama3.2", redact=["email", "card"]))
    service.start("local", content=PAGE, source_url="https://example.org/s")
    drain(service)
    (request,) = fake_provider_env.requests
    assert "jane.doe@example.org" in json.dumps(request.body)


def test_show_prints_the_redaction_counts(home, service, fake_provider_env, cli):
    put_template(home, template(redact=["email"]))
    run_id = service.start("digest", content=PAGE, source_url="https://example.org/s")["run_id"]
    drain(service)
    out = cli("show", run_id, check=True).stdout
    assert "redacted before cloud steps: 1 email" in out


def test_an_unknown_redaction_kind_is_refused_when_the_template_loads():
    from hybrid_engine.errors import TemplateError

    with pytest.raises(TemplateError) as info:
        validate(template(redact=["email", "passport"]), "t.yaml")
    assert "field 'redact'" in str(info.value) and "'passport'" in str(info.value) and "iban" in str(info.value)


# ---- the rules as the extension's Options reads and writes them -------------------------------

def test_config_lists_the_site_rules_and_the_suggestions_that_are_off(home):
    with HostClient(home) as host:
        host.call("hello", protocol=1)
        sites = host.call("config")["sites"]
    assert sites["rules"] == [{"match": "*.bank.example", "rule": "never"}, {"match": "mail.example", "rule": "local_only"},
                              {"match": "shop.example", "rule": "strip_query"}]
    assert {"match": "*.internal", "rule": "never", "why": "intranet names"} in sites["defaults"]


def test_sites_set_replaces_only_the_sites_tables_of_config_toml(home, write_config):
    path = write_config("# my settings\n[budgets]\ndaily_usd = 2.0\n" + SITES + "\n[executor]\nconcurrency = 4  # two cores\n")
    with HostClient(home) as host:
        host.call("hello", protocol=1)
        result = host.call("sites.set", sites=[{"match": "*.internal", "rule": "never"}])
        assert result["sites"] == [{"match": "*.internal", "rule": "never"}]
        err = host.error("sites.set", sites=[{"match": "a.*.example", "rule": "never"}])
        assert err["code"] == "bad_request" and "sites #1 match" in err["message"] and "a host name" in err["message"]
        assert host.call("config")["sites"]["rules"] == [{"match": "*.internal", "rule": "never"}]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my settings\n[budgets]\ndaily_usd = 2.0\n")
    assert "concurrency = 4  # two cores" in text and "bank.example" not in text and text.count("[[sites]]") == 1


# ---- attacks on the rules -------------------------------------------------------------------

def test_metadata_naming_another_source_url_does_not_unlock_a_local_only_page(home, service, fake_provider_env):
    put_template(home, template())
    run_id = service.create_run("digest")
    service.ingest(run_id, {"content": PAGE, "source_url": "https://mail.example/inbox/1",
                            "metadata": {"source_url": "https://news.example/"}})
    drain(service)
    doc = service.run_document(run_id)
    assert step(doc, "page")["metadata"]["source_url"] == "https://mail.example/inbox/1"
    assert step(doc, "sum")["error_code"] == "site_local_only"
    assert fake_provider_env.requests == []


def test_a_link_capture_whose_link_is_on_a_never_site_is_refused_by_the_host(home, service):
    put_template(home, template())
    run_id = service.create_run("digest")
    with pytest.raises(SiteRefused):
        service.ingest(run_id, {"content": "https://x.bank.example/statement?id=9", "source_url": "https://news.example/",
                                "metadata": {"kind": "link", "link_url": "https://x.bank.example/statement?id=9"}})
    assert service.open_slots(run_id) == ["page"]


def test_strip_query_strips_the_url_of_a_link_to_that_site_too(home, service):
    put_template(home, template())
    run_id = service.create_run("digest")
    service.ingest(run_id, {"content": "see", "source_url": "https://news.example/",
                            "metadata": {"kind": "link", "link_url": "https://shop.example/cart?session=s3cr3t"}})
    doc = service.run_document(run_id, cut=None)
    assert "s3cr3t" not in json.dumps(step(doc, "page"))


def test_no_for_each_part_of_a_local_only_page_goes_to_the_cloud(home, service, fake_provider_env):
    put_template(home, {"name": "parts", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "parts", "action": "split_text", "dependencies": ["page"],
         "params": {"text": "{{ steps.page.outputs.content }}", "part_tokens": 60, "overlap_tokens": 0}},
        {"id": "each", "action": "openai_chat", "for_each": "{{ steps.parts.outputs.parts }}",
         "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ item }}", "max_tokens": 20}}]})
    text = "\n\n".join(f"Paragraph {i} of the inbox: " + "words of a private letter " * 12 for i in range(6))
    run_id = service.start("parts", content=text, content_type="text/plain",
                           source_url="https://mail.example/inbox/1")["run_id"]
    drain(service)
    doc = service.run_document(run_id)
    assert sum(1 for s in doc["steps"] if s["id"].startswith("each~")) > 1
    assert doc["status"] == "FAILED" and fake_provider_env.requests == []


def test_no_map_reduce_part_of_a_local_only_page_goes_to_the_cloud(home, service, fake_provider_env, write_config):
    write_config(SITES + '\n[models."gpt-4o-mini"]\ncontext_window = 1024\n')
    put_template(home, template(name="long"))
    step_params = json.loads((home / "templates" / "long.json").read_text())
    step_params["steps"][2]["params"]["on_overflow"] = "map_reduce"
    put_template(home, step_params)
    page = "<html><body><article>" + "".join(
        f"<p>Letter {i}: " + "a private sentence about the account. " * 20 + "</p>" for i in range(40)) + \
        "</article></body></html>"
    run_id = service.start("long", content=page, source_url="https://mail.example/inbox/1")["run_id"]
    drain(service)
    doc = service.run_document(run_id)
    assert any(s["id"].startswith("sum~map~") for s in doc["steps"]), [s["id"] for s in doc["steps"]]
    assert doc["status"] == "FAILED" and fake_provider_env.requests == []


def test_strip_query_also_strips_the_url_where_it_stands_in_for_an_unreadable_pages_text_and_title(
        home, service, fake_provider_env):
    url = "https://shop.example/invoice.pdf?token=s3cr3t#page=2"
    put_template(home, template())
    run_id = service.start("digest", content=f"{url}\n{url}", content_type="text/plain", title=url,
                           source_url=url)["run_id"]
    drain(service)
    page = step(service.run_document(run_id, cut=None), "page")
    assert "s3cr3t" not in json.dumps(page)
    assert page["outputs"]["content"] == "https://shop.example/invoice.pdf\nhttps://shop.example/invoice.pdf"
    (request,) = fake_provider_env.requests
    assert "s3cr3t" not in json.dumps(request.body)


def test_a_pdf_link_captured_on_a_never_site_is_refused_by_the_host(home, service):
    put_template(home, template())
    run_id = service.create_run("digest")
    with pytest.raises(SiteRefused):
        service.ingest(run_id, {"content": base64.b64encode(text_pdf([["Annual report"]])).decode(),
                                "content_type": "application/pdf", "source_url": "https://files.example/report.pdf",
                                "title": "Statement March", "metadata": {
                                    "kind": "pdf", "pdf_url": "https://files.example/report.pdf",
                                    "page_url": "https://x.bank.example/statements?acct=9"}})
    assert service.open_slots(run_id) == ["page"]


def test_strip_query_strips_the_address_of_a_pdf_capture_kept_in_its_metadata(home, service):
    put_template(home, template())
    run_id = service.create_run("digest")
    service.ingest(run_id, {"content": base64.b64encode(text_pdf([["Receipt"]])).decode(),
                            "content_type": "application/pdf", "source_url": "https://shop.example/r.pdf?session=s3cr3t",
                            "metadata": {"kind": "pdf", "pdf_url": "https://shop.example/r.pdf?session=s3cr3t"}})
    doc = service.run_document(run_id, cut=None)
    assert "s3cr3t" not in json.dumps(step(doc, "page"))
