"""The executor's event loop carries the model calls in flight: it never waits on SQLite's
busy timeout or on a model step's budget check (which may tokenise a whole prompt)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

from hybrid_engine.executor import Executor
from hybrid_engine.templates import validate


def tpl(steps):
    return validate({"name": "t", "steps": steps}, "test.yaml")


def test_the_event_loop_runs_while_a_settle_waits_for_another_writer(service, monkeypatch):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    store = service.store
    waiting = threading.Event()  # set while a settle is inside the store
    original = store.settle

    def settle(*args):
        waiting.set()
        try:
            return original(*args)
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
