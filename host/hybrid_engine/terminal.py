"""How results read in a terminal: the tables, ranges and phrases the `hybrid-engine` commands print.

Kept apart from cli.py so that the commands stay a thin shell over service.py and one place
decides how a run, an estimate or the spend reads (money through money.py, never $0 for a
price that is unknown).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from . import money
from .states import RunStatus, StepStatus

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def err(message: str) -> None:
    """Progress and errors go to stderr, so stdout carries only results."""
    sys.stderr.write(f"hybrid-engine: {message}\n")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def progress_line(summary: dict) -> str:
    """One line of `run --wait` progress: a bar, steps, tokens, cost so far and the status."""
    total, done = summary["total_steps"], summary["completed_steps"]
    width = 24
    filled = int(width * done / total) if total else 0
    bar = "#" * filled + "." * (width - filled)
    cost = money.usd(summary["total_cost"]) + ("+?" if summary["unknown_cost_steps"] else "")
    return (f"[{bar}] {done}/{total} steps  {summary['total_tokens']:,} tokens  {cost}  "
            f"{summary['status']}")


def age(iso: str | None) -> str:
    if not iso:
        return "-"
    from datetime import datetime

    seconds = max(0, time.time() - datetime.fromisoformat(iso).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def print_run_table(doc: dict) -> None:
    rows = []
    for s in doc["steps"]:
        em = s["execution_metrics"]
        unknown = em["cost"] is None
        is_model = bool(s["metadata"].get("provider") or s["action"].endswith("_chat"))
        cost = money.usd(em["cost"]) if is_model else "-"
        if em.get("cost_estimated") and not unknown:
            cost = f"~{cost} est."
        if s["status"] != StepStatus.COMPLETED and is_model:
            est = s["metadata"].get("estimate") or {}
            cost = f"~{money.usd(est.get('cost_max'))}" if est.get("cost_max") is not None else "-"
        rows.append([s["id"], s["action"], s["status"],
                     f"{s['duration']:.2f}s" if s["duration"] is not None else "-",
                     f"{em['tokens']:,}" if em["tokens"] else "-", cost,
                     em["model"] or s["metadata"].get("model") or "-",
                     "; ".join(f"! {w.split(':')[0]}" for w in s.get("warnings") or ())])
    m = doc["metrics"]
    total_cost = run_cost(m["total_cost"], m["unknown_cost_steps"])
    if m.get("estimated_cost_steps"):
        total_cost = f"~{total_cost} est."
    rows.append(["total", "", doc["status"], f"{(m['duration_ms'] or 0) / 1000:.2f}s", f"{m['total_tokens']:,}",
                 total_cost, "", ""])
    print(f"run {doc['id']} ({doc['template']}): {doc['status']}")
    print(table(["step", "action", "status", "time", "tokens", "cost", "model", "note"], rows))
    for s in doc["steps"]:
        for warning in s.get("warnings") or ():
            print(f"\nwarning: {s['id']} was {warning}.")
    estimated = [s["id"] for s in doc["steps"] if s["execution_metrics"].get("cost_estimated")]
    if estimated:
        print(f"\n~ est.: {', '.join(estimated)}: the provider reported no usable token usage, so the cost is "
              "estimated from our own count of the prompt and the answer.")
    for s in doc["steps"]:
        lost = s["execution_metrics"].get("unconfirmed_calls")
        if lost:
            print(f"\n{s['id']}: {lost} unconfirmed provider call(s): "
                  f"{unconfirmed_phrase(s['execution_metrics'].get('unconfirmed_cost_max'))}")
    failed = [s for s in doc["steps"] if s["status"] == StepStatus.FAILED and s["error"]]
    for s in failed:
        print(f"\n{s['id']}: {s['error']}")
    if doc["status"] == RunStatus.FAILED:
        print(f"\nResume it once fixed (completed steps are kept, not billed again): hybrid-engine retry {doc['id']}")
    final = final_text(doc)
    if final and doc["status"] == RunStatus.COMPLETED:
        print("\n" + final)


def unconfirmed_phrase(bound: float | None) -> str:
    """Sent, but no answer was recorded (the worker died, the run was cancelled): billed or not."""
    if bound is None:
        return "may have been billed (price unknown)"
    return f"may have been billed up to {money.usd(bound)}"


def final_text(doc: dict) -> str | None:
    for s in reversed(doc["steps"]):
        if s["status"] == StepStatus.COMPLETED and isinstance(s.get("outputs"), dict) and isinstance(
                s["outputs"].get("text"), str) and s["action"] != "capture":
            return s["outputs"]["text"]
    return None


def run_cost(total: float | None, unknown_steps: int) -> str:
    """A run's cost: "unknown" when every priced step's price is unknown, never $0."""
    if not unknown_steps:
        return money.usd(total)
    return "unknown" if not total else f"{money.usd(total)} + unknown"


def cost_range(low: float | None, high: float | None, unknown: bool) -> str:
    if unknown or high is None:
        return "unknown"
    if (low or 0) == high:
        return money.usd(high)
    return f"{money.usd(low or 0)} - {money.usd(high)}"


def print_estimate(est: dict, source: str | None) -> None:
    on = f" on {source}" if source else ""
    print(f"estimate for {est['template']}{on} (offline: no model is called)")
    if not est["steps"]:
        print("no model steps: this template costs nothing")
        return
    rows, notes = [], []
    for e in est["steps"]:
        if e.get("error"):
            rows.append([e["step_id"], e.get("model") or "-", "-", "-", "error"])
            notes.append(f"{e['step_id']}: {e['error']}")
            continue
        tokens = f"{e['prompt_tokens']:,}"
        if e.get("lower_bound"):
            tokens = ">=" + tokens
            notes.append(f"{e['step_id']}: its prompt includes the answer of {', '.join(e['unknown_inputs'])}, "
                         "unknown before the run; the top of its range assumes that answer is as long as allowed")
        elif not e.get("exact", True):
            tokens = "~" + tokens
        rows.append([e["step_id"], e["model"] or "-", tokens, f"{e['max_output_tokens']:,}",
                     cost_range(e["cost_min"], e["cost_max"], e["price_unknown"])])
        if e.get("warning"):
            notes.append(f"{e['step_id']}: {e['warning']}")
        if e["price_unknown"]:
            notes.append(f"{e['step_id']}: no known price for {e['model']} "
                         f"(set [prices.\"{e['model']}\"] in config.toml)")
    total = cost_range(est["total_cost_min"], est["total_cost_max"], False)
    if est["unknown_cost_steps"]:
        total += f" (+{est['unknown_cost_steps']} unknown)"
    rows.append(["total", "", f"{est['total_prompt_tokens']:,}", "", total])
    print(table(["step", "model", "prompt tokens", "max output", "cost"], rows))
    if est.get("budget_usd") is not None:
        verdict = "within it" if est["total_cost_max"] <= est["budget_usd"] and not est["unknown_cost_steps"] \
            else "the run may stop before its last model steps"
        print(f"\nrun budget {money.usd_budget(est['budget_usd'])}: {verdict}")
    for note in notes:
        print(f"note: {note}")
    print("\nThe low end prices the prompt alone; the high end adds a full-length answer "
          "(max output tokens). ~ marks a count made with OpenAI's tokenizer for another provider's model.")


def print_spend(spend: dict) -> None:
    providers = sorted(set(spend["today_by_provider"]) | set(spend["this_month_by_provider"]))
    rows = [[p, money.usd(spend["today_by_provider"].get(p, 0.0)),
             money.usd(spend["this_month_by_provider"].get(p, 0.0))]
            for p in providers]
    rows.append(["total", money.usd(spend["today"]), money.usd(spend["this_month"])])
    print(table(["provider", "today", "this month"], rows))
    if spend.get("this_month_estimated"):
        print(f"of which ~{money.usd(spend['today_estimated'])} today and ~{money.usd(spend['this_month_estimated'])}"
              " this month are estimated from our own token count (the provider reported no usable usage)")
    print()
    for label, key, spent in (("daily", "daily_budget_usd", spend["today"]),
                              ("monthly", "monthly_budget_usd", spend["this_month"])):
        limit = spend.get(key)
        if limit is None:
            print(f"{label} budget: none ([budgets] {label}_usd in config.toml)")
        else:
            left = max(0.0, limit - spent)
            print(f"{label} budget: {money.usd_budget(limit)}, {money.usd(left)} left")
    for label, key in (("today", "today_unconfirmed"), ("this month", "this_month_unconfirmed")):
        lost = spend.get(key) or {}
        if lost.get("calls"):
            print(f"{label}: {lost['calls']} unconfirmed provider call(s) (sent, no answer recorded) "
                  f"{unconfirmed_phrase(lost.get('cost_max'))}; budgets count them at that bound")
    unpriced = spend["this_month_unpriced_steps"]
    if unpriced:
        models = ", ".join(f"{m} ({n})" for m, n in sorted(unpriced.items()))
        print(f"not counted: {sum(unpriced.values())} completed step(s) this month whose price is unknown: {models};"
              " price them with [prices.\"MODEL\"] in config.toml")
    else:
        print("known costs of completed model steps")


def print_findings(findings) -> None:
    for f in findings:
        where = f" [{f.browser}]" if f.browser else ""
        print(f"{f.severity.upper():7} {f.code}{where}: {f.problem}")
        if f.path:
            print(f"        at:  {f.path}")
        print(f"        fix: {f.fix}")
