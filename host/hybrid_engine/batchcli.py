"""`hybrid-engine batch TEMPLATE --inputs DIR|FILE... | --urls FILE` and `hybrid-engine batches`.

`batch` reads its pages one at a time into a new batch (each stored at once, none held, so a
500-page batch takes the memory of one), prints the combined estimate against every budget,
and then starts it: executed here with a progress line (`--wait`), or by the background
worker. `--estimate` stops after the estimate and leaves the batch paused (`batches ID
--resume` starts it). One run per distinct page: the same page twice is a duplicate item.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import money, terminal
from .terminal import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, err, print_json

PAGE_SUFFIXES = (".html", ".htm", ".xhtml", ".txt", ".md", ".markdown", ".json")


def input_files(paths: list[str]):
    """(path, None) for files named and the page files of folders named (in name order, not
    descending); (path, why) for a link in a folder that leads out of it. A folder of saved
    or unpacked pages may hold `notes.txt -> ~/.aws/credentials`: the person named the
    folder, not what its links reach, and that file would be sent to a model."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            inside = p.resolve()
            for child in sorted(p.iterdir()):
                if not (child.is_file() and child.suffix.lower() in PAGE_SUFFIXES):
                    continue
                if child.is_symlink() and not child.resolve().is_relative_to(inside):
                    yield str(child), (f"{child}: a link to a file outside {raw}: not read "
                                       "(name the file itself to send it)")
                    continue
                yield str(child), None
        else:
            yield raw, None


def read_inputs(batches, batch_id: str, args) -> dict[str, int]:
    from .errors import BadRequest
    from .pagetitle import html_title
    from .inputs import read_input_file

    added = {"waiting": 0, "duplicate": 0, "needs_browser": 0, "unreadable": 0, "blocked": 0}
    if args.urls:
        from .fetch import read_url_list

        for url in read_url_list(args.urls):
            item = batches.add_url(batch_id, url)
            if item["state"] not in ("waiting", "duplicate"):
                err(f"{url}: {item['note']}")
            added[item["state"]] += 1
    for path, outside in input_files(args.inputs or []):
        try:
            if outside:
                raise BadRequest(outside)
            content, ctype = read_input_file(path)
        except BadRequest as exc:
            item = batches.add_unusable(batch_id, path, "unreadable", exc.message)
            err(exc.message)
        else:
            title = html_title(content) if ctype == "text/html" else None
            item = batches.add_page(batch_id, {"content": content, "content_type": ctype,
                                               "title": title or Path(path).name}, source=path)
            del content
        added[item["state"]] += 1
    return added


def cmd_batch(args) -> int:
    from . import settings
    from .batches import Batches
    from .service import Service

    if not args.inputs and not args.urls:
        err("batch: give --inputs DIR|FILE... or --urls FILE")
        return EXIT_BAD_INPUT
    svc = Service()
    settings.check()  # a bad config.toml stops here, before a batch is made that nothing would execute
    batches = Batches(svc)
    batch_id = batches.create(args.template, budget_usd=args.budget, parallel=args.parallel)
    added = read_inputs(batches, batch_id, args)
    if not added["waiting"]:
        batches.cancel(batch_id)
        err(f"batch {batch_id}: no page to run ({_counts_text(added)})")
        return EXIT_BAD_INPUT
    est = batches.estimate_batch(batch_id)
    err(f"batch {batch_id}: {_counts_text(added)}")
    err(f"estimate: {est['text']}")
    if args.estimate:
        if args.json:
            print_json({"batch_id": batch_id, "estimate": est})
        else:
            print(batch_id)
        err(f"batch {batch_id} is paused: `hybrid-engine batches {batch_id} --resume` starts it")
        return EXIT_OK
    batches.resume(batch_id)
    if not args.wait:
        svc.ensure_worker_if_work()
        if args.json:
            print_json(batches.view(batch_id, items=False))
        else:
            print(batch_id)
            err(f"batch {batch_id} started; the background worker runs it "
                f"(`hybrid-engine batches {batch_id}` shows it)")
        return EXIT_OK
    view = wait_for_batch(svc, batch_id)
    if args.json:
        print_json(view)
    else:
        print_batch(view)
    return EXIT_FAILED if view["counts"]["failed"] else EXIT_OK


def wait_for_batch(svc, batch_id: str) -> dict:
    """Executed in this process; Ctrl-C leaves the rest to the next worker."""
    import asyncio

    from .batches import Batches
    from .foreground import execute_here

    batches = Batches(svc)
    tty = sys.stderr.isatty()

    async def watch(executor):
        last = None
        while True:
            view = await asyncio.to_thread(batches.view, batch_id, items=False)
            text = progress_text(view)
            if text != last:
                last = text
                sys.stderr.write(("\r" + text.ljust(78)) if tty else text + "\n")
                sys.stderr.flush()
            if view["status"] not in ("running",):
                executor.stop()
                return
            await asyncio.sleep(0.2)

    execute_here(svc, watch, lambda: err(f"\nstopped waiting; batch {batch_id} goes on with the next worker or host"))
    if tty:
        sys.stderr.write("\n")
    return batches.view(batch_id)


def progress_text(view: dict) -> str:
    c = view["counts"]
    done = c["completed"] + c["failed"] + c["cancelled"] + c["duplicate"] + c["unreadable"] + c["blocked"]
    return (f"batch {view['id'][:8]} {view['status']}: {done}/{c['total']} done, {c['running']} running, "
            f"{c['failed']} failed, {view['cost']}")


def _counts_text(added: dict) -> str:
    return ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in added.items() if n) or "no input"


def print_batch(view: dict) -> None:
    print(f"batch {view['id']}  {view['name']}  {view['status']}  {view['cost']}"
          + (f"  budget {money.usd_budget(view['budget_usd'])}" if view["budget_usd"] is not None else "")
          + (f"  ({view['note']})" if view["note"] else ""))
    rows = [[str(i["pos"]), (i["title"] or i["source"])[:50], i["run_status"] or i["state"],
             i["run_id"] or "-", terminal.run_cost(i["cost_usd"], 0) if i["cost_usd"] is not None else "-",
             (i["note"] or i["error"] or "")[:60]] for i in view.get("items", [])]
    if rows:
        print(terminal.table(["#", "page", "status", "run", "cost", "note"], rows))


def cmd_batches(args) -> int:
    from .batches import Batches
    from .service import Service

    svc = Service()
    batches = Batches(svc)
    if not args.batch:
        views = batches.list(limit=args.limit)
        if args.json:
            print_json({"batches": views})
        elif not views:
            print("no batches yet")
        else:
            print(terminal.table(["batch", "name", "status", "done", "failed", "cost"],
                                 [[v["id"], v["name"][:40], v["status"],
                                   f"{v['counts']['completed']}/{v['counts']['total']}", str(v["counts"]["failed"]),
                                   v["cost"]] for v in views]))
        return EXIT_OK
    if args.pause:
        view = batches.pause(args.batch)
    elif args.cancel:
        view = batches.cancel(args.batch)
    elif args.retry_failed:
        view = batches.retry_failed(args.batch, budget_usd=args.budget)
    elif args.resume:
        view = batches.resume(args.batch, budget_usd=args.budget)
    else:
        view = batches.view(args.batch)
    if args.resume or args.retry_failed:
        svc.ensure_worker_if_work()
    if args.json:
        print_json(view)
    else:
        print_batch(view)
    return EXIT_OK


def add_parsers(add, usd) -> None:
    """`batch` and `batches`, registered by cli.build_parser."""
    sp = add("batch", cmd_batch, "one run per distinct page of a folder, files or a list of URLs; one estimate first")
    sp.add_argument("template", help="template name, or a path to a .yaml/.json file")
    src = sp.add_mutually_exclusive_group()
    src.add_argument("--inputs", nargs="+", metavar="DIR|FILE", help="page files, or folders of them")
    src.add_argument("--urls", metavar="FILE", help="a file of URLs, one a line (fetched here; pages behind a "
                     "login are left for the browser)")
    sp.add_argument("--budget", type=usd, metavar="USD", help="the batch budget: no run or model step starts past it")
    sp.add_argument("--parallel", type=int, default=None, metavar="N", help="runs of the batch open at once (16)")
    sp.add_argument("--estimate", action="store_true", help="stop after the estimate; the batch stays paused")
    sp.add_argument("--wait", action="store_true", help="execute here, show progress, end with the items")
    sp.add_argument("--json", action="store_true")

    sp = add("batches", cmd_batches, "list batches, or show and steer one")
    sp.add_argument("batch", nargs="?", help="a batch id (or the start of one)")
    act = sp.add_mutually_exclusive_group()
    act.add_argument("--pause", action="store_true", help="make no further run; runs under way finish")
    act.add_argument("--resume", action="store_true", help="make runs again")
    act.add_argument("--cancel", action="store_true", help="make no further run and cancel the open ones")
    act.add_argument("--retry-failed", action="store_true", help="run the failed items again, and only them")
    sp.add_argument("--budget", type=usd, metavar="USD", help="with --resume or --retry-failed: a new batch budget")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--json", action="store_true")


__all__ = ["add_parsers", "cmd_batch", "cmd_batches"]
