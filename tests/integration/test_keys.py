"""Keys: only what the user gave Hybrid Engine counts, and no key or URL credential leaves.

Through the real SDKs against the loopback fake, the CLI and the host as subprocesses:
GOOGLE_API_KEY (Chromium's own key on Debian and Ubuntu) is never a Gemini key; `keys list`
and the host's `config` say where each key came from; keys from keys.json and base-URL
credentials are masked before an error is cut, in tracebacks, in `show`, `export` and the
log; a broken or exposed keys.json is said, naming the file.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os

import pytest

from hybrid_engine.adapters import load_action
from hybrid_engine.adapters.base import StepContext
from hybrid_engine.errors import StepError

from host_client import HostClient

CHROMIUM_KEY = "AIzaSyChromiumOwnKey-not-the-users-000"


def _run(action: str, params: dict):
    ctx = StepContext(run_id="run-1", step_id="step-1", action=action, attempt=1)
    return asyncio.run(load_action(action).run(params, ctx))


def _fails(action: str, params: dict) -> StepError:
    with pytest.raises(StepError) as info:
        _run(action, params)
    return info.value


def _no_part_of(secret: str, text: str, size: int = 8) -> bool:
    return not any(secret[i:i + size] in text for i in range(len(secret) - size + 1))


def _write_keys(home, data, mode=0o600):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "keys.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    os.chmod(path, mode)
    return path


# ---- GOOGLE_API_KEY is Chromium's, not the user's ------------------------------------------------

def test_google_api_key_in_the_environment_is_not_a_gemini_key(he_home, fake_provider, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", CHROMIUM_KEY)
    monkeypatch.setenv("GEMINI_BASE_URL", fake_provider.base_url("gemini"))
    err = _fails("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "a private page"})
    assert err.code == "no_provider"
    assert "GEMINI_API_KEY" in err.message and "GOOGLE_API_KEY" not in err.message
    assert fake_provider.requests == []


def test_gemini_call_carries_the_users_key_not_chromiums(fake_provider_env, monkeypatch, he_home):
    monkeypatch.setenv("GOOGLE_API_KEY", CHROMIUM_KEY)
    monkeypatch.delenv("GEMINI_API_KEY")
    _write_keys(he_home, {"gemini": "users-own-gemini-key"})
    _run("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "x"})
    (request,) = fake_provider_env.requests
    assert request.headers["x-goog-api-key"] == "users-own-gemini-key"


# ---- where each key came from ----------------------------------------------------------------------

def test_keys_list_names_where_each_key_came_from_and_never_the_key(cli, he_home):
    env_key, stored_key, conf_key = "sk-env-key-0123456789", "sk-stored-key-0123456789", "conf-gemini-key-0123456789"
    keys_path = _write_keys(he_home, {"deepseek": stored_key})
    (he_home / "config.toml").write_text(f'[providers.gemini]\napi_key = "{conf_key}"\n', encoding="utf-8")
    cli.env.update(OPENAI_API_KEY=env_key, GOOGLE_API_KEY=CHROMIUM_KEY)
    proc = cli("keys", "list", check=True)
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert "OPENAI_API_KEY" in rows["openai"]
    assert str(keys_path) in rows["deepseek"]
    assert "config.toml" in rows["gemini"]
    assert rows["local"].split()[1] == "-"
    doc = cli.json("keys", "list", "--json")
    by_name = {p["provider"]: p for p in doc["providers"]}
    assert by_name["gemini"]["source"] == "config" and "config.toml" in by_name["gemini"]["from"]
    for secret in (env_key, stored_key, conf_key, CHROMIUM_KEY):
        assert _no_part_of(secret, proc.stdout + proc.stderr + json.dumps(doc))


def test_host_config_names_the_variable_or_file_each_key_came_from(he_home):
    keys_path = _write_keys(he_home, {"deepseek": "sk-stored-key-0123456789"})
    (he_home / "config.toml").write_text('[providers.gemini]\napi_key = "conf-gemini-key-0123456789"\n',
                                         encoding="utf-8")
    with HostClient(he_home, extra_env={"OPENAI_API_KEY": "sk-env-key-0123456789",
                                        "GOOGLE_API_KEY": CHROMIUM_KEY}) as h:
        p = h.call("config")["providers"]
    assert p["openai"]["key_from"].startswith("OPENAI_API_KEY")
    assert p["deepseek"]["key_from"] == str(keys_path)
    assert "config.toml" in p["gemini"]["key_from"]
    assert p["local"]["key_from"] is None


# ---- redaction ----------------------------------------------------------------------------------------

def test_a_stored_key_after_300_characters_of_provider_error_is_fully_masked(fake_provider_env, monkeypatch,
                                                                            he_home):
    key = "sk-stored-0123456789abcdefghijklmnopqrstuvwxyz"
    monkeypatch.delenv("OPENAI_API_KEY")
    _write_keys(he_home, {"openai": key})
    fake_provider_env.script("openai", status=400, error="x" * 270 + f" the key {key} is not allowed here")
    err = _fails("openai_chat", {"model": "gpt-4o", "prompt": "x"})
    assert "HTTP 400" in err.message
    assert _no_part_of(key, err.message), err.message


def test_a_traceback_in_the_log_has_the_key_masked(he_home, monkeypatch):
    from hybrid_engine import logsetup

    key = "users-own-key-0123456789"
    monkeypatch.setenv("DEEPSEEK_API_KEY", key)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(logsetup.RedactKeys())
    log = logging.getLogger("test_keys.traceback")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise RuntimeError(f"request with api_key={key} failed")
        except RuntimeError:
            log.exception("the call failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "Traceback" in text and "RuntimeError" in text
    assert key not in text, text


CRED_URL_SECRET, CRED_QUERY_SECRET = "url-password-0123456789", "query-api-key-0123456789"


def test_base_url_credentials_never_show_in_step_error_show_export_or_log(cli, he_home, fake_provider,
                                                                         write_template):
    base = fake_provider.base_url("openai").replace(
        "http://", f"http://user:{CRED_URL_SECRET}@") + f"?api-key={CRED_QUERY_SECRET}"
    cli.env.update(OPENAI_API_KEY="sk-fake-openai", OPENAI_BASE_URL=base)
    fake_provider.set_default("openai", status=404, error="no such model")
    tpl = write_template({"name": "creds", "steps": [
        {"id": "ask", "action": "openai_chat", "params": {"model": "gpt-4o", "prompt": "x", "retries": 0}}]})
    run = cli("run", tpl, "--wait", "--json")
    assert run.returncode == 1, run.stderr
    run_id = json.loads(run.stdout)["id"]
    texts = {"run": run.stdout + run.stderr,
             "show": cli("show", run_id, check=True).stdout,
             "show --json": cli("show", run_id, "--json", check=True).stdout,
             "export": cli("export", run_id, check=True).stdout,
             "log": (he_home / "logs" / "hybrid-engine.log").read_text(encoding="utf-8")}
    error = json.loads(texts["export"])["steps"][0]["error"]
    assert error and "HTTP 404" in error, error
    for where, text in texts.items():
        for secret in (CRED_URL_SECRET, CRED_QUERY_SECRET):
            assert secret not in text, f"{secret} in {where}"


def test_keys_list_hides_base_url_credentials(cli):
    cli.env["HYBRID_ENGINE_LOCAL_BASE_URL"] = (f"http://me:{CRED_URL_SECRET}@127.0.0.1:9/v1"
                                               f"?access_token={CRED_QUERY_SECRET}")
    proc = cli("keys", "list", check=True)
    assert "127.0.0.1:9/v1" in proc.stdout
    assert CRED_URL_SECRET not in proc.stdout and CRED_QUERY_SECRET not in proc.stdout


# ---- a broken or exposed keys.json ---------------------------------------------------------------------

@pytest.mark.parametrize("content,problem", [('{"openai": "sk-abc', "not valid JSON"),
                                             ('["sk-abc"]', "expected a JSON object")])
def test_a_broken_keys_file_is_an_error_naming_it(cli, he_home, content, problem):
    path = _write_keys(he_home, content)
    proc = cli("keys", "list")
    assert proc.returncode == 2, proc.stdout
    assert str(path) in proc.stderr and problem in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_step_whose_key_file_is_broken_fails_naming_the_file_not_no_key(fake_provider_env, monkeypatch,
                                                                          he_home):
    monkeypatch.delenv("OPENAI_API_KEY")
    path = _write_keys(he_home, '{"openai": "sk-abc')
    err = _fails("openai_chat", {"model": "gpt-4o", "prompt": "x"})
    assert err.code == "bad_config" and str(path) in err.message and "not valid JSON" in err.message
    assert fake_provider_env.requests == []


def test_keys_set_refuses_to_overwrite_a_broken_keys_file(cli, he_home):
    path = _write_keys(he_home, '{"openai": "sk-old-key-kept", ')
    proc = cli("keys", "set", "deepseek", input="sk-new\n")
    assert proc.returncode == 2 and str(path) in proc.stderr
    assert path.read_text(encoding="utf-8") == '{"openai": "sk-old-key-kept", '


def test_a_keys_file_readable_by_others_is_warned_about(cli, he_home):
    path = _write_keys(he_home, {"openai": "sk-stored-0123456789"}, mode=0o644)
    proc = cli("keys", "list", check=True)
    assert "warning" in proc.stderr and str(path) in proc.stderr and "chmod 600" in proc.stderr
    assert "sk-stored-0123456789" not in proc.stdout + proc.stderr


def test_host_config_reports_a_broken_keys_file_and_still_shows_the_rest(he_home):
    path = _write_keys(he_home, "[]")
    with HostClient(he_home, extra_env={"OPENAI_API_KEY": "sk-env-key-0123456789"}) as h:
        conf = h.call("config")
    assert any(str(path) in e for e in conf["errors"]), conf["errors"]
    assert conf["providers"]["openai"]["has_key"] is True
    assert sorted(conf["providers"]) == ["deepseek", "gemini", "local", "openai"]
