"""`batch.estimate` of a stored batch: the extension's links and bookmark folders become a
paused batch whose pages the host fetched, and the person sees its estimate before resuming."""

from __future__ import annotations

import json

import pytest

from host_client import HostClient

DIGEST = {"name": "digest", "steps": [
    {"id": "page", "action": "capture"},
    {"id": "sum", "action": "openai_chat", "dependencies": ["page"],
     "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.page.outputs.content }}", "max_tokens": 50}}]}


@pytest.fixture
def host(he_home, fake_provider):
    (he_home / "templates").mkdir(parents=True, exist_ok=True)
    (he_home / "templates" / "digest.json").write_text(json.dumps(DIGEST))
    with HostClient(he_home, extra_env=fake_provider.env()) as client:
        client.call("hello", protocol=1)
        yield client
        assert client.stdout_problems == []


def page(n: int) -> dict:
    return {"content": f"<p>page {n} " + "word " * (40 * n) + "</p>", "source_url": f"https://example.com/{n}",
            "content_type": "html", "title": f"Page {n}"}


def test_a_paused_batch_is_estimated_from_its_stored_pages_against_its_budget(host, fake_provider):
    pages = [page(n) for n in range(3)]
    batch = host.call("batch.start", template="digest", pages=pages, paused=True, budget_usd=0.5)
    stored = host.call("batch.estimate", batch_id=batch["id"])
    given = host.call("batch.estimate", template="digest", pages=pages, budget_usd=0.5)
    for key in ("pages", "prompt_tokens", "cost_min", "cost_max", "budgets"):
        assert stored[key] == given[key], key
    assert {"kind": "batch", "limit_usd": 0.5, "left_usd": 0.5, "fits": True} in stored["budgets"]
    assert host.call("batch.get", batch_id=batch["id"])["status"] == "paused"
    assert fake_provider.requests == []


def test_an_unknown_batch_to_estimate_is_not_found(host):
    reply = host.request("batch.estimate", batch_id="no-such-batch")
    assert reply["ok"] is False and reply["error"]["code"] == "not_found"
