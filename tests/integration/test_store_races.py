"""Races at the store's compare-and-swap edges, played out step by step (found in review)."""

from __future__ import annotations

import os

from hybrid_engine import clock
from hybrid_engine.store import ClaimRequest, Outcome
from hybrid_engine.templates import validate


def tpl(steps):
    return validate({"name": "t", "steps": steps}, "t.yaml")


def req(owner="w"):
    return ClaimRequest(owner, os.getpid(), None, "h", clock.now() + 30, 4)


def test_the_result_of_a_deleted_runs_step_never_lands_in_a_newer_run(service):
    store = service.store
    template = tpl([{"id": "ask", "action": "sleep", "params": {"seconds": 1}}])
    old = service.create_run(template)
    [stale] = store.claim(req(), clock.now())
    service.delete(old)  # `hybrid-engine delete` while a worker still runs the step
    new = service.create_run(template)
    [fresh] = store.claim(req(), clock.now())
    now = clock.now()
    assert store.settle([Outcome(stale, "completed", now, now, outputs={"slept": "old"})], None, now)[0] == [False]
    assert store.settle([Outcome(fresh, "completed", now, now, outputs={"slept": 1})], None, now)[0] == [True]
    assert store.outputs(new) == {"ask": {"slept": 1}}
    assert service.summary(new)["status"] == "COMPLETED"


def test_a_worker_that_lost_its_lease_leaves_the_winners_large_outputs_alone(service):
    store = service.store
    run_id = service.create_run(tpl([
        {"id": "x", "action": "sleep", "params": {"seconds": 1}},
        {"id": "y", "action": "template", "dependencies": ["x"], "params": {"template": "{{ steps.x.outputs.slept }}"}},
    ]))
    [loser] = store.claim(req("w1"), clock.now())
    row = [r for r in store.running_steps() if r.run_id == run_id][0]
    assert store.requeue_orphan(row, clock.now(), "lease expired", max_strikes=3)[0] == "requeued"
    [winner] = store.claim(req("w2"), clock.now())
    now = clock.now()
    big = "W" * 10_000  # over the inline limit: stored in `outputs`
    assert store.settle([Outcome(winner, "completed", now, now, outputs={"slept": big})], None, now)[0] == [True]
    assert store.settle([Outcome(loser, "completed", now, now, outputs={"slept": "S" * 10_000})], None, now)[0] == [False]
    assert store.outputs(run_id)["x"]["slept"] == big


def test_the_change_feed_reports_a_chain_link_even_when_times_tie(service):
    store = service.store
    run_id = service.create_run(tpl([
        {"id": "a", "action": "sleep", "params": {"seconds": 1}},
        {"id": "b", "action": "sleep", "dependencies": ["a"], "params": {"seconds": 1}},
        {"id": "x", "action": "sleep", "params": {"seconds": 1}},
    ]))
    claims = {c.step_id: c for c in store.claim(req(), clock.now())}
    _, cursor = service.changes(None)
    before_lock = clock.now()  # an executor took `now`, then waited for the write lock ...
    later = before_lock + 0.05  # ... while another writer committed a later change to the same run
    store.settle([Outcome(claims["x"], "completed", later, later, outputs={})], None, later)
    changed, cursor = service.changes(cursor)
    assert [c["completed_steps"] for c in changed] == [1]
    applied, continued = store.settle([Outcome(claims["a"], "completed", before_lock, before_lock, outputs={})],
                                      req(), before_lock)
    assert applied == [True] and [c.step_id for c in continued] == ["b"]
    changed, cursor = service.changes(cursor)
    assert [(c["id"], c["completed_steps"]) for c in changed] == [(run_id, 2)]
