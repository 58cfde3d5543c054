"""What an action that files a run's result away needs to know about the run so far.

save_note writes it into a note's front matter and webhook into its JSON: the page the run
was made from, the workflow, the models its steps called and what they cost, with the
cost's state said outright ("exact", "estimated" or "unknown"): a call whose price is
unknown makes the run's cost unknown, never $0, and a call whose answer was lost counts
at its upper bound, as estimated.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


def run_facts(store, run_id: str, step_id: str | None = None, *, with_outputs: bool = False) -> dict:
    """{run_id, workflow, name, created_at, page: {title, url, captured_at}, models, cost_usd,
    cost_state, [outputs]} from the completed steps other than `step_id`."""
    run = store.run_row(run_id) or {}
    steps = [s for s in store.step_rows(run_id) if s["step_id"] != step_id]
    completed = [s for s in steps if s["status"] == "COMPLETED"]
    page = {"title": None, "url": None, "captured_at": None}
    slots = [s["step_id"] for s in steps if s["action"] == "capture" or s["external"]]
    captured = store.outputs(run_id, slots)  # the page's outputs hold its whole HTML: read once, not kept
    for step_id in slots:
        out = captured.get(step_id)
        if out:
            page = {"title": out.get("title") or None, "url": out.get("source_url") or None,
                    "captured_at": out.get("captured_at") or None}
            break
    models: list[str] = []
    for s in completed:
        if s["provider"] and s["model"] and s["model"] not in models:
            models.append(s["model"])
    sent = [s for s in completed if s["provider"]]
    known = sum(s["cost"] for s in sent if s["cost"] is not None)
    unknown = any(s["price_unknown"] for s in sent)
    estimated = any(json.loads(s["metadata"] or "{}").get("cost_estimated") is True for s in sent)
    lost = store.unconfirmed_since(0.0, run_id)
    if lost:
        estimated = True
        for v in lost.values():
            if v.get("cost_max") is None:
                unknown = True
            known += v.get("cost_max_known") or 0.0
    state = "unknown" if unknown else "estimated" if estimated else "exact"
    facts = {
        "run_id": run_id,
        "workflow": run.get("template"),
        "name": run.get("name"),
        "created_at": _iso(run.get("created_at")),
        "page": page,
        "models": models,
        "cost_usd": None if unknown else round(known, 10),
        "cost_state": state,
    }
    if with_outputs:
        wanted = [s["step_id"] for s in completed if s["step_id"] not in slots]
        facts["outputs"] = store.outputs(run_id, wanted)
    return facts


def cost_text(facts: dict) -> str:
    """The run's cost as a person reads it (money.py's rule), its state said when not exact."""
    from .money import usd

    if facts["cost_state"] == "unknown":
        return "unknown"
    text = usd(facts["cost_usd"])
    return f"~{text} (estimated)" if facts["cost_state"] == "estimated" else text


__all__ = ["cost_text", "run_facts"]
