"""Runs queued steps: claim, render, execute, settle; retries, limits, leases.

One loop iteration settles every finished step and claims the next batch in a
single transaction, so a chain of steps costs about one commit per step and a fan-out
less than that; a chain of pure inline steps settles up to LINKS_PER_COMMIT links per
commit (_settle_here). Deterministic actions that cannot block run inline; model calls
run as tasks, CPU-heavy actions in threads.

The event loop carries model calls that are in flight, so it never waits on SQLite (a
busy database holds a query for up to the 10 s busy timeout) or on tokenising a prompt:
the store calls run on the executor's one store thread (in order, so a step's log lines
land before its result), and the steps of a claimed batch that run as tasks have their
params rendered and their budgets checked in a worker thread, in claim order, before any
of them starts (as one pass: the budget sees the whole batch, and a fan-out of model
steps costs one thread hop). One path stays on the loop, because a thread hop per step
would cost a chain of cheap steps more than its commit: settling the results of inline
steps and claiming the next ones, when nothing else is waiting for the store thread.
A trip to the store thread costs a fifth to a third of a millisecond here (two thread
wake-ups), so a run's start makes one (imports, the batches' first runs, the first claim)
and its end one (is anything left anywhere?), and the closing drain is skipped when nothing
sent to the store thread is still waiting.

The loop, the claim, the execution and the settle share the in-flight table and the store
thread, and their order is the engine's correctness (a step is settled once, a lease is kept
while it runs), so they stay together here, in one file. Around them: retry arithmetic and limits
(steplimits.py), steps that grow parts (growth.py), a model call's pacing, fallbacks and
journal settling (modelcalls.py), and the batches' feeders (batchfeed.py, passed in).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import uuid
from typing import Any, Callable

from . import clock, dag, fanout, heap, procs, recovery, runfacts
from .adapters import SPECS, load_action
from .adapters.base import CallNotSent, StepContext, StepResult, SyncAction
from .errors import (PermanentStepError, StepBudgetExceeded, StepError, StoreCorrupt, StoreError,
                     TransientStepError)
from .growth import GrowingSteps
from .modelcalls import PACING_CODES, ModelCalls
from .ratelimit import RateLimiter
from .steplimits import Limits, RetryPolicy
from .store import Claimed, ClaimRequest, Outcome, Store

log = logging.getLogger(__name__)


FEED_EVERY_S = 0.05  # how often batches with room get their next runs made
INLINE_BATCH = 48  # inline steps claimed per commit beyond the concurrency slots
QUEUE_PROBE_EVERY_S = 0.01  # while a chain continues, how often the queue is still looked at
LINKS_PER_COMMIT = 32  # links of a chain of pure inline steps computed ahead and settled in one commit (_settle_here)
AHEAD_FOR_S = 0.005  # and computed ahead for at most this long: steps that read a large page take ms each

Guard = Callable[[Claimed, dict, Any], None]  # raises StepBudgetExceeded (or another StepError) to stop a start


class Executor(GrowingSteps, ModelCalls):
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
        # The newest errand sent to the store thread (its queue is first in, first out): done,
        # and so is everything sent before it.
        self._last_sent: concurrent.futures.Future | None = None
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
        self._plain_request = ClaimRequest(self.owner, self.pid, self.start_ticks, self._host, 0.0, 0, (), (),
                                           self._limited_actions, self._limited_providers, self._inline_actions,
                                           INLINE_BATCH)
        # Actions that run on the loop at once (deterministic, cannot block), by name, once
        # loaded: _start's short way for each link of a chain of them.
        self._inline_ready: dict[str, SyncAction] = {}
        # _settle_here: the run and results of the steps computed ahead, not yet written, that
        # the step being computed may read; and the runs with a crash on record (a step apiece).
        self._ahead: tuple[str, dict[str, str]] | None = None
        self._step_by_step: dict[str, None] = {}  # runs with a crash on record, oldest first
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
        heap.limit_arenas()  # before the step threads start (heap.py says why)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._guard_turn = asyncio.Lock()
        self._stopping = False
        self._store_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="executor-store")
        self._last_sent = None
        drained = False
        try:
            # On the store thread, whose connection the loop needs next anyway: a thread and a
            # connection of their own would cost a short run more than its steps.
            now = clock.now()
            self._start_claimed(await self._off_loop(self._start_up, self._claim_request(now), now))
            keeper = asyncio.create_task(self._keep_leases(), name="lease-keeper")
            try:
                await self._main(until_idle, linger_s)
            finally:
                keeper.cancel()
                await self._shutdown()
            drained = self._last_sent is None or self._last_sent.done()
        finally:
            pool, self._store_thread = self._store_thread, None
            # The thread's connection is closed by the thread, last. Left to the garbage collector
            # (sqlite3 keeps it in a reference cycle), it closed at some later collection, in the
            # middle of other work: 9-12 ms when it was the file's last connection (its close
            # checkpoints the log into the file).
            pool.submit(self.store.close)
            try:
                if not drained:  # log lines and whatever else is still queued go first
                    await self._loop.run_in_executor(pool, _nothing)
            except asyncio.CancelledError:
                pool.shutdown(wait=False)  # what is queued is still written, without holding up the loop
                raise
            # All that is left is the close, so joining the thread here takes next to no time
            # (asyncio.to_thread would start another thread to wait for this one).
            pool.shutdown()

    async def _off_loop(self, fn: Callable, *args) -> Any:
        """fn(*args) on the store thread, awaited without holding up the loop. (What a task
        cancelled meanwhile sent, a lease renewal say, still runs: the drain at the end waits.)"""
        self._last_sent = sent = self._store_thread.submit(fn, *args)
        return await asyncio.wrap_future(sent)

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
            now = clock.now()
            req = self._claim_request(now)
            on_loop = bool(outcomes) and not (self._task_done or self._logged or self._settle_failed)
            self._task_done = self._logged = False
            self._settle_failed = bool(outcomes)  # until the settle below returns: a busy store is retried off the loop
            if self.feeders and now - self._last_feed >= FEED_EVERY_S:
                self._last_feed = now
                await self._off_loop(self._feed, now)  # the new runs' first steps are claimed below
            try:
                if on_loop:
                    applied, claimed = self._settle_here(outcomes, req, now)
                elif outcomes:
                    applied, claimed = await self._off_loop(store.settle, outcomes, req, now)
                else:  # whether anything is ready and, if so, its claim: one trip to the store thread
                    applied, claimed = await self._off_loop(self._claim_ready, req, now)
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
            self._start_claimed(claimed)
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

    def _settle_here(self, outcomes: list[Outcome], req: ClaimRequest, now: float) -> tuple[list[bool], list[Claimed]]:
        """settle() on the loop; for a chain link, the pure inline steps after it are computed
        first (up to LINKS_PER_COMMIT - 1 of them) and all of them settle in one commit.

        They are computed before they are claimed, with their params rendered from the results
        in hand, then claimed and settled in one transaction. So the write lock is held for the
        SQL alone, and another process waiting to write waits less than with a commit per step
        (bench/writer_wait.py: its 99th percentile 0.3-0.44x, while the chains do 1.6-1.7x the
        steps); computed inside the transaction, they made its median wait 30 times longer.

        Safe because those actions are pure and deterministic (no side effect, provider or log
        line): a claim that fails throws a result away, and a crash loses results that recovery
        computes again to the same values. A crash while one of them is computed is blamed on
        the step the run has RUNNING, the one before it: so a run with a crash on record goes a
        commit per step (_start marks it), and its next crash is blamed where it belongs. A join
        is not computed ahead: its other dependencies may complete between its computation and
        its claim. A computed step is claimed at the time its computation began, so that it
        does not end before it started; one thrown away is not counted in `executed`."""
        o = outcomes[0]
        store = self.store
        if len(outcomes) != 1 or req.probe_queue or o.claim.run_id in self._step_by_step:
            return store.settle(outcomes, req, now)
        group = store.links()
        ahead = None if group is None else store.look_ahead(o, req)
        if ahead is None:  # not a link, or no group on this thread: settle() would find the same
            return store.settle(outcomes, req, now, as_link=False)
        chain, aheads, results, starts, counted = [o], [ahead], {}, [now], [0]
        inline_ready = self._inline_ready
        until = clock.now() + AHEAD_FOR_S
        while len(chain) < LINKS_PER_COMMIT and clock.now() < until:
            nxt = ahead[0]
            action = inline_ready.get(nxt.action)
            if action is None or ahead[1][14] or nxt.crash_count:
                break
            results[chain[-1].claim.step_id] = ahead[2]
            self._ahead = (nxt.run_id, results)
            executed, started = self.executed, clock.now()
            try:
                computed = self._inline_outcome(nxt, action, started)
            finally:
                self._ahead = None
            chain.append(computed)
            starts.append(started)
            counted.append(self.executed - executed)
            if self._logged:  # its line lands before its result: it settles the general way, off the loop
                break
            ahead = store.look_ahead(computed, req)
            if ahead is None:
                break
            aheads.append(ahead)
        claimed = leftover = None
        settled = 0  # chain[:settled] written, chain[settled] claimed
        try:
            with group:
                for i, (done, known) in enumerate(zip(chain, aheads)):
                    if i:
                        done.claim = claimed  # the row as just claimed: the values it was computed with
                    nxt = group.settle(done, req, starts[i + 1] if i + 1 < len(starts) else clock.now() if i else now,
                                       known)
                    if nxt is None:
                        leftover = done if i else None  # claimed above, so it settles the general way
                        break
                    claimed, settled = nxt, i + 1
                else:
                    if len(chain) > len(aheads):  # the last one computed is not a link: the general way
                        chain[-1].claim, leftover, claimed = claimed, chain[-1], None
        except BaseException:
            self.executed -= sum(counted)  # rolled back (a busy store): `o` alone is settled again
            raise
        # Computed, neither written nor claimed: thrown away (a later claim computes them again).
        self.executed -= sum(counted[settled + 1:])
        if not group.n:
            return store.settle(outcomes, req, now, as_link=False)
        if leftover is not None:
            self._done.append(leftover)
            return [True], []
        return [True], [claimed]

    def _one_by_one(self, run_id: str) -> None:
        """The run's chain links settle a commit per step from now on (see _settle_here)."""
        marked = self._step_by_step
        if len(marked) >= 10_000:
            del marked[next(iter(marked))]  # the oldest mark
        marked[run_id] = None

    def _nothing_left(self) -> bool:
        """Nothing queued and nothing running anywhere. Steps RUNNING under an owner that is
        gone are handed back to the queue here, so until_idle does not wait out their lease."""
        if self.store.has_queued() or any(f.pending() for f in self.feeders):
            return False
        if self.store.has_running():
            recovery.requeue_orphans(self.store, own_owner=self.owner, remove_stale=False)
            return False
        return True

    def _claim_ready(self, req: ClaimRequest, now: float) -> tuple[list[bool], list[Claimed]]:
        """A claim when something is due: a look at the queue alone takes no write lock."""
        if not self.store.has_ready(now):
            return [], []
        return self.store.settle([], req, now)

    def _start_up(self, req: ClaimRequest, now: float) -> list[Claimed]:
        """The store thread's first errand, one trip: imports, the batches' first runs made,
        and the first claim (a store too busy for it leaves that to the loop's first turn)."""
        self._preload()
        if self.feeders:
            self._last_feed = now
            self._feed(now)
        now = clock.now()  # after the imports: the lease counts from the claim
        req.lease_until = now + self.lease_s
        try:
            return self._claim_ready(req, now)[1]
        except StoreCorrupt:
            raise
        except StoreError as exc:
            log.warning("store unavailable for the first claim: %s; trying again", exc.message)
            return []

    def _start_claimed(self, claimed: list[Claimed]) -> None:
        for c in claimed:
            self._start(c)
        if self._to_prepare:
            batch, self._to_prepare = self._to_prepare, []
            preparer = asyncio.create_task(self._prepare(batch), name="prepare-steps")
            self._preparers.add(preparer)
            preparer.add_done_callback(self._preparers.discard)

    def _preload(self) -> None:
        """Import what the open runs will need before claiming anything, so that a claimed
        step starts at once: a process killed while importing an SDK holds no claim."""
        for action in self.store.open_actions():
            if action in SPECS and not SPECS[action].input_slot:
                try:
                    load_action(action)
                except Exception:  # noqa: BLE001 - the step reports it when it runs
                    log.exception("could not load action %s", action)

    def _claim_request(self, now: float) -> ClaimRequest:
        lim = self.limits
        probe = now - self._last_probe >= QUEUE_PROBE_EVERY_S
        if probe:
            self._last_probe = now
        paused = self.rates.blocked(now)
        if not (self._inflight or lim.per_action or lim.per_provider or paused):
            # Nothing running, no group with a limit, no provider paused: the request differs
            # from the last one only in its times (asked at every link of a chain).
            req = self._plain_request
            req.lease_until, req.limit, req.probe_queue = now + self.lease_s, lim.concurrency, probe
            return req
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
        if paused:  # their steps stay queued until the provider may be sent to again
            ex_providers = [*ex_providers, *paused]
        return ClaimRequest(self.owner, self.pid, self.start_ticks, self._host, now + self.lease_s,
                            max(0, free), ex_actions, ex_providers, self._limited_actions, self._limited_providers,
                            self._inline_actions, INLINE_BATCH, probe)

    # ---- one step ---------------------------------------------------------------

    def _start(self, c: Claimed) -> None:
        started = clock.now()
        if c.crash_count:
            self._one_by_one(c.run_id)
        action = self._inline_ready.get(c.action)
        if action is not None:
            return self._run_inline(c, action, started)
        spec = SPECS.get(c.action)
        try:
            if spec is None:
                raise PermanentStepError(f"unknown action '{c.action}'", code="unknown_action")
            if spec.input_slot:
                raise PermanentStepError("a capture slot is filled by a capture or `ingest`, not executed",
                                         code="not_executable")
            if c.action == fanout.FOR_EACH:  # grows its parts, or gathers their outputs (growth.py)
                return self._done.append(self._for_each(c, started))
            action = load_action(c.action)
        except Exception as exc:  # noqa: BLE001 - becomes the step's error
            self._done.append(self._failure(c, exc, started))
            return
        if spec.inline and spec.provider is None and isinstance(action, SyncAction):
            self._inline_ready[c.action] = action
            return self._run_inline(c, action, started)
        ctx = self._context(c, spec)
        timeout = c.timeout_s or spec.default_timeout_s
        params_ready = self._loop.create_future()
        self._to_prepare.append((c, action, params_ready))
        task = asyncio.create_task(self._execute(c, action, params_ready, ctx, timeout, started),
                                   name=f"step:{c.run_id}:{c.step_id}")
        self._inflight[c.rowid] = (c, task)

    def _run_inline(self, c: Claimed, action: SyncAction, started: float) -> None:
        """A deterministic step that cannot block runs here, on the loop, params and all: a
        chain of them settles on the loop too (the module docstring says when)."""
        self._done.append(self._inline_outcome(c, action, started))

    def _inline_outcome(self, c: Claimed, action: SyncAction, started: float) -> Outcome:
        try:
            params = self._render(c)
        except Exception as exc:  # noqa: BLE001 - becomes the step's error
            return self._failure(c, exc, started)
        self.executed += 1
        try:
            return self._success(c, action.compute(params, self._context(c, action.spec)), started)
        except Exception as exc:  # noqa: BLE001
            return self._failure(c, exc, started)

    def _context(self, c: Claimed, spec) -> StepContext:
        ctx = StepContext(c.run_id, c.step_id, c.action, c.attempts, self._logger(c))
        if spec.provider is not None:
            ctx.journal = self._journal_for(c)
        if spec.run_facts:
            ctx.run_facts = functools.partial(runfacts.run_facts, self.store, c.run_id, c.step_id)
        return ctx

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
                if params.get("on_overflow") == "map_reduce":
                    self._check_overflow(c, params)  # raises fanout.Expand: the step maps and reduces
                if action.spec.provider is not None:
                    self._guard_step(c, params, action)
                results.append(params)
            except Exception as exc:  # noqa: BLE001 - becomes the step's error
                results.append(exc)
        return results

    def _logger(self, c: Claimed) -> Callable[[str], None]:
        return functools.partial(self._log_line, c.run_id, c.step_id)

    def _log_line(self, run_id: str, step_id: str, line: str) -> None:
        """ctx.log: the line goes to the store thread (called from the loop or from an action's
        own thread alike); only when no executor runs is it written where it is called."""
        pool, args = self._store_thread, (run_id, step_id, clock.now(), line)
        if pool is not None:
            try:
                # A local: another thread may send its line (and replace _last_sent) in between.
                self._last_sent = sent = pool.submit(self.store.append_log, *args)
                sent.add_done_callback(_log_write_failure)
                self._logged = True
                return
            except RuntimeError:  # the pool has shut down: this thread writes it
                pass
        self.store.append_log(*args)

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
        ahead = self._ahead
        if ahead is not None and ahead[0] == c.run_id:
            for step_id in wanted:
                written = ahead[1].get(step_id)
                if written is not None:
                    outputs[step_id] = json.loads(written)
        spec = SPECS[c.action]
        literal = {k: params.pop(k) for k in spec.literal_params if k in params}  # never filled by data
        try:
            return {**dag.render_params(params, dag.make_lookup(outputs, run), spec.path_params,
                                        f"{c.run_id}/{c.step_id}"), **literal}
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
        outcome = Outcome(c, "completed", started, ended, result.outputs, md)
        if self._calls:
            call_id = self._calls.pop(c.rowid, None)
            if call_id is not None:
                outcome.call_id, outcome.call_state = call_id, "answered"
                outcome.call_cost = md.get("cost") if md else None
        return outcome

    def _failure(self, c: Claimed, exc: BaseException, started: float) -> Outcome:
        if isinstance(exc, fanout.Expand):  # not a failure: the step grows parts and waits for them
            return self._expanded(c, exc, started)
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

    # ---- batches -------------------------------------------------------------------

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


def _nothing() -> None:
    """Queued behind everything already sent to the store thread: awaiting it waits for them."""


def _log_write_failure(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a step's log line could not be written", exc_info=future.exception())
