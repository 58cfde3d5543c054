"""A step's log lines go to the executor's store thread from the loop and from actions' own
threads alike: a line that cannot be written is said so in the host's log, never dropped silently."""

from __future__ import annotations

import concurrent.futures
import logging

from hybrid_engine.errors import StoreError
from hybrid_engine.templates import validate


def test_a_log_line_that_cannot_be_written_is_reported_when_another_thread_logs_at_the_same_moment(
        service, monkeypatch, caplog):
    run_id = service.create_run(validate({"name": "t", "steps": [{"id": "a", "action": "noop"}]}, "t.yaml"))
    ex = service.make_executor()
    original = service.store.append_log

    def append_log(run, step, ts, line):
        if line == "first":
            raise StoreError("disk full")
        return original(run, step, ts, line)

    monkeypatch.setattr(service.store, "append_log", append_log)

    class Racing(type(ex)):
        """Another action thread's line is sent right after this one's (between two statements)."""

        @property
        def _last_sent(self):
            return self.__dict__["last"]

        @_last_sent.setter
        def _last_sent(self, future):
            self.__dict__["last"] = future
            if not self.__dict__.get("raced"):
                self.__dict__["raced"] = True
                self._log_line(run_id, "a", "second")

    ex.__class__ = Racing
    ex._store_thread = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with caplog.at_level(logging.ERROR, logger="hybrid_engine.executor"):
            ex._log_line(run_id, "a", "first")
            ex._store_thread.shutdown(wait=True)
    finally:
        ex._store_thread = None
    assert [r.getMessage() for r in caplog.records] == ["a step's log line could not be written"]
