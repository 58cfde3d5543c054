"""Runs queued steps: claim, render, execute, settle; retries, limits, leases.

One loop iteration settles every finished step and claims the next batch in a
single transaction, so a chain of cheap steps costs about one commit per step and
a fan-out less than that. Deterministic actions that cannot block run inline;
model calls run as tasks, CPU-heavy actions in threads.

The event loop carries model calls that are in flight, so it never waits on SQLite (a
busy database holds a query for up to the 10 s busy timeout) or on tokenising a prompt:
the store calls run on the executor's one store thread (in order, so a step's log lines
land before its result), and the steps of a claimed batch that run as tasks have their
params rendered and their budgets checked in a worker thread, in claim order, before any
of them starts (as one pass: the budget sees the whole batch, and a fan-out of model
steps costs one thread hop). One path stays on the loop, because a thread hop per step
would cost a chain of cheap steps more than its commit: settling the results of inline
steps and claiming the next ones, when nothing else is waiting for the store thread.

Why one file of ~670 lines: the loop, the claim, the execution and the settle share the
in-flight table and the store thread, and their order is the engine's correctness (a step
is settled once, a lease is kept while it runs); split apart, each part would need the
others' private state. Retry arithmetic (RetryPolicy) and limits are its leaves, and so are
provider pacing (ratelimit.py), the order of a step's fallback models (fallbacks.py) and
the batches' feeder (batchfeed.py, passed in); what stays here of them is the few lines
where they touch the in-flight table, the claim and the call journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from . import clock, dag, fallbacks, procs, recovery
from .ratelimit import RateLimiter
from .adapters import SPECS, load_action
from .adapters.base import CallNotSent, StepContext, StepResult, SyncAction
from .errors import (PermanentStepError, StepBudgetExceeded, StepError, StoreCorrupt, StoreError,
                     TransientStepError)
from .store import Claimed, ClaimRequest, Outcome, Store

log = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, error_count: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never shorter than the provider's hint."""
        backoff = min(self.cap_s, self.base_s * (2 ** max(0, error_count - 1)))
        jittered = backoff / 2 + random.random() * backoff / 2
        return max(jittered, retry_after or 0.0)


@dataclass
class Limits:
    concurrency: int = 16
    per_action: dict[str, int] = field(default_factory=dict)
    per_provider: dict[str, int] = field(default_factory=dict)


FEED_EVERY_S = 0.05  # how often batches with room get their next runs made
# A 429, or a provider paused by one, hands the step back to the queue without counting an
# error, up to this many times in a row; a provider that keeps refusing past that (a quota
# it calls a rate limit) then uses up the step's retries as any transient error does.
RATE_LIMITED_FREE = 50
MAX_PACING_WAIT_S = 2.0  # a longer wait for a provider's bucket hands the step back instead
PACING_CODES = frozenset({"rate_limited", "provider_paused"})
INLINE_BATCH = 48  # inline steps claimed per commit beyond the concurrency slots
QUEUE_PROBE_EVERY_S = 0.01  # while a chain continues, how often the queue is still looked at
# Statuses that a proxy or gateway in between sends when the provider's answer did not reach
# it in time: the provider may still have run, and billed, the request.
ANSWER_LOST_STATUSES = frozenset({408, 502, 504})

Guard = Callable[[Claimed, dict, Any], None]  # raises StepBudgetExceeded (or another StepError) to stop a start


class Executor:
    def __init__(self, store: Store, *, limits: Limits | None = None, retry: RetryPolicy | None = None,
                 lease_s: float = 30.0, poll_s: float = 0.5, recover_every_s: float = 5.0,
                 guards: list[Guard] | None = None, rates: RateLimiter | None = None,
                 feeders: list | None = None):
        self.store = store
        self.rates = rates or RateLimiter()
        self.feeders = list(feeders or [])  # batches: make runs as room frees up (batchfeed.Feeder)
        self._last_feed = 0.0
        self._starts: dict[int, Any] = {}  # claim rowid -> fallbacks.Start a budget chose
        self._rate_limited: dict[int, int] = {}  # claim rowid -> 429s not counted as errors
        self.limits = limits or Limits()
        self.retry = retry or RetryPolicy()
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.recover_every_s = recover_every_s
        self.guards = list(guards or [])
        self.pid = os.getpid()
        self.owner = f"{procs.hostname()}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.start_ticks = procs.process_start(self.pid)
        self._inflight: dict[int, tuple[Claimed, asyncio.Task | None]] = {}
        self._calls: dict[int, int] = {}  # claim rowid -> journaled call id of its current attempt
        self._done: list[Outcome] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._stop_requested = False
        self._run_cache: dict[str, dict] = {}
        self._host = procs.hostname()
        self._last_probe = 0.0
        self._store_thread: concurrent.futures.ThreadPoolExecutor | None = None  # made by run()
        self._task_done = False  # an outcome came from a task: settle it on the store thread
        self._logged = False  # a log line went to the store thread since the last settle
        self._settle_failed = False
        self._guard_turn: asyncio.Lock | None = None  # one batch's budget checks at a time
        self._to_prepare: list[tuple[Claimed, Any, asyncio.Future]] = []  # claimed tasks awaiting params
        self._preparers: set[asyncio.Task] = set()
        self._inline_actions = tuple(sorted(name for name, spec in SPECS.items()
                                            if spec.inline and name not in self.limits.per_action))
        self._limited_actions = frozenset(self.limits.per_action)
        self._limited_providers = frozenset(self.limits.per_provider) | self.rates.providers
        self.executed = 0

    # ---- control -------------------------------------------------------------

    def wake(self) -> None:
        """Thread-safe nudge: new work may be queued."""
        loop, ev = self._loop, self._wake
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass

    def stop(self) -> None:
        self._stopping = True
        self._stop_requested = True
        self.wake()

    # ---- the loop --------------------------------------------------------------

    async def run(self, *, until_idle: bool = False, linger_s: float = 0.0) -> None:
        """Execute until stopped or, with until_idle, until nothing is queued or running here
        or elsewhere for `linger_s` seconds (a background worker waits a while for more)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._guard_turn = asyncio.Lock()
        self._stopping = False
        self._store_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="executor-store")
        try:
            await asyncio.to_thread(self._preload)
            keeper = asyncio.create_task(self._keep_leases(), name="lease-keeper")
            try:
                await self._main(until_idle, linger_s)
            finally:
                keeper.cancel()
                await self._shutdown()
        finally:
            pool, self._store_thread = self._store_thread, None
            await asyncio.to_thread(pool.shutdown)  # log lines still queued are written first

    async def _off_loop(self, fn: Callable, *args) -> Any:
        """fn(*args) on the store thread, awaited without holding up the loop."""
        return await self._loop.run_in_executor(self._store_thread, fn, *args)

    @property
    def stopped_by_request(self) -> bool:
        return self._stop_requested

    async def _main(self, until_idle: bool, linger_s: float = 0.0) -> None:
        store = self.store
        yielded = clock.now()
        idle_since: float | None = None
        while not self._stopping:
            if self._done and clock.now() - yielded > 0.02:
                # A long chain of inline steps never awaits: let tasks, leases and events breathe.
                await asyncio.sleep(0)
                yielded = clock.now()
            outcomes, self._done = self._done, []
            req = self._claim_request()
            now = clock.now()
            on_loop = bool(outcomes) and not (self._task_done or self._logged or self._settle_failed)
            self._task_done = self._logged = False
            self._settle_failed = bool(outcomes)  # until the settle below returns: a busy store is retried off the loop
            if self.feeders and now - self._last_feed >= FEED_EVERY_S:
                self._last_feed = now
                await self._off_loop(self._feed, now)  # the new runs' first steps are claimed below
            if outcomes or await self._off_loop(store.has_ready, now):
                try:
                    applied, claimed = (store.settle(outcomes, req, now) if on_loop
                                        else await self._off_loop(store.settle, outcomes, req, now))
                except StoreCorrupt:
                    raise  # a damaged file does not mend by waiting
                except StoreError as exc:
                    # Busy past the timeout (StoreBusy), a full disk, a read-only folder: nothing was
                    # written (the transaction rolled back), so keep the results and try again
                    # rather than lose them.
                    log.warning("store unavailable while settling %d step(s): %s; retrying", len(outcomes),
                                exc.message)
                    self._done = outcomes + self._done
                    await asyncio.sleep(min(2.0, 0.05 * (1 + len(self._done))))
                    continue
                self._settle_failed = False
                for outcome, ok in zip(outcomes, applied):
                    if not ok:
                        log.warning("run %s step %s: result dropped, the step's lease was lost to another owner",
                                    outcome.claim.run_id, outcome.claim.step_id)
                for c in claimed:
                    self._start(c)
                if self._to_prepare:
                    batch, self._to_prepare = self._to_prepare, []
                    preparer = asyncio.create_task(self._prepare(batch), name="prepare-steps")
                    self._preparers.add(preparer)
                    preparer.add_done_callback(self._preparers.discard)
                if self._done or claimed:
                    continue
            if until_idle and not self._inflight and not self._done:
                if await self._off_loop(self._nothing_left):
                    now = clock.now()
                    if idle_since is None:
                        idle_since = now
                    if now - idle_since >= linger_s:
                        return
                else:
                    idle_since = None
            self._wake.clear()
            if self._done:
                continue
            timeout = self.poll_s
            nxt = await self._off_loop(store.next_due) if not self._inflight or req.limit > 0 else None
            if nxt is not None:
                opens = self.rates.opens_at(clock.now())
                if opens is not None and nxt <= clock.now():  # what is due waits for its provider
                    nxt = opens
                timeout = max(0.0, min(timeout, nxt - clock.now()))
            if self.feeders:
                timeout = min(timeout, FEED_EVERY_S)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _nothing_left(self) -> bool:
        """Nothing queued and nothing running anywhere. Steps RUNNING under an owner that is
        gone are handed back to the queue here, so until_idle does not wait out their lease."""
        if self.store.has_queued() or any(f.pending() for f in self.feeders):
            return False
        if self.store.has_running():
            recovery.requeue_orphans(self.store, own_owner=self.owner, remove_stale=False)
            return False
        return True

    def _preload(self) -> None:
        """Import what the open runs will need before claiming anything, so that a claimed
        step starts at once: a process killed while importing an SDK holds no claim."""
        for action in self.store.open_actions():
            if action in SPECS and not SPECS[action].input_slot:
                try:
                    load_action(action)
                except Exception:  # noqa: BLE001 - the step reports it when it runs
                    log.exception("could not load action %s", action)

    def _claim_request(self) -> ClaimRequest:
        lim = self.limits
        free = lim.concurrency - len(self._inflight)
        ex_actions, ex_providers = (), ()
        if self._inflight and (lim.per_action or lim.per_provider):
            ex_actions, ex_providers = [], []
            by_action: dict[str, int] = {}
            by_provider: dict[str, int] = {}
            for c, _ in self._inflight.values():
                by_action[c.action] = by_action.get(c.action, 0) + 1
                if c.provider:
                    by_provider[c.provider] = by_provider.get(c.provider, 0) + 1
            for name, cap in lim.per_action.items():
                room = cap - by_action.get(name, 0)
                if room <= 0:
                    ex_actions.append(name)
                else:
                    free = min(free, room)
            for name, cap in lim.per_provider.items():
                room = cap - by_provider.get(name, 0)
                if room <= 0:
                    ex_providers.append(name)
                else:
                    free = min(free, room)
        elif lim.per_action or lim.per_provider:
            for cap in (*lim.per_action.values(), *lim.per_provider.values()):
                free = min(free, cap)
        now = clock.now()
        paused = self.rates.blocked(now)
        if paused:  # their steps stay queued until the provider may be sent to again
            ex_providers = [*ex_providers, *paused]
        probe = now - self._last_probe >= QUEUE_PROBE_EVERY_S
        if probe:
            self._last_probe = now
        return ClaimRequest(self.owner, self.pid, self.start_ticks, self._host, now + self.lease_s,
                            max(0, free), ex_actions, ex_providers, self._limited_actions, self._limited_providers,
                            self._inline_actions, INLINE_BATCH, probe)

    # ---- one step ---------------------------------------------------------------

    def _start(self, c: Claimed) -> None:
        started = clock.now()
        spec = SPECS.get(c.action)
        try:
            if spec is None:
                raise PermanentStepError(f"unknown action '{c.action}'", code="unknown_action")
            if spec.input_slot:
                raise PermanentStepError("a capture slot is filled by a capture or `ingest`, not executed",
                                         code="not_executable")
            action = load_action(c.action)
            inline = spec.inline and spec.provider is None and isinstance(action, SyncAction)
            params = self._render(c) if inline else None  # an inline step's reads stay on the loop
        except Exception as exc:  # noqa: BLE001 - becomes the step's error
            self._done.append(self._failure(c, exc, started))
            return
        ctx = StepContext(c.run_id, c.step_id, c.action, c.attempts, self._logger(c))
        if spec.provider is not None:
            ctx.journal = self._journal_for(c)
        if inline:
            try:
                self._done.append(self._success(c, action.compute(params, ctx), started))
            except Exception as exc:  # noqa: BLE001
                self._done.append(self._failure(c, exc, started))
            self.executed += 1
            return
        timeout = c.timeout_s or spec.default_timeout_s
        params_ready = self._loop.create_future()
        self._to_prepare.append((c, action, params_ready))
        task = asyncio.create_task(self._execute(c, action, params_ready, ctx, timeout, started),
                                   name=f"step:{c.run_id}:{c.step_id}")
        self._inflight[c.rowid] = (c, task)

    async def _prepare(self, batch: list[tuple[Claimed, Any, asyncio.Future]]) -> None:
        """Params rendered and budgets checked for a claimed batch, off the loop: rendering
        reads the store and a budget check may tokenise a whole prompt. One batch at a time,
        since a check and the reservation it makes must not interleave with another's."""
        async with self._guard_turn:
            results = await asyncio.to_thread(self._render_and_guard, batch)
        for (_, _, params_ready), result in zip(batch, results):
            if params_ready.done():  # the step was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                params_ready.set_exception(result)
            else:
                params_ready.set_result(result)

    def _render_and_guard(self, batch: list[tuple[Claimed, Any, asyncio.Future]]) -> list:
        results: list = []
        for c, action, _ in batch:
            try:
                params = self._render(c)
                if action.spec.provider is not None:
                    self._guard_step(c, params, action)
                results.append(params)
            except Exception as exc:  # noqa: BLE001 - becomes the step's error
                results.append(exc)
        return results

    def _journal_for(self, c: Claimed):
        store, pid = self.store, self.pid

        async def journal(*, provider: str | None, model: str | None, prompt_tokens: int | None,
                          max_output_tokens: int | None, cost_max: float | None) -> None:
            if provider:
                await self._paced(provider, prompt_tokens or 0)
            call_id = await asyncio.to_thread(store.journal_call, c.rowid, c.epoch, c.attempts, provider, model,
                                              prompt_tokens, max_output_tokens, cost_max, pid, clock.now())
            if call_id is None:
                raise CallNotSent(f"run {c.run_id} step {c.step_id} is no longer ours")
            self._calls[c.rowid] = call_id
        return journal

    def _logger(self, c: Claimed):
        """ctx.log: the line goes to the store thread (called from the loop or from an action's
        own thread alike); only when no executor runs is it written where it is called."""
        store = self.store

        def log_line(line: str) -> None:
            pool, args = self._store_thread, (c.run_id, c.step_id, clock.now(), line)
            if pool is not None:
                try:
                    pool.submit(store.append_log, *args).add_done_callback(_log_write_failure)
                    self._logged = True
                    return
                except RuntimeError:  # the pool has shut down: this thread writes it
                    pass
            store.append_log(*args)
        return log_line

    async def _execute(self, c: Claimed, action, params_ready: asyncio.Future, ctx: StepContext, timeout: float,
                       started: float) -> None:
        try:
            params = await params_ready
        except asyncio.CancelledError:
            raise  # shutdown releases the step, or whoever took its lease has it
        except Exception as exc:  # noqa: BLE001 - a bad reference, a budget: the step fails unstarted
            self._finish(c, self._failure(c, exc, started))
            return
        try:
            result = await self._run_action(c, action, params, ctx, timeout)
            outcome = self._success(c, result, started)
        except asyncio.CancelledError:
            call_id = self._calls.pop(c.rowid, None)
            if self._inflight.pop(c.rowid, None) is not None and self._stopping:
                self._done.append(Outcome(claim=c, kind="released", started_at=started, ended_at=clock.now(),
                                          call_id=call_id, call_state="unconfirmed",
                                          error="stopped while the call was in flight"))
            raise
        except CallNotSent:
            log.info("run %s step %s: taken over before its call was sent; nothing sent", c.run_id, c.step_id)
            self._inflight.pop(c.rowid, None)
            return
        except asyncio.TimeoutError:
            outcome = self._failure(c, TransientStepError(f"timed out after {timeout:g} s", code="timeout"), started)
        except Exception as exc:  # noqa: BLE001
            outcome = self._failure(c, exc, started)
        self.executed += 1
        self._finish(c, outcome)

    def _finish(self, c: Claimed, outcome: Outcome) -> None:
        if outcome.kind != "released" and self._rate_limited:
            self._rate_limited.pop(c.rowid, None)
        if self._inflight.pop(c.rowid, None) is not None:
            self._done.append(outcome)
            self._task_done = True
            if self._wake is not None:
                self._wake.set()

    def _render(self, c: Claimed) -> dict:
        if c.params == "{}":
            return {}
        params = json.loads(c.params)
        if "{{" not in c.params:
            return params
        run = self._run_cache.get(c.run_id)
        if run is None:
            info = self.store.run_info(c.run_id)
            name, template, created = info if info else ("", "", clock.now())
            run = {"id": c.run_id, "name": name, "template": template, "created_at": clock.iso(created)}
            if len(self._run_cache) > 256:
                self._run_cache.clear()
            self._run_cache[c.run_id] = run
        wanted = dag.referenced_steps(params)
        outputs = self.store.outputs(c.run_id, wanted)
        try:
            return dag.render_params(params, dag.make_lookup(outputs, run), SPECS[c.action].path_params,
                                     f"{c.run_id}/{c.step_id}")
        except (dag.RenderError, dag.RefError) as exc:
            raise PermanentStepError(f"cannot render params: {exc}", code="bad_reference") from exc

    def _success(self, c: Claimed, result: StepResult, started: float) -> Outcome:
        ended = clock.now()
        if not isinstance(result, StepResult):
            return self._failure(c, PermanentStepError(f"action '{c.action}' returned {type(result).__name__}, "
                                                       f"not a StepResult", code="internal"), started)
        md = result.metadata
        if md:
            md = dict(md)
            md.setdefault("duration_ms", int(round((ended - started) * 1000)))
        outcome = Outcome(claim=c, kind="completed", started_at=started, ended_at=ended, outputs=result.outputs,
                          metadata=md)
        if self._calls:
            call_id = self._calls.pop(c.rowid, None)
            if call_id is not None:
                outcome.call_id, outcome.call_state = call_id, "answered"
                outcome.call_cost = md.get("cost") if md else None
        return outcome

    def _failure(self, c: Claimed, exc: BaseException, started: float) -> Outcome:
        if isinstance(exc, TransientStepError) and exc.code in PACING_CODES:
            held = self._held_back(c, exc, started)
            if held is not None:
                return held
        ended = clock.now()
        stamp = clock.iso(ended)
        if isinstance(exc, TransientStepError):
            errors_so_far = c.error_count + 1
            if errors_so_far <= c.max_retries:
                delay = self.retry.delay(errors_so_far, exc.retry_after)
                hint = f", provider asked to wait {exc.retry_after:g} s" if exc.retry_after else ""
                line = (f"Attempt {c.attempts} failed at {stamp}: {exc.message.rstrip('.')}; retry {errors_so_far} of "
                        f"{c.max_retries} in {delay:.2f} s{hint}")
                log.info("run %s step %s: %s", c.run_id, c.step_id, line)
                return self._with_call(c, exc, Outcome(claim=c, kind="retry", started_at=started, ended_at=ended,
                                                       error=exc.message, error_code=exc.code, due_at=ended + delay,
                                                       log=line))
            message = f"{exc.message} (gave up after {c.attempts} attempts)"
            code = exc.code
        elif isinstance(exc, StepBudgetExceeded):
            message, code = exc.message, "budget_exceeded"
        elif isinstance(exc, StepError):
            message, code = exc.message, exc.code
        else:
            log.exception("run %s step %s: unexpected error in action %s", c.run_id, c.step_id, c.action,
                          exc_info=exc)
            from .redact import redact  # an SDK's own exception text can carry a URL's password

            message, code = redact(f"{type(exc).__name__}: {exc}"), "internal"
        line = f"Failed at {stamp}: {message}"
        md = getattr(exc, "metadata", None) or None
        return self._with_call(c, exc, Outcome(claim=c, kind="failed", started_at=started, ended_at=ended,
                                               error=message, error_code=code, metadata=md, log=line))

    def _with_call(self, c: Claimed, exc: BaseException, outcome: Outcome) -> Outcome:
        """A failed attempt that had sent its call: refused when the provider answered with an
        error status (not billed), else unconfirmed (a timeout or a cut connection may be billed,
        and so may a request whose answer a gateway lost: 408, 502, 504)."""
        call_id = self._calls.pop(c.rowid, None) if self._calls else None
        if call_id is not None:
            answered = _not_billed(exc)
            outcome.call_id, outcome.call_state = call_id, "refused" if answered else "unconfirmed"
        return outcome

    # ---- fallbacks (fallbacks.py) ------------------------------------------------------

    def _guard_step(self, c: Claimed, params: dict, action) -> None:
        """Every guard (budgets) for a model step; one that a budget refuses starts at the first
        fallback the budgets allow instead, if it names any."""
        try:
            for guard in self.guards:
                guard(c, params, action)
        except StepBudgetExceeded as exc:
            if not params.get("fallback"):
                raise
            options = fallbacks.choices(action, params, load_action)
            self._starts[c.rowid] = fallbacks.affordable(
                options, lambda o: [guard(c, o.params, o.action) for guard in self.guards], exc)

    async def _run_action(self, c: Claimed, action, params: dict, ctx: StepContext, timeout: float) -> StepResult:
        start = self._starts.pop(c.rowid, None)
        if not params.get("fallback"):
            return await asyncio.wait_for(action.run(params, ctx), timeout)
        options = fallbacks.choices(action, params, load_action)

        async def call(option):
            try:
                return await asyncio.wait_for(option.action.run(option.params, ctx), timeout)
            except asyncio.TimeoutError:
                raise TransientStepError(f"timed out after {timeout:g} s", code="timeout") from None

        async def check(option):
            async with self._guard_turn:
                await asyncio.to_thread(lambda: [guard(c, option.params, option.action) for guard in self.guards])

        async def abandon(exc: BaseException) -> float | None:
            """The failed choice's call settled now, before the next one is journaled."""
            call_id = self._calls.pop(c.rowid, None)
            if call_id is None:
                return None
            state = "refused" if _not_billed(exc) else "unconfirmed"
            cost_max = await self._off_loop(self.store.settle_call, call_id, state,
                                            getattr(exc, "message", str(exc)), clock.now())
            return 0.0 if state == "refused" else cost_max

        return await fallbacks.run(options, start or fallbacks.Start(), error_count=c.error_count,
                                   max_retries=c.max_retries, call=call, check=check, abandon=abandon, log=ctx.log)

    # ---- provider pacing and batches ------------------------------------------------

    async def _paced(self, provider: str, tokens: int) -> None:
        """Wait for the provider's requests- and tokens-per-minute buckets, right before a call
        is journaled and sent; a long wait (a provider paused by a 429) hands the step back."""
        while True:
            now = clock.now()
            wait = self.rates.wait_s(provider, tokens, now)
            if wait <= 0:
                self.rates.take(provider, tokens, now)
                return
            if wait > MAX_PACING_WAIT_S:
                raise TransientStepError(f"{provider} is paused for {wait:.1f} s by its rate limit",
                                         retry_after=wait, code="provider_paused",
                                         metadata={"provider": provider, "not_sent": True})
            await asyncio.sleep(wait)

    def _held_back(self, c: Claimed, exc: TransientStepError, started: float) -> Outcome | None:
        """A 429 pauses its provider for every step here, and this step goes back to the queue
        for when the provider opens again, without counting an error; None past RATE_LIMITED_FREE."""
        provider = (exc.metadata or {}).get("provider") or c.provider
        if not provider:
            return None
        now = clock.now()
        until = now + (exc.retry_after or 0.0)
        if exc.code == "rate_limited":
            until = self.rates.back_off(provider, exc.retry_after, now)
        held = self._rate_limited.get(c.rowid, 0) + 1
        if held > RATE_LIMITED_FREE:
            self._rate_limited.pop(c.rowid, None)
            return None
        self._rate_limited[c.rowid] = held
        if exc.code == "rate_limited":
            self._logger(c)(f"Attempt {c.attempts}: {exc.message.rstrip('.')}; {provider} paused until "
                            f"{clock.iso(until)} for every step, this one queued again (not counted as a retry)")
        outcome = Outcome(claim=c, kind="released", started_at=started, ended_at=now, due_at=until,
                          error=exc.message, error_code=exc.code)
        return self._with_call(c, exc, outcome)

    def _feed(self, now: float) -> bool:
        """Batches make their next runs while there is room; True when any was made. (The
        outcomes taken for this turn are settled after it: a feed never skips a settle.)"""
        made = 0
        for feeder in self.feeders:
            try:
                made += feeder.feed(now)
            except StoreError as exc:
                log.warning("could not start the next runs of a batch: %s; trying again", exc.message)
        return made > 0

    # ---- leases, recovery and shutdown ------------------------------------------

    async def _keep_leases(self) -> None:
        interval = max(0.05, min(self.lease_s / 3, 2.0))
        last_recovery = clock.now()
        while True:
            await asyncio.sleep(interval)
            try:
                if self._inflight:
                    asked = list(self._inflight.items())  # steps started while we wait were not asked about
                    held = await self._off_loop(self.store.renew_leases, [(c.rowid, c.epoch) for _, (c, _) in asked],
                                                clock.now() + self.lease_s)
                    for rowid, (c, task) in asked:
                        if (c.rowid, c.epoch) not in held and self._inflight.get(rowid, (None,))[0] is c:
                            log.warning("run %s step %s: lease lost (cancelled or taken over); stopping it",
                                        c.run_id, c.step_id)
                            self._inflight.pop(rowid, None)
                            self._calls.pop(rowid, None)  # whoever took the step settled its call
                            if task is not None:
                                task.cancel()
                if clock.now() - last_recovery >= self.recover_every_s:
                    last_recovery = clock.now()
                    report = await self._off_loop(functools.partial(
                        recovery.requeue_orphans, self.store, own_owner=self.owner, remove_stale=False))
                    if report.requeued:
                        self.wake()
            except Exception:  # noqa: BLE001 - keep renewing; a busy store is not fatal
                log.exception("lease keeper iteration failed")

    async def _shutdown(self) -> None:
        """Hand unfinished steps back to the queue so another process picks them up now."""
        self._stopping = True
        tasks = [t for _, t in self._inflight.values() if t is not None] + list(self._preparers)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for rowid, (c, _) in list(self._inflight.items()):
            now = clock.now()
            self._done.append(Outcome(claim=c, kind="released", started_at=now, ended_at=now))
        self._inflight.clear()
        if self._done:
            outcomes, self._done = self._done, []
            try:
                await self._off_loop(self.store.settle, outcomes, None, clock.now())
            except Exception:  # noqa: BLE001 - recovery will pick them up instead
                log.exception("could not release steps at shutdown")


def _not_billed(exc: BaseException) -> bool:
    """The provider answered with an error status (not a gateway's lost answer), or the
    connection was refused before anything was sent."""
    md = getattr(exc, "metadata", None) or {}
    status = md.get("http_status")
    return bool(md.get("not_sent")) or status is not None and status not in ANSWER_LOST_STATUSES


def _log_write_failure(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a step's log line could not be written", exc_info=future.exception())
