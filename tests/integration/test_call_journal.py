"""Every provider call that may have been billed stays on the record.

A call is journaled before its request goes out; a call whose answer never came back
(its worker killed, its run cancelled, its host gone) is shown as unconfirmed with the
most it may have cost, and budgets count it at that bound. Execution belongs to the
background worker, so a host killed or closed by the browser neither cuts a call off nor
sends it twice. The fake provider holds its answers back (hold/release) so each test can
act while a request is provably in flight.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time

import pytest

from hybrid_engine.templates import validate
from host_client import HostClient
from polling import wait_for
from processes import dead_pid, kill


def tpl(steps, name="t", **extra):
    return validate({"name": name, "steps": steps, **extra}, "test.yaml")


MODEL_STEP = {"id": "m", "action": "openai_chat",
              "params": {"model": "gpt-4o-mini", "prompt": "Summarise the tides in one line.", "max_tokens": 200}}


def step(service, run_id, step_id="m"):
    return [s for s in service.run_document(run_id)["steps"] if s["id"] == step_id][0]


def calls(service, run_id):
    return service.store.calls(run_id)


@contextlib.contextmanager
def call_in_flight(fake, cli):
    """A worker whose model call has reached the provider and is held there; released on exit."""
    fake.hold()
    proc = cli.popen("worker", "--until-idle", "--quiet")
    try:
        fake.wait_requests(1)
        yield proc
    finally:
        fake.release()
        if proc.poll() is None:
            kill(proc)


def killed_mid_call(service, fake, cli) -> str:
    """A run whose one model call was sent by a worker that was then killed."""
    run_id = service.create_run(tpl([MODEL_STEP]))
    with call_in_flight(fake, cli) as proc:
        kill(proc)
    return run_id


def test_a_model_call_is_journaled_before_its_request_is_sent(fake_provider_env, service, cli):
    fake = fake_provider_env
    run_id = service.create_run(tpl([MODEL_STEP]))
    with call_in_flight(fake, cli) as proc:
        [call] = calls(service, run_id)
        assert call["state"] == "sent" and call["step_id"] == "m" and call["attempt"] == 1
        assert call["model"] == "gpt-4o-mini" and call["prompt_tokens"] > 0 and call["max_output_tokens"] == 200
        assert call["cost_max"] > 0
        fake.release()
        assert proc.wait(60) == 0
    [call] = calls(service, run_id)
    m = step(service, run_id)
    assert call["state"] == "answered" and call["cost"] == m["execution_metrics"]["cost"] > 0
    assert m["execution_metrics"]["cost"] <= call["cost_max"]
    assert m["execution_metrics"]["unconfirmed_calls"] == 0


def test_a_call_whose_worker_died_is_shown_as_unconfirmed_with_its_bound(fake_provider_env, service, cli):
    fake = fake_provider_env
    run_id = killed_mid_call(service, fake, cli)
    cli("recover", check=True)
    [call] = calls(service, run_id)
    assert call["state"] == "unconfirmed" and "gone" in call["reason"]
    doc = service.run_document(run_id)
    m = step(service, run_id)
    assert m["execution_metrics"]["unconfirmed_calls"] == 1
    assert m["execution_metrics"]["unconfirmed_cost_max"] == call["cost_max"] > 0
    assert doc["metrics"]["unconfirmed_calls"] == 1 and doc["metrics"]["unconfirmed_cost_max"] == call["cost_max"]
    assert m["execution_metrics"]["crash_recoveries"] == 1  # it had sent its call: a strike
    shown = cli("show", run_id, check=True).stdout
    assert "1 unconfirmed provider call(s): may have been billed up to $" in shown
    spend = cli.json("spend", "--json")
    assert spend["today_unconfirmed"]["calls"] == 1
    assert spend["today_unconfirmed"]["cost_max"] == pytest.approx(call["cost_max"])
    assert "unconfirmed" in cli("spend", check=True).stdout


def _orphan_claim(service, run_id, step_id="m"):
    """What a worker killed between claiming and sending leaves: RUNNING, owner dead, no call."""
    with service.store.transaction():
        service.store.conn.execute(
            "UPDATE steps SET status='RUNNING', owner='gone', owner_pid=?, owner_host=?, epoch=epoch+1,"
            " lease_until=?, attempts=attempts+1 WHERE run_id=? AND step_id=?",
            (dead_pid(), socket.gethostname(), time.time() + 3600, run_id, step_id))


def test_a_worker_killed_before_sending_its_call_costs_the_step_no_strike(he_home, service, cli):
    run_id = service.create_run(tpl([MODEL_STEP]))
    for _ in range(4):  # more kills than the dead-letter limit
        _orphan_claim(service, run_id)
        report = cli.json("recover", "--json")
        assert report["requeued"] == [{"run_id": run_id, "step_id": "m"}] and report["dead_lettered"] == []
    m = step(service, run_id)
    assert m["status"] == "QUEUED" and m["execution_metrics"]["crash_recoveries"] == 0
    assert m["execution_metrics"]["attempts"] == 0
    assert "without a strike" in m["logs"][-1]
    assert calls(service, run_id) == []


def test_cancelling_a_run_during_its_call_keeps_the_call_on_the_record(fake_provider_env, service, cli):
    fake = fake_provider_env
    run_id = service.create_run(tpl([MODEL_STEP]))
    with call_in_flight(fake, cli) as proc:
        cli("cancel", run_id, check=True)
        fake.release()
        assert proc.wait(60) == 0
    m = step(service, run_id)
    assert m["status"] == "CANCELLED"
    [call] = calls(service, run_id)
    # Either the answer came back after the cancel (then its real cost is kept) or it did not.
    assert call["state"] in ("unconfirmed", "discarded")
    assert m["execution_metrics"]["unconfirmed_calls"] == 1
    assert m["execution_metrics"]["unconfirmed_cost_max"] > 0
    assert service.run_document(run_id)["metrics"]["unconfirmed_cost_max"] > 0


def test_a_run_budget_counts_an_unconfirmed_call_at_its_upper_bound(fake_provider_env, service, cli):
    fake = fake_provider_env
    run_id = killed_mid_call(service, fake, cli)
    [call] = calls(service, run_id)
    # Room for one call at its bound, not two: the lost call already holds most of it.
    service.store.conn.execute("UPDATE runs SET budget_usd = ? WHERE id = ?", (call["cost_max"] * 1.5, run_id))
    cli("worker", "--until-idle", "--quiet", check=True)
    m = step(service, run_id)
    assert m["status"] == "FAILED" and m["error_code"] == "budget_exceeded"
    assert len(fake.requests) == 1


@pytest.mark.parametrize("how", ["sigkill", "stdin-closed"])
def test_the_host_going_away_mid_call_neither_cuts_nor_repeats_it(fake_provider_env, he_home, service, how):
    fake = fake_provider_env
    (he_home / "templates").mkdir(parents=True, exist_ok=True)
    (he_home / "templates" / "ask.json").write_text(json.dumps(
        {"name": "ask", "steps": [{"id": "page", "action": "capture"},
                                  {**MODEL_STEP, "dependencies": ["page"]}]}))
    fake.hold()
    h = HostClient(he_home, extra_env={**fake.env(), "HYBRID_ENGINE_WORKER_LINGER_S": "0"})
    try:
        run_id = h.call("capture", template="ask", page={"content": "tides"})["run_id"]
        fake.wait_requests(1)
        if how == "sigkill":
            h.proc.send_signal(signal.SIGKILL)
        else:
            h.close_stdin()
        h.proc.wait(10)
    finally:
        fake.release()
        h.close()
    wait_for(lambda: service.summary(run_id)["status"] == "COMPLETED", timeout=60, what="the run to complete")
    assert len(fake.requests) == 1
    [call] = calls(service, run_id)
    assert call["state"] == "answered"
    assert step(service, run_id)["execution_metrics"]["crash_recoveries"] == 0
    from hybrid_engine import worker

    wait_for(lambda: worker.lock().holder() is None, what="the idle worker to leave")


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_after_the_call_was_sent_keeps_the_call_unconfirmed(fake_provider_env, service, cli, status):
    """A proxy's 502/504 says the answer was lost on the way back, not that the provider
    refused: the provider may have finished, and billed, the request."""
    fake_provider_env.script("openai", status=status)
    run_id = service.create_run(tpl([{**MODEL_STEP, "params": {**MODEL_STEP["params"], "retries": 0}}]))
    cli("worker", "--until-idle", "--quiet", check=True)
    m = step(service, run_id)
    [call] = calls(service, run_id)
    assert m["status"] == "FAILED" and call["state"] == "unconfirmed"
    assert m["execution_metrics"]["unconfirmed_calls"] == 1
    assert service.run_document(run_id)["metrics"]["unconfirmed_cost_max"] == pytest.approx(call["cost_max"])


def test_a_background_worker_whose_data_folder_is_deleted_stops_sending_calls(fake_provider_env, he_home, service,
                                                                              cli):
    import shutil

    fake = fake_provider_env
    chain = [{**MODEL_STEP, "id": f"m{i}", "dependencies": [f"m{i - 1}"] if i else []} for i in range(3)]
    service.create_run(tpl(chain))
    service.store.close()
    fake.hold()
    proc = cli.popen("worker", "--background", "--quiet", "--linger", "0")
    try:
        fake.wait_requests(1)
        shutil.rmtree(he_home)
        assert proc.wait(60) == 0
        # it stopped without waiting for the answer held back
        fake.release()
        assert len(fake.requests) == 1
    finally:
        fake.release()
        if proc.poll() is None:
            kill(proc)


def test_deleting_a_run_keeps_what_it_spent_in_spend_and_the_daily_budget(fake_provider_env, service, cli):
    done = service.create_run(tpl([MODEL_STEP], name="done"))
    cli("worker", "--until-idle", "--quiet", check=True)
    cost = step(service, done)["execution_metrics"]["cost"]
    fake_provider_env.hold()
    lost = service.create_run(tpl([MODEL_STEP], name="lost"))
    proc = cli.popen("worker", "--until-idle", "--quiet")
    try:
        fake_provider_env.wait_requests(2)
        kill(proc)
    finally:
        fake_provider_env.release()
    cli("recover", check=True)
    [call] = calls(service, lost)
    before = cli.json("spend", "--json")
    cli("delete", done, check=True)
    cli("delete", lost, check=True)
    after = cli.json("spend", "--json")
    assert cost > 0 and after["today"] == pytest.approx(before["today"]) == pytest.approx(cost)
    assert after["today_unconfirmed"] == before["today_unconfirmed"]
    assert after["today_unconfirmed"]["cost_max"] == pytest.approx(call["cost_max"])
