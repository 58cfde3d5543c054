"""The `batch.*` messages through the real host: what the extension's "Send N tabs" will send."""

from __future__ import annotations

import json

import pytest

from host_client import HostClient
from polling import wait_for

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


def tab(n: int) -> dict:
    return {"content": f"<p>tab {n}</p>", "source_url": f"https://example.com/{n}", "content_type": "html",
            "title": f"Tab {n}"}


def settled(host, batch_id: str) -> dict:
    return wait_for(lambda: (lambda b: b if b["status"] not in ("running",) else None)(
        host.call("batch.get", batch_id=batch_id)), what="the batch to settle")


def test_six_tabs_one_estimate_one_batch_and_a_failed_item_retried_alone(host, fake_provider):
    tabs = [tab(n) for n in range(6)]
    est = host.call("batch.estimate", template="digest", pages=tabs, budget_usd=1.0)
    assert est["pages"] == 6 and est["cost_max"] > 0 and est["budgets"] == [
        {"kind": "batch", "limit_usd": 1.0, "left_usd": 1.0, "fits": True}]
    fake_provider.script("openai", status=400, error="fake refusal")  # one item fails for good
    batch = host.call("batch.start", template="digest", pages=tabs, budget_usd=1.0)
    assert batch["counts"]["total"] == 6
    batch = settled(host, batch["id"])
    assert batch["status"] == "failed" and batch["counts"]["completed"] == 5 and batch["counts"]["failed"] == 1
    assert batch["cost_usd"] > 0
    sent = len(fake_provider.requests_for("openai"))
    retried = host.call("batch.retry_failed", batch_id=batch["id"])
    assert retried["retried"] == 1
    batch = settled(host, batch["id"])
    assert batch["status"] == "completed" and batch["counts"]["completed"] == 6
    assert len(fake_provider.requests_for("openai")) == sent + 1, "an item that had completed ran again"
    assert [b["id"] for b in host.call("batch.list")["batches"]] == [batch["id"]]


def test_a_page_without_content_is_refused_naming_its_place_in_the_list(host):
    reply = host.request("batch.start", template="digest", pages=[tab(1), {"title": "no content"}])
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert reply["error"]["message"].startswith("pages[1].content: expected the page's text")
    assert host.call("batch.list")["batches"] == []


def test_pause_and_resume_through_the_host(host):
    batch = host.call("batch.start", template="digest", pages=[tab(1), tab(2)], paused=True)
    assert batch["status"] == "paused" and batch["counts"]["waiting"] == 2
    assert host.call("batch.resume", batch_id=batch["id"])["state"] == "running"
    assert settled(host, batch["id"])["counts"]["completed"] == 2


def test_a_url_with_a_password_is_refused_by_batch_start_and_nothing_is_stored(host):
    reply = host.request("batch.start", template="digest", urls=["https://alice:hunter2@intranet.example/p"])
    assert reply["ok"] is False and reply["error"]["message"].startswith("urls[0]: a URL with user:password@")
    assert "hunter2" not in json.dumps(reply) and host.call("batch.list")["batches"] == []


def test_the_same_page_with_another_fragment_or_host_case_runs_once(host):
    page = tab(1)
    again = {**page, "source_url": "https://EXAMPLE.com/1#further-down"}
    view = host.call("batch.start", template="digest", pages=[page, again], paused=True)
    assert [i["state"] for i in view["items"]] == ["waiting", "duplicate"]


def test_an_item_number_past_sqlites_integers_is_bad_request_and_the_host_keeps_serving(host):
    view = host.call("batch.start", template="digest", pages=[tab(1)], paused=True)
    reply = host.request("batch.fill", batch_id=view["id"], pos=10**30, page={"content": "x"})
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request" and reply["error"]["field"] == "pos"
    reply = host.request("batch.get", batch_id=view["id"], offset=10**30)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert host.call("batch.get", batch_id=view["id"])["counts"]["waiting"] == 1


def test_pages_added_to_a_cancelled_batch_are_refused_and_nothing_is_added(host):
    view = host.call("batch.start", template="digest", pages=[tab(1)], paused=True)
    host.call("batch.cancel", batch_id=view["id"])
    reply = host.request("batch.add", batch_id=view["id"], pages=[tab(2)])
    assert reply["ok"] is False and reply["error"]["code"] == "conflict" and "cancelled" in reply["error"]["message"]
    assert host.call("batch.get", batch_id=view["id"])["counts"]["total"] == 1


def test_a_batch_whose_model_price_is_unknown_says_its_cost_is_unknown_not_0(he_home, fake_provider):
    mystery = json.loads(json.dumps(DIGEST))
    mystery["steps"][1]["params"]["model"] = "gpt-mystery-9"
    (he_home / "templates").mkdir(parents=True, exist_ok=True)
    (he_home / "templates" / "digest.json").write_text(json.dumps(mystery))
    with HostClient(he_home, extra_env=fake_provider.env()) as client:
        client.call("hello", protocol=1)
        view = settled(client, client.call("batch.start", template="digest", pages=[tab(1)])["id"])
    assert view["counts"]["completed"] == 1 and len(fake_provider.requests_for("openai")) == 1
    assert view["cost"] == "unknown" and view["unknown_cost_steps"] == 1


def test_retry_failed_with_nothing_failed_does_not_start_a_paused_batch(host, fake_provider):
    view = host.call("batch.start", template="digest", pages=[tab(1), tab(2)], paused=True)
    reply = host.request("batch.retry_failed", batch_id=view["id"])
    assert reply["ok"] is False and reply["error"]["code"] == "conflict" and "no failed item" in reply["error"]["message"]
    after = host.call("batch.get", batch_id=view["id"])
    assert after["state"] == "paused" and after["counts"]["waiting"] == 2 and fake_provider.requests_for("openai") == []


def test_a_page_title_of_100000_characters_is_kept_to_300_in_the_batch(host):
    view = host.call("batch.start", template="digest", pages=[{**tab(1), "title": "t" * 100_000}], paused=True)
    assert len(view["items"][0]["title"]) == 300


# `batch.estimate` of a stored batch: the extension's links and bookmark folders become a paused
# batch whose pages the host fetched, and the person sees its estimate before resuming.

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
