"""on_overflow: map_reduce in one process, against the loopback provider with the real SDK:
a prompt that fits is sent whole, one too long for a single round fails before anything is
sent, and the estimate prices each item of a for_each model step."""

from __future__ import annotations

import asyncio

from hybrid_engine.estimate import estimate_run
from hybrid_engine.templates import validate

MODEL = "gpt-4o-mini"


def drain(service):
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 120))


def digest(text_steps=None):
    return validate({"name": "digest", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "summary", "action": "openai_chat", "dependencies": ["page"],
         "params": {"model": MODEL, "prompt": "Summarise:\n\n{{ steps.page.outputs.content }}", "max_tokens": 200,
                    "on_overflow": "map_reduce"}}]}, "digest.yaml")


def text_of(words: int) -> str:
    return "\n\n".join(" ".join(f"w{p}x{i}" for i in range(50)) + "." for p in range(words // 50))


def test_a_prompt_that_fits_is_sent_whole(service, fake_provider_env, write_config):
    write_config(f'[models."{MODEL}"]\ncontext_window = 8192\n')
    run_id = service.create_run(digest())
    service.ingest(run_id, {"content": "A short page.", "content_type": "text/plain"})
    drain(service)
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED"
    assert [s["id"] for s in doc["steps"]] == ["page", "summary"]
    assert len(fake_provider_env.requests) == 1


def test_a_text_too_long_for_one_round_fails_before_anything_is_sent(service, fake_provider_env, write_config):
    write_config(f'[models."{MODEL}"]\ncontext_window = 1200\n')
    run_id = service.create_run(digest())
    service.ingest(run_id, {"content": text_of(20_000), "content_type": "text/plain"})
    drain(service)
    summary = {s["id"]: s for s in service.run_document(run_id)["steps"]}["summary"]
    assert summary["status"] == "FAILED"
    assert "too long to map and reduce in one round" in summary["error"]
    assert fake_provider_env.requests == []


def test_the_estimate_prices_each_item_of_a_for_each_model_step(he_home, fake_provider_env):
    tpl = validate({"name": "fe", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "parts", "action": "split_text", "dependencies": ["page"],
         "params": {"text": "{{ steps.page.outputs.content }}", "part_tokens": 500, "overlap_tokens": 0}},
        {"id": "each", "action": "openai_chat", "for_each": "{{ steps.parts.outputs.parts }}",
         "params": {"model": MODEL, "prompt": "Summarise part {{ item_number }}:\n{{ item }}", "max_tokens": 100}},
        {"id": "all", "action": "openai_chat", "dependencies": ["each"],
         "params": {"model": MODEL, "prompt": "Combine:\n{{ steps.each.outputs.text }}", "max_tokens": 300}}]},
        "fe.yaml")
    est = estimate_run(tpl, {"content": text_of(1_000), "content_type": "text/plain"})
    ids = [e["step_id"] for e in est["steps"]]
    parts = [i for i in ids if i.startswith("each~")]
    assert len(parts) >= 2 and ids == parts + ["all"]
    assert all(e["prompt_tokens"] <= 520 and e["max_output_tokens"] == 100 for e in est["steps"][:-1])
    reduce = est["steps"][-1]
    assert reduce["lower_bound"] is True and reduce["unknown_inputs"] == ["each"]
    assert reduce["prompt_tokens_max"] >= 100 * len(parts)  # every part's answer as long as it may be
    assert fake_provider_env.requests == []


def test_the_estimate_of_a_for_each_over_more_items_than_a_step_may_run_says_it_would_fail(
        he_home, fake_provider_env, monkeypatch):
    from hybrid_engine import fanout

    monkeypatch.setattr(fanout, "MAX_PARTS", 3)
    tpl = validate({"name": "fe", "steps": [
        {"id": "src", "action": "noop", "params": {"value": ["a", "b", "c", "d"]}},
        {"id": "each", "action": "openai_chat", "for_each": "{{ steps.src.outputs.value }}",
         "params": {"model": MODEL, "prompt": "Say {{ item }}", "max_tokens": 5}},
        {"id": "all", "action": "openai_chat", "dependencies": ["each"],
         "params": {"model": MODEL, "prompt": "Combine:\n{{ steps.each.outputs.text }}", "max_tokens": 50}}]},
        "fe.yaml")
    est = estimate_run(tpl, {"content": "x", "content_type": "text/plain"})
    by_id = {e["step_id"]: e for e in est["steps"]}
    assert list(by_id) == ["each", "all"]  # no entry per item: none would be sent
    assert "bad_for_each" in by_id["each"]["error"] and "4 items, over the 3 parts" in by_id["each"]["error"]
    assert by_id["all"]["error"].startswith("would not be sent")
    assert est["total_cost_max"] == 0


def test_a_prompt_naming_the_long_text_twice_is_split_into_parts_that_fit_with_both_copies(
        service, fake_provider_env, write_config):
    write_config(f'[models."{MODEL}"]\ncontext_window = 4000\n')
    tpl = validate({"name": "twice", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "summary", "action": "openai_chat", "dependencies": ["page"],
         "params": {"model": MODEL, "max_tokens": 200, "on_overflow": "map_reduce",
                    "prompt": "Summarise:\n\n{{ steps.page.outputs.content }}\n\nThe text again, to quote from:\n\n"
                              "{{ steps.page.outputs.content }}"}}]}, "twice.yaml")
    run_id = service.create_run(tpl)
    service.ingest(run_id, {"content": text_of(5_000), "content_type": "text/plain"})
    drain(service)
    doc = service.run_document(run_id)
    parts = [s for s in doc["steps"] if s["id"].startswith("summary~map~")]
    assert len(parts) >= 2 and {s["status"] for s in parts} == {"COMPLETED"}
    assert doc["status"] == "COMPLETED"


def test_the_estimate_warns_when_a_reduce_may_outgrow_its_window_once_the_parts_answer(
        he_home, fake_provider_env, write_config):
    write_config(f'[models."{MODEL}"]\ncontext_window = 1200\n')
    tpl = validate({"name": "fe", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "parts", "action": "split_text", "dependencies": ["page"],
         "params": {"text": "{{ steps.page.outputs.content }}", "part_tokens": 500, "overlap_tokens": 0}},
        {"id": "each", "action": "openai_chat", "for_each": "{{ steps.parts.outputs.parts }}",
         "params": {"model": MODEL, "prompt": "Summarise part {{ item_number }}:\n{{ item }}", "max_tokens": 100}},
        {"id": "all", "action": "openai_chat", "dependencies": ["each"],
         "params": {"model": MODEL, "prompt": "Combine:\n{{ steps.each.outputs.text }}", "max_tokens": 300}}]},
        "fe.yaml")
    est = estimate_run(tpl, {"content": text_of(5_000), "content_type": "text/plain"})
    reduce = est["steps"][-1]
    assert reduce["step_id"] == "all" and reduce["fits"] is True  # with the answers empty it fits
    assert "over the 1,200-token context window" in reduce["warning"]
    assert "would fail after they were paid for" in reduce["warning"]
