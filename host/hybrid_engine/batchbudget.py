"""The batch budget, as an executor guard: a model step of a batch's run starts only if what
the batch spent, what its running steps may still cost and this step's upper bound stay
within it. The first step that would cross stops the whole batch (no further run is made);
the step is not started, so nothing is cut half way. `batch resume --budget` or
`retry_failed` with a higher budget goes on."""

from __future__ import annotations

import logging
from typing import Callable

from . import clock, money
from .errors import StepBudgetExceeded, StepError

log = logging.getLogger(__name__)


def batch_budget_guard(store) -> Callable:
    reserved: dict[tuple[str, str], tuple[str, float]] = {}  # (run, step) -> (batch, usd)

    def guard(claim, params: dict, action) -> None:
        spec = getattr(action, "spec", None)
        if spec is None or spec.provider is None:
            return
        key = (claim.run_id, claim.step_id)
        reserved.pop(key, None)
        found = store.batch_of_run(claim.run_id)
        if found is None or found[1] is None:
            return
        batch_id, limit = found
        if reserved:
            live = {(r.run_id, r.step_id) for r in store.running_steps()}
            for k in [k for k in reserved if k not in live]:
                del reserved[k]
        try:
            est = action.estimate(params) or {}
        except StepError:
            raise
        except Exception:  # noqa: BLE001 - an estimate bug must not start a paid call unchecked
            log.exception("estimate failed for a batch step")
            est = {}
        cost_max = est.get("cost_max")
        if cost_max is None:
            return  # price unknown: [budgets] unknown_price decides (budget.py)
        spent = store.batch_cost(batch_id)
        pending = sum(usd for b, usd in reserved.values() if b == batch_id)
        if spent + pending + cost_max > limit + 1e-12:
            running = f", steps running may cost up to {money.usd(pending)}" if pending else ""
            note = f"stopped by its budget of {money.usd_budget(limit)} (spent {money.usd(spent)}{running})"
            if not params.get("fallback"):  # a step with fallbacks may start a cheaper one instead
                store.set_batch_state(batch_id, "stopped", clock.now(), note, only_from=("running",))
            raise StepBudgetExceeded(
                f"Not started: batch budget {money.usd_budget(limit)}: spent {money.usd(spent)}{running}, this "
                f"step may cost up to {money.usd(cost_max)}. The batch is stopped. To go on: "
                f"hybrid-engine batches {batch_id} --retry-failed --budget USD",
                metadata={"provider": spec.provider, "model": est.get("model"), "estimate": est,
                          "budget": {"kind": "batch", "limit_usd": limit, "spent_usd": spent,
                                     "running_usd": pending, "step_cost_max_usd": cost_max}})
        reserved[key] = (batch_id, cost_max)

    return guard


__all__ = ["batch_budget_guard"]
