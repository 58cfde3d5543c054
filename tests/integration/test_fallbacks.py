"""A model step's `fallback:` models: one test per trigger (transient errors past the last
retry, a provider that cannot be reached, a budget that cannot afford the first choice),
each checking which model answered, why, and what each attempt cost (the call journal)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hybrid_engine.errors import TemplateError
from hybrid_engine.templates import validate

FAST_RETRIES = "[executor]\nbackoff_base_s = 0.02\nbackoff_cap_s = 0.05\n"


def tpl(steps, name="t", **extra):
    return validate({"name": name, "steps": steps, **extra}, "test.yaml")


def drain(service, timeout=60):
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), timeout))


def run_one(service, step, **run):
    run_id = service.create_run(tpl([step]), **run)
    drain(service)
    doc = service.run_document(run_id)
    return doc, doc["steps"][0], service.store.calls(run_id)


def test_transient_errors_past_the_last_retry_move_on_to_the_fallback_in_the_same_attempt(
        service, fake_provider_env, write_config):
    write_config(FAST_RETRIES)
    fake = fake_provider_env
    fake.script("openai", status=503, times=2)
    doc, m, calls = run_one(service, {"id": "m", "action": "openai_chat", "params": {
        "model": "gpt-4o", "prompt": "Summarise: x", "max_tokens": 50, "retries": 1,
        "fallback": [{"provider": "gemini", "model": "gemini-2.5-flash"}]}})
    assert m["status"] == "COMPLETED" and m["execution_metrics"]["attempts"] == 2
    fb = m["metadata"]["fallback"]
    assert fb["answered_by"] == {"provider": "gemini", "model": "gemini-2.5-flash"}
    assert fb["reason"] == "retries exhausted" and fb["choice"] == 2
    assert [(a["model"], a["error_code"], a["cost"]) for a in fb["attempts"]] == \
        [("gpt-4o", "provider_unavailable", 0.0)]
    assert [(c["model"], c["state"]) for c in calls] == \
        [("gpt-4o", "refused"), ("gpt-4o", "refused"), ("gemini-2.5-flash", "answered")]
    assert calls[-1]["cost"] == m["metadata"]["cost"] > 0 and doc["status"] == "COMPLETED"


def test_a_provider_that_cannot_be_reached_moves_on_at_once_without_using_a_retry(
        service, fake_provider_env, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HYBRID_ENGINE_LOCAL_BASE_URL", f"http://127.0.0.1:{port}/v1")
    doc, m, calls = run_one(service, {"id": "m", "action": "local_chat", "params": {
        "model": "llama3.2", "prompt": "Summarise: x", "max_tokens": 50,
        "fallback": [{"provider": "openai", "model": "gpt-4o-mini"}]}})
    assert m["status"] == "COMPLETED" and m["execution_metrics"]["attempts"] == 1
    fb = m["metadata"]["fallback"]
    assert fb["answered_by"] == {"provider": "openai", "model": "gpt-4o-mini"} and fb["reason"] == "provider down"
    assert fb["attempts"][0]["error_code"] == "provider_unreachable" and fb["attempts"][0]["cost"] == 0.0
    assert [(c["provider"], c["state"]) for c in calls] == [("local", "refused"), ("openai", "answered")]
    assert any("provider down; trying gpt-4o-mini (openai)" in line for line in m["logs"]), m["logs"]


def test_a_budget_that_cannot_afford_the_first_choice_starts_the_first_fallback_it_can(
        service, fake_provider_env):
    fake = fake_provider_env
    doc, m, calls = run_one(service, {"id": "m", "action": "openai_chat", "params": {
        "model": "gpt-4o", "prompt": "Summarise: x", "max_tokens": 16000,
        "fallback": [{"model": "gpt-4o-mini", "max_tokens": 50}]}}, budget_usd=0.001)
    assert m["status"] == "COMPLETED"
    assert [r.model for r in fake.requests_for("openai")] == ["gpt-4o-mini"], "the first choice was sent"
    fb = m["metadata"]["fallback"]
    assert fb["answered_by"]["model"] == "gpt-4o-mini" and fb["reason"] == "budget"
    assert fb["attempts"][0]["model"] == "gpt-4o" and fb["attempts"][0]["error_code"] == "budget_exceeded"
    assert fb["attempts"][0]["cost"] is None and [c["model"] for c in calls] == ["gpt-4o-mini"]


def test_a_fallback_entry_may_not_be_a_reference():
    with pytest.raises(TemplateError) as err:
        tpl([{"id": "p", "action": "capture"},
             {"id": "m", "action": "openai_chat", "dependencies": ["p"], "params": {
                 "model": "gpt-4o", "prompt": "x", "fallback": ["{{ steps.p.outputs.title }}"]}}])
    assert "params.fallback': entry 1: expected a model id (not a reference" in str(err.value)


def test_a_local_only_page_is_never_sent_to_a_cloud_fallback(service, fake_provider_env, monkeypatch, write_config):
    write_config('[[sites]]\nmatch = "mail.example"\nrule = "local_only"\n')
    with socket.socket() as s:  # the local server is down: the cloud fallback would be next
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HYBRID_ENGINE_LOCAL_BASE_URL", f"http://127.0.0.1:{port}/v1")
    t = tpl([{"id": "page", "action": "capture"},
             {"id": "m", "action": "local_chat", "dependencies": ["page"], "params": {
                 "model": "llama3.2", "prompt": "Summarise: {{ steps.page.outputs.content }}", "max_tokens": 50,
                 "fallback": [{"provider": "openai", "model": "gpt-4o-mini"}]}}])
    monkeypatch.setattr(service, "template", lambda ref: t)
    run_id = service.start("t", content="<p>inbox</p>", source_url="https://mail.example/inbox")["run_id"]
    drain(service)
    m = next(s for s in service.run_document(run_id)["steps"] if s["id"] == "m")
    assert m["status"] == "FAILED" and "local model only" in m["error"]
    assert fake_provider_env.requests == []


def test_a_fallback_whose_provider_has_no_key_is_passed_over_for_the_next(
        service, fake_provider_env, write_config, monkeypatch):
    write_config(FAST_RETRIES)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    fake_provider_env.script("openai", status=503, times=2)
    doc, m, calls = run_one(service, {"id": "m", "action": "openai_chat", "params": {
        "model": "gpt-4o", "prompt": "Summarise: x", "max_tokens": 50, "retries": 1,
        "fallback": [{"provider": "gemini", "model": "gemini-2.5-flash"}, "gpt-4o-mini"]}})
    assert m["status"] == "COMPLETED", m.get("error")
    fb = m["metadata"]["fallback"]
    assert fb["answered_by"] == {"provider": "openai", "model": "gpt-4o-mini"} and fb["choice"] == 3
    assert [(a["model"], a["moved_on"], a["cost"]) for a in fb["attempts"]] == \
        [("gpt-4o", "retries exhausted", 0.0), ("gemini-2.5-flash", "no key", 0.0)]
    assert [c["provider"] for c in calls] == ["openai", "openai", "openai"]
