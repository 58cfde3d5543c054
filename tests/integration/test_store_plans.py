"""Saved plans: a template's step rows are stored once and copied into each new run."""

from __future__ import annotations

import sqlite3

from hybrid_engine import clock
from hybrid_engine.plans import template_plan
from hybrid_engine.store import MIGRATIONS, SCHEMA_VERSION, Store
from hybrid_engine.templates import validate


def chain(name: str, n: int, action: str = "noop"):
    params = {"template": "x"} if action == "template" else {}
    return validate({"name": name, "steps": [
        {"id": f"s{i}", "action": action, "params": params, "dependencies": [f"s{i - 1}"] if i else []}
        for i in range(n)]}, "t.yaml")


def step_rows(store: Store, run_id: str) -> list[tuple]:
    return store.conn.execute("SELECT step_id, pos, action, deps, waiting_on, status, due_at IS NOT NULL"
                              " FROM steps WHERE run_id = ? ORDER BY pos", (run_id,)).fetchall()


def plans(store: Store) -> list[tuple]:
    return store.conn.execute("SELECT p.template, COUNT(s.pos) FROM plans p JOIN plan_steps s USING (digest)"
                              " GROUP BY p.digest ORDER BY p.template").fetchall()


def test_runs_of_one_template_share_one_saved_plan(service):
    ids = [service.create_run(chain("c", 5)) for _ in range(3)]
    assert plans(service.store) == [("c", 5)]
    first = step_rows(service.store, ids[0])
    assert [r[0] for r in first] == ["s0", "s1", "s2", "s3", "s4"]
    assert first[0][5:] == ("QUEUED", 1) and first[1][4:] == (1, "PENDING", 0)
    assert all(step_rows(service.store, i) == first for i in ids[1:])


def test_editing_a_template_replaces_its_saved_plan_and_keeps_other_templates(service):
    service.create_run(chain("other", 2))
    old = service.create_run(chain("c", 3))
    new = service.create_run(chain("c", 4, action="template"))
    assert plans(service.store) == [("c", 4), ("other", 2)]
    assert [r[2] for r in step_rows(service.store, old)] == ["noop"] * 3
    assert [r[2] for r in step_rows(service.store, new)] == ["template"] * 4


def test_templates_with_the_same_steps_keep_separate_plans(service):
    service.create_run(chain("a", 3))
    service.create_run(chain("b", 3))
    service.create_run(chain("a", 4))  # editing "a" leaves "b" alone
    assert plans(service.store) == [("a", 4), ("b", 3)]


def test_a_run_is_created_whole_after_another_process_dropped_its_plan(service):
    store = service.store
    v1, v2 = chain("c", 3), chain("c", 6)
    service.create_run(v1)  # this process now believes v1's plan is saved
    other = Store(store.path)  # another process saves an edited "c": v1's plan goes
    other.create_run("r-other", "c", "c", template_plan(v2), None, clock.now())
    other.close()
    run_id = service.create_run(v1)
    assert [r[0] for r in step_rows(store, run_id)] == ["s0", "s1", "s2"]
    assert service.summary(run_id)["status"] == "PENDING"


def test_a_store_written_at_schema_2_is_upgraded_and_its_runs_kept(he_home):
    he_home.mkdir(parents=True, exist_ok=True)
    path = he_home / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version=2")
    conn.execute("INSERT INTO runs (id, name, template, status, open_steps, created_at, updated_at)"
                 " VALUES ('old-run', 'c', 'c', 'COMPLETED', 0, 1, 1)")
    conn.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.run_info("old-run") is not None
    assert store.calls("old-run") == []  # the call journal exists
    store.create_run("new-run", "c", "c", template_plan(chain("c", 2)), None, clock.now())
    assert [r[0] for r in step_rows(store, "new-run")] == ["s0", "s1"]
