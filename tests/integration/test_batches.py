"""Batches: one run per distinct page, shown and steered as one thing, held to one budget.

In-process executors against the fake provider; the CLI's `batch` in test_batch_cli.py.
"""

from __future__ import annotations

import asyncio

import pytest

from hybrid_engine.batchfeed import Feeder
from hybrid_engine.batches import Batches
from hybrid_engine.errors import ConflictError
from hybrid_engine.templates import validate

TEMPLATE = {"name": "digest", "steps": [
    {"id": "page", "action": "capture"},
    {"id": "sum", "action": "openai_chat", "dependencies": ["page"],
     "params": {"model": "gpt-4o", "prompt": "Summarise: {{ steps.page.outputs.content }}", "max_tokens": 50}}]}


@pytest.fixture
def batches(service, fake_provider_env, monkeypatch):
    tpl = validate(TEMPLATE, "digest.yaml")
    monkeypatch.setattr(service, "template", lambda ref: tpl)
    return Batches(service)


def drain(service, timeout=60):
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), timeout))


def page(n, url=None):
    return {"content": f"page {n}", "source_url": url or f"https://example.com/{n}", "content_type": "text/plain"}


def test_a_batch_makes_one_run_per_distinct_page_and_the_same_page_twice_runs_once(service, batches):
    b = batches.create("digest")
    items = [batches.add_page(b, p) for p in (page(1), page(2), page(1), page(3))]
    assert [i["state"] for i in items] == ["waiting", "waiting", "duplicate", "waiting"]
    assert items[2]["note"] == "the same page as item 1"
    batches.resume(b)
    drain(service)
    view = batches.view(b)
    assert view["status"] == "completed"
    assert view["counts"] | {} == {**view["counts"], "total": 4, "completed": 3, "duplicate": 1, "failed": 0}
    runs = [i["run_id"] for i in view["items"] if i["run_id"]]
    assert len(set(runs)) == 3
    assert view["cost_usd"] == pytest.approx(sum(service.store.run_cost(r) for r in runs)) and view["cost_usd"] > 0


def test_every_run_completes_when_the_batch_is_many_times_its_window_and_calls_overlap_feeds(
        service, batches, fake_provider_env, write_config):
    write_config("[executor]\nconcurrency = 8\n")
    b = batches.create("digest", parallel=8, start=True)
    for n in range(40):
        batches.add_page(b, page(n))
    drain(service)
    view = batches.view(b)
    assert view["counts"]["completed"] == 40 and view["status"] == "completed"
    assert all(c["state"] == "answered" for i in view["items"] for c in service.store.calls(i["run_id"]))


def test_a_feed_that_makes_runs_never_skips_settling_the_steps_that_finished_meanwhile(
        service, fake_provider_env, monkeypatch):
    from hybrid_engine import executor

    monkeypatch.setattr(executor, "FEED_EVERY_S", 0.0)  # a feed at every turn of the loop
    class AlwaysFeeds:  # as a feeder of a big batch is: it makes runs at every turn
        def feed(self, now):
            return 1

        def pending(self):
            return False

    fake_provider_env.set_default("openai", latency=0.1)
    run_id = service.create_run(validate({"name": "one", "steps": [TEMPLATE["steps"][1] | {
        "dependencies": [], "params": {"model": "gpt-4o", "prompt": "Summarise: x", "max_tokens": 50}}]}, "one.yaml"))
    asyncio.run(asyncio.wait_for(service.make_executor(feeders=[AlwaysFeeds()]).run(until_idle=True), 60))
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_the_same_content_at_another_url_is_another_page(batches):
    b = batches.create("digest")
    assert batches.add_page(b, page(1, "https://a.example/x"))["state"] == "waiting"
    assert batches.add_page(b, {**page(1), "source_url": "https://b.example/x"})["state"] == "waiting"


def test_a_paused_batch_makes_no_run_until_it_is_resumed(service, batches):
    b = batches.create("digest")
    for n in range(3):
        batches.add_page(b, page(n))
    drain(service)
    assert batches.view(b)["counts"]["waiting"] == 3 and batches.view(b)["status"] == "paused"
    batches.resume(b)
    drain(service)
    assert batches.view(b)["counts"]["completed"] == 3


def test_a_batch_keeps_at_most_parallel_runs_open(service, batches):
    b = batches.create("digest", parallel=2, start=True)
    for n in range(5):
        batches.add_page(b, page(n))
    feeder = Feeder(service)
    assert feeder.feed(0.0) == 2 and feeder.feed(0.0) == 0
    assert batches.view(b)["counts"]["running"] == 2 and batches.view(b)["counts"]["waiting"] == 3


def test_cancel_cancels_the_open_runs_and_makes_no_further_one(service, batches):
    b = batches.create("digest", parallel=1, start=True)
    for n in range(3):
        batches.add_page(b, page(n))
    Feeder(service).feed(0.0)
    view = batches.cancel(b)
    assert view["status"] == "cancelled" and view["counts"]["cancelled"] == 3
    drain(service)
    assert batches.view(b)["counts"]["completed"] == 0
    with pytest.raises(ConflictError):
        batches.resume(b)


def test_a_batch_budget_stops_the_batch_before_a_step_would_cross_it_and_retry_failed_goes_on(
        service, batches, fake_provider_env):
    b = batches.create("digest", budget_usd=0.0015, parallel=1, start=True)  # two runs of ~$0.0006 fit
    for n in range(5):
        batches.add_page(b, page(n))
    drain(service)
    view = batches.view(b)
    assert view["state"] == "stopped" and "stopped by its budget of $0.0015" in view["note"]
    assert view["counts"]["completed"] == 2 and view["counts"]["failed"] == 1 and view["counts"]["waiting"] == 2
    failed = next(i for i in view["items"] if i["run_status"] == "FAILED")
    assert "Not started: batch budget" in failed["error"]
    assert view["cost_usd"] <= 0.0015 and len(fake_provider_env.requests_for("openai")) == 2
    completed_before = {i["run_id"] for i in view["items"] if i["run_status"] == "COMPLETED"}
    view = batches.retry_failed(b, budget_usd=1.0)
    assert view["retried"] == 1
    drain(service)
    view = batches.view(b)
    assert view["status"] == "completed" and view["counts"]["completed"] == 5
    assert len(fake_provider_env.requests_for("openai")) == 5, "a completed item ran again"
    assert completed_before <= {i["run_id"] for i in view["items"]}


def test_the_combined_estimate_sums_every_page_and_says_which_budgets_fit(service, batches, write_config):
    write_config("[budgets]\ndaily_usd = 5\n")
    est = batches.estimate_pages("digest", [page(1), page(2), page(3)], budget_usd=0.0001)
    one = batches.estimate_pages("digest", [page(1)])
    assert est["pages"] == 3 and est["cost_max"] == pytest.approx(3 * one["cost_max"])
    assert est["prompt_tokens"] == pytest.approx(3 * one["prompt_tokens"], abs=3)
    fits = {b["kind"]: b["fits"] for b in est["budgets"]}
    assert fits == {"batch": False, "daily": True}
    assert "3 page(s)" in est["text"] and "batch budget $0.0001: DOES NOT FIT" in est["text"]


def test_a_page_behind_a_login_waits_for_the_browser_and_runs_once_it_is_filled(service, batches):
    b = batches.create("digest", start=True)
    item = batches.add_unusable(b, "https://intranet.example/doc", "needs_browser", "behind a login (HTTP 403)")
    drain(service)
    assert batches.view(b)["status"] == "waiting_for_browser"
    batches.fill(b, item["pos"], page(9, "https://intranet.example/doc"))
    drain(service)
    view = batches.view(b)
    assert view["status"] == "completed" and view["counts"]["completed"] == 1


def test_a_cancel_landing_while_the_feeder_makes_runs_leaves_no_run_of_the_cancelled_batch(
        service, batches, monkeypatch):
    b = batches.create("digest")
    for n in range(3):
        batches.add_page(b, page(n))
    batches.resume(b)
    store = service.store
    waiting_items = store.waiting_items

    def cancelled_meanwhile(batch_id, room):  # the feeder has read the batch as running; then a cancel lands
        items = waiting_items(batch_id, room)
        batches.cancel(batch_id)
        return items

    monkeypatch.setattr(store, "waiting_items", cancelled_meanwhile)
    assert Feeder(service).feed(0.0) == 0
    view = batches.view(b)
    assert view["status"] == "cancelled" and [i["run_id"] for i in view["items"]] == [None, None, None]
    assert store.batch_runs(b, ("PENDING", "RUNNING")) == []


def test_two_feeders_reading_the_same_waiting_items_make_one_run_per_item(service, batches, monkeypatch):
    b = batches.create("digest")
    for n in range(3):
        batches.add_page(b, page(n))
    batches.resume(b)
    store = service.store
    waiting_items = store.waiting_items
    other = []

    def fed_meanwhile(batch_id, room):  # another process's feeder makes the runs after this one read the items
        items = waiting_items(batch_id, room)
        if not other:
            other.append("feeding")
            other.append(Feeder(service).feed(0.0))
        return items

    monkeypatch.setattr(store, "waiting_items", fed_meanwhile)
    assert Feeder(service).feed(0.0) == 0 and other == ["feeding", 3]
    assert len(service.list_runs()) == 3


def test_an_estimate_of_pages_all_at_a_price_not_known_reads_cost_unknown_not_0_to_0(service, monkeypatch):
    mystery = {**TEMPLATE, "steps": [TEMPLATE["steps"][0], {**TEMPLATE["steps"][1], "params": {
        **TEMPLATE["steps"][1]["params"], "model": "gpt-mystery-9"}}]}
    tpl = validate(mystery, "digest.yaml")
    monkeypatch.setattr(service, "template", lambda ref: tpl)
    est = Batches(service).estimate_pages("digest", [page(1), page(2)])
    assert est["price_unknown_pages"] == 2 and "cost unknown" in est["text"] and "$0" not in est["text"]


def test_a_batch_budget_of_0_runs_a_template_of_free_local_steps(service, fake_provider_env, monkeypatch):
    local = {"name": "local", "steps": [TEMPLATE["steps"][0], {
        "id": "sum", "action": "local_chat", "dependencies": ["page"],
        "params": {"model": "llama3.2", "prompt": "Summarise: {{ steps.page.outputs.content }}", "max_tokens": 50}}]}
    tpl = validate(local, "local.yaml")
    monkeypatch.setattr(service, "template", lambda ref: tpl)
    batches = Batches(service)
    b = batches.create("local", budget_usd=0, start=True)
    batches.add_page(b, page(1))
    drain(service)
    view = batches.view(b)
    assert view["status"] == "completed" and view["counts"]["completed"] == 1 and view["cost"] == "$0"


def test_a_batch_budget_of_0_sends_no_paid_call_and_stops_the_batch(service, batches, fake_provider_env):
    b = batches.create("digest", budget_usd=0, start=True)
    for n in range(3):
        batches.add_page(b, page(n))
    drain(service)
    view = batches.view(b)
    assert view["state"] == "stopped" and fake_provider_env.requests_for("openai") == []
    assert view["counts"]["completed"] == 0 and view["cost_usd"] == 0
