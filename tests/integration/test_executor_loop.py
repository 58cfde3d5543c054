"""The executor's event loop carries the model calls in flight: it never waits on SQLite's
busy timeout or on a model step's budget check (which may tokenise a whole prompt)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from hybrid_engine.executor import Executor
from hybrid_engine.templates import validate


def tpl(steps):
    return validate({"name": "t", "steps": steps}, "test.yaml")


def test_the_event_loop_runs_while_a_settle_waits_for_another_writer(service, monkeypatch):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    store = service.store
    waiting = threading.Event()  # set while a settle is inside the store
    original = store.settle

    def settle(*args, **kw):
        waiting.set()
        try:
            return original(*args, **kw)
        finally:
            waiting.clear()

    monkeypatch.setattr(store, "settle", settle)
    writer = sqlite3.connect(store.path, isolation_level=None)  # another process holding the write lock
    writer.execute("BEGIN IMMEDIATE")
    seen = {}

    async def main():
        running = asyncio.create_task(service.make_executor().run(until_idle=True))
        await asyncio.get_running_loop().run_in_executor(None, waiting.wait)
        seen["settle_still_waiting"] = waiting.is_set()  # this coroutine ran while it waited
        writer.execute("COMMIT")
        await running

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        writer.close()
    assert seen["settle_still_waiting"]
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_a_model_steps_budget_check_runs_off_the_event_loop(service, fake_provider_env):
    run_id = service.create_run(tpl([{"id": "a", "action": "openai_chat",
                                      "params": {"model": "gpt-4o", "prompt": "hi"}}]))
    checked_on = []

    def guard(claim, params, action):
        checked_on.append(threading.current_thread())

    async def main():
        await Executor(service.store, guards=[guard]).run(until_idle=True)
        return threading.current_thread()

    loop_thread = asyncio.run(asyncio.wait_for(main(), 60))
    assert checked_on and loop_thread not in checked_on
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_an_errand_left_on_the_store_thread_at_stop_is_awaited_without_holding_up_the_loop(service, monkeypatch):
    """The lease keeper is cancelled at stop while its recovery pass may still be running on the
    store thread: run() waits for it there, the loop turning meanwhile (joining the thread at
    once would hold the loop for as long as the pass takes)."""
    from hybrid_engine import recovery
    from polling import GUARD_S

    entered, release, checked = threading.Event(), threading.Event(), threading.Event()
    original = recovery.requeue_orphans

    def requeue_orphans(*args, **kwargs):
        entered.set()
        release.wait(GUARD_S)
        return original(*args, **kwargs)

    monkeypatch.setattr(recovery, "requeue_orphans", requeue_orphans)
    ex = Executor(service.store, lease_s=0.15, recover_every_s=0.0)
    watchdog = threading.Thread(target=lambda: checked.wait(GUARD_S) or release.set(), daemon=True)
    seen = {}

    async def main():
        running = asyncio.create_task(ex.run())
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, GUARD_S)
        watchdog.start()
        ex.stop()
        while ex._store_thread is not None:  # run() has reached its last wait for the store thread
            await asyncio.sleep(0)
        seen["still_waiting"] = not running.done() and not release.is_set()
        checked.set()
        release.set()
        await running

    asyncio.run(main())
    assert seen == {"still_waiting": True}


def test_the_first_claims_lease_counts_from_after_the_imports_made_before_it(service, monkeypatch):
    """The first claim goes in the same store-thread trip as the imports the open runs need; an
    SDK import can take seconds, so the lease is reckoned after it, not from the trip's start."""
    service.create_run(tpl([{"id": "a", "action": "noop"}]))
    ex = Executor(service.store, lease_s=30.0)
    imported, leases = [], []
    preload, settle = ex._preload, service.store.settle

    def slow_preload():
        preload()
        imported.append(time.time())

    def record(outcomes, req, now, **kw):
        if req is not None and not outcomes:
            leases.append(req.lease_until)
        return settle(outcomes, req, now, **kw)

    monkeypatch.setattr(ex, "_preload", slow_preload)
    monkeypatch.setattr(service.store, "settle", record)
    asyncio.run(ex.run(until_idle=True))
    assert leases and leases[0] >= imported[0] + 30.0
