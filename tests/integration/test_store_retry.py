"""Retrying a run re-opens its steps as they were planned: an input slot waits for its input again."""

from __future__ import annotations

from hybrid_engine.templates import validate


def test_retry_of_a_cancelled_run_waits_again_for_its_unfilled_capture_slot(service):
    run_id = service.create_run(validate({"name": "slot", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "next", "action": "noop", "dependencies": ["page"]}]}, "t.yaml"))
    service.cancel(run_id)
    service.retry(run_id)
    steps = {s["id"]: s["status"] for s in service.run_document(run_id)["steps"]}
    assert steps == {"page": "WAITING_FOR_INPUT", "next": "PENDING"}
    assert service.summary(run_id)["status"] == "PENDING"
