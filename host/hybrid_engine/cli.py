"""The `hybrid-engine` command: a thin shell over service.py.

Exit status: 0 success, 1 a run that ended FAILED (only `run --wait`), 2 bad input.
Results go to stdout (one JSON document with --json); progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _err(message: str) -> None:
    sys.stderr.write(f"hybrid-engine: {message}\n")


def _money(cost: float | None, unknown: bool = False) -> str:
    if unknown or cost is None:
        return "unknown"
    if cost == 0:
        return "$0"
    if cost < 0.01:
        return f"${cost:.6f}"
    return f"${cost:.4f}"


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


def _service():
    from .service import Service

    return Service()


# ---- commands -----------------------------------------------------------------

def cmd_run(args) -> int:
    from .service import read_input_file

    svc = _service()
    content = ctype = None
    if args.input:
        content, ctype = read_input_file(args.input)
        if args.content_type:
            ctype = args.content_type
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
    return EXIT_FAILED if doc["status"] == "FAILED" else EXIT_OK


def _wait_for_run(svc, run_id: str, *, show_progress: bool) -> dict:
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
        cost = _money(summary["total_cost"]) + ("+?" if summary["unknown_cost_steps"] else "")
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
        from .models import RunStatus

        while True:
            summary = svc.summary(run_id)
            render_progress(summary)
            if RunStatus(summary["status"]).is_terminal:
                executor.stop()
                return
            if summary["status"] == "PENDING" and svc.store.open_slots(run_id) and not state["hinted"]:
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
        cost = _money(em["cost"], unknown) if is_model else "-"
        if s["status"] != "COMPLETED" and is_model:
            est = s["metadata"].get("estimate") or {}
            cost = f"~{_money(est.get('cost_max'))}" if est.get("cost_max") is not None else "-"
        rows.append([s["id"], s["action"], s["status"],
                     f"{s['duration']:.2f}s" if s["duration"] is not None else "-",
                     f"{em['tokens']:,}" if em["tokens"] else "-", cost, em["model"] or "-"])
    m = doc["metrics"]
    total_cost = _money(m["total_cost"]) + (f" (+{m['unknown_cost_steps']} unknown)" if m["unknown_cost_steps"] else "")
    rows.append(["total", "", doc["status"], f"{(m['duration_ms'] or 0) / 1000:.2f}s", f"{m['total_tokens']:,}",
                 total_cost, ""])
    print(f"run {doc['id']} ({doc['template']}): {doc['status']}")
    print(_table(["step", "action", "status", "time", "tokens", "cost", "model"], rows))
    for s in doc["steps"]:
        if s["status"] == "FAILED" and s["error"]:
            print(f"\n{s['id']}: {s['error']}")
    final = _final_text(doc)
    if final and doc["status"] == "COMPLETED":
        print("\n" + final)


def _final_text(doc: dict) -> str | None:
    for s in reversed(doc["steps"]):
        if s["status"] == "COMPLETED" and isinstance(s.get("outputs"), dict) and isinstance(
                s["outputs"].get("text"), str) and s["action"] != "capture":
            return s["outputs"]["text"]
    return None


def cmd_runs(args) -> int:
    runs = _service().list_runs(limit=args.limit, offset=args.offset)
    if args.json:
        _print_json({"runs": runs})
        return EXIT_OK
    if not runs:
        print("no runs yet")
        return EXIT_OK
    rows = [[r["id"], r["template"], r["status"], f"{r['completed_steps']}/{r['total_steps']}",
             f"{r['total_tokens']:,}", _money(r["total_cost"]) + ("+?" if r["unknown_cost_steps"] else ""),
             _age(r["createdAt"])] for r in runs]
    print(_table(["run", "template", "status", "steps", "tokens", "cost", "created"], rows))
    return EXIT_OK


def cmd_show(args) -> int:
    doc = _service().run_document(args.run)
    if args.json:
        _print_json(doc)
    else:
        _print_run_table(doc)
    return EXIT_OK


def cmd_export(args) -> int:
    _print_json(_service().run_document(args.run, cut=None))
    return EXIT_OK


def cmd_ingest(args) -> int:
    from .models import ExternalDataRequest
    from .service import read_input_file

    content, guessed = read_input_file(args.content_file)
    metadata = {}
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            raise _bad(f"--metadata: not JSON: {exc.msg} at column {exc.colno}") from exc
        if not isinstance(metadata, dict):
            raise _bad("--metadata: expected a JSON object")
    req = ExternalDataRequest(content=content, source_url=args.source_url,
                              content_type=args.content_type or guessed, step_name=args.step_name,
                              metadata=metadata)
    resp = _service().ingest(args.run, req)
    _print_json(resp.model_dump())
    return EXIT_OK


def cmd_external_data(args) -> int:
    _print_json(_service().external_data(args.run))
    return EXIT_OK


def cmd_retry(args) -> int:
    summary = _service().retry(args.run)
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
    from . import logsetup

    logsetup.configure("worker")
    svc = _service()
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
    from . import config

    if args.keys_cmd == "list":
        out = []
        for p in config.PROVIDERS:
            s = config.provider_settings(p)
            out.append({"provider": p, "configured": bool(s.api_key), "source": s.api_key_source,
                        "base_url": s.base_url})
        if args.json:
            _print_json({"providers": out})
        else:
            print(_table(["provider", "key", "from", "base url"],
                         [[o["provider"], "set" if o["configured"] else "-", o["source"] or "-", o["base_url"] or "-"]
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


def _bad(message: str):
    from .errors import BadRequest

    return BadRequest(message)


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
    sp.add_argument("--content-type", metavar="TYPE", help="text/html, text/plain or text/markdown")
    sp.add_argument("--budget", type=float, metavar="USD", help="stop starting model steps past this cost")
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
    sp.add_argument("--content-type", metavar="TYPE")
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

    sp = add("worker", cmd_worker, "recover, then execute queued work without a browser")
    sp.add_argument("--until-idle", action="store_true", help="return when nothing is queued or running")
    sp.add_argument("--quiet", action="store_true")

    sp = add("recover", cmd_recover, "requeue steps orphaned by dead processes")
    sp.add_argument("--json", action="store_true")

    sp = add("templates", cmd_templates, "list workflow templates")
    sp.add_argument("--json", action="store_true")

    sp = add("validate", cmd_validate, "validate a template file")
    sp.add_argument("file")

    sp = add("keys", cmd_keys, "manage provider API keys (stored readable by you alone)")
    ksub = sp.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)
    k = ksub.add_parser("set", help="store a key, read from a hidden prompt or stdin")
    k.add_argument("provider")
    k = ksub.add_parser("remove", help="remove a stored key")
    k.add_argument("provider")
    k = ksub.add_parser("list", help="which providers have a key (never the key)")
    k.add_argument("--json", action="store_true")
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


if __name__ == "__main__":
    sys.exit(main())
