"""Spend per day, split by provider and by workflow: what the options page draws.

Days are the user's local days (a person's "today" begins at their own midnight, as in
`spend`), oldest first, every day present even when nothing was spent, so a chart's
x axis is the list itself. A day's figures are the known costs; what was priced from our
own token count is also given as `estimated`, and steps whose price is unknown are
counted in `unpriced_steps` (never added as $0). Spend of deleted runs keeps its provider
and is filed under the workflow "(deleted runs)".
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

MAX_DAYS = 366
DELETED_WORKFLOW = "(deleted runs)"


def day_starts(days: int, today: date) -> list[date]:
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def daily_spend(store, days: int = 30, now: datetime | None = None) -> list[dict]:
    """[{date, total, by_provider, by_workflow, estimated, unpriced_steps}] for `days` days up to today."""
    now = (now or datetime.now()).astimezone()
    dates = day_starts(days, now.date())
    first = datetime(dates[0].year, dates[0].month, dates[0].day).astimezone()
    out = {d: {"date": d.isoformat(), "total": 0.0, "by_provider": {}, "by_workflow": {}, "estimated": 0.0,
               "unpriced_steps": 0} for d in dates}
    for ended_at, provider, workflow, cost, estimated, priced in store.spend_rows_since(first.timestamp()):
        day = out.get(datetime.fromtimestamp(ended_at).date())
        if day is None:  # a clock set back: a step "ended" after today
            continue
        if not priced or cost is None:
            day["unpriced_steps"] += 1
            continue
        provider = provider or "unknown"
        workflow = workflow or DELETED_WORKFLOW
        day["total"] += cost
        day["by_provider"][provider] = day["by_provider"].get(provider, 0.0) + cost
        day["by_workflow"][workflow] = day["by_workflow"].get(workflow, 0.0) + cost
        if estimated:
            day["estimated"] += cost
    result = []
    for d in dates:
        day = out[d]
        day["total"] = round(day["total"], 10)
        day["estimated"] = round(day["estimated"], 10)
        day["by_provider"] = {k: round(v, 10) for k, v in sorted(day["by_provider"].items())}
        day["by_workflow"] = {k: round(v, 10) for k, v in sorted(day["by_workflow"].items())}
        result.append(day)
    return result


__all__ = ["DELETED_WORKFLOW", "MAX_DAYS", "daily_spend"]
