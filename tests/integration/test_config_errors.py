"""A bad setting is one clear error naming the file, the key and the allowed range.

`run` and `worker` exit 2 before anything starts (a concurrency of 0 would hang them,
"eight" would print a traceback, a nan budget or a negative price would be taken); the host keeps
serving, answers bad_config where the popup asks, and starts executing once the file is
fixed; `run --budget` refuses nan and negative amounts.
"""

from __future__ import annotations

import pytest

from host_client import HostClient
from polling import wait_for

BAD_SETTINGS = {  # config.toml -> (key, allowed range) the message must name
    "concurrency_zero": ("[executor]\nconcurrency = 0\n", "[executor] concurrency", ">= 1"),
    "concurrency_text": ('[executor]\nconcurrency = "eight"\n', "[executor] concurrency", ">= 1"),
    "daily_budget_nan": ("[budgets]\ndaily_usd = nan\n", "[budgets] daily_usd", ">= 0"),
    "negative_price": ('[prices."gpt-4o"]\ninput_per_mtok = -2.5\noutput_per_mtok = 10\n',
                       '[prices."gpt-4o"] input_per_mtok', ">= 0"),
    "provider_timeout_zero": ("[providers.openai]\ntimeout_s = 0\n", "[providers.openai] timeout_s", "> 0"),
}

NO_MODEL = {"name": "plain", "steps": [{"id": "a", "action": "template", "params": {"template": "hello"}}]}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_run_wait_exits_2_naming_file_key_and_range(cli, write_config, write_template, case):
    text, key, allowed = BAD_SETTINGS[case]
    path = write_config(text)
    proc = cli("run", write_template(NO_MODEL), "--wait", timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert str(path) in proc.stderr and key in proc.stderr and allowed in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cli.json("runs", "--json") == {"runs": []}  # no run left behind that nothing would execute


def test_worker_exits_2_on_a_concurrency_of_zero_instead_of_hanging(cli, write_config):
    path = write_config("[executor]\nconcurrency = 0\n")
    proc = cli("worker", "--until-idle", timeout=60)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "[executor] concurrency" in proc.stderr and ">= 1" in proc.stderr


@pytest.mark.parametrize("amount", ["nan", "-1", "inf"])
def test_run_budget_that_could_never_stop_anything_exits_2(cli, write_template, amount):
    proc = cli("run", write_template(NO_MODEL), f"--budget={amount}")
    assert proc.returncode == 2 and "--budget" in proc.stderr and ">= 0" in proc.stderr


def test_host_answers_bad_config_and_keeps_serving(he_home, write_config):
    path = write_config('[executor]\nconcurrency = "eight"\n')
    with HostClient(he_home) as h:
        err = h.error("spend")
        assert err["code"] == "bad_config"
        assert str(path) in err["message"] and "[executor] concurrency" in err["message"]
        status = wait_for(lambda: (s := h.call("host.status"))["config_error"] and s, what="the engine's verdict")
        assert "[executor] concurrency" in status["config_error"]
        assert h.call("runs.list")["runs"] == []
        assert h.stdout_problems == []


def test_host_executes_queued_work_once_the_bad_setting_is_fixed(he_home, write_config):
    write_config("[executor]\nconcurrency = 0\n")
    (he_home / "templates").mkdir(parents=True, exist_ok=True)
    (he_home / "templates" / "capture-echo.yaml").write_text(
        "name: capture-echo\nsteps:\n  - id: page\n    action: capture\n"
        "  - id: echo\n    action: template\n    dependencies: [page]\n"
        "    params: {template: \"got {{ steps.page.outputs.content }}\"}\n", encoding="utf-8")
    with HostClient(he_home) as h:
        run_id = h.call("capture", template="capture-echo", page={"content": "hello"})["run_id"]
        wait_for(lambda: h.call("host.status")["config_error"], what="the engine to find the bad setting")
        assert h.call("runs.get", run_id=run_id)["status"] != "COMPLETED"
        write_config("[executor]\nconcurrency = 2\n")
        wait_for(lambda: h.call("runs.get", run_id=run_id)["status"] == "COMPLETED", what="the run to complete")
        assert h.call("host.status")["config_error"] is None


# ---- worker.lock that is not a file -------------------------------------------------------------

def test_background_worker_never_writes_through_a_worker_lock_that_is_a_symbolic_link(he_home, cli, tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n", encoding="utf-8")
    he_home.mkdir(parents=True, exist_ok=True)
    (he_home / "worker.lock").symlink_to(precious)
    proc = cli("worker", "--background", "--linger", "0", timeout=60)
    assert precious.read_text(encoding="utf-8") == "keep me\n"
    assert proc.returncode == 2 and "worker.lock" in proc.stderr and "Traceback" not in proc.stderr


def test_host_status_says_why_no_worker_starts_when_worker_lock_is_a_folder(he_home):
    (he_home / "worker.lock").mkdir(parents=True)
    with HostClient(he_home) as h:
        status = wait_for(lambda: (s := h.call("host.status"))["config_error"] and s, what="the engine's verdict")
        assert "worker.lock" in status["config_error"] and "remove it" in status["config_error"]
        assert status["worker"]["running"] is False
        assert h.stdout_problems == []


# ---- a bad setting's message never repeats a secret ----------------------------------------------

@pytest.mark.parametrize("url", ["htps://me:hunter2-secret-pw@proxy.example.com/v1?api-key=QUERYSECRET123",
                                 "me:hunter2-secret-pw@proxy.example.com/v1"])
def test_a_bad_base_url_is_reported_without_its_credentials(cli, write_config, url):
    write_config(f'[providers.openai]\nbase_url = "{url}"\n')
    proc = cli("worker", "--until-idle", timeout=60)
    assert proc.returncode == 2 and "[providers.openai] base_url" in proc.stderr
    assert "proxy.example.com" in proc.stderr
    assert "hunter2-secret-pw" not in proc.stderr and "QUERYSECRET123" not in proc.stderr


def test_an_api_key_of_the_wrong_type_is_not_repeated_in_the_error(cli, write_config):
    write_config("[providers.openai]\napi_key = 987654321012\n")
    proc = cli("worker", "--until-idle", timeout=60)
    assert proc.returncode == 2 and "[providers.openai] api_key" in proc.stderr
    assert "987654321012" not in proc.stderr


def test_host_says_why_no_worker_starts_when_the_linger_variable_is_bad(he_home):
    with HostClient(he_home, extra_env={"HYBRID_ENGINE_WORKER_LINGER_S": "a minute"}) as h:
        status = wait_for(lambda: (s := h.call("host.status"))["config_error"] and s, what="the engine's verdict")
        assert "HYBRID_ENGINE_WORKER_LINGER_S" in status["config_error"] and "86400" in status["config_error"]
