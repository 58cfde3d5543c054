"""The `hybrid-engine` command: a thin shell over service.py.

Exit status: 0 success, 1 a run that ended FAILED (only `run --wait`), 2 bad input.
Results go to stdout (one JSON document with --json); progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from . import __version__, money
from .states import RunStatus, StepStatus

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _err(message: str) -> None:
    sys.stderr.write(f"hybrid-engine: {message}\n")


def _page_from_file(path: str | None, content_type_arg: str | None) -> tuple[str | None, str | None]:
    """A page given as --input/--content-file: its text and its content type, --content-type over
    the one the file's name suggests. The type is checked first, so a typo is reported before a
    large file is read; without a file, (None, the checked --content-type or None)."""
    from .service import content_type, read_input_file

    forced = content_type(content_type_arg, field="--content-type") if content_type_arg else None
    if path is None:
        return None, forced
    content, guessed = read_input_file(path)
    return content, forced or guessed


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    from datetime import datetime

    seconds = max(0, time.time() - datetime.fromisoformat(iso).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _usd(text: str) -> float:
    """--budget: a finite number of US dollars >= 0 (nan or -1 would never stop anything)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of US dollars, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of US dollars >= 0, got {text!r}")
    return value


def _service():
    from .service import Service

    return Service()


# ---- commands -----------------------------------------------------------------

def _check_settings() -> None:
    """config.toml and keys.json, checked: a ConfigError (exit 2) names the file, key and range."""
    from . import settings

    settings.check()


def cmd_run(args) -> int:
    svc = _service()
    _check_settings()  # a bad config.toml stops here, before a run is made that nothing would execute
    content, ctype = _page_from_file(args.input, args.content_type)
    result = svc.start(args.template, content=content, source_url=args.source_url, content_type=ctype or "text/html",
                       budget_usd=args.budget)
    run_id = result["run_id"]
    if not args.wait:
        if args.json:
            _print_json(svc.run_document(run_id))
        else:
            print(run_id)
            _err(f"run {run_id} queued; `hybrid-engine worker` or the browser host executes it "
                 f"(or use --wait)")
        return EXIT_OK
    doc = _wait_for_run(svc, run_id, show_progress=True)
    if args.json:
        _print_json(doc)
    else:
        _print_run_table(doc)
    return EXIT_FAILED if doc["status"] == RunStatus.FAILED else EXIT_OK


def _wait_for_run(svc, run_id: str, *, show_progress: bool) -> dict:
    import asyncio

    from . import logsetup

    logsetup.configure("cli")
    svc.recover()
    executor = svc.make_executor()
    tty = sys.stderr.isatty()
    state = {"last": None, "hinted": False}

    def render_progress(summary: dict) -> None:
        if not show_progress:
            return
        total, done = summary["total_steps"], summary["completed_steps"]
        width = 24
        filled = int(width * done / total) if total else 0
        bar = "#" * filled + "." * (width - filled)
        cost = money.usd(summary["total_cost"]) + ("+?" if summary["unknown_cost_steps"] else "")
        text = (f"[{bar}] {done}/{total} steps  {summary['total_tokens']:,} tokens  {cost}  "
                f"{summary['status']}")
        if text == state["last"]:
            return
        state["last"] = text
        if tty:
            sys.stderr.write("\r" + text.ljust(78))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    async def watch():
        while True:
            summary = svc.summary(run_id)
            render_progress(summary)
            if RunStatus(summary["status"]).is_terminal:
                executor.stop()
                return
            if summary["status"] == RunStatus.PENDING and svc.open_slots(run_id) and not state["hinted"]:
                state["hinted"] = True
                _err(f"run {run_id} waits for its page: hybrid-engine ingest {run_id} --content-file FILE")
            await asyncio.sleep(0.1)

    async def main():
        watcher = asyncio.create_task(watch())
        await executor.run()
        await watcher

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        if tty:
            sys.stderr.write("\n")
        _err(f"stopped waiting; run {run_id} goes on with the next worker or host "
             f"(`hybrid-engine show {run_id}`)")
        raise SystemExit(130)
    if show_progress and tty:
        sys.stderr.write("\n")
    return svc.run_document(run_id)


def _print_run_table(doc: dict) -> None:
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
    total_cost = _run_cost(m["total_cost"], m["unknown_cost_steps"])
    if m.get("estimated_cost_steps"):
        total_cost = f"~{total_cost} est."
    rows.append(["total", "", doc["status"], f"{(m['duration_ms'] or 0) / 1000:.2f}s", f"{m['total_tokens']:,}",
                 total_cost, "", ""])
    print(f"run {doc['id']} ({doc['template']}): {doc['status']}")
    print(_table(["step", "action", "status", "time", "tokens", "cost", "model", "note"], rows))
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
                  f"{_unconfirmed_phrase(s['execution_metrics'].get('unconfirmed_cost_max'))}")
    failed = [s for s in doc["steps"] if s["status"] == StepStatus.FAILED and s["error"]]
    for s in failed:
        print(f"\n{s['id']}: {s['error']}")
    if doc["status"] == RunStatus.FAILED:
        print(f"\nResume it once fixed (completed steps are kept, not billed again): hybrid-engine retry {doc['id']}")
    final = _final_text(doc)
    if final and doc["status"] == RunStatus.COMPLETED:
        print("\n" + final)


def _unconfirmed_phrase(bound: float | None) -> str:
    """Sent, but no answer was recorded (the worker died, the run was cancelled): billed or not."""
    if bound is None:
        return "may have been billed (price unknown)"
    return f"may have been billed up to {money.usd(bound)}"


def _final_text(doc: dict) -> str | None:
    for s in reversed(doc["steps"]):
        if s["status"] == StepStatus.COMPLETED and isinstance(s.get("outputs"), dict) and isinstance(
                s["outputs"].get("text"), str) and s["action"] != "capture":
            return s["outputs"]["text"]
    return None


def _run_cost(total: float | None, unknown_steps: int) -> str:
    """A run's cost: "unknown" when every priced step's price is unknown, never $0."""
    if not unknown_steps:
        return money.usd(total)
    return "unknown" if not total else f"{money.usd(total)} + unknown"


def cmd_runs(args) -> int:
    runs = _service().list_runs(limit=args.limit, offset=args.offset)
    if args.json:
        _print_json({"runs": runs})
        return EXIT_OK
    if not runs:
        print("no runs yet")
        return EXIT_OK
    from .library_cli import runs_table  # runs named by their page

    print(runs_table(runs))
    return EXIT_OK


def cmd_show(args) -> int:
    doc = _service().run_document(args.run)
    if args.json:
        _print_json(doc)
    else:
        from .library_cli import print_page

        print_page(doc)
        _print_run_table(doc)
    return EXIT_OK


def cmd_export(args) -> int:
    _print_json(_service().run_document(args.run, cut=None))
    return EXIT_OK


def cmd_ingest(args) -> int:
    from .models import ExternalDataRequest
    from .service import parse_metadata

    metadata = parse_metadata(args.metadata) if args.metadata else {}
    content, ctype = _page_from_file(args.content_file, args.content_type)
    req = ExternalDataRequest(content=content, source_url=args.source_url, content_type=ctype,
                              step_name=args.step_name, metadata=metadata)
    resp = _service().ingest(args.run, req)
    _print_json(resp.model_dump())
    return EXIT_OK


def cmd_external_data(args) -> int:
    _print_json(_service().external_data(args.run))
    return EXIT_OK


def cmd_retry(args) -> int:
    summary = _service().retry(args.run, budget_usd=args.budget)
    if args.json:
        _print_json(summary)
    else:
        print(f"run {summary['id']}: {summary['status']}; failed steps queued again "
              f"({summary['completed_steps']}/{summary['total_steps']} steps done and kept)")
    return EXIT_OK


def cmd_cancel(args) -> int:
    summary = _service().cancel(args.run)
    if args.json:
        _print_json(summary)
    else:
        print(f"run {summary['id']}: {summary['status']}")
    return EXIT_OK


def cmd_delete(args) -> int:
    svc = _service()
    run_id = svc.resolve_run(args.run)
    svc.delete(run_id)
    print(f"run {run_id} deleted")
    return EXIT_OK


def cmd_worker(args) -> int:
    import asyncio

    from . import logsetup

    logsetup.configure("worker")
    svc = _service()
    _check_settings()
    if args.background:
        return _background_worker(svc, args)
    report = svc.recover()
    if report.requeued or report.dead_lettered:
        _err(f"recovered {len(report.requeued)} orphaned step(s), dead-lettered {len(report.dead_lettered)}")
    executor = svc.make_executor()
    try:
        asyncio.run(executor.run(until_idle=args.until_idle))
    except KeyboardInterrupt:
        pass
    if not args.quiet:
        _err(f"worker done: {executor.executed} step(s) executed")
    return EXIT_OK


def _background_worker(svc, args) -> int:
    """What the host starts: one per data folder, outside the browser's process tree."""
    import signal

    from . import worker

    current: list = []

    def on_signal(signum, frame):  # noqa: ARG001 - hand running steps back, then exit
        for ex in current:
            ex.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    executed = worker.serve(svc, linger=args.linger if args.linger is not None else worker.linger_s(),
                            on_executor=lambda ex: (current.clear(), current.append(ex)))
    if not args.quiet:
        _err(f"background worker done: {executed} step(s) executed")
    return EXIT_OK


def cmd_recover(args) -> int:
    from . import logsetup

    logsetup.configure("cli")
    report = _service().recover()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(f"requeued {len(report.requeued)}, dead-lettered {len(report.dead_lettered)}, "
              f"left alone (owner alive) {len(report.left_alone)}, stale entries removed {report.stale_removed}")
        for run_id, step_id in report.requeued:
            print(f"  requeued      {run_id} {step_id}")
        for run_id, step_id in report.dead_lettered:
            print(f"  dead-lettered {run_id} {step_id}")
    return EXIT_OK


def cmd_templates(args) -> int:
    svc = _service()
    items = svc.list_templates()
    if args.json:
        _print_json({"templates": items, "folder": str(svc.templates.folder)})
    else:
        rows = [[t["name"], str(t["steps"]), "yes" if t["has_capture_slot"] else "no", t["description"]]
                for t in items]
        print(_table(["template", "steps", "capture", "description"], rows))
        print(f"\nfolder: {svc.templates.folder}")
    for err in svc.templates.errors():
        _err(f"invalid template: {err.message}")
    return EXIT_OK


def cmd_validate(args) -> int:
    from .templates import load_file

    tpl = load_file(args.file)
    print(f"{args.file}: valid template '{tpl.name}' ({len(tpl.steps)} steps)")
    return EXIT_OK


def cmd_keys(args) -> int:
    from . import config, settings

    if args.keys_cmd == "list":
        from .redact import public_url

        out = []
        for p in config.PROVIDERS:
            s = settings.provider_settings(p)
            out.append({"provider": p, "configured": bool(s.api_key), "source": s.api_key_source,
                        "from": s.key_source_label, "base_url": public_url(s.base_url)})
        warning = config.keys_file_warning()
        if warning:
            _err(f"warning: {warning}")
        if args.json:
            _print_json({"providers": out})
        else:
            print(_table(["provider", "key", "from", "base url"],
                         [[o["provider"], "set" if o["configured"] else "-", o["from"] or "-", o["base_url"] or "-"]
                          for o in out]))
        return EXIT_OK
    provider = args.provider
    if provider not in ("openai", "deepseek", "gemini", "local"):
        raise _bad(f"provider: '{provider}' is not one of openai, deepseek, gemini, local")
    if args.keys_cmd == "remove":
        removed = config.remove_key(provider)
        print(f"{provider}: key removed" if removed else f"{provider}: no stored key")
        return EXIT_OK
    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass(f"{provider} API key (input hidden): ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise _bad("no key given (type it at the prompt or pipe it on stdin)")
    config.set_key(provider, key)
    print(f"{provider}: key stored in {config.keys_path()} (readable by you alone)")
    return EXIT_OK


def cmd_estimate(args) -> int:
    svc = _service()
    _check_settings()  # a bad price override would otherwise be left out of the figures unsaid
    tpl = svc.template(args.template)
    if args.input:
        content, ctype = _page_from_file(args.input, args.content_type)
    elif tpl.capture_slots:
        raise _bad(f"--input FILE: template '{tpl.name}' takes a page; give one to estimate with")
    else:
        content, ctype = "", "text/plain"
    est = svc.estimate(args.template, {"content": content, "source_url": args.source_url,
                                        "content_type": ctype})
    if args.json:
        _print_json(est)
        return EXIT_OK
    _print_estimate(est, args.input)
    return EXIT_OK


def _cost_range(low: float | None, high: float | None, unknown: bool) -> str:
    if unknown or high is None:
        return "unknown"
    if (low or 0) == high:
        return money.usd(high)
    return f"{money.usd(low or 0)} - {money.usd(high)}"


def _print_estimate(est: dict, source: str | None) -> None:
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
                     _cost_range(e["cost_min"], e["cost_max"], e["price_unknown"])])
        if e.get("warning"):
            notes.append(f"{e['step_id']}: {e['warning']}")
        if e["price_unknown"]:
            notes.append(f"{e['step_id']}: no known price for {e['model']} "
                         f"(set [prices.\"{e['model']}\"] in config.toml)")
    total = _cost_range(est["total_cost_min"], est["total_cost_max"], False)
    if est["unknown_cost_steps"]:
        total += f" (+{est['unknown_cost_steps']} unknown)"
    rows.append(["total", "", f"{est['total_prompt_tokens']:,}", "", total])
    print(_table(["step", "model", "prompt tokens", "max output", "cost"], rows))
    if est.get("budget_usd") is not None:
        verdict = "within it" if est["total_cost_max"] <= est["budget_usd"] and not est["unknown_cost_steps"] \
            else "the run may stop before its last model steps"
        print(f"\nrun budget {money.usd_budget(est['budget_usd'])}: {verdict}")
    for note in notes:
        print(f"note: {note}")
    print("\nThe low end prices the prompt alone; the high end adds a full-length answer "
          "(max output tokens). ~ marks a count made with OpenAI's tokenizer for another provider's model.")


def cmd_spend(args) -> int:
    spend = _service().spend()
    if args.json:
        _print_json(spend)
        return EXIT_OK
    providers = sorted(set(spend["today_by_provider"]) | set(spend["this_month_by_provider"]))
    rows = [[p, money.usd(spend["today_by_provider"].get(p, 0.0)),
             money.usd(spend["this_month_by_provider"].get(p, 0.0))]
            for p in providers]
    rows.append(["total", money.usd(spend["today"]), money.usd(spend["this_month"])])
    print(_table(["provider", "today", "this month"], rows))
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
                  f"{_unconfirmed_phrase(lost.get('cost_max'))}; budgets count them at that bound")
    unpriced = spend["this_month_unpriced_steps"]
    if unpriced:
        models = ", ".join(f"{m} ({n})" for m, n in sorted(unpriced.items()))
        print(f"not counted: {sum(unpriced.values())} completed step(s) this month whose price is unknown: {models};"
              " price them with [prices.\"MODEL\"] in config.toml")
    else:
        print("known costs of completed model steps")
    return EXIT_OK


def _bad(message: str):
    from .errors import BadRequest

    return BadRequest(message)


# ---- native host, registration, diagnosis (host.py, install.py) ----------------------

def cmd_host(args) -> int:
    from .hostboot import main as host_main

    return host_main(args.caller)


def _print_findings(findings) -> None:
    for f in findings:
        where = f" [{f.browser}]" if f.browser else ""
        print(f"{f.severity.upper():7} {f.code}{where}: {f.problem}")
        if f.path:
            print(f"        at:  {f.path}")
        print(f"        fix: {f.fix}")


def cmd_install(args) -> int:
    from . import install

    report = install.install(args.browser, extension_ids=args.extension_id or (), system=args.system,
                             dry_run=args.dry_run, user_data_dirs=args.user_data_dir or ())
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK if report.ok else EXIT_FAILED
    verb = "would write" if report.dry_run else "registered"
    for reg in report.registrations:
        print(f"{verb} {', '.join(reg.browsers)}: {reg.location}")
    for skip in report.skipped:
        print(f"skipped {skip['browser']}: {skip['reason']}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"launcher: {report.launcher} (runs {report.python})")
    _print_findings(report.errors)
    if report.registrations and not report.dry_run and report.ok:
        print("check it with: hybrid-engine doctor")
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_uninstall(args) -> int:
    from . import install

    system = True if args.system else (False if args.user else None)
    report = install.uninstall(args.browser, system=system, dry_run=args.dry_run)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK if report.ok else EXIT_FAILED
    verb = "would remove" if report.dry_run else "removed"
    for reg in report.removed:
        print(f"{verb} {', '.join(reg.browsers)}: {reg.location}")
    for note in report.notes:
        print(f"note: {note}")
    if report.launcher_removed:
        print("removed the launcher")
    if not report.removed and not report.errors:
        print("nothing to remove")
    _print_findings(report.errors)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_doctor(args) -> int:
    from . import install

    findings = install.doctor(extension_ids=args.extension_id or (), check_launch=not args.no_launch)
    errors = [f for f in findings if f.severity == install.ERROR]
    if args.json:
        _print_json({"ok": not errors, "findings": [f.to_dict() for f in findings]})
    elif not findings:
        print("all good: the host is registered, well-formed" + ("" if args.no_launch else " and answers hello"))
    else:
        _print_findings(findings)
    return EXIT_FAILED if errors else EXIT_OK


# ---- parser --------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-engine",
                                description="Local-first AI workflows for pages you send from the browser.")
    p.add_argument("--version", action="version", version=f"hybrid-engine {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    sp = add("run", cmd_run, "start a run of a template")
    sp.add_argument("template", help="template name, or a path to a .yaml/.json file")
    sp.add_argument("--input", metavar="FILE", help="a page to fill the capture slot with")
    sp.add_argument("--source-url", metavar="URL")
    sp.add_argument("--content-type", metavar="TYPE", help="text/html, text/plain, text/markdown, application/json "
                    "(or text, html, markdown, json)")
    sp.add_argument("--budget", type=_usd, metavar="USD", help="stop starting model steps past this cost")
    sp.add_argument("--wait", action="store_true", help="execute now, show progress, end with a summary")
    sp.add_argument("--json", action="store_true")

    sp = add("runs", cmd_runs, "list runs, newest first")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--offset", type=int, default=0)
    sp.add_argument("--json", action="store_true")

    sp = add("show", cmd_show, "one run with its steps")
    sp.add_argument("run")
    sp.add_argument("--json", action="store_true")

    sp = add("export", cmd_export, "the whole run as JSON (state.json shape), outputs uncut")
    sp.add_argument("run")

    sp = add("ingest", cmd_ingest, "add external data to a run (fills its capture slot)")
    sp.add_argument("run")
    sp.add_argument("--content-file", required=True, metavar="FILE")
    sp.add_argument("--source-url", metavar="URL")
    sp.add_argument("--content-type", metavar="TYPE", help="a MIME type, or text, html, markdown, json")
    sp.add_argument("--step-name", metavar="NAME")
    sp.add_argument("--metadata", metavar="JSON")

    sp = add("external-data", cmd_external_data, "list a run's external-data steps")
    sp.add_argument("run")

    for name, func, help_ in (("retry", cmd_retry, "resume a failed run from its failed steps"),
                              ("cancel", cmd_cancel, "cancel a run"),
                              ("delete", cmd_delete, "delete a run and everything it stored")):
        sp = add(name, func, help_)
        sp.add_argument("run")
        if name != "delete":
            sp.add_argument("--json", action="store_true")
        if name == "retry":
            sp.add_argument("--budget", type=_usd, metavar="USD",
                            help="a new run budget (after a step was stopped by the old one)")

    sp = add("worker", cmd_worker, "recover, then execute queued work without a browser")
    sp.add_argument("--until-idle", action="store_true", help="return when nothing is queued or running")
    sp.add_argument("--background", action="store_true",
                    help="the host's worker: one per data folder, exits after --linger idle seconds")
    sp.add_argument("--linger", type=float, default=None, metavar="S",
                    help="with --background: idle seconds before exiting (default [worker] linger_s, 60)")
    sp.add_argument("--quiet", action="store_true")

    sp = add("recover", cmd_recover, "requeue steps orphaned by dead processes")
    sp.add_argument("--json", action="store_true")

    sp = add("templates", cmd_templates, "list workflow templates")
    sp.add_argument("--json", action="store_true")

    sp = add("validate", cmd_validate, "validate a template file")
    sp.add_argument("file")

    sp = add("estimate", cmd_estimate, "tokens and cost a run would take, per model step, without calling a model")
    sp.add_argument("template", help="template name, or a path to a .yaml/.json file")
    sp.add_argument("--input", metavar="FILE", help="the page the run would get")
    sp.add_argument("--source-url", metavar="URL")
    sp.add_argument("--content-type", metavar="TYPE", help="text/html, text/plain, text/markdown, application/json "
                    "(or text, html, markdown, json)")
    sp.add_argument("--json", action="store_true")

    sp = add("spend", cmd_spend, "what model calls cost today and this month, per provider, and the budgets")
    sp.add_argument("--json", action="store_true")

    from .library_cli import register as add_library_commands

    add_library_commands(add)

    sp = add("keys", cmd_keys, "manage provider API keys (stored readable by you alone)")
    ksub = sp.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)
    k = ksub.add_parser("set", help="store a key, read from a hidden prompt or stdin")
    k.add_argument("provider")
    k = ksub.add_parser("remove", help="remove a stored key")
    k.add_argument("provider")
    k = ksub.add_parser("list", help="which providers have a key (never the key)")
    k.add_argument("--json", action="store_true")
    # ---- native host, registration, diagnosis ---------------------------------------
    sp = add("host", cmd_host, "the native-messaging host (what the browser launches; frames on stdin/stdout)")
    sp.add_argument("caller", nargs=argparse.REMAINDER,
                    help="what the browser passes: chrome-extension://ID/, or a manifest path and an add-on id")

    sp = add("install", cmd_install, "register the native host with the browsers found (or named); "
             "exits 1 if a registration could not be written")
    sp.add_argument("--browser", action="append", metavar="B",
                    help="chrome, chromium, edge, brave, vivaldi, firefox, librewolf (repeatable; default: "
                         "every browser found)")
    sp.add_argument("--extension-id", action="append", metavar="ID",
                    help="also allow this Chrome extension id or Firefox add-on id (repeatable)")
    sp.add_argument("--system", action="store_true", help="system-wide folders (or HKLM) instead of the user's")
    sp.add_argument("--user-data-dir", action="append", metavar="DIR",
                    help="a Chromium-family browser started with --user-data-dir=DIR reads native hosts from "
                         "DIR/NativeMessagingHosts: register there (repeatable; Firefox has no such folder)")
    sp.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    sp.add_argument("--json", action="store_true")

    sp = add("uninstall", cmd_uninstall, "remove exactly the registrations install wrote")
    sp.add_argument("--browser", action="append", metavar="B", help="only for this browser (repeatable)")
    scope = sp.add_mutually_exclusive_group()
    scope.add_argument("--system", action="store_true", help="only system-wide registrations")
    scope.add_argument("--user", action="store_true", help="only the user's registrations")
    sp.add_argument("--dry-run", action="store_true")
    sp.add_argument("--json", action="store_true")

    sp = add("doctor", cmd_doctor, "diagnose the registration (manifests, launcher, ids, a live hello) and "
             "print the fix for each finding; exits 1 when it finds an error")
    sp.add_argument("--extension-id", action="append", metavar="ID", help="an id that should be allowed too")
    sp.add_argument("--no-launch", action="store_true", help="skip starting the host to check it answers")
    sp.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .errors import HybridEngineError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except HybridEngineError as exc:
        _err(exc.message)
        return EXIT_BAD_INPUT
    except ConfigError as exc:
        _err(f"config: {exc}")
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        # A damaged, read-only or full engine.db found by a query after it opened: one line, no traceback.
        from .config import db_path
        from .store import query_error

        err = query_error(exc, db_path())
        if err is None:
            raise
        _err(err.message)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
