"""Chaos soak: workers, a native host and its background worker sharing one store, killed at
random while they work.

Run: python bench/chaos.py [--runs 200] [--kills 50] [--workers 4] [--seed N]

One temp HYBRID_ENGINE_HOME. The fake OpenAI/Gemini/local provider of
tests/integration/fake_provider.py runs in this process on 127.0.0.1 with fixed latency
(50-150 ms) and fixed usage, so every model step's cost is known in advance. N runs are
created, each with three model steps (openai_chat gpt-4o-mini, gemini_chat
gemini-2.5-flash, local_chat) and deterministic steps (write_file appends, a sleep, a
template). 4 `python -m hybrid_engine worker` processes, one `python -m hybrid_engine host`
(driven by a client that subscribes to events and keeps sending runs.list) and the
background worker that host starts execute them. K kills are spread over the work by
progress (kill i when i/(K+1) of the steps are done, at least --min-gap s apart), each one
of: a SIGKILL of a CLI worker (restarted at once), a SIGKILL of the background worker (the
host's watchdog starts another), a SIGKILL of the host, or the host's stdin closed as a
browser does when it goes (the host is started again in both cases). A step whose worker
dies under it 3 times after sending its call is dead-lettered by design, counted
separately and retried. When the kills are over, the survivors drain the queue, they are
stopped once idle, and a final `worker --until-idle` sweeps whatever is left.

Printed, per figure, with the must-be-zero ones marked:
  runs lost                  runs not COMPLETED at the end (dead-letters retried first)   must be 0
  steps completed twice      store view: a step completed more than once / run counters
                             that disagree with the steps                                 must be 0
                             side-effect view: write_file lines written more than once
                             (at-least-once by design: allowed only on a step whose
                             worker was killed under it)                                  unexplained must be 0
  cost mismatches            metrics.total_cost != sum of step costs, cost_breakdown !=
                             per-model sums, or a step cost != the known cost of its call must be 0
  repeated provider calls    requests beyond one per model step at the fake provider, each
                             attributed through the call journal to the kill of the
                             process that had sent the earlier call (its owner pid)       unexplained must be 0
                             by kind of kill: host kills and stdin closes must repeat
                             nothing (the host executes no step)                          must be 0
  unjournaled requests       requests that reached the provider with no journal row       must be 0
  dead-letters without a call dead-lettered steps with fewer sent calls than strikes      must be 0
  unconfirmed calls in spend `spend`'s unconfirmed count != the journal's                 must be 0
Exit status 1 when a must-be-zero figure is not 0.

Why one step slot per process (--concurrency 1, the default here): a process killed with c
model calls in flight repeats those c calls, whatever the engine does (it cannot know
whether a request it sent was answered), so "repeats <= kills" holds only when each
process has at most one call in flight; the attribution through the journal holds for any
number of slots.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from fake_provider import FakeProvider  # noqa: E402
from host_client import HostClient, host_env  # noqa: E402

MODELS = {  # step id -> (action, provider, model, latency s, usage)
    "m1": ("openai_chat", "openai", "gpt-4o-mini", 0.05, {"prompt_tokens": 100, "completion_tokens": 20}),
    "m2": ("gemini_chat", "gemini", "gemini-2.5-flash", 0.10, {"prompt_tokens": 200, "completion_tokens": 40}),
    "m3": ("local_chat", "local", "llama3.2:3b", 0.15, {"prompt_tokens": 300, "completion_tokens": 50}),
}
SIDE_EFFECT_STEPS = ("a", "b", "e")


def run_steps(r: int, log: Path) -> list[dict]:
    def append(sid: str, deps: list[str]) -> dict:
        return {"id": sid, "action": "write_file", "dependencies": deps,
                "params": {"path": str(log), "content": f"{r}:{sid}\n", "append": True}}

    def model(sid: str, deps: list[str]) -> dict:
        action, _, name, _, _ = MODELS[sid]
        return {"id": sid, "action": action, "dependencies": deps,
                "params": {"model": name, "prompt": f"chaos run {r} step {sid}: {{{{ run.id }}}}", "max_tokens": 64}}

    return [
        append("a", []),
        model("m1", ["a"]),
        model("m3", ["a"]),
        {"id": "s", "action": "sleep", "dependencies": ["a"], "params": {"seconds": 0.1}},
        model("m2", ["m1"]),  # a chain of model steps: m1 -> m2
        append("b", ["s", "m1"]),
        {"id": "t", "action": "template", "dependencies": ["m2", "m3"],
         "params": {"template": "{{ steps.m2.outputs.text }} / {{ steps.m3.outputs.text }}"}},
        append("e", ["b", "t"]),
    ]


# ---- processes --------------------------------------------------------------------------

class Procs:
    """The CLI workers, the host and its background worker; every kill is recorded with its pid."""

    KINDS = ("worker", "background", "host-kill", "host-stdin")

    def __init__(self, env: dict, home: Path, workers: int, fake_env: dict):
        self.env, self.home, self.fake_env = env, home, fake_env
        self.workers: list[subprocess.Popen] = [self._worker() for _ in range(workers)]
        self.host: HostClient | None = None
        self.host_lock = threading.Lock()
        self.host_starts = 0
        self.list_ok = 0
        self.list_failed = 0
        self.events = 0
        self.stop = threading.Event()
        self._start_host()
        self.pinger = threading.Thread(target=self._ping, daemon=True)
        self.pinger.start()

    def _worker(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hybrid_engine", "worker", "--quiet"], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _start_host(self) -> None:
        host = HostClient(self.home, env=host_env(self.home, {**self.fake_env, "HYBRID_ENGINE_WORKER_LINGER_S": "5"}))
        with self.host_lock:
            self.host = host
            self.host_starts += 1

    def _ping(self) -> None:
        """The browser's side: subscribe, then keep listing runs; survive host restarts."""
        subscribed_to = None
        while not self.stop.is_set():
            host = self.host
            try:
                if subscribed_to is not host:
                    host.call("runs.subscribe", timeout=10)
                    subscribed_to = host
                host.call("runs.list", timeout=10, limit=50)
                self.list_ok += 1
            except Exception:  # noqa: BLE001 - the host was killed under the request
                if host is self.host and not self.stop.is_set():
                    self.list_failed += 1
                time.sleep(0.05)
            time.sleep(0.05)

    def background_pid(self) -> int | None:
        from hybrid_engine import worker

        pid = worker.WorkerLock(self.home / worker.LOCK_NAME).holder()
        return pid if pid and pid > 0 else None

    def kill_random(self, rng: random.Random) -> tuple[str, int | None]:
        kind = rng.choice(self.KINDS)
        if kind == "background":
            pid = self.background_pid()
            if pid is None:
                kind = "worker"
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return kind, pid
        if kind in ("host-kill", "host-stdin"):
            old = self.host
            self.events += len(old.events)
            if kind == "host-kill":
                old.kill()  # SIGKILL
            else:
                old.close_stdin()
                try:
                    old.wait(5)
                except subprocess.TimeoutExpired:
                    old.kill()
            old.stderr_file.close()
            self._start_host()
            return kind, old.proc.pid
        victim = rng.randrange(len(self.workers))
        proc = self.workers[victim]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.workers[victim] = self._worker()
        return kind, proc.pid

    def kill_all_idle(self) -> None:
        self.stop.set()
        self.pinger.join(15)
        for proc in self.workers:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        self.events += len(self.host.events)
        self.host.kill()
        self.host.stderr_file.close()
        pid = self.background_pid()
        if pid is not None:  # idle by now: SIGTERM hands nothing back
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


# ---- store probes -----------------------------------------------------------------------

def journal(db: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        conn.close()


def counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM steps GROUP BY status").fetchall())
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=1,
                    help="executor slots per process (config.toml); a kill can repeat as many calls as this")
    ap.add_argument("--min-gap", type=float, default=0.25, help="seconds at least between two kills")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp home and print its path")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    t_start = time.monotonic()

    tmp = Path(tempfile.mkdtemp(prefix="he-chaos-"))
    home = tmp / "home"
    home.mkdir()
    (home / "config.toml").write_text(f"[executor]\nconcurrency = {args.concurrency}\n", encoding="utf-8")
    log = tmp / "side-effects.txt"
    os.environ["HYBRID_ENGINE_HOME"] = str(home)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL", "GEMINI_API_KEY",
                "GOOGLE_API_KEY", "GEMINI_BASE_URL", "HYBRID_ENGINE_LOCAL_BASE_URL", "HYBRID_ENGINE_LOCAL_API_KEY"):
        os.environ.pop(var, None)

    fake = FakeProvider().start()
    fake._server.handle_error = lambda request, address: None  # a killed client resets its connection: not news
    for sid, (_, provider, _, latency, usage) in MODELS.items():
        fake.set_default(provider, latency=latency, usage=usage)
    env = {**os.environ, **fake.env(), "PYTHONPATH": str(ROOT / "host") + os.pathsep + os.environ.get("PYTHONPATH", "")}

    from hybrid_engine import pricing
    from hybrid_engine.service import Service
    from hybrid_engine.templates import validate

    known_cost = {sid: pricing.price(name, provider, pricing.Usage(u["prompt_tokens"], u["completion_tokens"])).usd
                  for sid, (_, provider, name, _, u) in MODELS.items()}

    svc = Service()
    runs = [svc.create_run(validate({"name": f"chaos-{r}", "steps": run_steps(r, log)}, "chaos.yaml"))
            for r in range(args.runs)]
    steps_per_run = len(run_steps(0, log))
    total_steps = args.runs * steps_per_run
    db = Path(svc.store.path)
    print(f"chaos: {args.runs} runs x {steps_per_run} steps, {args.workers} workers + host, "
          f"{args.kills} SIGKILLs, seed {seed}, home {home}", flush=True)

    procs = Procs(env, home, args.workers, fake.env())
    kills: list[tuple[float, str, float, int | None]] = []  # (t, kind, fraction done, pid)
    landed = 0  # kills while steps were queued or running
    last_kill = time.monotonic()
    deadline = time.monotonic() + 150
    try:
        while len(kills) < args.kills and time.monotonic() < deadline:
            time.sleep(0.02)
            c = counts(db)
            done = sum(v for k, v in c.items() if k in ("COMPLETED", "FAILED", "SKIPPED", "CANCELLED"))
            frac = done / total_steps
            pending = c.get("QUEUED", 0) + c.get("RUNNING", 0) + c.get("PENDING", 0)
            target = (len(kills) + 1) / (args.kills + 1)
            gap = time.monotonic() - last_kill
            if (frac >= target and gap >= args.min_gap) or gap >= 2.0 or pending == 0:
                if pending:
                    landed += 1
                kind, pid = procs.kill_random(rng)
                last_kill = time.monotonic()
                kills.append((last_kill - t_start, kind, frac, pid))
        c = counts(db)
        unfinished_at_last_kill = sum(svc.summary(r)["status"] not in ("COMPLETED", "FAILED") for r in runs)
        t_kills = time.monotonic() - t_start
        print(f"  kills done at {t_kills:.1f}s ({landed}/{len(kills)} while steps were pending); "
              f"{unfinished_at_last_kill} runs unfinished then; steps by status {c}", flush=True)
        # Let the survivors drain the queue, then stop them once idle (nothing is in flight).
        drain_deadline = time.monotonic() + 60
        while time.monotonic() < drain_deadline:
            c = counts(db)
            if not (c.get("QUEUED", 0) + c.get("RUNNING", 0) + c.get("PENDING", 0)):
                break
            time.sleep(0.1)
        in_flight_at_stop = counts(db).get("RUNNING", 0)
    finally:
        procs.kill_all_idle()
    final = subprocess.run([sys.executable, "-m", "hybrid_engine", "worker", "--until-idle"], env=env,
                           capture_output=True, text=True, timeout=120)
    final_note = final.stderr.strip().splitlines()[-1:] if final.stderr.strip() else []

    # Dead-letters (by design): note them, retry those runs, sweep again.
    svc.store.close()
    svc = Service()
    docs = {r: svc.run_document(r, cut=None) for r in runs}
    dead = [(r, s["id"]) for r, d in docs.items() for s in d["steps"]
            if s["status"] == "FAILED" and "dead-letter" in (s.get("error") or "")]
    # A dead-letter must have cost something: one sent call per strike, at least.
    sent_by_step = Counter((c["run_id"], c["step_id"]) for c in journal(db))
    dead_without_call = [(r, sid) for r, sid in dead
                         if sent_by_step[(r, sid)] < next(s["execution_metrics"].get("crash_recoveries") or 0
                                                          for s in docs[r]["steps"] if s["id"] == sid)
                         and next(s["action"] for s in docs[r]["steps"] if s["id"] == sid).endswith("_chat")]
    other_failed = [(r, s["id"], s.get("error")) for r, d in docs.items() for s in d["steps"]
                    if s["status"] == "FAILED" and "dead-letter" not in (s.get("error") or "")]
    # `retry` starts a dead-lettered step's crash count again: keep what it was for the bound below.
    recoveries_before_retry = {(r, sid): next(s["execution_metrics"].get("crash_recoveries") or 0
                                             for s in docs[r]["steps"] if s["id"] == sid) for r, sid in dead}
    if dead:
        for r in sorted({r for r, _ in dead}):
            subprocess.run([sys.executable, "-m", "hybrid_engine", "retry", r], env=env, capture_output=True,
                           timeout=60)
        subprocess.run([sys.executable, "-m", "hybrid_engine", "worker", "--until-idle", "--quiet"], env=env,
                       capture_output=True, timeout=120)
        svc.store.close()
        svc = Service()
        docs = {r: svc.run_document(r, cut=None) for r in runs}
    fake.close()

    # ---- figures ------------------------------------------------------------------------
    lost = [r for r, d in docs.items() if d["status"] != "COMPLETED"]

    # Store view: each step COMPLETED once; the run's counters agree with its steps.
    store_twice = 0
    for d in docs.values():
        ids = Counter(s["id"] for s in d["steps"] if s["status"] == "COMPLETED")
        store_twice += sum(n - 1 for n in ids.values())
        if d["metrics"].get("completed_steps") != len(d["steps"]) and d["status"] == "COMPLETED":
            store_twice += 1
    recoveries = {(d["id"], s["id"]): (s["execution_metrics"].get("crash_recoveries") or 0)
                  + recoveries_before_retry.get((d["id"], s["id"]), 0) for d in docs.values() for s in d["steps"]}
    total_recoveries = sum(recoveries.values())

    # Side-effect view.
    lines = Counter(log.read_text().splitlines()) if log.exists() else Counter()
    repeats = unexplained = missing = 0
    for i, r in enumerate(runs):
        for sid in SIDE_EFFECT_STEPS:
            n = lines.get(f"{i}:{sid}", 0)
            if n == 0:
                missing += 1
            repeats += max(0, n - 1)
            if n - 1 > recoveries.get((r, sid), 0):
                unexplained += n - 1 - recoveries.get((r, sid), 0)

    # Costs: run totals vs step sums, breakdown vs per-model sums, step costs vs the known price.
    cost_mismatch = []
    store_total = 0.0
    for d in docs.values():
        step_costs = [s["execution_metrics"].get("cost") or 0.0 for s in d["steps"]]
        per_model: Counter = Counter()
        for s in d["steps"]:
            if s["id"] in MODELS:
                per_model[MODELS[s["id"]][2]] += s["execution_metrics"].get("cost") or 0.0
                expected = known_cost[s["id"]]
                got = s["execution_metrics"].get("cost")
                if got is None or abs(got - expected) > 1e-12:
                    cost_mismatch.append((d["id"], s["id"], "step", got, expected))
        total = d["metrics"].get("total_cost") or 0.0
        store_total += total
        if abs(total - sum(step_costs)) > 1e-12:
            cost_mismatch.append((d["id"], "total", total, sum(step_costs)))
        breakdown = d.get("cost_breakdown") or {}
        for model in set(breakdown) | {m for m, v in per_model.items() if v}:
            if abs((breakdown.get(model) or 0.0) - per_model.get(model, 0.0)) > 1e-12:
                cost_mismatch.append((d["id"], "breakdown", model, breakdown.get(model), per_model.get(model)))
    expected_total = args.runs * sum(known_cost.values())

    # Cross-check the in-process documents against the CLI's `export` for a few runs.
    export_diff = 0
    for r in rng.sample(runs, min(3, len(runs))):
        out = subprocess.run([sys.executable, "-m", "hybrid_engine", "export", r], env=env, capture_output=True,
                             text=True, timeout=60)
        exported = json.loads(out.stdout)
        if (exported["metrics"].get("total_cost") != docs[r]["metrics"].get("total_cost")
                or exported.get("cost_breakdown") != docs[r].get("cost_breakdown")):
            export_diff += 1

    # Provider calls per unique prompt.
    calls: Counter = Counter()
    unreadable: list = []
    billed = 0.0
    price_by_model = {MODELS[s][2]: known_cost[s] for s in MODELS}
    for req in fake.requests:
        body = req.body if isinstance(req.body, dict) else {}
        try:
            if req.provider == "gemini":
                text = body["contents"][-1]["parts"][0]["text"]
                model = req.model
            else:
                text = body["messages"][-1]["content"]
                model = body.get("model")
        except (KeyError, IndexError, TypeError):  # a body cut short by a kill: no reply was sent
            unreadable.append((req.provider, req.path, str(req.body)[:120]))
            continue
        calls[text] += 1
        billed += price_by_model.get(model, 0.0)
    expected_prompts = {f"chaos run {i} step {sid}: {r}" for i, r in enumerate(runs) for sid in MODELS}
    # A request cut short by a kill (its body never fully arrived, no reply) counts as a duplicate too.
    duplicates = sum(n - 1 for n in calls.values()) + len(unreadable)
    never_called = len(expected_prompts - set(calls))
    strays = len(set(calls) - expected_prompts)

    # Every repeated call, attributed through the journal to the kill of the process that had
    # sent the call before it (the journal row's owner pid), or printed as unexplained.
    killed = {pid: kind for _, kind, _, pid in kills if pid}
    rows = journal(db)
    by_step: dict[tuple[str, str], list[dict]] = {}
    for c in rows:
        by_step.setdefault((c["run_id"], c["step_id"]), []).append(c)
    attributed: Counter = Counter()
    unexplained_repeats: list = []
    unjournaled: list = []
    for i, r in enumerate(runs):
        for sid in MODELS:
            n = calls[f"chaos run {i} step {sid}: {r}"]
            jrows = by_step.get((r, sid), [])
            if n > len(jrows):
                unjournaled.append((r, sid, n, len(jrows)))
            earlier = [c for c in jrows if c["state"] != "answered"]
            for c in earlier[:max(0, n - 1)]:
                kind = killed.get(c["owner_pid"])
                if kind is not None and c["state"] in ("unconfirmed", "discarded"):
                    attributed[kind] += 1
                else:
                    unexplained_repeats.append((r, sid, c["state"], c["owner_pid"], c["reason"]))
            if n - 1 > len(earlier):
                unexplained_repeats.append((r, sid, "no earlier journal row", n, len(jrows)))
    lost_in_journal = sum(1 for c in rows if c["state"] in ("unconfirmed", "discarded"))
    spend = svc.spend()
    spend_gap = abs(spend["this_month_unconfirmed"]["calls"] - lost_in_journal)

    n_kills = len(kills)
    by_kind = Counter(kind for _, kind, _, _ in kills)
    host_kills = by_kind["host-kill"] + by_kind["host-stdin"]
    elapsed = time.monotonic() - t_start
    print(f"  {n_kills} kills ({by_kind['worker']} CLI workers, {by_kind['background']} background worker, "
          f"{by_kind['host-kill']} host SIGKILLs, {by_kind['host-stdin']} host stdin closes), "
          f"spread over {kills[0][2]:.0%}..{kills[-1][2]:.0%} of the steps done" if kills else "  no kills")
    print(f"  host: {procs.host_starts} starts, {procs.list_ok} runs.list answered, "
          f"{procs.list_failed} cut by a kill, {procs.events} run events received")
    print(f"  drained with {in_flight_at_stop} steps in flight at stop; final worker: {' '.join(final_note) or '-'}")
    print(f"  orphaned steps recovered: {total_recoveries}; dead-lettered (3 deaths, by design): {len(dead)} "
          f"step(s) in {len({r for r, _ in dead})} run(s), retried; other failed steps: {len(other_failed)}")
    print()
    ok = True

    def line(label: str, value, must_zero: bool, note: str = "") -> None:
        nonlocal ok
        bad = must_zero and value != 0
        ok = ok and not bad
        print(f"  {label:<46} {value!s:>6}  {'MUST BE 0' if must_zero else '':<9} {'FAIL' if bad else ''} {note}")

    line("runs lost (not COMPLETED)", len(lost), True, f"of {args.runs}")
    line("steps completed twice, store view", store_twice, True, f"of {total_steps} steps")
    line("side effects repeated (at-least-once)", repeats, False,
         f"write_file lines beyond one, of {args.runs * len(SIDE_EFFECT_STEPS)}")
    line("  ...not explained by a kill under that step", unexplained, True)
    line("  side effects missing", missing, True)
    line("cost totals != sum of their steps", len(cost_mismatch), True,
         f"store ${store_total:.6f} vs known ${expected_total:.6f}; export cross-check diffs {export_diff}")
    # The design's bound is per step: a model step is called at most once more than the number of
    # times its worker died under it (one kill can interrupt several calls in flight at once).
    recov = {(r, st["id"]): (st["execution_metrics"].get("crash_recoveries") or 0)
             + recoveries_before_retry.get((r, st["id"]), 0) for r in runs for st in docs[r]["steps"]}
    over = [(r, sid, calls[f"chaos run {i} step {sid}: {r}"], recov.get((r, sid), 0))
            for i, r in enumerate(runs) for sid in MODELS
            if calls[f"chaos run {i} step {sid}: {r}"] > 1 + recov.get((r, sid), 0)]
    line("model steps called more than 1 + their crash recoveries", len(over), True,
         "(run, step, calls, recoveries): " + repr(over[:3]) if over else "")
    line("repeated provider calls", duplicates, False,
         f"{len(fake.requests)} requests for {len(expected_prompts)} model steps; never called {never_called}, "
         f"unknown prompts {strays}, cut-off bodies {len(unreadable)} (counted); billed at the fake ${billed:.6f}")
    line("  ...attributed to worker kills", attributed["worker"] + attributed["background"], False,
         f"CLI workers {attributed['worker']}, background worker {attributed['background']}")
    line("  ...attributed to host kills and stdin closes", attributed["host-kill"] + attributed["host-stdin"], True,
         f"of {host_kills} such kills")
    line("  ...explained by no kill", len(unexplained_repeats), True,
         "(run, step, state, pid, reason): " + repr(unexplained_repeats[:3]) if unexplained_repeats else "")
    line("requests without a journal row", len(unjournaled), True, repr(unjournaled[:3]) if unjournaled else "")
    line("dead-lettered model steps with fewer calls than strikes", len(dead_without_call), True,
         repr(dead_without_call[:3]) if dead_without_call else "")
    line("unconfirmed calls missing from spend", spend_gap, True,
         f"journal {lost_in_journal}, spend {spend['this_month_unconfirmed']['calls']} "
         f"(up to ${spend['this_month_unconfirmed']['cost_max_known']:.6f})")
    ok = ok and never_called == 0 and export_diff == 0
    if unreadable:
        print("  unreadable requests:", unreadable[:3])
    if cost_mismatch:
        print("  first cost mismatches:", cost_mismatch[:5])
    if lost:
        print("  first lost runs:", [(r, docs[r]["status"], [(s["id"], s["status"], s.get("error"))
                                                            for s in docs[r]["steps"] if s["status"] != "COMPLETED"])
                                      for r in lost[:3]])
    print(f"\n  {'OK' if ok else 'FAILED'} in {elapsed:.1f}s")
    svc.store.close()
    if args.keep:
        print(f"  kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
