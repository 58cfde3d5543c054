"""The options page's messages against the real host subprocess: keys.set/status/remove,
settings.update (config.toml rewritten, checked, comments kept), spend.daily."""

from __future__ import annotations

import asyncio
import json
import tomllib
from datetime import datetime

from host_client import HostClient

from hybrid_engine.templates import validate

SECRET = "sk-options-page-secret-0123456789"
CONFIG_WITH_COMMENTS = """\
# my settings, written by hand
[executor]
concurrency = 4  # a small machine

[budgets]
# what I can afford
daily_usd = 1.5
unknown_price = "allow"

[prices."my-model"]
input_per_mtok = 1.0
output_per_mtok = 2.0
"""


def everything_said(host: HostClient) -> str:
    """Every reply frame's text and the host's log: where a key must never show up."""
    logs = "".join(p.read_text(errors="replace") for p in (host.home / "logs").glob("*.log*"))
    return json.dumps(list(host.replies.values())) + host.stderr() + logs


def test_keys_set_stores_the_key_where_the_cli_finds_it_and_no_reply_carries_it(he_home, cli):
    with HostClient(he_home) as h:
        result = h.call("keys.set", provider="openai", key=f"  {SECRET}\n")
        assert result["providers"]["openai"] == {**result["providers"]["openai"], "key": True, "source": "keys_file"}
        status = h.call("keys.status")
        assert status["providers"]["openai"]["key"] is True and status["providers"]["deepseek"]["key"] is False
        said = everything_said(h)
    assert SECRET not in said
    assert json.loads((he_home / "keys.json").read_text()) == {"openai": SECRET}
    assert (he_home / "keys.json").stat().st_mode & 0o077 == 0  # readable by the user alone
    listed = {p["provider"]: p for p in cli.json("keys", "list", "--json")["providers"]}
    assert listed["openai"]["configured"] is True and listed["openai"]["source"] == "keys"


def test_keys_status_reports_a_key_from_the_environment_without_it(he_home):
    with HostClient(he_home, extra_env={"DEEPSEEK_API_KEY": SECRET}) as h:
        status = h.call("keys.status")
        said = everything_said(h)
    assert status["providers"]["deepseek"]["key"] is True and status["providers"]["deepseek"]["source"] == "env"
    assert SECRET not in said


def test_keys_remove_forgets_the_stored_key(he_home):
    with HostClient(he_home) as h:
        h.call("keys.set", provider="gemini", key=SECRET)
        result = h.call("keys.remove", provider="gemini")
    assert result["removed"] is True and result["providers"]["gemini"]["key"] is False
    assert json.loads((he_home / "keys.json").read_text()) == {}


def test_keys_set_refuses_an_unknown_provider_and_a_key_with_spaces_without_echoing_it(he_home):
    with HostClient(he_home) as h:
        bad_provider = h.error("keys.set", provider="acme", key=SECRET)
        spaced = h.error("keys.set", provider="openai", key="sk-half one")
        empty = h.error("keys.set", provider="openai", key="   ")
        assert h.call("hello")["version"]  # still serving
    assert bad_provider["code"] == "bad_request" and "openai" in bad_provider["message"]
    assert spaced["field"] == "key" and "sk-half" not in spaced["message"]
    assert empty["field"] == "key"
    assert SECRET not in json.dumps([bad_provider, spaced, empty])
    assert not (he_home / "keys.json").exists()


def test_keys_set_refuses_a_key_with_a_zero_width_space_or_other_non_ascii_character(he_home):
    with HostClient(he_home) as h:
        hidden = h.error("keys.set", provider="openai", key="sk-abc\u200bdef")  # pasted from a web page
        accented = h.error("keys.set", provider="openai", key="sk-abcdéf")
        assert h.call("hello")["version"]
    assert hidden["field"] == accented["field"] == "key"
    assert "U+200B" in hidden["message"] and "sk-abc" not in hidden["message"] + accented["message"]
    assert not (he_home / "keys.json").exists()


def test_settings_update_changes_one_line_and_keeps_comments_and_other_keys(he_home):
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").write_text(CONFIG_WITH_COMMENTS, encoding="utf-8")
    with HostClient(he_home) as h:
        h.call("settings.update", section="budgets", key="daily_usd", value=3)
        h.call("settings.update", section="budgets", key="monthly_usd", value=40.5)
        h.call("settings.update", section="providers.openai", key="base_url", value="http://127.0.0.1:9/v1")
        h.call("settings.update", section="notes", key="folder", value="~/Obsidian/Vault")
        summary = h.call("config")
    text = (he_home / "config.toml").read_text()
    for line in ("# my settings, written by hand", "concurrency = 4  # a small machine", "# what I can afford",
                 'unknown_price = "allow"', "input_per_mtok = 1.0"):
        assert line in text
    conf = tomllib.loads(text)
    assert conf["budgets"] == {"daily_usd": 3, "monthly_usd": 40.5, "unknown_price": "allow"}
    assert conf["providers"]["openai"]["base_url"] == "http://127.0.0.1:9/v1"
    assert conf["notes"]["folder"] == "~/Obsidian/Vault"
    assert summary["budgets"]["daily_usd"] == 3 and summary["providers"]["openai"]["base_url"] == "http://127.0.0.1:9/v1"


def test_settings_update_writes_through_a_config_toml_that_is_a_link_and_keeps_the_link(he_home, tmp_path):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "hybrid.toml").write_text("# kept in my dotfiles\n[budgets]\ndaily_usd = 1\n", encoding="utf-8")
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").symlink_to(dotfiles / "hybrid.toml")
    with HostClient(he_home) as h:
        h.call("settings.update", section="budgets", key="daily_usd", value=3)
    assert (he_home / "config.toml").is_symlink()
    assert (dotfiles / "hybrid.toml").read_text() == "# kept in my dotfiles\n[budgets]\ndaily_usd = 3\n"


def test_settings_update_refuses_a_negative_budget_naming_key_and_range_and_changes_nothing(he_home):
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").write_text(CONFIG_WITH_COMMENTS, encoding="utf-8")
    with HostClient(he_home) as h:
        err = h.error("settings.update", section="budgets", key="daily_usd", value=-1)
        words = h.error("settings.update", section="budgets", key="monthly_usd", value="lots")
        url = h.error("settings.update", section="providers.local", key="base_url", value="localhost:11434")
    assert err["code"] == "bad_request"
    assert "[budgets] daily_usd" in err["message"] and ">= 0" in err["message"] and "-1" in err["message"]
    assert "[budgets] monthly_usd" in words["message"] and "'lots'" in words["message"]
    assert "http:// or https://" in url["message"]
    assert (he_home / "config.toml").read_text() == CONFIG_WITH_COMMENTS


def test_settings_update_refuses_settings_the_page_may_not_change(he_home):
    with HostClient(he_home) as h:
        err = h.error("settings.update", section="providers.openai", key="api_key", value=SECRET)
    assert err["field"] == "key" and "[budgets] daily_usd" in err["message"]
    assert SECRET not in json.dumps(err)
    assert not (he_home / "config.toml").exists()


def test_an_emptied_setting_is_removed_and_its_default_applies(he_home):
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "config.toml").write_text(CONFIG_WITH_COMMENTS, encoding="utf-8")
    with HostClient(he_home) as h:
        h.call("settings.update", section="budgets", key="daily_usd", value=None)
        h.call("settings.update", section="budgets", key="monthly_usd", value="")
        budgets = h.call("config")["budgets"]
    assert budgets["daily_usd"] is None and budgets["monthly_usd"] is None
    assert "daily_usd" not in (he_home / "config.toml").read_text()


def test_spend_daily_splits_each_day_by_provider_and_workflow(he_home, service, fake_provider_env):
    fake_provider_env.set_default("openai", usage={"prompt_tokens": 1000, "completion_tokens": 100})
    fake_provider_env.set_default("deepseek", usage={"prompt_tokens": 2000, "completion_tokens": 100})

    def chat(action, model):
        return {"id": "a", "action": action, "params": {"model": model, "prompt": "hi"}}
    service.create_run(validate({"name": "digest", "steps": [chat("openai_chat", "gpt-4o-mini")]}, "d.yaml"))
    service.create_run(validate({"name": "digest", "steps": [chat("deepseek_chat", "deepseek-chat")]}, "d.yaml"))
    service.create_run(validate({"name": "other", "steps": [chat("openai_chat", "gpt-4o-mini")]}, "o.yaml"))
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))
    with HostClient(he_home) as h:
        days = h.call("spend.daily", days=30)["days"]
        bad = h.error("spend.daily", days=0)
    assert len(days) == 30 and days[-1]["date"] == datetime.now().astimezone().date().isoformat()
    assert all(d["total"] == 0 and d["by_provider"] == {} for d in days[:-1])
    today = days[-1]
    assert set(today["by_provider"]) == {"openai", "deepseek"} and set(today["by_workflow"]) == {"digest", "other"}
    assert today["total"] > 0
    assert abs(sum(today["by_provider"].values()) - today["total"]) < 1e-9
    assert abs(sum(today["by_workflow"].values()) - today["total"]) < 1e-9
    assert abs(today["total"] - service.spend()["today"]) < 1e-9
    assert bad["field"] == "days"
