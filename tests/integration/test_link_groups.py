"""A chain of pure inline steps is computed ahead and settles up to LINKS_PER_COMMIT links in
one commit (executor._settle_here, store/linkgroup.py): every step still runs once,
reads what the step before it made, and a crash inside a group loses only that group's results,
which recovery computes again; the write lock is held for the SQL alone."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import textwrap

from hybrid_engine import clock, executor
from hybrid_engine.executor import LINKS_PER_COMMIT, Executor
from hybrid_engine.recovery import MAX_CRASH_RECOVERIES
from hybrid_engine.service import Service
from hybrid_engine.store import ClaimRequest, Outcome
from hybrid_engine.store.hotpath import HotPath
from hybrid_engine.store.linkgroup import LinkGroup
from hybrid_engine.templates import validate


def tpl(steps, name="t"):
    return validate({"name": name, "steps": steps}, "t.yaml")


def counting_chain(n: int) -> list[dict]:
    """Each step's text is the one before it with one more "x": a wrong read shows in the count."""
    return [{"id": f"s{i}", "action": "template", "dependencies": [f"s{i - 1}"] if i else [],
             "params": {"template": f"{{{{ steps.s{i - 1}.outputs.text }}}}x" if i else "x"}} for i in range(n)]


def drain(service):
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))


def texts(service, run_id) -> dict[str, str]:
    doc = service.run_document(run_id, cut=None)
    return {s["id"]: (s["outputs"] or {}).get("text") for s in doc["steps"]}


def steps_of(service, run_id) -> dict[str, dict]:
    return {s["id"]: s for s in service.run_document(run_id, cut=None)["steps"]}


def kill_until_done(cli, steps: list[dict], poison: str, *extra: str) -> tuple[str, int]:
    """_KILLED_AT run again and again, as a user restarting the host would, until a run ends
    without dying: (the run, how many times its process died)."""
    run_id, crashes = "-", 0
    for _ in range(3 * MAX_CRASH_RECOVERIES + 2 * LINKS_PER_COMMIT):  # a guard against a loop, not a bound
        proc = subprocess.run([sys.executable, "-c", _KILLED_AT, json.dumps(steps), poison, run_id, *extra],
                              env=cli.env, capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip(), proc.stderr
        run_id = proc.stdout.strip()
        if proc.returncode == 0:  # the recovery it began with dead-lettered the poison step
            break
        assert proc.returncode == 9, proc.stderr
        crashes += 1
    return run_id, crashes


def chain_failing_once_at(n: int, at: int) -> list[dict]:
    """A chain whose step `at` fails once: retried, the run completes with the same texts."""
    steps = counting_chain(n)
    steps[at] = {"id": f"s{at}", "action": "fail", "dependencies": [f"s{at - 1}"], "params": {"times": 1}}
    steps[at + 1]["params"]["template"] = f"{{{{ steps.s{at - 1}.outputs.text }}}}xx"
    return steps


# A process that makes (first time only) a chain, recovers what a dead process left, and runs
# the chain until the step named in argv[2] is computed, where it dies (os._exit: no cleanup),
# as a process does that a step's computation kills (out of memory, a crash in a C extension).
# With argv[4] == "other", each restart also makes a one-step run of its own: another run's
# step queued beside the chain's, as a batch's next run is.
_KILLED_AT = textwrap.dedent("""
    import asyncio, json, os, sys
    from hybrid_engine import executor
    from hybrid_engine.executor import Executor
    from hybrid_engine.service import Service
    from hybrid_engine.templates import validate

    svc = Service()
    run_id = sys.argv[3]
    if run_id == "-":
        run_id = svc.create_run(validate({"name": "t", "steps": json.loads(sys.argv[1])}, "t.yaml"))
    elif sys.argv[4:] == ["other"]:
        svc.create_run(validate({"name": "other", "steps": [{"id": "n", "action": "noop", "params": {"value": 1}}]},
                                "o.yaml"))
    print(run_id, flush=True)
    svc.recover()
    computed = Executor._inline_outcome

    def killed_at(self, c, action, started):
        if c.step_id == sys.argv[2]:
            os._exit(9)
        return computed(self, c, action, started)

    Executor._inline_outcome = killed_at
    executor.QUEUE_PROBE_EVERY_S = float("inf")
    asyncio.run(svc.make_executor().run(until_idle=True))
""")


def test_a_chain_of_inline_steps_commits_once_per_group_and_each_reads_the_step_before_it(service, monkeypatch):
    # The executor's looks at the queue (every 10 ms of a chain) settle the general way: none here.
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    run_id = service.create_run(tpl(counting_chain(100)))
    before = service.store.commits
    drain(service)
    assert service.summary(run_id)["status"] == "COMPLETED"
    assert texts(service, run_id) == {f"s{i}": "x" * (i + 1) for i in range(100)}
    # The first claim; 99 links (the last step has no dependent) in groups; the last step's settle.
    assert service.store.commits - before == 1 + -(-99 // LINKS_PER_COMMIT) + 1


def test_a_step_that_fails_inside_a_group_ends_it_and_the_run_fails_there(service):
    steps = counting_chain(50)
    steps[40] = {"id": "s40", "action": "fail", "dependencies": ["s39"], "params": {"message": "stop here"}}
    steps[41]["params"]["template"] = "{{ steps.s39.outputs.text }}x"
    run_id = service.create_run(tpl(steps))
    drain(service)
    doc = service.run_document(run_id, cut=None)
    status = {s["id"]: s["status"] for s in doc["steps"]}
    assert doc["status"] == "FAILED" and "stop here" in doc["error"]
    assert [status[f"s{i}"] for i in range(40)] == ["COMPLETED"] * 40
    assert status["s40"] == "FAILED" and {status[f"s{i}"] for i in range(41, 50)} == {"SKIPPED"}
    assert texts(service, run_id)["s39"] == "x" * 40


def test_a_process_killed_inside_a_group_leaves_none_of_it_written_and_recovery_computes_it_again(service, cli):
    """The executor process dies (os._exit, no cleanup) while it computes the 13th step of its
    second group ahead: the first group is on disk, nothing of the second, and the step the
    commit before it claimed (the group's first) is left RUNNING under the dead process."""
    proc = subprocess.run([sys.executable, "-c", _KILLED_AT, json.dumps(counting_chain(100)),
                           f"s{LINKS_PER_COMMIT + 12}", "-"], env=cli.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    run_id = proc.stdout.strip()
    rows = {s["id"]: s for s in service.run_document(run_id, cut=None)["steps"]}
    first_of_lost_group = f"s{LINKS_PER_COMMIT}"
    assert [i for i in range(100) if rows[f"s{i}"]["status"] == "COMPLETED"] == list(range(LINKS_PER_COMMIT))
    assert rows[first_of_lost_group]["status"] == "RUNNING"
    assert {rows[f"s{i}"]["status"] for i in range(LINKS_PER_COMMIT + 1, 100)} == {"PENDING"}

    service.recover()
    drain(service)
    assert service.summary(run_id)["status"] == "COMPLETED"
    assert texts(service, run_id) == {f"s{i}": "x" * (i + 1) for i in range(100)}
    attempts = {s["id"]: s["execution_metrics"]["attempts"] for s in service.run_document(run_id, cut=None)["steps"]}
    assert attempts[first_of_lost_group] == 2
    assert {n for sid, n in attempts.items() if sid != first_of_lost_group} == {1}


def test_a_step_that_kills_its_process_is_dead_lettered_after_its_own_crashes(service, cli):
    """Step s40 kills the process each time it is computed. A crash strikes the step RUNNING
    under the dead process, and the third strike dead-letters it. s40 is computed ahead, while
    the step the run has RUNNING is the first of its group, which takes the first strike; from
    then on the run goes a commit per step, so the strikes land on s40. (Found by a cold attack:
    without that, each restart's group began one step further on, and the blame walked up to s40
    one innocent step at a time: up to LINKS_PER_COMMIT + 2 crashes.)"""
    poison = "s40"
    assert LINKS_PER_COMMIT < 40 < 2 * LINKS_PER_COMMIT  # s40 is computed inside a group
    run_id, crashes = kill_until_done(cli, counting_chain(60), poison)
    service.recover()
    drain(service)

    rows = {s["id"]: s for s in service.run_document(run_id, cut=None)["steps"]}
    struck = {sid: s["execution_metrics"]["crash_recoveries"] for sid, s in rows.items()
              if s["execution_metrics"]["crash_recoveries"]}
    assert (rows[poison]["status"], rows[poison].get("error_code")) == ("FAILED", "dead_lettered"), struck
    assert crashes <= MAX_CRASH_RECOVERIES + 1
    assert len(set(struck) - {poison}) <= 1, struck
    assert [i for i in range(60) if rows[f"s{i}"]["status"] == "COMPLETED"] == list(range(40))


def test_a_step_that_reads_a_page_is_not_rendered_while_the_write_lock_is_held(service, monkeypatch):
    """Steps are computed before their group takes the write lock. A chain of templates that
    each read one field of a large output (a 5 MB page, kept in the `outputs` table) loads and
    parses it at every step: tens of ms that another writer (a capture, a cancel, another
    worker) would otherwise wait out (found by a cold attack on a first design, which computed
    inside the transaction: writes waited up to 0.8 s). Checked without timing: when such a
    step is rendered, another connection takes the write lock without waiting."""
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    page = {"title": "T", "content": "lorem ipsum " * 400_000}
    steps = [{"id": "page", "action": "noop", "params": {"value": page}}]
    steps += [{"id": f"s{i}", "action": "template", "dependencies": ["page" if i == 0 else f"s{i - 1}"],
               "params": {"template": f"{{{{ steps.page.outputs.value.title }}}}{i}"}}
              for i in range(2 * LINKS_PER_COMMIT)]
    run_id = service.create_run(tpl(steps))
    probe = sqlite3.connect(service.store.path, timeout=0, isolation_level=None)
    locked = []
    computed = Executor._inline_outcome

    def probing(self, c, action, started):
        if c.step_id != "page":
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
            except sqlite3.OperationalError:  # database is locked
                locked.append(c.step_id)
        return computed(self, c, action, started)

    monkeypatch.setattr(Executor, "_inline_outcome", probing)
    try:
        drain(service)
    finally:
        probe.close()
    assert service.summary(run_id)["status"] == "COMPLETED"
    assert locked == [], f"{len(locked)} of {2 * LINKS_PER_COMMIT} steps reading the page rendered under the lock"


def test_crash_strikes_stay_on_the_poison_step_when_another_runs_step_settles_beside_it(service, cli):
    """As above, but each restart finds another run's step queued too (a batch's next run): it
    is claimed with the struck step and settles in the same call, ahead of it. The run is put
    on a commit per step when its struck step is claimed, whatever settles with it. (Found by
    a cold attack: marked only when the struck step settled first, the blame walked to s40.)"""
    poison = "s40"
    run_id, crashes = kill_until_done(cli, counting_chain(60), poison, "other")
    rows = steps_of(service, run_id)
    struck = {sid: s["execution_metrics"]["crash_recoveries"] for sid, s in rows.items()
              if s["execution_metrics"]["crash_recoveries"]}
    assert (rows[poison]["status"], rows[poison].get("error_code")) == ("FAILED", "dead_lettered"), struck
    assert len(set(struck) - {poison}) <= 1, struck
    assert crashes <= MAX_CRASH_RECOVERIES + 1, struck


def test_a_join_is_not_computed_ahead_of_its_other_dependency(service, monkeypatch):
    """c joins b (the end of an inline chain) and d (a step another worker runs). Were c computed
    ahead while d ran elsewhere, its render would find no d; d's commit could then land before
    the group's, and the group's claim of c (which checks that c waits on one step at most)
    would settle that failure as c's. A join is claimed by the group and computed after, as
    any claimed step. (Found by a cold attack.)"""
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    monkeypatch.setattr(executor, "AHEAD_FOR_S", float("inf"))
    steps = [{"id": "d", "action": "sleep", "params": {"seconds": 0}},
             {"id": "a", "action": "template", "params": {"template": "A"}},
             {"id": "b", "action": "template", "dependencies": ["a"], "params": {"template": "{{ steps.a.outputs.text }}B"}},
             {"id": "c", "action": "template", "dependencies": ["b", "d"],
              "params": {"template": "{{ steps.b.outputs.text }}+{{ steps.d.outputs.slept }}"}}]
    run_id = service.create_run(tpl(steps))
    other = Service()  # another worker on the same file: it has taken d
    now = clock.now()
    [d] = other.store.claim(ClaimRequest("other", os.getpid(), None, "h", now + 60, 4, ("template",)), now)
    assert d.step_id == "d"
    links, d_done = HotPath.links, []

    def other_commits_first(self):  # the other worker's commit lands just before the group's BEGIN
        if not d_done:
            t = clock.now()
            assert other.store.settle([Outcome(d, "completed", t, t, outputs={"slept": 0})], None, t)[0] == [True]
            d_done.append(t)
        return links(self)

    monkeypatch.setattr(HotPath, "links", other_commits_first)
    try:
        drain(service)
    finally:
        other.store.close()
    rows = steps_of(service, run_id)
    assert d_done
    assert (rows["c"]["status"], rows["c"]["outputs"]) == ("COMPLETED", {"text": "AB+0"}), rows["c"].get("error")


def test_a_step_computed_ahead_does_not_end_before_it_started(service, monkeypatch):
    """A step computed ahead is claimed at the time its computation began, not at the group's
    commit, which comes after it ended. The clock ticks at every reading here, so that no two
    readings are equal. (Found by a cold attack.)"""
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    monkeypatch.setattr(executor, "AHEAD_FOR_S", float("inf"))
    run_id = service.create_run(tpl(counting_chain(40)))
    base, ticks = clock.now(), itertools.count()
    monkeypatch.setattr(clock, "now", lambda: base + next(ticks) * 1e-4)
    drain(service)
    assert service.summary(run_id)["status"] == "COMPLETED"
    rows = service.store.step_rows(run_id)
    assert [r["step_id"] for r in rows if r["ended_at"] < r["started_at"]] == []


def test_a_retried_run_counts_each_step_it_runs_once(service, monkeypatch):
    """After a retry the run's plan, kept since it was made here, no longer matches its rows
    (their epochs moved on): the first window computed ahead from it fails its claim and is
    thrown away. `executed` ("worker done: N step(s) executed") counts the steps whose
    results were kept, not computations thrown away. (Found by a cold attack.)"""
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    monkeypatch.setattr(executor, "AHEAD_FOR_S", float("inf"))
    run_id = service.create_run(tpl(chain_failing_once_at(60, 30)))
    ex = service.make_executor()  # one worker, before and after the retry
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), 60))
    assert service.summary(run_id)["status"] == "FAILED" and ex.executed == 31  # s0 to s30
    service.retry(run_id)
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), 60))
    assert texts(service, run_id)["s59"] == "x" * 60
    assert ex.executed - 31 == 30  # s30 to s59


def test_a_retried_run_made_elsewhere_is_read_again_not_computed_ahead_from_stale_links(service, monkeypatch):
    """A run made by another process (the CLI) and run by a long-lived worker: its pending links
    were read once, at its first link; those of the steps skipped after the failure stay known
    as they were, and a retry moves their epochs on. A claim that finds a row moved on drops
    all that is known of its run, so its links are read again once. (Found by a cold attack:
    each step's look-ahead computed the rest of the chain from the stale links and threw it
    away, about n^2 / 2 computations for n steps.)"""
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    monkeypatch.setattr(executor, "AHEAD_FOR_S", float("inf"))
    maker = Service()  # another process's store: the run is not planned in the worker's
    try:
        run_id = maker.create_run(tpl(chain_failing_once_at(60, 30)))
    finally:
        maker.store.close()
    ex = service.make_executor()
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), 60))
    assert service.summary(run_id)["status"] == "FAILED" and ex.executed == 31
    service.retry(run_id)
    computations = []
    computed = Executor._inline_outcome

    def counting(self, c, action, started):
        computations.append(c.step_id)
        return computed(self, c, action, started)

    monkeypatch.setattr(Executor, "_inline_outcome", counting)
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), 60))
    assert texts(service, run_id)["s59"] == "x" * 60
    assert ex.executed - 31 == 30
    assert len(computations) <= 30 + LINKS_PER_COMMIT, computations  # at most one window thrown away


def test_a_group_whose_begin_finds_the_store_busy_is_settled_again_and_counts_each_step_once(service, monkeypatch):
    """Another process holds the write lock past the busy timeout when a group's first link
    begins: StoreBusy, nothing written, and the link's result is settled again the general way.
    The steps computed ahead for that group are thrown away and computed again after it, so
    `executed` counts them once. (Found by a cold attack: they were counted twice.)"""
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    monkeypatch.setattr(executor, "AHEAD_FOR_S", float("inf"))
    n = 40
    run_id = service.create_run(tpl(counting_chain(n)))
    settle, busy = LinkGroup.settle, []

    def busy_once(self, o, req, now, ahead=None):
        if busy or self.n:
            return settle(self, o, req, now, ahead)
        holder = sqlite3.connect(service.store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock ...
        self.conn.execute("PRAGMA busy_timeout = 0")  # ... past the busy timeout (without waiting 10 s)
        try:
            return settle(self, o, req, now, ahead)
        except Exception as exc:
            busy.append(type(exc).__name__)
            raise
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {service.store.busy_timeout_ms}")
            holder.execute("ROLLBACK")
            holder.close()

    monkeypatch.setattr(LinkGroup, "settle", busy_once)
    ex = service.make_executor()
    asyncio.run(asyncio.wait_for(ex.run(until_idle=True), 60))
    assert busy == ["StoreBusy"]
    assert texts(service, run_id) == {f"s{i}": "x" * (i + 1) for i in range(n)}
    assert ex.executed == n


class _CountingBegins:
    """A LinkGroup's cursor that counts the write transactions it begins."""

    def __init__(self, cur, begins: list):
        self._cur, self._begins = cur, begins

    def execute(self, sql, *args):
        if sql == "BEGIN IMMEDIATE":
            self._begins.append(sql)
        return self._cur.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._cur, name)


def test_a_link_to_a_join_still_waiting_takes_the_write_lock_once_to_find_it_waiting(service, monkeypatch):
    """b ends an inline chain (a -> b) and c joins b and `page`, a capture slot not filled yet.
    When b settles, c cannot be claimed (it still waits on `page`): one write transaction
    finds so and rolls back, and the general settle writes b. (Found by a cold review: the
    group tried the join first and settle() tried it again, two takes of the write lock at
    every arrival at a join but its last.)"""
    monkeypatch.setattr(executor, "QUEUE_PROBE_EVERY_S", float("inf"))
    steps = [{"id": "page", "action": "capture"},
             {"id": "a", "action": "template", "params": {"template": "A"}},
             {"id": "b", "action": "template", "dependencies": ["a"], "params": {"template": "{{ steps.a.outputs.text }}B"}},
             {"id": "c", "action": "template", "dependencies": ["b", "page"],
              "params": {"template": "{{ steps.b.outputs.text }}{{ steps.page.outputs.title }}"}}]
    begins: list = []
    init, settle = LinkGroup.__init__, LinkGroup.settle
    monkeypatch.setattr(LinkGroup, "__init__",
                        lambda self, store, cur, conn: init(self, store, _CountingBegins(cur, begins), conn))
    rolled_back: dict[str, list[str]] = {}

    def recording(self, o, req, now, ahead=None):
        before = len(begins)
        nxt = settle(self, o, req, now, ahead)
        if nxt is None and len(begins) > before:  # began a transaction, wrote nothing
            rolled_back[run].append(o.claim.step_id)
        return nxt

    monkeypatch.setattr(LinkGroup, "settle", recording)
    for made_here in (True, False):
        if made_here:
            run = service.create_run(tpl(steps))
        else:  # made by another process (the CLI): its links are read from its rows
            maker = Service()
            try:
                run = maker.create_run(tpl(steps))
            finally:
                maker.store.close()
        rolled_back[run] = []
        asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))
        rows = {s["id"]: s for s in service.run_document(run, cut=None)["steps"]}
        assert (rows["b"]["status"], rows["b"]["outputs"]) == ("COMPLETED", {"text": "AB"})
        assert rows["c"]["status"] == "PENDING"
    assert list(rolled_back.values()) == [["b"], ["b"]], rolled_back
