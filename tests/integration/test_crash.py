"""Crash safety with real processes: kill workers, then count what ran and what completed."""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from hybrid_engine.templates import validate
from polling import wait_for
from processes import dead_pid, kill


def tpl(steps, name="t"):
    return validate({"name": name, "steps": steps}, "test.yaml")


def step(service, run_id, step_id):
    return [s for s in service.run_document(run_id)["steps"] if s["id"] == step_id][0]


def test_killed_worker_is_recovered_and_the_run_resumes_from_the_right_step(service, cli, tmp_path):
    log = tmp_path / "side-effects.txt"
    run_id = service.create_run(tpl([
        {"id": "a", "action": "write_file", "params": {"path": str(log), "content": "a\n", "append": True}},
        {"id": "b", "action": "sleep", "dependencies": ["a"], "params": {"seconds": 2}},
        {"id": "c", "action": "write_file", "dependencies": ["b"],
         "params": {"path": str(log), "content": "c\n", "append": True}},
    ]))
    worker = cli.popen("worker")
    try:
        wait_for(lambda: step(service, run_id, "b")["status"] == "RUNNING", timeout=20, what="b RUNNING")
    finally:
        kill(worker)
    assert step(service, run_id, "b")["status"] == "RUNNING"  # orphaned: its owner is dead
    cli("worker", "--until-idle", "--quiet", check=True, timeout=60)
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED"
    b = step(service, run_id, "b")
    assert any(line.startswith("Recovered from orphaned RUNNING state at ") for line in b["logs"])
    assert b["execution_metrics"]["crash_recoveries"] == 1
    assert b["execution_metrics"]["attempts"] == 2
    assert log.read_text() == "a\nc\n"  # 'a' completed before the kill and was not run again


def test_recovery_leaves_a_step_owned_by_a_live_process_alone(service, cli):
    run_id = service.create_run(tpl([{"id": "slow", "action": "sleep", "params": {"seconds": 30}}]))
    worker = cli.popen("worker")
    try:
        wait_for(lambda: step(service, run_id, "slow")["status"] == "RUNNING", timeout=20, what="RUNNING")
        owner_before = service.store.conn.execute("SELECT owner, epoch FROM steps WHERE run_id=?",
                                                  (run_id,)).fetchone()
        report = cli.json("recover", "--json")
        assert {"run_id": run_id, "step_id": "slow"} in report["left_alone"]
        assert report["requeued"] == []
        owner_after = service.store.conn.execute("SELECT owner, epoch FROM steps WHERE run_id=?",
                                                 (run_id,)).fetchone()
        assert owner_after == owner_before
        assert step(service, run_id, "slow")["status"] == "RUNNING"
    finally:
        kill(worker)
    report = cli.json("recover", "--json")
    assert {"run_id": run_id, "step_id": "slow"} in report["requeued"]


def _orphan(service, run_id, step_id, *, pid, start=None, crash_count=0, lease_until=None):
    import socket

    with service.store.transaction():
        service.store.conn.execute(
            "UPDATE steps SET status='RUNNING', owner='gone', owner_pid=?, owner_start=?, owner_host=?, epoch=epoch+1,"
            " lease_until=?, crash_count=?, attempts=attempts+1 WHERE run_id=? AND step_id=?",
            (pid, start, socket.gethostname(), lease_until or time.time() + 3600, crash_count, run_id, step_id))


def test_step_recovered_three_times_is_dead_lettered_and_retry_requeues_it(service, cli):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}, {"id": "b", "action": "noop",
                                                                     "dependencies": ["a"]}]))
    _orphan(service, run_id, "a", pid=dead_pid(), crash_count=2)
    report = cli.json("recover", "--json")
    assert report["dead_lettered"] == [{"run_id": run_id, "step_id": "a"}]
    a = step(service, run_id, "a")
    assert a["status"] == "FAILED" and "dead-lettered" in a["error"] and "3 times" in a["error"]
    assert step(service, run_id, "b")["status"] == "SKIPPED"
    assert service.summary(run_id)["status"] == "FAILED"
    cli("retry", run_id, check=True)
    assert step(service, run_id, "a")["status"] == "QUEUED"
    cli("worker", "--until-idle", "--quiet", check=True)
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_a_reused_pid_does_not_pass_for_the_owner(service, cli):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    _orphan(service, run_id, "a", pid=os.getpid(), start=1)  # alive pid, but not the process that claimed it
    report = cli.json("recover", "--json")
    assert report["requeued"] == [{"run_id": run_id, "step_id": "a"}]


def test_expired_lease_of_a_remote_owner_is_recovered(service, cli):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    _orphan(service, run_id, "a", pid=12345, lease_until=time.time() - 1)
    with service.store.transaction():
        service.store.conn.execute("UPDATE steps SET owner_host='another-machine' WHERE run_id=?", (run_id,))
    report = cli.json("recover", "--json")
    assert report["requeued"] == [{"run_id": run_id, "step_id": "a"}]
    assert "lease" in step(service, run_id, "a")["logs"][-1]


def test_stale_queue_entries_of_deleted_runs_are_removed(service, cli):
    run_id = service.create_run(tpl([{"id": f"s{i}", "action": "noop"} for i in range(3)]))
    import sqlite3

    raw = sqlite3.connect(service.store.path)
    raw.execute("PRAGMA foreign_keys=OFF")
    raw.execute("DELETE FROM runs WHERE id=?", (run_id,))
    raw.commit()
    raw.close()
    report = cli.json("recover", "--json")
    assert report["stale_removed"] == 3
    assert not service.store.has_queued()


def test_two_workers_on_one_store_execute_every_step_once(service, cli, tmp_path):
    log = tmp_path / "executions.txt"
    runs = []
    for r in range(50):
        steps = [{"id": f"s{i}", "action": "write_file", "dependencies": [f"s{i - 1}"] if i % 4 else [],
                  "params": {"path": str(log), "content": f"{r}:s{i}\n", "append": True}} for i in range(20)]
        runs.append(service.create_run(tpl(steps, name=f"r{r}")))
    workers = [cli.popen("worker", "--until-idle", "--quiet") for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    counts = Counter(log.read_text().splitlines())
    assert len(counts) == 1000
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]
    assert all(service.summary(r)["status"] == "COMPLETED" for r in runs)


@pytest.mark.slow
def test_random_sigkills_lose_no_run_and_complete_every_step_once(service, cli, tmp_path, fake_provider,
                                                                  write_config):
    """100 runs with side effects and a priced model call each, two workers, 10 SIGKILLs.

    Each kill lands on work in progress by construction: the fake holds every model call,
    and a worker is killed once one of its calls is held there. Only a worker whose steps
    were orphaned at most once before is killed (a step whose worker dies under it three
    times is dead-lettered by design), and the calls held are let go between kills, so the work moves
    on; at most 4 model steps finish per kill, so 100 runs never run out before the last kill.
    (Each kill waits for a worker to start and take work: 10 keep the test near a minute.)"""
    write_config("[executor]\nconcurrency = 2\n")
    cli.env.update(fake_provider.env())
    fake_provider.set_default("openai", latency=0.2, usage={"prompt_tokens": 100, "completion_tokens": 20})
    log = tmp_path / "executions.txt"
    rng = random.Random(20261128)
    runs = []
    for r in range(100):
        steps = [
            {"id": "a", "action": "write_file", "params": {"path": str(log), "content": f"{r}:a\n", "append": True}},
            {"id": "b", "action": "sleep", "dependencies": ["a"], "params": {"seconds": 0.2}},
            {"id": "m", "action": "openai_chat", "dependencies": ["a"],
             "params": {"model": "gpt-4o-mini", "prompt": f"run {r}: {{{{ run.id }}}}", "max_tokens": 20}},
            {"id": "c", "action": "write_file", "dependencies": ["b"],
             "params": {"path": str(log), "content": f"{r}:c\n", "append": True}},
            {"id": "e", "action": "write_file", "dependencies": ["c", "m"],
             "params": {"path": str(log), "content": f"{r}:e\n", "append": True}},
        ]
        runs.append(service.create_run(tpl(steps, name=f"r{r}")))
    workers = [cli.popen("worker") for _ in range(2)]

    def held(run_ids=None) -> list:
        return [r for r in fake_provider.requests_for("openai") if r.ended is None
                and (run_ids is None or r.body["messages"][-1]["content"].split(": ", 1)[1] in run_ids)]

    def victims() -> tuple[list[int], bool]:
        """Workers with a model call held and no step orphaned twice; and whether every
        worker is stuck on a held call of a step that was (so letting go is the only way on)."""
        rows = service.store.running_steps()
        ready, stuck = [], True
        for i, w in enumerate(workers):
            mine = [r for r in rows if r.owner_pid == w.pid]
            waiting = held({r.run_id for r in mine if r.step_id == "m"})
            if waiting and all(r.crash_count <= 1 for r in mine):
                ready.append(i)
            stuck = stuck and bool(waiting) and any(r.crash_count > 1 for r in mine)
        return ready, stuck

    kills = 0
    try:
        while kills < 10:
            fake_provider.hold()
            while True:
                ready, stuck = victims()
                if ready:
                    break
                if stuck:
                    calls = held()
                    fake_provider.release()
                    wait_for(lambda: all(r.ended is not None for r in calls), what="the held calls answered")
                    fake_provider.hold()
                time.sleep(0.02)  # polling the store, as wait_for does
            victim = rng.choice(ready)
            kill(workers[victim])
            kills += 1
            workers[victim] = cli.popen("worker")
            fake_provider.release()
    finally:
        for w in workers:
            kill(w)
        fake_provider.release()
    unfinished = sum(service.summary(r)["status"] != "COMPLETED" for r in runs)
    cli("worker", "--until-idle", "--quiet", check=True, timeout=120)
    docs = [service.run_document(r) for r in runs]
    for doc in docs:
        assert doc["status"] == "COMPLETED", (doc["id"], [(s["id"], s["status"], s["error"]) for s in doc["steps"]])
        assert all(s["status"] == "COMPLETED" for s in doc["steps"])
        assert doc["metrics"]["completed_steps"] == 5
        model_step = [s for s in doc["steps"] if s["id"] == "m"][0]
        assert model_step["execution_metrics"]["cost"] > 0
        assert doc["metrics"]["total_tokens"] == sum(s["execution_metrics"]["tokens"] for s in doc["steps"]) == 120
        assert doc["metrics"]["total_cost"] == pytest.approx(
            sum(s["execution_metrics"]["cost"] or 0 for s in doc["steps"]), abs=1e-12)
        assert doc["cost_breakdown"] == {"gpt-4o-mini": pytest.approx(doc["metrics"]["total_cost"], abs=1e-12)}
    counts = Counter(log.read_text().splitlines())
    recoveries = {(d["id"], s["id"]): s["execution_metrics"]["crash_recoveries"] for d in docs for s in d["steps"]}
    # Every kill orphaned a step with its model call sent; work was left when the kills ended.
    assert sum(recoveries.values()) >= 10 and unfinished > 0, (sum(recoveries.values()), unfinished)
    # Each side effect happened at least once; more only for a step whose worker was killed under it.
    for i, run_id in enumerate(runs):
        for sid in "ace":
            assert 1 <= counts[f"{i}:{sid}"] <= 1 + recoveries[(run_id, sid)]
    # A provider call is repeated only when a kill interrupted it: each model step is called at
    # most once more than the number of times its worker died under it.
    calls = Counter(r.body["messages"][-1]["content"] for r in fake_provider.requests_for("openai"))
    assert set(calls) == {f"run {i}: {run_id}" for i, run_id in enumerate(runs)}
    for i, run_id in enumerate(runs):
        assert calls[f"run {i}: {run_id}"] <= 1 + recoveries[(run_id, "m")]
