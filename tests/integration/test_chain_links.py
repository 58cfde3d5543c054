"""A chain's links claimed as known ahead (store/hotpath.py's _settle_link and _claim_link):
whatever moved a row on since it was known, the claim goes to the right step, once."""

from __future__ import annotations

import os
import threading

from hybrid_engine import clock
from hybrid_engine.store import ClaimRequest, Outcome
from hybrid_engine.templates import validate

CHAIN = [{"id": "a", "action": "sleep", "params": {"seconds": 1}},
         {"id": "b", "action": "sleep", "dependencies": ["a"], "params": {"seconds": 1}},
         {"id": "c", "action": "sleep", "dependencies": ["b"], "params": {"seconds": 1}}]


def tpl(steps, name="t"):
    return validate({"name": name, "steps": steps}, "t.yaml")


def req(owner="w", limit=4):
    r = ClaimRequest(owner, os.getpid(), None, "h", clock.now() + 30, limit)
    r.probe_queue = False  # as the executor asks between its looks at the queue: the short way is taken
    return r


def done(claim, **outputs):
    now = clock.now()
    return Outcome(claim, "completed", now, now, outputs=outputs)


def test_a_chain_link_settled_from_a_thread_new_to_the_store_claims_the_next_step(service):
    store = service.store
    service.create_run(tpl(CHAIN))
    [a] = store.claim(req(), clock.now())
    result = {}

    def settle():  # this thread has not opened its connection yet
        try:
            result["settled"] = store.settle([done(a, slept=1)], req(), clock.now())
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=settle)
    thread.start()
    thread.join()
    assert "error" not in result, result.get("error")
    applied, claimed = result["settled"]
    assert applied == [True] and [c.step_id for c in claimed] == ["b"]
