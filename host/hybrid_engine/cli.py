"""The `hybrid-engine` command: a thin shell over service.py.

Exit status: 0 success, 1 a run that ended FAILED (only `run --wait`), 2 bad input.
Results go to stdout (one JSON document with --json); progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__, foreground, terminal
from .terminal import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, err, print_json
from .states import RunStatus



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
            print_json(svc.run_document(run_id))
        else:
            print(run_id)
            err(f"run {run_id} queued; `hybrid-engine worker` or the browser host executes it "
                 f"(or use --wait)")
        return EXIT_OK
    doc = foreground.wait_for_run(svc, run_id, show_progress=True)
    if args.json:
        print_json(doc)
    else:
        terminal.print_run_table(doc)
    return EXIT_FAILED if doc["status"] == RunStatus.FAILED else EXIT_OK


def cmd_runs(args) -> int:
    runs = _service().list_runs(limit=args.limit, offset=args.offset)
    if args.json:
        print_json({"runs": runs})
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
        print_json(doc)
    else:
        from .library_cli import print_page
        from .prompts import redaction_line

        print_page(doc)
        terminal.print_run_table(doc)
        if redaction_line(doc):
            print(f"\n{redaction_line(doc)}")
    return EXIT_OK


def cmd_export(args) -> int:
    print_json(_service().run_document(args.run, cut=None))
    return EXIT_OK


def cmd_ingest(args) -> int:
    from .models import ExternalDataRequest
    from .service import parse_metadata

    metadata = parse_metadata(args.metadata) if args.metadata else {}
    content, ctype = _page_from_file(args.content_file, args.content_type)
    req = ExternalDataRequest(content=content, source_url=args.source_url, content_type=ctype,
                              step_name=args.step_name, metadata=metadata)
    resp = _service().ingest(args.run, req)
    print_json(resp.model_dump())
    return EXIT_OK


def cmd_external_data(args) -> int:
    print_json(_service().external_data(args.run))
    return EXIT_OK


def cmd_retry(args) -> int:
    summary = _service().retry(args.run, budget_usd=args.budget)
    if args.json:
        print_json(summary)
    else:
        print(f"run {summary['id']}: {summary['status']}; failed steps queued again "
              f"({summary['completed_steps']}/{summary['total_steps']} steps done and kept)")
    return EXIT_OK


def cmd_cancel(args) -> int:
    summary = _service().cancel(args.run)
    if args.json:
        print_json(summary)
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
        err(f"recovered {len(report.requeued)} orphaned step(s), dead-lettered {len(report.dead_lettered)}")
    executor = svc.make_executor()
    try:
        asyncio.run(executor.run(until_idle=args.until_idle))
    except KeyboardInterrupt:
        pass
    if not args.quiet:
        err(f"worker done: {executor.executed} step(s) executed")
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
        err(f"background worker done: {executed} step(s) executed")
    return EXIT_OK


def cmd_recover(args) -> int:
    from . import logsetup

    logsetup.configure("cli")
    report = _service().recover()
    if args.json:
        print_json(report.to_dict())
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
        print_json({"templates": items, "folder": str(svc.templates.folder)})
    else:
        rows = [[t["name"], str(t["steps"]), "yes" if t["has_capture_slot"] else "no", t["description"]]
                for t in items]
        print(terminal.table(["template", "steps", "capture", "description"], rows))
        print(f"\nfolder: {svc.templates.folder}")
    for problem in svc.templates.errors():
        err(f"invalid template: {problem.message}")
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
            err(f"warning: {warning}")
        if args.json:
            print_json({"providers": out})
        else:
            print(terminal.table(["provider", "key", "from", "base url"],
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
    if config.key_problem(key):
        raise _bad(f"key: {config.key_problem(key)}")
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
        print_json(est)
        return EXIT_OK
    terminal.print_estimate(est, args.input)
    if args.show_prompt:
        from .prompts import sent_text

        print(f"\nwhat each model step would send:\n\n{sent_text(est)}")
    return EXIT_OK


def cmd_spend(args) -> int:
    spend = _service().spend()
    if args.json:
        print_json(spend)
    else:
        terminal.print_spend(spend)
    return EXIT_OK


def _bad(message: str):
    from .errors import BadRequest

    return BadRequest(message)


# ---- native host, registration, diagnosis (host.py, install.py) ----------------------

def cmd_host(args) -> int:
    from .hostboot import main as host_main

    return host_main(args.caller)


def _lazy(module: str, name: str):
    """A command whose module is imported only when it runs, so `hybrid-engine host` starts without it."""
    def command(args) -> int:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(args)
    return command


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
    sp.add_argument("--show-prompt", action="store_true", help="print each model step's exact prompt, provider "
                    "and model (with --json: always in each step's `sent`)")
    sp.add_argument("--json", action="store_true")

    from .batchcli import add_parsers as add_batch_parsers

    add_batch_parsers(add, _usd)

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

    sp = add("install", _lazy("install.commands", "cmd_install"), "register the native host with the browsers found (or named); "
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

    sp = add("uninstall", _lazy("install.commands", "cmd_uninstall"), "remove exactly the registrations install wrote")
    sp.add_argument("--browser", action="append", metavar="B", help="only for this browser (repeatable)")
    scope = sp.add_mutually_exclusive_group()
    scope.add_argument("--system", action="store_true", help="only system-wide registrations")
    scope.add_argument("--user", action="store_true", help="only the user's registrations")
    sp.add_argument("--dry-run", action="store_true")
    sp.add_argument("--json", action="store_true")

    sp = add("doctor", _lazy("install.commands", "cmd_doctor"), "diagnose the registration (manifests, launcher, ids, a live hello) and "
             "print the fix for each finding; exits 1 when it finds an error")
    sp.add_argument("--extension-id", action="append", metavar="ID", help="an id that should be allowed too")
    sp.add_argument("--no-launch", action="store_true", help="skip starting the host to check it answers")
    sp.add_argument("--json", action="store_true")

    from .httpapi.command import add_arguments as serve_arguments

    serve_arguments(add("serve", _lazy("httpapi.command", "run"), "the HTTP API on 127.0.0.1 for scripts and local tools (bearer token); "
                        "runs queued work while it serves"))
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
        err(exc.message)
        return EXIT_BAD_INPUT
    except ConfigError as exc:
        err(f"config: {exc}")
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        # A damaged, read-only or full engine.db found by a query after it opened: one line, no traceback.
        from .config import db_path
        from .store import query_error

        store_error = query_error(exc, db_path())
        if store_error is None:
            raise
        err(store_error.message)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
