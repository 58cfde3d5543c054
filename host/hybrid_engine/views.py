"""How runs, steps, provider calls and spending read to people: the dicts the host sends
and the command line prints, built from the store's rows.

The service picks the run and reads the rows; nothing here writes.
"""

from __future__ import annotations

import json

from . import clock
from .states import RunStatus

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's runs.list 2 ms
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CUT = 4000


def iso_or_none(ts: float | None) -> str | None:
    """An ISO time for a stored timestamp; None stays None."""
    return clock.iso(ts) if ts is not None else None


def summary_view(s: dict) -> dict:
    total = s["total_steps"] or 0
    done = s["completed_steps"] or 0
    return {
        "id": s["id"],
        "name": s["name"],
        "template": s["template"],
        "status": s["status"],
        "progress": round(100.0 * done / total, 1) if total else 0.0,
        "completed_steps": done,
        "failed_steps": s["failed_steps"],
        "total_steps": total,
        "total_tokens": s["total_tokens"] or 0,
        "total_cost": round(s["total_cost"] or 0.0, 10),
        "unknown_cost_steps": s["unknown_cost_steps"] or 0,
        "budget_usd": s["budget_usd"],
        "error": s["error"],
        "error_code": s["error_code"],
        "createdAt": iso_or_none(s["created_at"]),
        "updatedAt": iso_or_none(s["updated_at"]),
        "page": page_view(s),
    }


def page_view(s: dict) -> dict | None:
    """The page a run was given, {title, url, site, favicon}, or None (a run without one)."""
    if s.get("page_title") is None and s.get("page_url") is None:
        return None
    return {"title": s["page_title"], "url": s["page_url"], "site": s["page_site"], "favicon": s["page_favicon"]}


def run_label(view: dict) -> str:
    """What a run is called where people read it: its page's title, else its workflow."""
    page = view.get("page") or {}
    title = " ".join(str(page.get("title") or "").split())
    return title or view.get("name") or view.get("template") or view.get("id", "")


def _cut(value: Any, limit: int) -> tuple[Any, bool]:
    if isinstance(value, str):
        if len(value) > limit:
            return value[:limit], True
        return value, False
    if isinstance(value, dict):
        out, cut = {}, False
        for k, v in value.items():
            out[k], c = _cut(v, limit)
            cut = cut or c
        return out, cut
    if isinstance(value, list):
        out_l, cut = [], False
        for v in value:
            nv, c = _cut(v, limit)
            out_l.append(nv)
            cut = cut or c
        return out_l, cut
    return value, False



def run_document(store, run_id: str, *, cut: int | None = DEFAULT_CUT) -> dict:
    """The whole run as one document (`runs.get`, `show`): steps, calls, metrics; cut=None keeps outputs whole."""
    run = store.run_row(run_id)
    summary = store.run_summary(run_id)
    steps = store.step_rows(run_id)
    outputs = store.outputs(run_id)
    logs = store.logs(run_id)
    calls: dict[str, list[dict]] = {}
    for call in store.calls(run_id):
        calls.setdefault(call["step_id"], []).append(call_view(call))
    docs = []
    for s in steps:
        md = json.loads(s["metadata"]) if s["metadata"] else {}
        out = outputs.get(s["step_id"])
        truncated = False
        if out is not None and cut is not None:
            out, truncated = _cut(out, cut)
        cost = None if s["price_unknown"] else (s["cost"] if s["cost"] is not None else 0.0)
        estimated = cost is not None and md.get("cost_estimated") is True
        doc = {
            "id": s["step_id"],
            "name": s["name"],
            "action": s["action"],
            "params": json.loads(s["params"]),
            "dependencies": json.loads(s["deps"]),
            "status": s["status"],
            "outputs": out,
            "error": s["error"],
            "logs": [line for _, line in logs.get(s["step_id"], [])],
            "startTime": iso_or_none(s["started_at"]),
            "endTime": iso_or_none(s["ended_at"]),
            "duration": (s["duration_ms"] / 1000.0) if s["duration_ms"] is not None else None,
            "metadata": md,
            "execution_metrics": {
                "tokens": s["tokens"] or 0,
                "prompt_tokens": s["prompt_tokens"] or 0,
                "completion_tokens": s["completion_tokens"] or 0,
                "cost": cost,
                "cost_estimated": estimated,
                "model": s["model"],
                "duration_ms": s["duration_ms"],
                "attempts": s["attempts"],
                "retries": s["error_count"],
                "crash_recoveries": s["crash_count"],
            },
        }
        step_calls = calls.get(s["step_id"])
        if step_calls:
            doc["calls"] = step_calls
            lost = [c for c in step_calls if c["state"] in ("unconfirmed", "discarded")]
            doc["execution_metrics"]["provider_calls"] = len(step_calls)
            doc["execution_metrics"]["unconfirmed_calls"] = len(lost)
            if lost:
                doc["execution_metrics"]["unconfirmed_cost_max"] = _bound(lost)
        if s["error_code"]:
            doc["error_code"] = s["error_code"]
        if s["external"]:
            doc["external"] = True
        if truncated:
            doc["outputs_truncated"] = True
        warnings = step_warnings(md, doc["params"])
        if warnings:
            doc["warnings"] = warnings
        docs.append(doc)
    completed = [s for s in steps if s["status"] == "COMPLETED"]
    metrics = {
        "total_tokens": sum(s["tokens"] or 0 for s in completed),
        "prompt_tokens": sum(s["prompt_tokens"] or 0 for s in completed),
        "completion_tokens": sum(s["completion_tokens"] or 0 for s in completed),
        "total_cost": round(sum(s["cost"] for s in completed if s["cost"] is not None), 10),
        "unknown_cost_steps": sum(1 for s in completed if s["price_unknown"]),
        "estimated_cost_steps": sum(1 for d in docs if d["status"] == "COMPLETED"
                                    and d["execution_metrics"]["cost_estimated"]),
        "completed_steps": len(completed),
        "unconfirmed_calls": sum(d["execution_metrics"].get("unconfirmed_calls", 0) for d in docs),
        "unconfirmed_cost_max": _bound([c for cs in calls.values() for c in cs
                                        if c["state"] in ("unconfirmed", "discarded")]),
        "failed_steps": sum(1 for s in steps if s["status"] == "FAILED"),
        "total_steps": len(steps),
        "duration_ms": (int((summary["updated_at"] - run["created_at"]) * 1000)
                        if RunStatus(run["status"]).is_terminal else None),
    }
    view = summary_view(summary)
    redacted: dict[str, int] = {}  # personal data replaced before cloud steps, per kind
    for d in docs:
        for kind, n in (d["metadata"].get("redacted") or {}).items():
            redacted[kind] = redacted.get(kind, 0) + n
    return {
        "id": run_id,
        "name": run["name"],
        "template": run["template"],
        "status": run["status"],
        "progress": view["progress"],
        "steps": docs,
        "metrics": metrics,
        "cost_breakdown": store.cost_breakdown(run_id),
        "cost_by_provider": store.cost_by_provider(run_id),
        "error": run["error"],
        "error_code": run["error_code"],
        "budget_usd": run["budget_usd"],
        "redacted": redacted,
        "createdAt": iso_or_none(run["created_at"]),
        "updatedAt": iso_or_none(summary["updated_at"]),
        "page": view["page"],
    }


def spend_view(store, budgets, day, month) -> dict:
    """Spent today (since `day`) and this month (since `month`), by provider, next to the budgets."""
    today = store.spend_since(day.timestamp())
    this_month = store.spend_since(month.timestamp())
    lost_today = store.unconfirmed_since(day.timestamp())
    lost_month = store.unconfirmed_since(month.timestamp())
    month_estimated = store.estimated_since(month.timestamp())
    return {
        # Calls that may have been billed without an answer on record: budgets count them
        # at their upper bound, so spend shows them beside the confirmed figures.
        "today_unconfirmed": _unconfirmed_view(lost_today),
        "this_month_unconfirmed": _unconfirmed_view(lost_month),
        "today": round(sum(today.values()), 10),
        "this_month": round(sum(this_month.values()), 10),
        "today_by_provider": today,
        "this_month_by_provider": this_month,
        # Included in the sums above: calls whose provider gave no usable usage, priced
        # from our own token count.
        "today_estimated": round(sum(store.estimated_since(day.timestamp()).values()), 10),
        "this_month_estimated": round(sum(month_estimated.values()), 10),
        "this_month_estimated_by_provider": month_estimated,
        "today_unpriced_steps": store.unpriced_since(day.timestamp()),
        "this_month_unpriced_steps": store.unpriced_since(month.timestamp()),
        "daily_budget_usd": budgets.daily_usd,
        "monthly_budget_usd": budgets.monthly_usd,
        "day_started": day.isoformat(),
        "month_started": month.isoformat(),
    }


def call_view(call: dict) -> dict:
    """A journaled provider call as people read it: what it may have cost and what became of it."""
    return {"attempt": call["attempt"], "state": call["state"], "provider": call["provider"],
            "model": call["model"], "prompt_tokens": call["prompt_tokens"],
            "max_output_tokens": call["max_output_tokens"], "cost_max": call["cost_max"],
            "cost": call["cost"], "sent_at": iso_or_none(call["sent_at"]),
            "settled_at": iso_or_none(call["settled_at"]), "reason": call["reason"]}


def _bound(calls: list[dict]) -> float | None:
    """The most these calls may have cost: a discarded answer at its price, the rest at their
    bound; None when any of them has no known price."""
    total = 0.0
    for c in calls:
        value = c["cost"] if c["state"] == "discarded" else c["cost_max"]
        if value is None:
            return None
        total += value
    return round(total, 10)


def _unconfirmed_view(by_provider: dict[str, dict]) -> dict:
    known = round(sum(v["cost_max_known"] for v in by_provider.values()), 10)
    unknown = any(v["cost_max"] is None for v in by_provider.values())
    return {"calls": sum(v["calls"] for v in by_provider.values()), "cost_max": None if unknown else known,
            "cost_max_known": known,
            "by_provider": {k: {"calls": v["calls"], "cost_max": v["cost_max"]} for k, v in by_provider.items()}}


def step_warnings(md: dict, params: dict) -> list[str]:
    """What a user must know about a step that completed: said where its row is shown."""
    warnings = []
    if md.get("finish_reason") == "length":
        limit = params.get("max_tokens") if isinstance(params, dict) else None
        limit = f" ({limit:,} tokens)" if isinstance(limit, int) and not isinstance(limit, bool) else ""
        warnings.append(f"cut at max_tokens{limit}: the answer is incomplete")
    elif md.get("finish_reason") == "content_filter":
        why = md.get("provider_finish_reason") or "finish_reason: content_filter"
        warnings.append(f"stopped by the provider's content filter ({why}): the answer is empty or incomplete")
    return warnings


__all__ = ["DEFAULT_CUT", "call_view", "iso_or_none", "page_view", "run_document", "run_label", "spend_view", "step_warnings", "summary_view"]
