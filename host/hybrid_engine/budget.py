"""Budgets: a model step that would start past a budget does not start.

Three budgets, each checked just before a model step starts (the executor's guard):

    run      runs.budget_usd (the template's `budget_usd`, or `run --budget`)
    daily    [budgets] daily_usd in config.toml, against spend since local midnight
    monthly  [budgets] monthly_usd, against spend since the 1st of the local month

A step starts only if, for every budget that applies,

    spent (completed steps' known costs, plus the upper bound of every call that may
           have been billed without an answer on record: the journal's unconfirmed calls)
    + what this process's steps still running may cost (their estimated cost_max)
    + this step's estimated cost_max (whole prompt, max_tokens of answer)
    <= the budget.

Otherwise the step FAILS with code `budget_exceeded` before any request is sent, and
the message carries the figures; the run then ends FAILED with that code. The check is
conservative: cost_max assumes the answer uses all of max_tokens (so set `max_tokens`
on a step to keep its bound tight). Steps running in other processes are counted once
they complete, not while they run.

A price that is unknown cannot be held to a budget. By default such a step is refused
under a budget, with a message saying how to price the model (`[prices."<model>"]`)
or to let it through (`[budgets] unknown_price = "allow"`: it runs, and its cost is
not counted). Without any budget, unknown prices run as usual. Free steps (local
models, cost_max 0) always start.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

from . import clock, money, pricing, tokens
from .config import ConfigError, load_config
from .errors import PermanentStepError, StepBudgetExceeded, StepError

log = logging.getLogger(__name__)

UNKNOWN_PRICE_POLICIES = ("refuse", "allow")


def budget_settings(conf: dict) -> tuple[float | None, float | None, str]:
    """(daily_usd, monthly_usd, unknown_price) from config.toml's [budgets], checked: a budget
    of nan or below zero is a ConfigError naming the key, never a budget nothing crosses."""
    from . import settings

    b = settings.budgets(conf)
    return b.daily_usd, b.monthly_usd, b.unknown_price


def _cheap_cost_max(action: Any, params: dict, conf: dict) -> float | None:
    """An upper bound on a step's cost without tokenizing: one token per UTF-8 byte at most."""
    provider = action.spec.provider
    model = params.get("model")
    if not isinstance(model, str) or not isinstance(params.get("prompt"), str):
        return None
    system = params.get("system") if isinstance(params.get("system"), str) else ""
    bound = tokens.max_tokens_bound(params["prompt"]) + tokens.max_tokens_bound(system) + 16
    max_out = params.get("max_tokens")
    if not isinstance(max_out, int) or max_out < 1:
        max_out = tokens.model_limits(model, provider, conf).max_output_tokens
    return pricing.price(model, provider, pricing.Usage(bound, max_out), config=conf).usd


def _estimate(action: Any, params: dict) -> dict:
    try:
        return action.estimate(params) or {}
    except StepError:
        raise  # bad params: the step fails with the action's own message, nothing is sent
    except Exception:  # noqa: BLE001 - an estimate bug must not start a paid call unchecked
        log.exception("estimate failed for action %s", getattr(action.spec, "name", "?"))
        return {"price_unknown": True, "cost_max": None}


def _describe(est: dict) -> str:
    parts = []
    if est.get("model"):
        parts.append(str(est["model"]))
    if est.get("prompt_tokens") is not None:
        parts.append(f"~{est['prompt_tokens']:,} prompt tokens")
    if est.get("max_output_tokens"):
        parts.append(f"up to {est['max_output_tokens']:,} output tokens")
    return f" ({', '.join(parts)})" if parts else ""


class _Reservations:
    """What this process's running model steps may still cost: (run_id, step_id) -> USD.

    A step let through on the cheap bound is reserved at that bound, and refined to its
    estimated cost_max only when a later check comes close to a budget.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], list] = {}  # key -> [usd, refine() or None]

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, key: tuple[str, str], usd: float, refine: Callable[[], float] | None = None) -> None:
        self._items[key] = [usd, refine]

    def discard(self, key: tuple[str, str]) -> None:
        self._items.pop(key, None)

    def keep_only(self, live: set[tuple[str, str]]) -> None:
        for k in [k for k in self._items if k not in live]:
            del self._items[k]

    def total(self, run_id: str | None = None) -> float:
        return sum(v[0] for k, v in self._items.items() if run_id is None or k[0] == run_id)

    def refine(self) -> bool:
        """Replace cheap bounds with estimates; True if anything changed."""
        changed = False
        for item in self._items.values():
            if item[1] is not None:
                try:
                    usd = item[1]()
                except Exception:  # noqa: BLE001 - keep the (higher) cheap bound
                    usd = None
                if usd is not None and usd < item[0]:
                    item[0] = usd
                item[1] = None
                changed = True
        return changed


def budget_guard(store) -> Callable:
    """The executor guard: raises StepBudgetExceeded for a model step that would cross a budget."""
    reserved = _Reservations()

    def guard(claim, params: dict, action) -> None:
        spec = getattr(action, "spec", None)
        if spec is None or spec.provider is None:
            return
        key = (claim.run_id, claim.step_id)
        reserved.discard(key)
        try:
            conf = load_config()
            daily, monthly, policy = budget_settings(conf)
        except ConfigError as exc:
            raise PermanentStepError(f"budgets could not be read, so no model step starts: {exc}",
                                     code="bad_config") from exc
        # Read at every model step, never cached: `retry --budget` may change it from any process.
        per_run = store.run_budget(claim.run_id)
        if per_run is None and daily is None and monthly is None:
            return

        # Steps that finished since the last check are in the spend now; forget their reservation.
        if reserved:
            reserved.keep_only({(r.run_id, r.step_id) for r in store.running_steps()})

        checks: list[tuple[str, float, float, str | None]] = []  # label, limit, spent, run scope
        if per_run is not None:
            checks.append(("run budget", per_run, (store.run_cost(claim.run_id) or 0.0)
                           + store.unconfirmed_cost(run_id=claim.run_id), claim.run_id))
        if daily is not None or monthly is not None:
            day_start, month_start = clock.period_starts()
            if daily is not None:
                checks.append(("daily budget ([budgets] daily_usd)", daily,
                               sum(store.spend_since(day_start).values()) + store.unconfirmed_cost(day_start), None))
            if monthly is not None:
                checks.append(("monthly budget ([budgets] monthly_usd)", monthly,
                               sum(store.spend_since(month_start).values()) + store.unconfirmed_cost(month_start),
                               None))

        def over(cost: float) -> tuple[str, float, float, float] | None:
            for label, limit, spent, scope in checks:
                pending = reserved.total(scope)
                if spent + pending + cost > limit + 1e-12:
                    return label, limit, spent, pending
            return None

        # Most steps are far below every budget: a bound without tokenizing settles them.
        cheap = _cheap_cost_max(action, params, conf)
        if cheap is not None and over(cheap) is None:
            reserved.add(key, cheap, lambda: _estimate(action, params).get("cost_max"))
            return

        est = _estimate(action, params)
        cost_max = est.get("cost_max")
        if est.get("price_unknown") or cost_max is None:
            model = est.get("model") or params.get("model")
            label, limit = checks[0][0], checks[0][1]
            if policy == "allow":
                store.append_log(claim.run_id, claim.step_id, clock.now(),
                                 f"Price of {model} unknown: started anyway under the {label} of "
                                 f"{money.usd_budget(limit)} ([budgets] unknown_price = \"allow\"); "
                                 "its cost is not counted")
                return
            raise StepBudgetExceeded(
                f"Not started: the price of {model} is unknown, so this step cannot be held to the "
                f"{label} of {money.usd_budget(limit)}. Price it in config.toml ([prices.\"{model}\"] "
                "input_per_mtok and output_per_mtok), or let such steps run with "
                "[budgets] unknown_price = \"allow\".",
                metadata={"provider": spec.provider, "model": model, "estimate": est,
                          "budget": {"kind": label.split()[0], "limit_usd": limit}})
        if cost_max <= 0:
            return
        crossing = over(cost_max)
        if crossing is not None and reserved.refine():
            crossing = over(cost_max)
        if crossing is not None:
            label, limit, spent, pending = crossing
            running_part = f", steps still running may cost up to {money.usd(pending)}" if pending else ""
            bound_hint = "" if params.get("max_tokens") else \
                " Setting `max_tokens` on the step lowers its upper bound."
            if label == "run budget":
                enough = math.ceil((spent + pending + cost_max) * 100) / 100
                bound_hint += f" To go on: hybrid-engine retry {claim.run_id} --budget {enough:.2f}"
            raise StepBudgetExceeded(
                f"Not started: {label} {money.usd_budget(limit)}: spent {money.usd(spent)}{running_part}, "
                f"this step may cost up to {money.usd(cost_max)}{_describe(est)}.{bound_hint}",
                metadata={"provider": spec.provider, "model": est.get("model") or params.get("model"),
                          "estimate": est,
                          "budget": {"kind": label.split()[0], "limit_usd": limit, "spent_usd": spent,
                                     "running_usd": pending, "step_cost_max_usd": cost_max}})
        reserved.add(key, cost_max)

    return guard


__all__ = ["budget_guard", "budget_settings", "UNKNOWN_PRICE_POLICIES"]
