"""The executor's side of a model call (mixed into Executor): its fallback models, its
provider's pacing, and how a failed call is settled in the journal.

Pacing waits for a provider's requests- and tokens-per-minute buckets (ratelimit.py) right
before a call is journaled; a 429 pauses the provider for every step and hands the step
back to the queue without counting an error. Fallbacks (fallbacks.py holds their order and
rules) run inside the step's one attempt, each failed choice's call settled before the next
is journaled. Kept apart from executor.py, which claims, runs and settles every step.
"""

from __future__ import annotations

import asyncio

from . import clock, fallbacks
from .adapters import load_action
from .adapters.base import CallNotSent
from .errors import StepBudgetExceeded, TransientStepError
from .store import Outcome

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .adapters.base import StepContext, StepResult
    from .store import Claimed

# A 429, or a provider paused by one, hands the step back to the queue without counting an
# error, up to this many times in a row; a provider that keeps refusing past that (a quota
# it calls a rate limit) then uses up the step's retries as any transient error does.
RATE_LIMITED_FREE = 50
MAX_PACING_WAIT_S = 2.0  # a longer wait for a provider's bucket hands the step back instead
PACING_CODES = frozenset({"rate_limited", "provider_paused"})
# Statuses that a proxy or gateway in between sends when the provider's answer did not reach
# it in time: the provider may still have run, and billed, the request.
ANSWER_LOST_STATUSES = frozenset({408, 502, 504})


class ModelCalls:
    """Needs the executor's store, pid, rates, guards, _calls, _starts, _rate_limited,
    _guard_turn, _off_loop and _logger."""

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

    async def _run_action(self, c: Claimed, action, params: dict, ctx: StepContext,
                          timeout: float) -> StepResult:
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

    # ---- provider pacing (ratelimit.py) --------------------------------------------

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


def _not_billed(exc: BaseException) -> bool:
    """The provider answered with an error status (not a gateway's lost answer), or the
    connection was refused before anything was sent."""
    md = getattr(exc, "metadata", None) or {}
    status = md.get("http_status")
    return bool(md.get("not_sent")) or status is not None and status not in ANSWER_LOST_STATUSES


__all__ = ["ModelCalls", "PACING_CODES"]
