"""Model steps through the engine: the executor, the real SDKs, a fake provider on 127.0.0.1.

Costs and their sums per model and provider, retries (429 + Retry-After, 5xx, timeouts),
final errors (401, garbage), a worker that survives all of it, budgets (run, daily,
monthly, unknown prices, steps running side by side), the 50-step fan-out, provider
concurrency limits, estimates against what was really sent, unknown prices in `runs`.
test_adapters.py covers the adapters alone.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from hybrid_engine.errors import BadRequest
from hybrid_engine.money import usd
from hybrid_engine.templates import validate
from polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PAGE = ROOT / "examples" / "sample-page.html"
HERE = Path(__file__).resolve().parent

FAST_RETRIES = "[executor]\nbackoff_base_s = 0.05\nbackoff_cap_s = 0.5\n"


def tpl(steps, name="t", **extra):
    return validate({"name": name, "steps": steps, **extra}, "test.yaml")


def chat(step_id, action, model, prompt="Summarise: x", deps=(), **params):
    return {"id": step_id, "action": action, "dependencies": list(deps),
            "params": {"model": model, "prompt": prompt, **params}}


def drain(service, timeout=60):
    ex = service.make_executor()
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), timeout))
    return ex


def step(doc, step_id):
    return next(s for s in doc["steps"] if s["id"] == step_id)


def one_step_run(service, fake, action="openai_chat", model="gpt-4o", **params):
    run_id = service.create_run(tpl([chat("a", action, model, **params)]))
    drain(service)
    return service.run_document(run_id)


# ---- costs: per step, per model, per provider, summed ------------------------------------------

def test_mixed_providers_cost_breakdown_per_model_and_total_is_the_sum(service, fake_provider_env):
    fake = fake_provider_env
    fake.script("openai", usage={"prompt_tokens": 2_000, "completion_tokens": 300}, times=2)
    fake.script("deepseek", usage={"prompt_tokens": 5_000, "completion_tokens": 700, "cached_tokens": 2_048})
    fake.script("gemini", usage={"prompt_tokens": 3_000, "completion_tokens": 200, "thoughts_tokens": 500})
    run_id = service.create_run(tpl([
        chat("o1", "openai_chat", "gpt-4o"),
        chat("o2", "openai_chat", "gpt-4o", prompt="Another one"),
        chat("d", "deepseek_chat", "deepseek-chat"),
        chat("g", "gemini_chat", "gemini-2.5-flash"),
        {"id": "report", "action": "template", "dependencies": ["o1", "o2", "d", "g"],
         "params": {"template": "All: {{ steps.o1.outputs.text }} | {{ steps.d.outputs.text }} | {{ steps.g.outputs.text }}"}},
    ]))
    drain(service)
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED", doc["error"]
    assert sorted(r.provider for r in fake.requests) == ["deepseek", "gemini", "openai", "openai"]

    cost = {sid: step(doc, sid)["execution_metrics"]["cost"] for sid in ("o1", "o2", "d", "g")}
    assert all(isinstance(c, float) and c > 0 for c in cost.values()), cost
    assert doc["cost_breakdown"] == pytest.approx(
        {"gpt-4o": cost["o1"] + cost["o2"], "deepseek-chat": cost["d"], "gemini-2.5-flash": cost["g"]}, rel=1e-9)
    assert doc["cost_by_provider"] == pytest.approx(
        {"openai": cost["o1"] + cost["o2"], "deepseek": cost["d"], "gemini": cost["g"]}, rel=1e-9)
    assert doc["metrics"]["total_cost"] == pytest.approx(sum(cost.values()), rel=1e-9)
    assert doc["metrics"]["unknown_cost_steps"] == 0
    assert doc["metrics"]["prompt_tokens"] == 2_000 * 2 + 5_000 + 3_000
    assert doc["metrics"]["completion_tokens"] == 300 * 2 + 700 + 700
    assert service.summary(run_id)["total_cost"] == pytest.approx(sum(cost.values()), rel=1e-9)
    d = step(doc, "d")
    assert d["metadata"]["cached_tokens"] == 2_048 and d["execution_metrics"]["model"] == "deepseek-chat"
    assert step(doc, "g")["metadata"]["reasoning_tokens"] == 500
    assert step(doc, "report")["execution_metrics"]["cost"] == 0.0  # not a model step


# ---- transient errors are retried by the engine -----------------------------------------------

def test_429_with_retry_after_is_sent_again_after_at_least_that_delay_without_counting_a_retry(
        service, fake_provider_env, write_config):
    write_config(FAST_RETRIES)
    fake = fake_provider_env
    fake.script("openai", status=429, headers={"Retry-After": "1"})
    doc = one_step_run(service, fake)
    a = step(doc, "a")
    assert a["status"] == "COMPLETED" and a["execution_metrics"]["attempts"] == 1
    first, second = fake.requests_for("openai")
    assert second.started - first.ended >= 0.98, "sent again before the provider's Retry-After"
    assert any("openai paused until" in line for line in a["logs"]), a["logs"]
    assert a["execution_metrics"]["retries"] == 0


def test_server_errors_back_off_and_then_succeed(service, fake_provider_env, write_config):
    write_config(FAST_RETRIES)
    fake = fake_provider_env
    fake.script("gemini", status=500, times=1)
    fake.script("gemini", status=503, times=1)
    doc = one_step_run(service, fake, action="gemini_chat", model="gemini-2.5-flash")
    a = step(doc, "a")
    assert a["status"] == "COMPLETED" and a["execution_metrics"]["attempts"] == 3
    reqs = fake.requests_for("gemini")
    assert [r.status for r in reqs] == [500, 503, 200]
    gaps = [b.started - a_.ended for a_, b in zip(reqs, reqs[1:])]
    assert all(g >= 0.02 for g in gaps), gaps  # full jitter: at least half the 0.05 s base
    assert sum("retry 1 of" in line or "retry 2 of" in line for line in a["logs"]) == 2
    assert a["metadata"]["cost"] > 0 and doc["status"] == "COMPLETED"


def test_a_timeout_is_retried(service, fake_provider_env, write_config):
    write_config(FAST_RETRIES)
    fake = fake_provider_env
    # The first answer would come a minute later; the step's timeout is 3 s, room enough for
    # the second attempt on a busy machine (the timeout counts the adapter's own work too).
    fake.script("deepseek", latency=60)
    doc = one_step_run(service, fake, action="deepseek_chat", model="deepseek-chat", timeout_s=3)
    a = step(doc, "a")
    assert a["status"] == "COMPLETED" and a["execution_metrics"]["attempts"] == 2
    assert "timed out after 3 s" in a["logs"][0], a["logs"]
    assert [r.status for r in fake.requests_for("deepseek")][1:] == [200]


def test_401_fails_at_once_with_a_readable_error(service, fake_provider_env, write_config):
    write_config(FAST_RETRIES)
    fake = fake_provider_env
    fake.script("openai", status=401, error="Incorrect API key provided: sk-fake***")
    doc = one_step_run(service, fake)
    a = step(doc, "a")
    assert a["status"] == "FAILED" and a["execution_metrics"]["attempts"] == 1
    assert a["error_code"] == "provider_auth"
    assert "HTTP 401" in a["error"] and "Incorrect API key provided" in a["error"]
    assert "OPENAI_API_KEY" in a["error"] and "hybrid-engine keys set openai" in a["error"]
    assert "Traceback" not in a["error"]
    assert doc["status"] == "FAILED" and doc["error_code"] == "provider_auth"
    assert len(fake.requests) == 1


def test_garbage_json_fails_the_step_readably(service, fake_provider_env, write_config):
    write_config(FAST_RETRIES)
    fake = fake_provider_env
    fake.script("openai", body='{"choices": [ {"mess')
    doc = one_step_run(service, fake)
    a = step(doc, "a")
    assert a["status"] == "FAILED" and a["error_code"] == "provider_bad_response"
    assert "not a valid chat completion" in a["error"] and "Traceback" not in a["error"]
    assert a["execution_metrics"]["attempts"] == 1


def test_the_worker_survives_every_kind_of_provider_failure(service, fake_provider_env, write_config, cli):
    """401, garbage, 5xx, 429 and a timeout in one `worker --until-idle`: exit 0, each run settled."""
    write_config(FAST_RETRIES)
    fake = fake_provider_env
    cli.env.update(fake.env())
    fake.script("openai", status=401)
    fake.script("deepseek", body="<html>502 Bad Gateway</html>", content_type="text/html")
    fake.script("gemini", status=500, times=2)
    fake.script("local", status=429, headers={"Retry-After": "0.3"})
    fake.script("local", latency=60)  # only the step's 3 s timeout ends it
    runs = {
        "openai": service.create_run(tpl([chat("a", "openai_chat", "gpt-4o")])),
        "deepseek": service.create_run(tpl([chat("a", "deepseek_chat", "deepseek-chat")])),
        "gemini": service.create_run(tpl([chat("a", "gemini_chat", "gemini-2.5-flash")])),
        "local": service.create_run(tpl([chat("a", "local_chat", "llama3.1", timeout_s=3)])),
    }
    proc = cli("worker", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    got = {p: step(service.run_document(r), "a") for p, r in runs.items()}
    assert (got["openai"]["status"], got["openai"]["error_code"]) == ("FAILED", "provider_auth")
    assert (got["deepseek"]["status"], got["deepseek"]["error_code"]) == ("FAILED", "provider_bad_response")
    assert got["gemini"]["status"] == "COMPLETED" and got["gemini"]["execution_metrics"]["attempts"] == 3
    local = got["local"]
    assert local["status"] == "COMPLETED", local["logs"]
    # 429 (pauses the provider, not counted), timeout, success; the first attempt's 3 s also hold
    # the worker's cold SDK import,
    # which a busy machine can take longer than: one more timeout then
    assert local["execution_metrics"]["attempts"] in (2, 3), local["logs"]
    assert any("HTTP 429" in line for line in local["logs"]) and any("3 s" in line for line in local["logs"])
    assert service.store.has_queued() is False and service.store.has_running() is False


# ---- budgets ---------------------------------------------------------------------------------

# gpt-4o: $2.50 / Mtok in, $10 / Mtok out. The fake's default usage (120 in, 30 out) costs $0.0006;
# a step with max_tokens 1000 may cost up to about $0.01.
SMALL = {"max_tokens": 100}
LARGE = {"max_tokens": 1000}


def test_a_run_budget_stops_the_step_that_would_cross_it_before_it_starts(service, fake_provider_env):
    fake = fake_provider_env
    run_id = service.create_run(tpl([
        chat("a", "openai_chat", "gpt-4o", prompt="first", **SMALL),
        chat("b", "openai_chat", "gpt-4o", prompt="second: {{ steps.a.outputs.text }}", deps=["a"], **LARGE),
        chat("c", "openai_chat", "gpt-4o", prompt="third", deps=["b"], **SMALL),
    ], budget_usd=0.005))
    drain(service)
    doc = service.run_document(run_id)
    a, b, c = (step(doc, s) for s in "abc")
    assert a["status"] == "COMPLETED" and a["execution_metrics"]["cost"] == pytest.approx(0.0006)
    assert b["status"] == "FAILED" and b["error_code"] == "budget_exceeded"
    assert "run budget $0.005: spent $0.0006, this step may cost up to $0.01" in b["error"], b["error"]
    assert b["metadata"]["budget"]["kind"] == "run" and b["metadata"]["estimate"]["max_output_tokens"] == 1000
    assert c["status"] == "SKIPPED"
    assert doc["status"] == "FAILED" and doc["error_code"] == "budget_exceeded"
    assert "run budget $0.005" in doc["error"]
    assert [r.body["messages"][-1]["content"] for r in fake.requests] == ["first"]  # b never called


def test_run_budget_from_the_command_line(service, fake_provider_env, cli, write_template):
    cli.env.update(fake_provider_env.env())
    path = write_template({"name": "two", "steps": [
        chat("a", "openai_chat", "gpt-4o", prompt="first", **SMALL),
        chat("b", "openai_chat", "gpt-4o", prompt="second", deps=["a"], **LARGE)]})
    proc = cli("run", path, "--budget", "0.005", "--wait", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["budget_usd"] == 0.005 and doc["error_code"] == "budget_exceeded"
    assert step(doc, "b")["status"] == "FAILED" and len(fake_provider_env.requests) == 1
    table = cli("show", doc["id"], check=True).stdout
    assert "~$0.01" in table and "run budget $0.005" in table


def test_a_run_stopped_by_its_budget_goes_on_after_retry_with_a_higher_one(service, fake_provider_env, cli):
    cli.env.update(fake_provider_env.env())
    run_id = service.create_run(tpl([
        chat("a", "openai_chat", "gpt-4o", prompt="first", **SMALL),
        chat("b", "openai_chat", "gpt-4o", prompt="second", deps=["a"], **LARGE)], budget_usd=0.005))
    executor = service.make_executor()  # one executor throughout, as a host keeps it
    asyncio.run(executor.run(until_idle=True))
    stopped = step(service.run_document(run_id), "b")
    assert f"To go on: hybrid-engine retry {run_id} --budget 0.02" in stopped["error"], stopped["error"]
    out = cli("retry", run_id, "--budget", "0.02", check=True).stdout  # another process
    assert "failed steps queued again" in out
    asyncio.run(executor.run(until_idle=True))
    doc = service.run_document(run_id)
    assert doc["status"] == "COMPLETED" and doc["budget_usd"] == 0.02
    assert [r.body["messages"][-1]["content"] for r in fake_provider_env.requests] == ["first", "second"]
    assert any("with a run budget of $0.02" in line for line in step(doc, "b")["logs"])


def test_retry_refuses_a_budget_that_is_not_a_non_negative_number(service, fake_provider_env):
    run_id = service.create_run(tpl([chat("a", "openai_chat", "gpt-4o", **LARGE)], budget_usd=0.001))
    drain(service)
    for bad in (-1, float("nan"), True, "1"):
        with pytest.raises(BadRequest, match="budget_usd: expected a non-negative number"):
            service.retry(run_id, budget_usd=bad)
    assert service.summary(run_id)["status"] == "FAILED"


def test_steps_running_side_by_side_are_counted_against_the_budget(service, fake_provider_env):
    fake = fake_provider_env
    run_id = service.create_run(tpl([chat(f"s{i}", "openai_chat", "gpt-4o", prompt=f"p{i}", **LARGE)
                                     for i in range(3)], budget_usd=0.025))
    fake.hold()  # two calls stay in flight until the third step has been refused
    runner = threading.Thread(target=drain, args=(service,), daemon=True)
    runner.start()
    try:
        fake.wait_requests(2)
        wait_for(lambda: "FAILED" in [s["status"] for s in service.run_document(run_id)["steps"]],
                 what="the third step refused")
    finally:
        fake.release()
    runner.join(60)
    assert not runner.is_alive()
    doc = service.run_document(run_id)
    states = sorted(s["status"] for s in doc["steps"])
    assert states == ["COMPLETED", "COMPLETED", "FAILED"], states
    refused = next(s for s in doc["steps"] if s["status"] == "FAILED")
    assert refused["error_code"] == "budget_exceeded"
    assert "spent $0, steps still running may cost up to $0.02" in refused["error"], refused["error"]
    assert len(fake.requests) == 2


@pytest.mark.parametrize("period", ["daily", "monthly"])
def test_daily_and_monthly_budgets_stop_a_step_and_retry_works_once_raised(
        service, fake_provider_env, write_config, period):
    fake = fake_provider_env
    write_config(f"[budgets]\n{period}_usd = 0.005\n")
    first = one_step_run(service, fake, prompt="first", **SMALL)
    assert first["status"] == "COMPLETED"
    run_id = service.create_run(tpl([chat("big", "openai_chat", "gpt-4o", prompt="second", **LARGE)]))
    drain(service)
    doc = service.run_document(run_id)
    big = step(doc, "big")
    assert big["status"] == "FAILED" and big["error_code"] == "budget_exceeded"
    assert (f"{period} budget ([budgets] {period}_usd) $0.005: spent $0.0006, "
            f"this step may cost up to $0.01") in big["error"], big["error"]
    assert doc["error_code"] == "budget_exceeded" and len(fake.requests) == 1

    spend = service.spend()
    assert spend["today"] == pytest.approx(0.0006) and spend["today_by_provider"] == {"openai": pytest.approx(0.0006)}

    write_config(f"[budgets]\n{period}_usd = 0.05\n")  # settings are read when a step starts
    service.retry(run_id)
    drain(service)
    assert service.run_document(run_id)["status"] == "COMPLETED" and len(fake.requests) == 2


def test_unknown_price_under_a_budget_is_refused_or_allowed_as_configured(service, fake_provider_env, write_config):
    fake = fake_provider_env
    doc = one_step_run(service, fake, model="ft:my-own-model-xyz")  # no budget: it runs
    assert doc["status"] == "COMPLETED" and step(doc, "a")["execution_metrics"]["cost"] is None

    write_config("[budgets]\ndaily_usd = 1.0\n")
    doc = one_step_run(service, fake, model="ft:my-own-model-xyz")
    a = step(doc, "a")
    assert a["status"] == "FAILED" and a["error_code"] == "budget_exceeded"
    assert "price of ft:my-own-model-xyz is unknown" in a["error"]
    assert '[prices."ft:my-own-model-xyz"]' in a["error"] and 'unknown_price = "allow"' in a["error"]
    assert len(fake.requests) == 1

    write_config('[budgets]\ndaily_usd = 1.0\nunknown_price = "allow"\n')
    doc = one_step_run(service, fake, model="ft:my-own-model-xyz")
    a = step(doc, "a")
    assert a["status"] == "COMPLETED" and a["execution_metrics"]["cost"] is None
    assert any("started anyway" in line for line in a["logs"])


def test_local_models_are_free_and_never_stopped_by_a_budget(service, fake_provider_env, write_config):
    write_config("[budgets]\ndaily_usd = 0\n")
    doc = one_step_run(service, fake_provider_env, action="local_chat", model="llama3.1")
    assert doc["status"] == "COMPLETED" and step(doc, "a")["execution_metrics"]["cost"] == 0.0


def test_no_provider_set_up_says_so_and_what_the_step_would_cost(service, he_home, cli):
    proc = cli("run", "page-digest", "--input", SAMPLE_PAGE, "--wait")
    assert proc.returncode == 1
    out = proc.stdout
    assert "No OpenAI API key. Set OPENAI_API_KEY, or run `hybrid-engine keys set openai`" in out
    assert "This step would have cost about $" in out
    row = next(line for line in out.splitlines() if line.startswith("summary "))
    assert "FAILED" in row and "~$0.000" in row and "gpt-4o-mini" in row
    doc = json.loads(cli("show", service.list_runs()[0]["id"], "--json", check=True).stdout)
    meta = step(doc, "summary")["metadata"]
    assert meta["provider"] == "openai" and meta["model"] == "gpt-4o-mini"
    assert meta["estimate"]["prompt_tokens"] > 500 and meta["estimate"]["cost_max"] > 0


# ---- concurrency --------------------------------------------------------------------------------

def test_fan_out_of_50_model_steps_has_all_50_calls_in_flight_at_once(service, fake_provider_env, write_config,
                                                                      cli):
    """Concurrency shown by order, not by the clock: the fake answers nothing until all 50
    requests have arrived, which only happens if all 50 calls are in flight together.
    (The wall-clock ratio of 50 calls to one is bench/model_fanout.py's.)"""
    fake = fake_provider_env
    write_config("[executor]\nconcurrency = 50\n")
    run_id = service.create_run(tpl([chat(f"s{i}", "openai_chat", "gpt-4o-mini", prompt=f"p{i}") for i in range(50)]))
    fake.hold()
    proc = cli.popen("worker", "--until-idle", "--quiet")
    try:
        fake.wait_requests(50, timeout=120)
        fake.release()
        assert proc.wait(120) == 0
    finally:
        fake.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert fake.max_in_flight == 50
    assert service.summary(run_id)["status"] == "COMPLETED"


def test_a_provider_limit_of_5_is_never_exceeded(service, fake_provider_env, write_config, cli):
    """Shown by order: with every answer held, 5 OpenAI calls and all 10 DeepSeek calls are in
    flight together (DeepSeek is not held back by OpenAI's limit), and no sixth OpenAI call
    goes out until an answer comes back."""
    fake = fake_provider_env
    write_config("[executor]\nconcurrency = 50\n[providers.openai]\nconcurrency = 5\n")
    run_id = service.create_run(tpl(
        [chat(f"s{i}", "openai_chat", "gpt-4o-mini", prompt=f"p{i}") for i in range(20)]
        + [chat(f"d{i}", "deepseek_chat", "deepseek-chat", prompt=f"p{i}") for i in range(10)]))
    fake.hold()
    proc = cli.popen("worker", "--until-idle", "--quiet")
    try:
        fake.wait_requests(10, provider="deepseek", timeout=120)
        fake.wait_requests(5, provider="openai", timeout=120)
        assert len(fake.requests_for("openai")) == 5
        fake.release()
        assert proc.wait(120) == 0
    finally:
        fake.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert service.run_document(run_id)["status"] == "COMPLETED"
    openai_reqs = fake.requests_for("openai")
    assert len(openai_reqs) == 20
    # The fake's in-flight high-water mark counts every provider; count OpenAI's alone.
    events = sorted([(r.started, 1) for r in openai_reqs] + [(r.ended, -1) for r in openai_reqs])
    level = high = 0
    for _, delta in events:
        level += delta
        high = max(high, level)
    assert high == 5, high


# ---- estimates ------------------------------------------------------------------------------------

def test_estimate_matches_the_prompt_the_run_really_sends(service, fake_provider_env, cli):
    import tiktoken_reference

    cli.env.update(fake_provider_env.env())
    est = cli.json("estimate", "page-digest", "--input", SAMPLE_PAGE, "--source-url", "https://example.org/a",
                   "--json")
    (summary,) = est["steps"]
    assert summary["step_id"] == "summary" and summary["model"] == "gpt-4o-mini"
    assert summary["provider"] == "openai" and summary["fits"] is True and summary["price_unknown"] is False
    assert 0 < summary["cost_min"] < summary["cost_max"] == est["total_cost_max"]
    assert summary["max_output_tokens"] == 400 and est["budget_usd"] == 0.05

    proc = cli("run", "page-digest", "--input", SAMPLE_PAGE, "--source-url", "https://example.org/a",
               "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    (request,) = fake_provider_env.requests
    enc = tiktoken_reference.o200k()
    messages = request.body["messages"]
    sent = sum(len(enc.encode_ordinary(m["content"])) + 4 for m in messages) + 3  # OpenAI's chat framing
    assert abs(summary["prompt_tokens"] - sent) <= 0.02 * sent, (summary["prompt_tokens"], sent)
    print(f"\nestimate {summary['prompt_tokens']} prompt tokens; o200k_base on what was sent: {sent}")

    table = cli("estimate", "page-digest", "--input", SAMPLE_PAGE, check=True).stdout
    assert "summary" in table and "gpt-4o-mini" in table and "total" in table and " - $" in table


def test_estimate_of_a_chain_marks_upstream_answers_as_unknown(service, fake_provider_env):
    t = tpl([{"id": "page", "action": "capture"},
             {"id": "text", "action": "extract_text", "dependencies": ["page"],
              "params": {"html": "{{ steps.page.outputs.content }}"}},
             chat("first", "openai_chat", "gpt-4o-mini", prompt="Sum up: {{ steps.text.outputs.text }}",
                  deps=["text"], max_tokens=500),
             chat("second", "gemini_chat", "gemini-2.5-flash", prompt="Critique: {{ steps.first.outputs.text }}",
                  deps=["first"], max_tokens=200),
             chat("odd", "openai_chat", "my-unpriced-model", prompt="{{ steps.text.outputs.text }}",
                  deps=["text"], max_tokens=100)])
    service.templates.get = lambda ref: t  # a template object, not a file
    est = service.estimate("t", {"content": SAMPLE_PAGE.read_text(encoding="utf-8")})
    first, second, odd = est["steps"]
    assert first["lower_bound"] is False and first["prompt_tokens"] > 500
    assert second["lower_bound"] is True and second["unknown_inputs"] == ["first"]
    assert second["prompt_tokens"] < 20 and second["prompt_tokens_max"] >= 500  # room for first's answer
    assert odd["price_unknown"] is True and odd["cost_max"] is None
    assert est["unknown_cost_steps"] == 1 and est["price_unknown"] is True
    assert est["total_cost_max"] == pytest.approx(first["cost_max"] + second["cost_max"])
    assert fake_provider_env.requests == []


# ---- replies without usable usage: estimated, counted, and said so ----------------------------------

ANSWER = "The page describes a durable workflow engine that keeps every step on disk. " * 4


def test_run_budget_counts_estimated_costs_so_replies_without_usage_stop_after_two_calls(service, fake_provider_env):
    from hybrid_engine.adapters import load_action

    fake = fake_provider_env
    fake.set_default("openai", usage=None, text=ANSWER)
    params = {"prompt": "Summarise: x", "max_tokens": 200}
    per_call = step(one_step_run(service, fake, **params), "a")["execution_metrics"]["cost"] or 0.0
    cost_max = load_action("openai_chat").estimate({"model": "gpt-4o", **params})["cost_max"]
    before = len(fake.requests)
    # Room for a step's upper bound after two calls' spend has been counted, not after three.
    run_id = service.create_run(tpl([chat(f"s{i}", "openai_chat", "gpt-4o", deps=[f"s{i - 1}"] if i else [],
                                          **params) for i in range(6)], budget_usd=cost_max + 1.5 * per_call))
    drain(service)
    assert len(fake.requests) - before == 2
    doc = service.run_document(run_id)
    assert [s["status"] for s in doc["steps"]] == ["COMPLETED", "COMPLETED", "FAILED"] + ["SKIPPED"] * 3
    assert step(doc, "s2")["error_code"] == "budget_exceeded"
    assert per_call > 0 and doc["metrics"]["total_cost"] == pytest.approx(2 * per_call)
    assert doc["metrics"]["estimated_cost_steps"] == 2


def test_spend_counts_estimated_costs_and_says_they_are_estimated(service, fake_provider_env, cli):
    fake_provider_env.set_default("openai", usage={"prompt_tokens": -1, "completion_tokens": -1}, text=ANSWER)
    cost = step(one_step_run(service, fake_provider_env), "a")["execution_metrics"]["cost"]
    data = cli.json("spend", "--json")
    assert cost > 0 and data["today"] == pytest.approx(cost) and data["this_month"] == pytest.approx(cost)
    assert data["today_estimated"] == pytest.approx(cost) and data["this_month_estimated"] == pytest.approx(cost)
    text = cli("spend", check=True).stdout
    assert f"of which ~{usd(cost)} today and ~{usd(cost)} this month are estimated" in text, text


def test_show_marks_a_cost_estimated_from_our_own_count(service, fake_provider_env, cli):
    fake_provider_env.set_default("openai", usage=None, text=ANSWER)
    doc = one_step_run(service, fake_provider_env)
    a = step(doc, "a")
    assert a["execution_metrics"]["cost_estimated"] is True and doc["metrics"]["estimated_cost_steps"] == 1
    table = cli("show", doc["id"], check=True).stdout
    row = next(line for line in table.splitlines() if line.startswith("a "))
    assert f"~{usd(a['execution_metrics']['cost'])} est." in row, table
    total = next(line for line in table.splitlines() if line.startswith("total "))
    assert "est." in total, table
    assert "~ est.: a: the provider reported no usable token usage" in table


def test_show_warns_of_an_answer_cut_at_max_tokens(service, fake_provider_env, cli):
    fake_provider_env.script("openai", finish_reason="length")
    doc = one_step_run(service, fake_provider_env, max_tokens=30)
    assert step(doc, "a")["warnings"] == ["cut at max_tokens (30 tokens): the answer is incomplete"]
    table = cli("show", doc["id"], check=True).stdout
    row = next(line for line in table.splitlines() if line.startswith("a "))
    assert "! cut at max_tokens (30 tokens)" in row, table
    assert "warning: a was cut at max_tokens (30 tokens): the answer is incomplete." in table


def test_run_wait_warns_of_a_gemini_answer_cut_at_max_tokens(fake_provider_env, cli, write_template):
    cli.env.update(fake_provider_env.env())
    fake_provider_env.script("gemini", finish_reason="length")  # the fake sends MAX_TOKENS
    path = write_template({"name": "cut", "steps": [chat("a", "gemini_chat", "gemini-2.5-flash", max_tokens=30)]})
    proc = cli("run", path, "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "warning: a was cut at max_tokens (30 tokens): the answer is incomplete." in proc.stdout, proc.stdout


# ---- unknown prices ----------------------------------------------------------------------------------

def test_spend_names_completed_steps_it_cannot_price_instead_of_counting_them_as_zero(service, fake_provider_env,
                                                                                       cli):
    service.create_run(tpl([chat("known", "openai_chat", "gpt-4o"),
                            chat("odd", "openai_chat", "ft:my-own-model-xyz"),
                            chat("odd2", "openai_chat", "ft:my-own-model-xyz", prompt="Again")]))
    drain(service)
    data = cli.json("spend", "--json")
    assert data["today_unpriced_steps"] == {"ft:my-own-model-xyz": 2}
    assert data["this_month_unpriced_steps"] == {"ft:my-own-model-xyz": 2}
    assert data["today"] > 0  # the priced step alone
    text = cli("spend", check=True).stdout
    assert "not counted: 2 completed step(s) this month whose price is unknown: ft:my-own-model-xyz (2)" in text


def test_unknown_model_is_null_counted_and_shown_as_unknown(service, fake_provider_env, cli):
    cli.env.update(fake_provider_env.env())
    run_id = service.create_run(tpl([chat("known", "openai_chat", "gpt-4o"),
                                     chat("odd", "openai_chat", "ft:my-own-model-xyz")]))
    only_unknown = service.create_run(tpl([chat("odd", "openai_chat", "ft:my-own-model-xyz")], name="odd-only"))
    drain(service)
    doc = service.run_document(run_id)
    odd = step(doc, "odd")
    assert odd["status"] == "COMPLETED"
    assert odd["execution_metrics"]["cost"] is None and odd["metadata"]["price_unknown"] is True
    assert odd["metadata"]["cost"] is None and odd["execution_metrics"]["tokens"] == 150
    known_cost = step(doc, "known")["execution_metrics"]["cost"]
    assert doc["metrics"]["unknown_cost_steps"] == 1
    assert doc["metrics"]["total_cost"] == pytest.approx(known_cost)
    assert "ft:my-own-model-xyz" not in doc["cost_breakdown"]

    exported = json.loads(cli("export", run_id, check=True).stdout)
    assert step(exported, "odd")["execution_metrics"]["cost"] is None

    listing = {line.split()[0]: line for line in cli("runs", check=True).stdout.splitlines()[2:]}
    # run, page (a run without one is named by its workflow: one word), template, status, steps, tokens, cost
    assert listing[only_unknown].split()[6] == "unknown", listing[only_unknown]
    assert "+ unknown" in listing[run_id]
    runs = {r["id"]: r for r in cli.json("runs", "--json")["runs"]}
    assert runs[only_unknown]["unknown_cost_steps"] == 1
    table = cli("show", only_unknown, check=True).stdout
    odd_row = next(line for line in table.splitlines() if line.startswith("odd "))
    assert "unknown" in odd_row and "$0 " not in odd_row


def test_spend_command_reports_today_month_providers_and_budgets(service, fake_provider_env, write_config, cli):
    write_config("[budgets]\ndaily_usd = 0.5\nmonthly_usd = 10\n")
    one_step_run(service, fake_provider_env)
    data = cli.json("spend", "--json")
    assert data["today"] == pytest.approx(0.0006) and data["this_month"] == pytest.approx(0.0006)
    assert data["today_by_provider"] == {"openai": pytest.approx(0.0006)}
    assert data["daily_budget_usd"] == 0.5 and data["monthly_budget_usd"] == 10
    text = cli("spend", check=True).stdout
    assert "openai" in text and "daily budget: $0.50, $0.50 left" in text


def test_a_reply_claiming_one_token_for_a_long_prompt_is_priced_from_our_own_count(service, fake_provider_env):
    from hybrid_engine import tokens

    page = "The tides rise and fall twice a day along this coast. " * 300
    fake_provider_env.set_default("openai", usage={"prompt_tokens": 1, "completion_tokens": 1}, text=ANSWER)
    a = step(one_step_run(service, fake_provider_env, prompt=page), "a")
    sent = tokens.count_chat_tokens(page, None, "gpt-4o", "openai").tokens
    assert a["metadata"]["usage_source"] == "estimated", a["metadata"]
    assert a["metadata"]["prompt_tokens"] == sent and a["execution_metrics"]["cost_estimated"] is True
    assert a["metadata"]["usage_problem"] == f"1 prompt tokens for a prompt we count at no fewer than {sent:,}"


def test_an_answer_stopped_by_a_content_filter_is_shown_as_a_warning(service, fake_provider_env):
    fake_provider_env.script("gemini", finish_reason="content_filter", text="")  # the fake sends SAFETY
    doc = one_step_run(service, fake_provider_env, action="gemini_chat", model="gemini-2.5-flash")
    assert step(doc, "a")["warnings"] == ["stopped by the provider's content filter (SAFETY): the answer is "
                                          "empty or incomplete"]
