"""A batch whose worker is killed (SIGKILL) with calls in flight, then a new worker: every
item ends, none gets a second run, and the batch's cost is the sum of its runs' costs."""

from __future__ import annotations

import json

from hybrid_engine.batches import Batches
from polling import wait_for
from processes import kill

DIGEST = {"name": "digest", "steps": [
    {"id": "page", "action": "capture"},
    {"id": "sum", "action": "openai_chat", "dependencies": ["page"],
     "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.page.outputs.content }}", "max_tokens": 50}}]}


def test_a_batch_killed_mid_flight_ends_every_item_once_and_its_cost_is_its_runs(
        service, cli, fake_provider_env, tmp_path):
    fake = fake_provider_env
    cli.env.update(fake.env())
    template = tmp_path / "digest.json"
    template.write_text(json.dumps(DIGEST))
    batches = Batches(service)
    b = batches.create(str(template), parallel=2)
    for n in range(5):
        batches.add_page(b, {"content": f"page {n}", "source_url": f"https://example.com/{n}",
                             "content_type": "text/plain"})
    batches.resume(b)
    fake.hold()
    worker = cli.popen("worker")
    try:
        fake.wait_requests(2)  # two calls in flight when the worker dies
    finally:
        kill(worker)
        fake.release()
    cli("worker", "--until-idle", "--quiet", check=True, timeout=120)
    view = wait_for(lambda: (lambda v: v if v["status"] == "completed" else None)(batches.view(b)),
                    timeout=30, what="the batch to complete")
    runs = [i["run_id"] for i in view["items"]]
    assert None not in runs and len(set(runs)) == 5 and len(service.list_runs()) == 5
    assert all(i["run_status"] == "COMPLETED" for i in view["items"])
    assert view["cost_usd"] == sum(service.store.run_cost(r) for r in runs) and view["cost_usd"] > 0
