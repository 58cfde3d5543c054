"""The engine in one process: readiness, rendering, retries, failure, cancel, retry, metrics."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from hybrid_engine.errors import ConflictError, NotFound
from hybrid_engine.models import ExternalDataRequest
from hybrid_engine.templates import validate


def tpl(steps, name="t", **extra):
    return validate({"name": name, "steps": steps, **extra}, "test.yaml")


def drain(service, **kw):
    ex = service.make_executor(**kw)
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), 60))
    return ex


def statuses(service, run_id):
    return {s["id"]: s["status"] for s in service.run_document(run_id)["steps"]}


def test_chain_runs_in_dependency_order_and_completes(service):
    run_id = service.create_run(tpl([
        {"id": "a", "action": "noop", "params": {"value": "x"}},
        {"id": "b", "action": "template", "dependencies": ["a"], "params": {"template": "{{ steps.a.outputs.value }}!"}},
        {"id": "c", "action": "template", "dependencies": ["b"], "params": {"template": "[{{ steps.b.outputs.text }}]"}},
    ]))
    drain(service)
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED" and doc["progress"] == 100.0
    assert doc["steps"][2]["outputs"]["text"] == "[x!]"
    starts = [s["startTime"] for s in doc["steps"]]
    assert starts == sorted(starts)


def test_a_join_starts_only_after_its_last_dependency_and_sees_both(service):
    run_id = service.create_run(tpl([
        {"id": "a", "action": "noop", "params": {"value": "A"}},
        {"id": "a2", "action": "template", "dependencies": ["a"], "params": {"template": "{{ steps.a.outputs.value }}"}},
        {"id": "b", "action": "noop", "params": {"value": "B"}},
        {"id": "j", "action": "template", "dependencies": ["a2", "b"],
         "params": {"template": "{{ steps.a2.outputs.text }}+{{ steps.b.outputs.value }}"}},
    ]))
    drain(service)
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED"
    steps = {s["id"]: s for s in doc["steps"]}
    assert steps["j"]["outputs"]["text"] == "A+B"
    assert steps["j"]["startTime"] >= max(steps["a2"]["endTime"], steps["b"]["endTime"])
    assert [s["execution_metrics"]["attempts"] for s in doc["steps"]] == [1, 1, 1, 1]


def test_new_run_without_input_waits_for_its_capture_slot(service):
    run_id = service.create_run("page-text")
    assert service.summary(run_id)["status"] == "PENDING"
    assert statuses(service, run_id) == {"page": "WAITING_FOR_INPUT", "text": "PENDING", "note": "PENDING"}


def test_step_depending_on_a_slot_is_queued_and_run_when_data_arrives(service):
    run_id = service.create_run("page-text")
    drain(service)  # nothing runs before the page arrives
    assert statuses(service, run_id)["text"] == "PENDING"
    resp = service.ingest(run_id, ExternalDataRequest(content="<html><body><article><h1>T</h1><p>" + "word " * 80
                                                      + "</p></article></body></html>", source_url="https://e.x/a"))
    assert resp.step_id == "page" and resp.queued_dependents == 1
    assert service.summary(run_id)["status"] == "RUNNING"
    assert statuses(service, run_id)["text"] == "QUEUED"
    drain(service)
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED"
    assert "Source: https://e.x/a" in doc["steps"][2]["outputs"]["text"]


def test_external_data_on_a_run_without_a_slot_adds_a_completed_step(service):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    assert service.summary(run_id)["status"] == "PENDING"
    resp = service.ingest(run_id, {"content": "notes", "content_type": "text/plain", "step_name": "notes"})
    assert resp.status == "COMPLETED" and resp.step_id.startswith("external-")
    assert resp.queued_dependents == 0  # 'a' was queued at creation already
    doc = service.run_document(run_id)
    assert doc["status"] == "RUNNING"
    added = [s for s in doc["steps"] if s["id"] == resp.step_id][0]
    assert added["status"] == "COMPLETED" and added["outputs"]["content"] == "notes" and added["name"] == "notes"
    assert service.external_data(run_id)["count"] == 1


def test_external_data_queues_steps_whose_dependencies_are_now_complete(service):
    """A step left PENDING with its dependencies done (e.g. after a retry) is queued by ingestion."""
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}, {"id": "b", "action": "noop",
                                                                      "dependencies": ["a"]}]))
    store = service.store
    with store.transaction():
        store.conn.execute("UPDATE steps SET status='COMPLETED' WHERE run_id=? AND step_id='a'", (run_id,))
        store.conn.execute("INSERT INTO outputs VALUES (?, 'a', '{}')", (run_id,))
    resp = service.ingest(run_id, {"content": "x"})
    assert resp.queued_dependents == 1
    assert statuses(service, run_id)["b"] == "QUEUED"
    assert service.summary(run_id)["status"] == "RUNNING"


def test_ingest_into_an_unknown_run_is_not_found(service):
    with pytest.raises(NotFound, match="no run with id 'nope'"):
        service.ingest("nope", {"content": "x"})


def test_captured_template_syntax_reaches_the_next_step_verbatim(service):
    hostile = "Ignore {{ steps.page.outputs.source_url }} and {{ run.id }} {{ not a ref }}"
    result = service.start("page-text", content=hostile, content_type="text/plain", source_url="https://e.x/")
    run_id = result["run_id"]
    svc_tpl = tpl([
        {"id": "page", "action": "capture"},
        {"id": "echo", "action": "template", "dependencies": ["page"],
         "params": {"template": "<<{{ steps.page.outputs.content }}>>"}},
    ], name="echo")
    run2 = service.create_run(svc_tpl)
    service.ingest(run2, {"content": hostile, "content_type": "text/plain"})
    drain(service)
    assert service.run_document(run2, cut=None)["steps"][1]["outputs"]["text"] == f"<<{hostile}>>"
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_failed_step_skips_everything_downstream_and_fails_the_run(service):
    run_id = service.create_run(tpl([
        {"id": "a", "action": "fail", "params": {"message": "boom"}},
        {"id": "b", "action": "noop", "dependencies": ["a"]},
        {"id": "c", "action": "noop", "dependencies": ["b"]},
        {"id": "side", "action": "noop"},
    ]))
    drain(service)
    doc = service.run_document(run_id)
    assert statuses(service, run_id) == {"a": "FAILED", "b": "SKIPPED", "c": "SKIPPED", "side": "COMPLETED"}
    assert doc["status"] == "FAILED" and "boom" in doc["error"]


def test_transient_error_is_retried_with_backoff_and_logged(service, write_config):
    write_config("[executor]\nbackoff_base_s = 0.05\n")
    run_id = service.create_run(tpl([{"id": "a", "action": "fail",
                                      "params": {"transient": True, "times": 2, "retries": 3}}]))
    drain(service)
    step = service.run_document(run_id)["steps"][0]
    assert step["status"] == "COMPLETED"
    assert step["execution_metrics"]["attempts"] == 3 and step["execution_metrics"]["retries"] == 2
    assert sum("retry" in line for line in step["logs"]) == 2


def test_retry_after_hint_is_honoured(service, write_config):
    write_config("[executor]\nbackoff_base_s = 0.01\n")
    run_id = service.create_run(tpl([{"id": "a", "action": "fail",
                                      "params": {"transient": True, "times": 1, "retry_after": 0.6, "retries": 1}}]))
    t0 = time.monotonic()
    drain(service)
    assert time.monotonic() - t0 >= 0.6
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_transient_errors_past_the_retry_limit_fail_the_step(service, write_config):
    write_config("[executor]\nbackoff_base_s = 0.01\n")
    run_id = service.create_run(tpl([{"id": "a", "action": "fail",
                                      "params": {"transient": True, "message": "flaky", "retries": 2}}]))
    drain(service)
    step = service.run_document(run_id)["steps"][0]
    assert step["status"] == "FAILED" and "gave up after 3 attempts" in step["error"]


def test_step_timeout_counts_as_transient(service, write_config):
    write_config("[executor]\nbackoff_base_s = 0.01\n")
    run_id = service.create_run(tpl([{"id": "a", "action": "sleep",
                                      "params": {"seconds": 5, "timeout_s": 0.2, "retries": 1}}]))
    drain(service)
    step = service.run_document(run_id)["steps"][0]
    assert step["status"] == "FAILED" and "timed out after 0.2 s" in step["error"]
    assert step["execution_metrics"]["attempts"] == 2


def test_retry_of_a_failed_run_reruns_only_failed_and_skipped_steps(service, tmp_path):
    log = tmp_path / "log.txt"
    run_id = service.create_run(tpl([
        {"id": "a", "action": "write_file", "params": {"path": str(log), "content": "a\n", "append": True}},
        {"id": "b", "action": "fail", "dependencies": ["a"], "params": {"times": 1}},
        {"id": "c", "action": "write_file", "dependencies": ["b"],
         "params": {"path": str(log), "content": "c\n", "append": True}},
    ]))
    drain(service)
    assert service.summary(run_id)["status"] == "FAILED"
    assert statuses(service, run_id) == {"a": "COMPLETED", "b": "FAILED", "c": "SKIPPED"}
    service.retry(run_id)
    drain(service)
    assert service.summary(run_id)["status"] == "COMPLETED"
    assert log.read_text() == "a\nc\n"  # 'a' was not run again, 'c' ran once
    attempts = {s["id"]: s["execution_metrics"]["attempts"] for s in service.run_document(run_id)["steps"]}
    assert attempts["a"] == 1 and attempts["b"] >= 2  # 'b' ran again and passed


def test_retry_of_a_completed_run_is_refused(service):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    drain(service)
    with pytest.raises(ConflictError):
        service.retry(run_id)


def test_cancel_stops_a_running_step_and_its_downstream(service):
    # The step would sleep for an hour: the executor only goes idle if the cancel stops it.
    run_id = service.create_run(tpl([{"id": "a", "action": "sleep", "params": {"seconds": 3600}},
                                     {"id": "b", "action": "noop", "dependencies": ["a"]}]))
    ex = service.make_executor(lease_s=0.3)

    async def scenario():
        task = asyncio.create_task(ex.run(until_idle=True))
        while statuses(service, run_id)["a"] != "RUNNING":
            assert not task.done(), "the executor stopped before the step ran"
            await asyncio.sleep(0.02)
        service.cancel(run_id)
        await asyncio.wait_for(task, 120)

    asyncio.run(scenario())
    assert service.summary(run_id)["status"] == "CANCELLED"
    assert statuses(service, run_id) == {"a": "CANCELLED", "b": "CANCELLED"}


def test_concurrency_limit_per_action_is_respected(service, write_config):
    write_config("[executor]\nconcurrency = 8\n[executor.action_concurrency]\nsleep = 2\n")
    run_id = service.create_run(tpl([{"id": f"s{i}", "action": "sleep", "params": {"seconds": 0.2}}
                                     for i in range(6)]))
    t0 = time.monotonic()
    drain(service)
    elapsed = time.monotonic() - t0
    assert service.summary(run_id)["status"] == "COMPLETED"
    assert elapsed >= 0.55  # 6 sleeps two at a time: three rounds of 0.2 s
    doc = service.run_document(run_id)
    spans = [(s["startTime"], s["endTime"]) for s in doc["steps"]]
    for start, _ in spans:
        overlapping = sum(1 for s, e in spans if s <= start < e)
        assert overlapping <= 2


def test_global_concurrency_runs_a_fan_out_in_parallel(service, write_config, fake_provider_env):
    """Shown by order: the fake answers nothing until all 20 calls have arrived, which
    only happens if the executor has all 20 steps in flight at once."""
    fake = fake_provider_env
    write_config("[executor]\nconcurrency = 20\n")
    run_id = service.create_run(tpl([{"id": f"s{i}", "action": "openai_chat",
                                      "params": {"model": "gpt-4o-mini", "prompt": f"p{i}"}} for i in range(20)]))
    fake.hold()
    runner = threading.Thread(target=drain, args=(service,), daemon=True)
    runner.start()
    try:
        fake.wait_requests(20, timeout=60)
    finally:
        fake.release()
    runner.join(60)
    assert not runner.is_alive()
    assert fake.max_in_flight == 20
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_metrics_and_cost_breakdown_are_sums_of_completed_steps(service):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}, {"id": "b", "action": "noop"},
                                     {"id": "c", "action": "noop"}]))
    drain(service)
    store = service.store
    with store.transaction():
        for sid, model, tokens, cost in (("a", "m1", 10, 0.001), ("b", "m1", 5, 0.002), ("c", "m2", 7, None)):
            store.conn.execute("UPDATE steps SET model=?, tokens=?, prompt_tokens=?, completion_tokens=0, cost=?,"
                               " price_unknown=? WHERE run_id=? AND step_id=?",
                               (model, tokens, tokens, cost, int(cost is None), run_id, sid))
    doc = service.run_document(run_id)
    assert doc["metrics"]["total_tokens"] == 22
    assert doc["metrics"]["total_cost"] == pytest.approx(0.003)
    assert doc["metrics"]["unknown_cost_steps"] == 1
    assert doc["cost_breakdown"] == {"m1": pytest.approx(0.003)}
    assert doc["steps"][2]["execution_metrics"]["cost"] is None
    assert service.summary(run_id)["total_cost"] == pytest.approx(0.003)


def test_database_and_its_folder_are_private(service):
    mode = stat.S_IMODE(os.stat(service.store.path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(service.store.path.parent).st_mode) & 0o077 == 0


def test_database_from_a_newer_version_is_refused_clearly(he_home):
    from hybrid_engine.store import Store, StoreError

    s = Store(he_home / "engine.db")
    s.conn.execute("PRAGMA user_version=999")
    s.close()
    with pytest.raises(StoreError, match="newer Hybrid Engine"):
        Store(he_home / "engine.db")


def test_captured_page_is_written_once_not_on_every_status_change(service):
    page = "<p>" + "x" * 2_000_000 + "</p>"
    run_id = service.start("page-text", content=page)["run_id"]
    store = service.store
    writes = []  # every statement that carries the captured page's bytes again
    store.conn.set_trace_callback(
        lambda sql: writes.append(sql[:200]) if len(sql) > 1_000_000 and "'page'" in sql else None)
    try:
        drain(service)  # every step goes QUEUED -> RUNNING -> COMPLETED
    finally:
        store.conn.set_trace_callback(None)
    assert service.summary(run_id)["status"] == "COMPLETED"
    assert writes == []
    rows = store.conn.execute("SELECT COUNT(*) FROM outputs WHERE run_id=? AND step_id='page'",
                              (run_id,)).fetchone()[0]
    row_size = store.conn.execute("SELECT length(params) + coalesce(length(metadata),0) FROM steps"
                                  " WHERE run_id=? AND step_id='page'", (run_id,)).fetchone()[0]
    assert rows == 1 and row_size < 2000  # the steps row stays small; the page lives in outputs


def test_wal_mode_and_synchronous_normal(service):
    conn = service.store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def _on_a_new_thread(fn):
    """fn() on a thread of its own: the store gives each thread its own connection."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def test_another_threads_connection_is_in_wal_mode_too(service):
    store = service.store  # a thread's own connection, made after the store's first
    assert _on_a_new_thread(lambda: store.conn.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    assert _on_a_new_thread(lambda: store.conn.execute("PRAGMA synchronous").fetchone()[0]) == 1


def test_a_file_switched_out_of_wal_while_no_connection_was_open_is_switched_back(service):
    import sqlite3

    store = service.store
    path = store.path
    store.close()  # this thread's connection: none is open now
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"  # as a tool might
    other.close()
    assert _on_a_new_thread(lambda: store.conn.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"


def test_log_files_left_readable_by_others_are_made_private_by_a_new_connection(service):
    store = service.store
    store.conn.execute("SELECT 1 FROM runs").fetchall()  # the -wal and -shm files exist while a connection is open
    sides = [Path(f"{store.path}{suffix}") for suffix in ("-wal", "-shm")]
    for side in sides:
        os.chmod(side, 0o644)
    _on_a_new_thread(lambda: store.conn.execute("SELECT 1 FROM runs").fetchall())
    assert [stat.S_IMODE(side.stat().st_mode) for side in sides] == [0o600, 0o600]


@pytest.mark.parametrize("content_type, field", [("video/mp4", "content_type"), ("application/pdf", "content")])
def test_a_refused_page_leaves_no_empty_run_behind(service, content_type, field):
    from hybrid_engine.errors import BadRequest

    with pytest.raises(BadRequest, match=f"^{field}:"):
        service.start("page-text", content="x", content_type=content_type)
    assert service.list_runs() == []


def test_run_ids_resolve_by_a_literal_prefix_only(service):
    run_id = service.create_run(tpl([{"id": "a", "action": "noop"}]))
    assert service.resolve_run(run_id[:6]) == run_id
    with pytest.raises(NotFound):
        service.resolve_run("%%%%")
    with pytest.raises(NotFound):
        service.resolve_run("____")


def test_the_run_document_has_the_seeds_shape(service):
    from hybrid_engine.models import Workflow

    run_id = service.start("page-text", content="<p>hello</p>", source_url="https://e.x/")["run_id"]
    drain(service)
    doc = Workflow.model_validate(service.run_document(run_id, cut=None))
    assert doc.status == "COMPLETED" and [s.id for s in doc.steps] == ["page", "text", "note"]
    assert doc.steps[0].outputs["source_url"] == "https://e.x/"
    assert doc.metrics.completed_steps == 3 and doc.createdAt.endswith("+00:00")


def test_a_run_finished_just_before_the_feed_started_is_never_reported(service):
    """The change feed looks back a second for runs other processes created; a run that was
    already finished when the feed started must not come back as news on a later poll."""
    before = service.create_run(tpl([{"id": "a", "action": "noop"}], name="before"))
    drain(service)
    assert service.summary(before)["status"] == "COMPLETED"
    _, cursor = service.changes(None)
    reported = []
    for i in range(3):  # each poll after a commit by someone else (a new run)
        service.create_run(tpl([{"id": "a", "action": "noop"}], name=f"after{i}"))
        changed, cursor = service.changes(cursor)
        reported += [s["id"] for s in changed]
    assert before not in reported and len(set(reported)) == 3
