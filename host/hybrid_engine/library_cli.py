"""`hybrid-engine search` and `hybrid-engine library`, and runs named by their page in `runs`
and `show`: the library from a terminal.

A thin shell over library.py, registered by cli.build_parser; prints a table, or one JSON
document with --json.
"""

from __future__ import annotations

import json
import sys

from .terminal import EXIT_OK, age, run_cost, table
from .views import run_label

MARKS = str.maketrans({"\x02": "[", "\x03": "]"})


# Control characters (ESC and C1's CSI start escape sequences: a page title could set the
# clipboard, rename the window or clear the screen) and bidi overrides (which reorder what
# the terminal shows): page text is printed without them.
_UNPRINTED = dict.fromkeys([*range(0x20), 0x7f, *range(0x80, 0xa0), *range(0x202a, 0x202f), *range(0x2066, 0x206a)],
                           " ")


def _one_line(text: str | None, width: int) -> str:
    """Page text on one line of a terminal: no control characters, whitespace folded, cut with an ellipsis."""
    flat = " ".join((text or "").translate(_UNPRINTED).split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def _service():
    from .service import Service

    return Service()


def runs_table(runs: list[dict]) -> str:
    """`runs`: each run named by its page's title (its workflow when it has no page)."""
    rows = [[r["id"], _one_line(run_label(r), 40), r["template"], r["status"],
             f"{r['completed_steps']}/{r['total_steps']}", f"{r['total_tokens']:,}",
             run_cost(r["total_cost"], r["unknown_cost_steps"]), age(r["createdAt"])] for r in runs]
    return table(["run", "page", "template", "status", "steps", "tokens", "cost", "created"], rows)


def print_page(doc: dict) -> None:
    """`show`: the page's title and address above the run's table."""
    page = doc.get("page") or {}
    if page.get("title"):
        print(_one_line(page["title"], 100))
    if page.get("url"):
        print(f"source: {_one_line(page['url'], 200)}")


def cmd_search(args) -> int:
    from . import library

    found = library.search(_service(), " ".join(args.query), workflow=args.workflow, site=args.site,
                           status=args.status, since=args.since, until=args.until, limit=args.limit)
    if args.json:
        sys.stdout.write(json.dumps(found, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    if not found["runs"]:
        print("no runs match")
        return EXIT_OK
    rows = [[r["id"], _one_line(run_label(r), 40), (r["page"] or {}).get("site") or "-", r["template"], r["status"],
             run_cost(r["total_cost"], r["unknown_cost_steps"]), age(r["createdAt"])] for r in found["runs"]]
    print(table(["run", "page", "site", "workflow", "status", "cost", "created"], rows))
    for r in found["runs"]:
        if r.get("snippet"):
            print(f"\n{r['id']}: {_one_line(r['snippet'].translate(MARKS), 160)}")
    shown = len(found["runs"])
    if found["total"] > shown:
        print(f"\n{shown} of {found['total']} shown; --limit N shows more")
    return EXIT_OK


def _size(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def cmd_library(args) -> int:
    from . import library

    svc = _service()
    pruned = library.apply_retention(svc) if args.prune else None
    stats = library.stats(svc)
    if args.json:
        sys.stdout.write(json.dumps({**stats, "pruned": pruned}, indent=2) + "\n")
        return EXIT_OK
    keep = stats["retention_days"]
    print(f"{stats['runs']:,} run{'' if stats['runs'] == 1 else 's'} in {_size(stats['db_bytes'])} ({svc.db_path}); raw page captures "
          f"{_size(stats['captures_bytes'])}")
    print(f"captures are kept {'for ' + str(keep) + ' days' if keep else 'as long as their runs'}"
          + ("" if keep else " (set [library] keep_captures_days = N in config.toml)"))
    if pruned is not None:
        print(f"dropped {pruned['captures_dropped']} raw capture(s): {_size(pruned['db_bytes_before'])} -> "
              f"{_size(pruned['db_bytes_after'])}")
    return EXIT_OK


def register(add) -> None:
    """The commands, added to cli.build_parser's subcommands with its `add`."""
    sp = add("search", cmd_search, "find runs by a word of their page title, URL or results")
    sp.add_argument("query", nargs="+", help="words that must all match (each as a prefix); no search syntax")
    sp.add_argument("--workflow", metavar="NAME")
    sp.add_argument("--site", metavar="HOST", help="e.g. example.org")
    sp.add_argument("--status", metavar="STATUS", help="COMPLETED, FAILED, ...")
    sp.add_argument("--since", metavar="DATE", help="ISO date or date-time")
    sp.add_argument("--until", metavar="DATE", help="ISO date (that day included) or date-time")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--json", action="store_true")

    sp = add("library", cmd_library, "what the store takes on disk; --prune drops raw captures past "
             "[library] keep_captures_days and shrinks the file")
    sp.add_argument("--prune", action="store_true")
    sp.add_argument("--json", action="store_true")


__all__ = ["cmd_library", "cmd_search", "print_page", "register", "runs_table"]
