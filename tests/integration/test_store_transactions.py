"""Nested transactions: an inner block is a savepoint, undone alone when it raises."""

from __future__ import annotations

import pytest

from hybrid_engine import clock
from hybrid_engine.templates import validate


def tpl(name: str):
    return validate({"name": name, "steps": [{"id": "a", "action": "noop"},
                                             {"id": "b", "action": "noop", "dependencies": ["a"]}]}, "t.yaml")


def test_an_inner_block_that_raises_undoes_only_its_own_writes(service):
    store = service.store
    with store.transaction():
        kept = service.create_run(tpl("kept"))
        with pytest.raises(RuntimeError):
            with store.transaction():
                service.create_run(tpl("undone"))
                raise RuntimeError("inner failure")
    assert [r["id"] for r in service.list_runs()] == [kept]


def test_an_undone_inner_block_leaves_the_run_counters_as_they_were(service):
    store = service.store
    slot = validate({"name": "slot", "steps": [{"id": "page", "action": "capture"},
                                               {"id": "next", "action": "noop", "dependencies": ["page"]}]}, "t.yaml")
    with store.transaction():
        run_id = service.create_run(slot)
        with pytest.raises(RuntimeError):
            with store.transaction():
                assert store.fill_slot(run_id, "page", {"text": "x"}, {}, clock.now(), "filled") == 1
                raise RuntimeError("inner failure")
    open_steps = store.conn.execute("SELECT open_steps FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    assert open_steps == 2
    assert {s["id"]: s["status"] for s in service.run_document(run_id)["steps"]} == {
        "page": "WAITING_FOR_INPUT", "next": "PENDING"}


def test_an_error_that_leaves_the_outer_block_undoes_everything(service):
    store = service.store
    with pytest.raises(RuntimeError):
        with store.transaction():
            service.create_run(tpl("outer"))
            with store.transaction():
                service.create_run(tpl("inner"))
            raise RuntimeError("outer failure")
    assert service.list_runs() == []
