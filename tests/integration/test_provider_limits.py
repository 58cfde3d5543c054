"""Requests per minute per provider, paced by the engine, and 429s that pause the whole
provider: a batch against a rate-limited provider slows down instead of failing.

The fake provider's limit is a sliding window scaled down (5 requests per 0.5 s is 600 a
minute) so that a test runs in seconds without sleeping to synchronise.
"""

from __future__ import annotations

import asyncio

from hybrid_engine.templates import validate


def tpl(steps, name="t"):
    return validate({"name": name, "steps": steps}, "test.yaml")


def chat(step_id="a", model="gpt-4o-mini", **params):
    return {"id": step_id, "action": "openai_chat",
            "params": {"model": model, "prompt": "Summarise: x", "max_tokens": 50, **params}}


def drain(service, timeout=60):
    ex = service.make_executor()
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), timeout))
    return ex


def test_runs_above_a_providers_limit_all_complete_and_no_429_is_a_final_status(
        service, fake_provider_env, write_config):
    write_config('[providers.openai]\ntier = "unlimited"\n')  # the engine does not pace: the provider says 429
    fake = fake_provider_env
    fake.limit("openai", requests=5, window_s=0.5)
    runs = [service.create_run(tpl([chat()])) for _ in range(20)]
    drain(service)
    assert fake.rate_limited > 0, "the provider never had to refuse: the test proves nothing"
    for run_id in runs:
        [a] = service.run_document(run_id)["steps"]
        assert a["status"] == "COMPLETED" and a["execution_metrics"]["retries"] == 0, a
    refused = [c for r in runs for c in service.store.calls(r) if c["state"] == "refused"]
    assert len(refused) == fake.rate_limited and all("429" in (c["reason"] or "") for c in refused)


def test_a_429_pauses_every_step_of_its_provider_until_retry_after(service, fake_provider_env, write_config):
    write_config('[providers.openai]\ntier = "unlimited"\n[executor]\nconcurrency = 1\n')
    fake = fake_provider_env
    fake.script("openai", status=429, headers={"retry-after-ms": "400"})
    runs = [service.create_run(tpl([chat()])) for _ in range(3)]
    drain(service)
    first, *rest = fake.requests_for("openai")
    assert first.status == 429 and len(rest) == 3 and all(r.status == 200 for r in rest)
    assert min(r.started for r in rest) - first.ended >= 0.39, "a step was sent while its provider was paused"
    docs = [service.run_document(r) for r in runs]
    assert all(d["status"] == "COMPLETED" for d in docs)
    assert any("paused until" in line and "not counted as a retry" in line
               for d in docs for line in d["steps"][0]["logs"])


def test_the_engine_paces_requests_per_minute_so_the_provider_never_refuses(
        service, fake_provider_env, write_config):
    write_config('[providers.openai]\nrpm = 480\n')  # 8 a second against the provider's 10
    fake = fake_provider_env
    fake.limit("openai", requests=10, window_s=1.0)
    runs = [service.create_run(tpl([chat()])) for _ in range(25)]
    drain(service)
    assert fake.rate_limited == 0
    assert all(service.run_document(r)["status"] == "COMPLETED" for r in runs)
    starts = sorted(r.started for r in fake.requests_for("openai"))
    assert starts[-1] - starts[0] >= (25 - 1) / 8 * 0.95, "more than 8 a second went out"


def test_tokens_per_minute_hold_back_a_call_until_its_prompt_tokens_are_free(
        service, fake_provider_env, write_config):
    write_config('[providers.openai]\ntpm = 1200\n')  # 20 prompt tokens a second, a bucket of 20
    fake = fake_provider_env
    runs = [service.create_run(tpl([chat()])) for _ in range(4)]
    drain(service)
    assert all(service.run_document(r)["status"] == "COMPLETED" for r in runs)
    booked = sum(c["prompt_tokens"] for r in runs for c in service.store.calls(r))
    assert all(c["prompt_tokens"] <= 20 for r in runs for c in service.store.calls(r))
    starts = sorted(r.started for r in fake.requests_for("openai"))
    # Tokens taken by the last start are at most the bucket plus the rate times the time since the first.
    assert starts[-1] - starts[0] >= (booked - 20) / 20 * 0.95, "calls went out faster than 20 prompt tokens a second"


def test_a_retry_after_of_inf_is_no_hint_and_the_step_retries_and_completes(
        service, fake_provider_env, write_config):
    write_config('[providers.openai]\ntier = "unlimited"\n')
    fake_provider_env.script("openai", status=503, headers={"Retry-After": "inf"})
    run_id = service.create_run(tpl([chat()]))
    drain(service, timeout=30)
    [a] = service.run_document(run_id)["steps"]
    assert a["status"] == "COMPLETED" and a["execution_metrics"]["retries"] == 1, a


def test_a_retry_after_years_away_waits_at_most_the_hint_cap():
    from hybrid_engine.steplimits import HINT_CAP_S, RetryPolicy

    assert RetryPolicy(base_s=1.0, cap_s=60.0).delay(1, 3.0e11) == HINT_CAP_S
