"""Pre-flight in the host's `estimate` reply: per model step, whether it could start now
(a key, a local server answering, the run and daily budgets) and the fix when not."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from hybrid_engine import config

from host_client import HostClient

PAGE = "<html><head><title>Pools</title></head><body><p>Tidal pools are rocky pools by the sea.</p></body></html>"


def _template(home: Path, name: str, action: str, model: str, **extra) -> str:
    (home / "templates").mkdir(parents=True, exist_ok=True)
    steps = [{"id": "page", "action": "capture"},
             {"id": "sum", "action": action, "dependencies": ["page"],
              "params": {"model": model, "prompt": "Summarise: {{ steps.page.outputs.content }}", "max_tokens": 1000}}]
    (home / "templates" / f"{name}.json").write_text(json.dumps({"name": name, "steps": steps, **extra}))
    return name


def _estimate(home: Path, template: str) -> dict:
    with HostClient(home) as host:
        host.call("hello", protocol=1)
        return host.call("estimate", template=template, page={"content": PAGE}, timeout=60)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_names_a_missing_key_and_where_to_add_it(he_home):
    est = _estimate(he_home, _template(he_home, "cloud", "openai_chat", "gpt-4o-mini"))
    check = est["steps"][0]["preflight"]
    assert check["ok"] is False and check["key_present"] is False and check["local_server"] is None
    assert "No OpenAI key: add it in Settings" in check["fix"]
    assert est["preflight_ok"] is False


def test_preflight_passes_once_the_key_is_stored(he_home):
    name = _template(he_home, "cloud", "openai_chat", "gpt-4o-mini")
    config.set_key("openai", "sk-preflight-0123456789")
    est = _estimate(he_home, name)
    check = est["steps"][0]["preflight"]
    assert check == {"ok": True, "key_present": True, "local_server": None, "within_run_budget": True,
                     "within_daily_budget": True, "fix": None}
    assert est["preflight_ok"] is True
    assert "sk-preflight" not in json.dumps(est)  # never the key itself


def test_preflight_says_a_local_server_that_does_not_answer_and_its_address(he_home):
    port = _closed_port()
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").write_text(f'[providers.local]\nbase_url = "http://127.0.0.1:{port}/v1"\n')
    est = _estimate(he_home, _template(he_home, "local", "local_chat", "llama3"))
    check = est["steps"][0]["preflight"]
    assert check["local_server"] == "not answering" and check["ok"] is False
    assert f"Nothing answers at http://127.0.0.1:{port}/v1" in check["fix"]


def test_preflight_says_a_local_server_that_answers(he_home, fake_provider):
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").write_text(f'[providers.local]\nbase_url = "{fake_provider.base_url("local")}"\n')
    est = _estimate(he_home, _template(he_home, "local", "local_chat", "llama3"))
    assert est["steps"][0]["preflight"]["local_server"] == "answering"
    assert est["preflight_ok"] is True
    assert fake_provider.requests_for("local") == []  # a connect, no request


def test_preflight_flags_a_run_that_may_pass_its_run_budget_before_it_is_sent(he_home):
    config.set_key("openai", "sk-preflight-0123456789")
    est = _estimate(he_home, _template(he_home, "tight", "openai_chat", "gpt-4o", budget_usd=0.0001))
    check = est["steps"][0]["preflight"]
    assert check["within_run_budget"] is False and check["ok"] is False
    assert "over its $0.0001 run budget" in check["fix"] and "budget_usd" in check["fix"]


def test_preflight_flags_a_run_that_may_pass_the_daily_budget(he_home):
    config.set_key("openai", "sk-preflight-0123456789")
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").write_text("[budgets]\ndaily_usd = 0.0001\n")
    est = _estimate(he_home, _template(he_home, "cloud", "openai_chat", "gpt-4o"))
    check = est["steps"][0]["preflight"]
    assert check["within_daily_budget"] is False and check["within_run_budget"] is True
    assert "daily budget" in check["fix"] and est["daily_budget_usd"] == pytest.approx(0.0001)


def test_preflight_of_a_step_that_would_not_be_sent_says_why_instead_of_ready(he_home):
    import base64

    from pdf_writer import scanned_pdf

    (he_home / "templates").mkdir(parents=True, exist_ok=True)
    steps = [{"id": "page", "action": "capture"},
             {"id": "text", "action": "extract_text", "dependencies": ["page"],
              "params": {"html": "{{ steps.page.outputs.content }}"}},
             {"id": "sum", "action": "openai_chat", "dependencies": ["text"],
              "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.text.outputs.text }}",
                         "max_tokens": 100}}]
    (he_home / "templates" / "pdf.json").write_text(json.dumps({"name": "pdf", "steps": steps}))
    config.set_key("openai", "sk-preflight-0123456789")
    with HostClient(he_home) as host:
        host.call("hello", protocol=1)
        est = host.call("estimate", template="pdf", timeout=60, page={
            "content": base64.b64encode(scanned_pdf(2)).decode(), "content_type": "application/pdf"})
    check = est["steps"][0]["preflight"]
    assert check["ok"] is False and check["key_present"] is True
    assert "no text layer" in check["fix"]
    assert est["preflight_ok"] is False


def test_preflight_of_a_prompt_over_the_models_window_says_it_will_fail(he_home):
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").write_text('[models."gpt-4o-mini"]\ncontext_window = 1200\n')
    name = _template(he_home, "cloud", "openai_chat", "gpt-4o-mini")
    config.set_key("openai", "sk-preflight-0123456789")
    with HostClient(he_home) as host:
        host.call("hello", protocol=1)
        est = host.call("estimate", template=name, timeout=60,
                        page={"content": "<p>" + "Tidal pools hold small crabs and weed. " * 400 + "</p>"})
    check = est["steps"][0]["preflight"]
    assert check["ok"] is False
    assert "over the 1,200-token context window" in check["fix"] and "will fail" in check["fix"]


def test_a_local_check_started_before_the_estimate_is_the_one_its_preflight_uses():
    # The host starts the knock beside the page's extraction; annotate then reads its answer
    # instead of knocking a second time.
    from hybrid_engine import preflight

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        base = f"http://127.0.0.1:{server.getsockname()[1]}"
        preflight._answers.pop(base, None)
        preflight.check_soon(base)
        assert preflight.local_answering(base) is True
        server.settimeout(5)
        server.accept()[0].close()  # the one knock
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # and no second one
