"""A page longer than the model's context, through page-digest, with real processes: the
worker as a subprocess, the real openai SDK against the loopback fake provider, the real
store. The step maps and reduces by itself (on_overflow: map_reduce), every part is a
priced step of its own, and a worker killed between parts repeats none that had finished."""

from __future__ import annotations

import random

from hybrid_engine import tokens
from processes import kill

MODEL = "gpt-4o-mini"
WORDS = ("river stone light harbour engine market winter garden signal letter paper morning quiet "
         "measure copper lantern valley border orchard thunder canvas meadow silver compass").split()


def long_article(size: int = 300_000, seed: int = 7) -> str:
    """A deterministic article page of about `size` bytes: many paragraphs of sentences."""
    rng = random.Random(seed)
    paras, total = [], 0
    while total < size:
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
                     for _ in range(rng.randint(3, 7))]
        p = f"<p>{' '.join(sentences)}</p>"
        paras.append(p)
        total += len(p) + 1
    return ("<html><head><title>A long article</title></head><body><article><h1>A long article</h1>\n"
            + "\n".join(paras) + "\n</article></body></html>")


def counted_usage(body: dict) -> dict:
    """What OpenAI would report for this request: the prompt as sent, the fake's answer."""
    messages = body["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    prompt = [m["content"] for m in messages if m["role"] == "user"][-1]
    answer = f"reply from openai {body['model']}"
    return {"prompt_tokens": tokens.count_chat_tokens(prompt, system, body["model"], "openai").tokens,
            "completion_tokens": tokens.count_tokens(answer, body["model"], "openai").tokens}


def _steps(doc: dict) -> dict:
    return {s["id"]: s for s in doc["steps"]}


def test_long_page_is_mapped_and_reduced_and_a_killed_worker_repeats_no_finished_part(
        cli, write_config, fake_provider, tmp_path):
    write_config(f"""
        [models."{MODEL}"]
        context_window = 8192

        [providers.openai]
        concurrency = 1
    """)
    cli.env.update(fake_provider.env())
    fake_provider.set_default("openai", usage_for=counted_usage)
    article = tmp_path / "article.html"
    article.write_text(long_article(), encoding="utf-8")
    assert 300_000 <= article.stat().st_size < 310_000

    estimate = cli.json("estimate", "page-digest", "--input", article, "--json")
    run_id = cli.json("run", "page-digest", "--input", article, "--json")["id"]
    assert fake_provider.requests == []  # the estimate sent nothing

    fake_provider.hold()
    worker = cli.popen("worker")
    try:
        fake_provider.wait_requests(1, provider="openai")
        fake_provider.allow(1)  # part 1 answered
        fake_provider.wait_requests(2, provider="openai")  # part 2 sent: part 1 is settled
        fake_provider.allow(1)
        fake_provider.wait_requests(3, provider="openai")  # part 3 in flight
    finally:
        kill(worker)
    doc = cli.json("export", run_id)
    steps = _steps(doc)
    assert [steps[f"summary~map~{i}"]["status"] for i in (1, 2, 3)] == ["COMPLETED", "COMPLETED", "RUNNING"]
    fake_provider.release()
    cli("worker", "--until-idle", "--quiet", check=True, timeout=300)

    doc = cli.json("export", run_id)
    steps = _steps(doc)
    assert doc["status"] == "COMPLETED"
    parts_text = steps["summary~split"]["outputs"]["parts"]
    part_ids = [sid for sid in steps if sid.startswith("summary~map~")]
    assert len(parts_text) == len(part_ids) >= 5
    for sid in part_ids:
        assert steps[sid]["status"] == "COMPLETED"
        assert steps[sid]["execution_metrics"]["cost"] > 0
        assert steps[sid]["metadata"]["prompt_tokens"] <= 8192 - steps[sid]["params"]["max_tokens"]
    assert steps["summary"]["status"] == "COMPLETED" and steps["summary"]["execution_metrics"]["cost"] > 0

    sent = [r.body["messages"][-1]["content"] for r in fake_provider.requests_for("openai")]
    per_part = [sum(1 for prompt in sent if text in prompt) for text in parts_text]
    # Parts 1 and 2 had finished when the worker was killed: not sent again. Part 3's call
    # was lost with the worker and sent again; every other part once.
    assert per_part == [1, 1, 2] + [1] * (len(parts_text) - 3)
    reduce_prompts = [p for p in sent if p.count(f"reply from openai {MODEL}") == len(parts_text)]
    assert len(reduce_prompts) == 1

    measured = sum(s["execution_metrics"]["cost"] for s in doc["steps"] if s["execution_metrics"]["cost"])
    assert estimate["total_cost_min"] <= measured <= estimate["total_cost_max"]
    estimated_parts = [e["step_id"] for e in estimate["steps"] if e.get("part_of") == "summary"]
    assert estimated_parts == part_ids
    assert [e["step_id"] for e in estimate["steps"]][-1] == "summary"
