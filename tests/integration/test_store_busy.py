"""Another process holding engine.db's write lock past the busy timeout: the store says so
with its own exception (StoreBusy, naming the file), never the driver's, and the executor
keeps a finished step's result and settles it once the lock is free."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading

import pytest

from hybrid_engine import clock, config
from hybrid_engine.service import Service
from hybrid_engine.store import Store, StoreBusy
from hybrid_engine.templates import validate

MODEL_STEP = {"id": "m", "action": "openai_chat",
              "params": {"model": "gpt-4o-mini", "prompt": "Summarise the tides in one line.", "max_tokens": 200}}


def tpl(steps):
    return validate({"name": "t", "steps": steps}, "t.yaml")


def lock(path) -> sqlite3.Connection:
    """Another process's writer: it holds the write lock until ROLLBACK."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_write_while_another_process_holds_the_lock_raises_store_busy_naming_the_file(service):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    path = service.store.path
    store = Store(path, busy_timeout_ms=50)
    blocker = lock(path)
    try:
        with pytest.raises(StoreBusy) as caught:
            store.append_log(run_id, "a", clock.now(), "a line")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        store.close()
    assert caught.value.code == "store_unavailable"
    assert str(path) in caught.value.message and "try again" in caught.value.message
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


class _ReleaseOnBusy(logging.Handler):
    """Frees the lock from inside the executor, when it says that settling found the store busy."""

    def __init__(self, blocker: sqlite3.Connection):
        super().__init__(logging.WARNING)
        self.blocker = blocker
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "while settling" in record.getMessage() and not self.seen.is_set():
            self.seen.set()
            self.blocker.execute("ROLLBACK")


def test_the_executor_keeps_a_result_while_the_store_is_busy_and_settles_it_after(fake_provider_env):
    fake = fake_provider_env
    store = Store(config.db_path(), busy_timeout_ms=50)
    service = Service(store)
    run_id = service.create_run(tpl([MODEL_STEP]))
    executor = service.make_executor()
    worker = threading.Thread(target=lambda: asyncio.run(executor.run(until_idle=True)), daemon=True)
    logger = logging.getLogger("hybrid_engine.executor")
    fake.hold()
    worker.start()
    handler = None
    try:
        fake.wait_requests(1)  # the call is journaled and in flight; the next write is its settle
        blocker = lock(store.path)
        handler = _ReleaseOnBusy(blocker)
        logger.addHandler(handler)
        fake.release()
        worker.join(60)
        assert not worker.is_alive()
    finally:
        fake.release()
        if handler is not None:
            logger.removeHandler(handler)
            handler.blocker.close()
    assert handler.seen.is_set()  # settling did meet the lock
    assert service.summary(run_id)["status"] == "COMPLETED"
    [call] = store.calls(run_id)
    assert call["state"] == "answered" and call["cost"] > 0
    store.close()
