"""for_each in one process: parts grown as real rows, gathered in order, failed, retried;
the fan-out written all at once or not at all."""

from __future__ import annotations

import asyncio
import json
import os
import time

from hybrid_engine import fanout
from hybrid_engine.store import ClaimRequest, Outcome
from hybrid_engine.templates import validate


def tpl(steps, name="fe"):
    return validate({"name": name, "steps": steps}, "fe.yaml")


def drain(service):
    ex = service.make_executor()
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), 60))


def steps_of(service, run_id) -> dict:
    return {s["id"]: s for s in service.run_document(run_id)["steps"]}


def over(items, each_action="template", each_params=None, reduce=True):
    steps = [{"id": "src", "action": "noop", "params": {"value": items}},
             {"id": "each", "action": each_action, "for_each": "{{ steps.src.outputs.value }}",
              "params": each_params or {"template": "{{ item_number }}/{{ item_count }}={{ item }}"}}]
    if reduce:
        steps.append({"id": "all", "action": "template", "dependencies": ["each"],
                      "params": {"template": "{{ steps.each.outputs.text }}"}})
    return tpl(steps)


def test_for_each_runs_once_per_item_and_the_next_step_gets_their_outputs_in_order(service):
    run_id = service.create_run(over(["a", "b", "c"]))
    drain(service)
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED"
    assert [s["id"] for s in doc["steps"]] == ["src", "each~1", "each~2", "each~3", "each", "all"]
    assert all(s["status"] == "COMPLETED" for s in doc["steps"])
    steps = steps_of(service, run_id)
    assert steps["each"]["outputs"] == {"text": ["1/3=a", "2/3=b", "3/3=c"]}
    assert steps["all"]["outputs"]["text"] == "1/3=a\n\n2/3=b\n\n3/3=c"
    assert doc["metrics"]["completed_steps"] == doc["metrics"]["total_steps"] == 6


def test_an_item_holding_a_reference_is_passed_as_text_not_rendered(service):
    run_id = service.create_run(tpl([
        {"id": "page", "action": "capture"},
        {"id": "parts", "action": "split_text", "dependencies": ["page"],
         "params": {"text": "{{ steps.page.outputs.content }}"}},
        {"id": "each", "action": "template", "for_each": "{{ steps.parts.outputs.parts }}",
         "params": {"template": "[{{ item }}]"}}]))
    service.ingest(run_id, {"content": "{{ run.id }}", "content_type": "text/plain"})
    drain(service)
    assert steps_of(service, run_id)["each~1"]["outputs"]["text"] == "[{{ run.id }}]"


def test_for_each_over_an_empty_list_completes_with_empty_lists(service):
    run_id = service.create_run(over([]))
    drain(service)
    steps = steps_of(service, run_id)
    assert service.summary(run_id)["status"] == "COMPLETED"
    assert steps["each"]["outputs"] == {"text": []} and steps["all"]["outputs"]["text"] == ""


def test_for_each_over_a_value_that_is_not_a_list_fails_the_step_saying_so(service):
    run_id = service.create_run(over("not a list"))
    drain(service)
    steps = steps_of(service, run_id)
    assert steps["each"]["status"] == "FAILED"
    assert steps["each"]["error"] == "for_each: steps.src.outputs.value is str, not a list"
    assert steps["all"]["status"] == "SKIPPED"


def test_failed_parts_fail_the_run_and_retry_runs_them_again_without_growing_new_ones(service):
    run_id = service.create_run(over([1, 2, 3], "fail", {"times": "{{ item_number }}", "message": "part {{ item }}"},
                                     reduce=False))
    # `times: n`: part n fails its first n attempts, so part 1 succeeds when retried.
    drain(service)
    steps = steps_of(service, run_id)
    assert [steps[f"each~{i}"]["status"] for i in (1, 2, 3)] == ["FAILED"] * 3
    assert steps["each"]["status"] == "SKIPPED" and service.summary(run_id)["status"] == "FAILED"
    service.retry(run_id)
    drain(service)
    steps = steps_of(service, run_id)
    assert steps["each~1"]["status"] == "COMPLETED" and steps["each~1"]["execution_metrics"]["attempts"] == 2
    assert len([s for s in steps if s.startswith("each~")]) == 3  # the fan-out was not grown again


def _claim(service) -> list:
    req = ClaimRequest("test-owner", os.getpid(), None, "test-host", time.time() + 60, 10)
    return service.store.claim(req, time.time())


def _claimed_for_each_row(service):
    run_id = service.create_run(over(["a", "b", "c"], reduce=False))
    (src,) = _claim(service)
    now = time.time()
    service.store.settle([Outcome(claim=src, kind="completed", started_at=now, ended_at=now,
                                  outputs={"value": ["a", "b", "c"]})], None, now)
    (row,) = _claim(service)
    assert row.step_id == "each"
    return run_id, row


def test_a_fan_out_that_cannot_be_written_whole_writes_no_part_and_fails_its_step(service):
    run_id, row = _claimed_for_each_row(service)
    grown = fanout.fan_out("each", json.loads(row.params), ["a", "b", "c"], ["src"])
    grown.rows[2].step.step_id = "src"  # the third insert fails: the first two must go with it
    now = time.time()
    applied, _ = service.store.settle([Outcome(claim=row, kind="expand", started_at=now, ended_at=now,
                                               expansion=grown)], None, now)
    assert applied == [True]
    steps = steps_of(service, run_id)
    assert sorted(steps) == ["each", "src"]
    assert steps["each"]["status"] == "FAILED" and "could not grow its parts" in steps["each"]["error"]
    assert service.summary(run_id)["status"] == "FAILED"


def test_a_fan_out_whose_claim_was_lost_writes_nothing(service):
    run_id, row = _claimed_for_each_row(service)
    grown = fanout.fan_out("each", json.loads(row.params), ["a", "b", "c"], ["src"])
    row.epoch -= 1  # another owner has the step now
    now = time.time()
    applied, _ = service.store.settle([Outcome(claim=row, kind="expand", started_at=now, ended_at=now,
                                               expansion=grown)], None, now)
    assert applied == [False]
    assert sorted(steps_of(service, run_id)) == ["each", "src"]
