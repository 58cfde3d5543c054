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


def fail(claim):
    now = clock.now()
    return Outcome(claim, "failed", now, now, error="boom", error_code="boom")


def test_a_retried_runs_chain_claims_the_step_after_the_retried_one_as_it_is_now(service):
    store = service.store
    run_id = service.create_run(tpl(CHAIN))  # made here: its links are known from its plan
    [a] = store.claim(req(), clock.now())
    _, [b] = store.settle([done(a, slept=1)], req(), clock.now())
    store.settle([fail(b)], req(), clock.now())  # c is skipped
    service.retry(run_id)
    [b2] = store.claim(req(), clock.now())
    applied, [c] = store.settle([done(b2, slept=2)], req(), clock.now())
    assert applied == [True] and c.step_id == "c"
    assert store.settle([done(c, slept=3)], req(), clock.now())[0] == [True]  # the claim's epoch was the row's
    assert store.outputs(run_id)["c"] == {"slept": 3}
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_a_cancelled_runs_chain_link_claims_nothing(service):
    store = service.store
    run_id = service.create_run(tpl(CHAIN))
    [a] = store.claim(req(), clock.now())
    service.cancel(run_id)
    assert store.settle([done(a, slept=1)], req(), clock.now()) == ([False], [])
    assert service.summary(run_id)["status"] == "CANCELLED"


def test_a_run_made_after_an_undone_one_takes_its_rows_and_its_chain_claims_its_own_steps(service):
    store = service.store
    try:
        with store.transaction():
            service.create_run(tpl(CHAIN, "undone"))  # its rows' ids are given again below
            raise RuntimeError("undone")
    except RuntimeError:
        pass
    run_id = service.create_run(tpl(CHAIN, "kept"))
    [a] = store.claim(req(), clock.now())
    applied, [b] = store.settle([done(a, slept=1)], req(), clock.now())
    assert (b.run_id, b.step_id) == (run_id, "b")
    assert store.settle([done(b, slept=2)], req(), clock.now())[1][0].step_id == "c"


def test_a_join_is_claimed_once_when_its_last_dependency_completes(service):
    store = service.store
    service.create_run(tpl([{"id": "a", "action": "sleep", "params": {"seconds": 1}},
                            {"id": "b", "action": "sleep", "params": {"seconds": 1}},
                            {"id": "j", "action": "sleep", "dependencies": ["a", "b"], "params": {"seconds": 1}}]))
    claims = {c.step_id: c for c in store.claim(req(), clock.now())}
    assert store.settle([done(claims["a"], slept=1)], req(), clock.now()) == ([True], [])
    applied, claimed = store.settle([done(claims["b"], slept=1)], req(), clock.now())
    assert [c.step_id for c in claimed] == ["j"]
    assert store.settle([done(claimed[0], slept=1)], req(), clock.now())[0] == [True]


def test_two_stores_on_one_file_claim_a_chain_link_once(service, he_home):
    from hybrid_engine import config
    from hybrid_engine.store import Store

    mine = service.store
    other = Store(config.db_path())
    try:
        run_id = service.create_run(tpl(CHAIN))  # known here from its plan; `other` reads its rows
        [a] = mine.claim(req("mine"), clock.now())
        row = [r for r in mine.running_steps() if r.run_id == run_id][0]
        assert other.requeue_orphan(row, clock.now(), "lease expired", max_strikes=3)[0] == "requeued"
        [a2] = other.claim(req("other"), clock.now())
        _, [b] = other.settle([done(a2, slept=2)], req("other"), clock.now())
        assert mine.settle([done(a, slept=1)], req("mine"), clock.now()) == ([False], [])
        _, [c] = other.settle([done(b, slept=2)], req("other"), clock.now())
        assert mine.claim(req("mine"), clock.now()) == []
        assert other.settle([done(c, slept=2)], req("other"), clock.now())[0] == [True]
        assert service.summary(run_id)["status"] == "COMPLETED"
    finally:
        other.close()


def test_a_chain_link_settled_while_the_store_is_busy_writes_nothing_and_settles_when_tried_again(service):
    import sqlite3

    import pytest

    from hybrid_engine.store import Store, StoreBusy

    store = Store(service.store.path, busy_timeout_ms=50)
    try:
        run_id = service.create_run(tpl(CHAIN))
        [a] = store.claim(req(), clock.now())
        blocker = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreBusy):
                store.settle([done(a, slept=1)], req(), clock.now())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert not store.conn.in_transaction
        applied, [b] = store.settle([done(a, slept=1)], req(), clock.now())
        assert applied == [True] and b.step_id == "b"
        assert store.outputs(run_id) == {"a": {"slept": 1}}
    finally:
        store.close()


def test_a_chain_link_whose_claim_fails_in_the_store_leaves_the_finished_step_to_be_settled_again(service):
    import sqlite3

    store = service.store
    run_id = service.create_run(tpl(CHAIN))
    [a] = store.claim(req(), clock.now())
    # This connection's own trigger: the claim of `b` fails as a write on a full disk would.
    store.conn.execute("CREATE TEMP TRIGGER fail_b BEFORE UPDATE OF status ON steps WHEN new.step_id = 'b'"
                       " AND new.status = 'RUNNING' BEGIN SELECT RAISE(FAIL, 'no room'); END")
    try:
        store.settle([done(a, slept=1)], req(), clock.now())
    except sqlite3.IntegrityError:  # what RAISE() makes of it: the store passes on what it has no name for
        pass
    else:
        raise AssertionError("the claim of b was expected to fail")
    assert not store.conn.in_transaction
    assert store.outputs(run_id) == {}  # a's completion went with the failed claim
    store.conn.execute("DROP TRIGGER fail_b")
    applied, [b] = store.settle([done(a, slept=1)], req(), clock.now())
    assert applied == [True] and b.step_id == "b"
    assert store.settle([done(b, slept=2)], req(), clock.now())[1][0].step_id == "c"


def test_chains_made_by_one_of_two_executors_racing_on_one_file_run_every_step_once(service, tmp_path):
    import asyncio
    from collections import Counter

    from hybrid_engine.service import Service

    other = Service()  # a Store of its own on the same file, as a second process has
    log = tmp_path / "executions.txt"
    runs = []
    for r in range(20):  # made by `service`: its executor knows their links from their plans
        steps = [{"id": f"s{i}", "action": "write_file", "dependencies": [f"s{i - 1}"] if i % 5 else [],
                  "params": {"path": str(log), "content": f"{r}:s{i}\n", "append": True}} for i in range(15)]
        runs.append(service.create_run(tpl(steps, name=f"r{r}")))
    errors = []

    def work(svc):
        try:
            asyncio.run(svc.make_executor().run(until_idle=True))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(svc,)) for svc in (service, other)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.store.close()
    assert errors == []
    counts = Counter(log.read_text().splitlines())
    assert len(counts) == 300 and max(counts.values()) == 1
    assert all(service.summary(r)["status"] == "COMPLETED" for r in runs)


def test_a_join_still_waiting_leaves_its_run_continued_from_its_plan(service):
    """A join that another branch still holds back fails the known-ahead claim for want of its
    other dependency, not because its row moved on: the run's later links stay known from its plan."""
    store = service.store
    run_id = service.create_run(tpl([
        {"id": "a", "action": "noop"}, {"id": "b", "action": "noop"},
        {"id": "j", "action": "noop", "dependencies": ["a", "b"]},
        {"id": "k", "action": "noop", "dependencies": ["j"]}]))
    first = store.claim(req(), clock.now())
    a = next(c for c in first if c.step_id == "a")
    b = next(c for c in first if c.step_id == "b")
    assert store.settle([done(a)], req(), clock.now())[1] == []  # j waits for b
    assert run_id in store._planned
    [j] = store.settle([done(b)], req(), clock.now())[1]
    [k] = store.settle([done(j)], req(), clock.now())[1]
    assert (j.step_id, k.step_id) == ("j", "k")
    assert run_id in store._planned
