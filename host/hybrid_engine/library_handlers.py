"""The host's handlers for the library: search, its size, "already sent", running a run's page
again, deleting a run.

Each checks the fields it reads (handlers.field) and delegates to library.py or the service;
handlers.HANDLERS serves them next to the others (it imports this module, so the
shared field checks are imported here when a message comes, not at import).
"""

from __future__ import annotations



def h_library_search(host, msg: dict) -> dict:
    from . import library
    from .handlers import field

    args = {name: field(msg, name, str, "a string", required=False)
            for name in ("query", "workflow", "site", "status", "since", "until")}
    limit = field(msg, "limit", int, f"an integer from 1 to {library.MAX_LIMIT}", required=False, default=50)
    offset = field(msg, "offset", int, "a non-negative integer", required=False, default=0)
    return library.search(host.service, args.pop("query"), limit=limit, offset=offset, **args)


def h_library_stats(host, msg: dict) -> dict:
    from . import library

    return library.stats(host.service)


def h_runs_for_url(host, msg: dict) -> dict:
    from . import library
    from .handlers import text_field

    return library.runs_for_url(host.service, text_field(msg, "url"))


def h_runs_delete(host, msg: dict) -> dict:
    from .handlers import text_field

    run_id = host.service.resolve_run(text_field(msg, "run_id"))
    return {"run_id": run_id, "deleted": host.service.delete(run_id)}


def h_runs_rerun(host, msg: dict) -> dict:
    from . import library
    from .handlers import check_settings, text_field

    check_settings()  # a run the executor cannot start would only fail
    result = library.rerun(host.service, text_field(msg, "run_id"))
    host.ensure_worker()
    return result


__all__ = ["h_runs_rerun", "h_library_search", "h_library_stats", "h_runs_delete", "h_runs_for_url"]
