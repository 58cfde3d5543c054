"""The host's message handlers: one small function per message type, over service.Service.

Each takes the Host (for its service, the background worker, events and status) and the
decoded message, checks the fields it reads (a BadRequest names the field and what was
expected), and returns the reply's `result`. Messages and their fields are in
docs/PROTOCOL.md. The transport around them (frames, threads, errors as
replies) is host.py; nothing here writes a frame or touches the store.
"""

from __future__ import annotations

import os
import time

from . import PROTOCOL_VERSION, __version__
from .errors import BadRequest
from .hello import MESSAGE_TYPES, hello_result, loaded_heavy_modules
from .msgfields import field, json_type
from .msgfields import text_field as _text

TYPE_CHECKING = False  # `typing` itself costs 2 ms of the host's start
if TYPE_CHECKING:
    from typing import Any, Callable

    Handler = Callable[[Any, dict], dict]  # (the Host, the message) -> the reply's result

MAX_CAPTURE_ID = 200


# ---- field validation (field() and json_type() are msgfields.py's) ----------------------

def _page(msg: dict) -> dict:
    """The `page` of capture and estimate: only `content` is required."""
    page = field(msg, "page", dict, "an object with at least `content`")
    out = {"content": field(page, "content", str, "a string", prefix="page.")}
    for key in ("source_url", "content_type", "title", "selection", "article"):
        out[key] = field(page, key, str, "a string", required=False, prefix="page.")
    out["metadata"] = field(page, "metadata", dict, "an object", required=False, default={}, prefix="page.")
    if out["content_type"] is not None:  # checked (and short names made MIME types) before a run is created
        from .service import content_type

        out["content_type"] = content_type(out["content_type"], field="page.content_type")
    return out


def check_settings() -> None:
    """ConfigError (bad_config, naming the file, key and range) when a setting is bad."""
    from . import settings

    settings.check()


# ---- the host itself: hello, status, configuration, diagnosis --------------------------

def h_hello(host, msg: dict) -> dict:
    proto = field(msg, "protocol", int, "an integer", required=False, default=PROTOCOL_VERSION)
    if proto < 1:
        raise BadRequest("protocol: expected a positive integer", field="protocol")
    return hello_result()


def h_host_status(host, msg: dict) -> dict:
    host.start_logging()  # so that log_file is known even before the engine has started
    from . import worker

    try:
        pid = worker.lock().holder()
    except worker.LockUnusable:  # said in config_error; no worker starts until it is removed
        pid = None
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - host.started, 3),
        "worker": {"running": pid is not None, "pid": pid if pid and pid > 0 else None},
        "subscribed": host.subscribed,
        "origin_checked": bool(host.caller_args),
        "heavy_modules_loaded": loaded_heavy_modules(),
        "log_file": host.log_file or None,
        "config_error": host.config_problem,
    }


def h_config(host, msg: dict) -> dict:
    """Providers (has_key and a source label, never a key), base URLs, limits, budgets, folders."""
    return host.service.config_summary()


def h_sites_set(host, msg: dict) -> dict:
    """Replace the [[sites]] rules of config.toml (Options); the rules now in effect."""
    from .siteconfig import write_rules

    return {"sites": write_rules(field(msg, "sites", list, "an array of {match, rule} objects"))}


DOCTOR_NOTE = ("The launch check (start the host, send hello) is skipped: this host is answering now, "
               "and a host launching itself to check itself proves nothing more and is slow. "
               "`hybrid-engine doctor` in a terminal runs it.")


def h_doctor(host, msg: dict) -> dict:
    """install.doctor without the launch check: the registration as the browsers would read it."""
    ids = field(msg, "extension_ids", list, "an array of extension ids", required=False, default=[])
    for i, value in enumerate(ids):
        if not isinstance(value, str):
            raise BadRequest(f"extension_ids[{i}]: expected a string, got {json_type(value)}",
                             field=f"extension_ids[{i}]")
    from . import install

    findings = install.doctor(extension_ids=ids, check_launch=False)
    errors = sum(1 for f in findings if f.severity == install.ERROR)
    return {
        "ok": errors == 0,
        "findings": [f.to_dict() for f in findings],
        "errors": errors,
        "warnings": sum(1 for f in findings if f.severity == install.WARNING),
        "launch_checked": False,
        "note": DOCTOR_NOTE,
    }


# ---- templates -----------------------------------------------------------------------

def h_templates_list(host, msg: dict) -> dict:
    svc = host.service
    return {"templates": svc.list_templates(), "errors": [e.message for e in svc.templates.errors()],
            "folder": str(svc.templates.folder)}


# ---- pages in: captures and external data ---------------------------------------------

def h_capture(host, msg: dict) -> dict:
    template = _text(msg, "template")
    page = _page(msg)
    budget = field(msg, "budget_usd", (int, float), "a number", required=False)
    reuse = field(msg, "reuse", str, '"ask", "reuse" or "fresh"', required=False, default="fresh")
    if reuse not in ("ask", "reuse", "fresh"):
        raise BadRequest('reuse: expected "ask", "reuse" or "fresh"', field="reuse")
    capture_id = field(page["metadata"], "capture_id", str, "a string", required=False, prefix="page.metadata.")
    if capture_id is not None and not 1 <= len(capture_id) <= MAX_CAPTURE_ID:
        raise BadRequest(f"page.metadata.capture_id: expected 1 to {MAX_CAPTURE_ID} characters",
                         field="page.metadata.capture_id")
    # A capture re-sent with a capture_id that already made a run gets that run back (duplicate: true).
    result = host.service.capture(template, capture_id=capture_id, content=page["content"],
                                  source_url=page["source_url"], content_type=page["content_type"] or "text/html",
                                  title=page["title"], selection=page["selection"], metadata=page["metadata"],
                                  article=page["article"], budget_usd=budget, reuse=reuse)
    if not result.get("duplicate") and result.get("run_id") and not result.get("reused_from"):
        host.ensure_worker()
    return result


_EXTERNAL_FIELDS = ("content", "source_url", "content_type", "step_name", "metadata", "title", "selection")


def h_external_data_add(host, msg: dict) -> dict:
    run_id = _text(msg, "workflow_id")
    field(msg, "content", str, "a string")
    for key in ("source_url", "content_type", "step_name", "title", "selection"):
        field(msg, key, str, "a string", required=False)
    field(msg, "metadata", dict, "an object", required=False)
    request = {k: msg[k] for k in _EXTERNAL_FIELDS if msg.get(k) is not None}
    response = host.service.ingest(run_id, request)
    host.ensure_worker()
    return response.model_dump()


def h_external_data_list(host, msg: dict) -> dict:
    return host.service.external_data(_text(msg, "workflow_id"))


# ---- runs ----------------------------------------------------------------------------

def h_runs_list(host, msg: dict) -> dict:
    limit = field(msg, "limit", int, "an integer from 1 to 1000", required=False, default=50)
    offset = field(msg, "offset", int, "a non-negative integer", required=False, default=0)
    return {"runs": host.service.list_runs(limit, offset), "limit": limit, "offset": offset}


def h_runs_get(host, msg: dict) -> dict:
    return host.service.run_document(_text(msg, "run_id"))


def h_runs_output(host, msg: dict) -> dict:
    return host.service.step_outputs(_text(msg, "run_id"), _text(msg, "step_id"))


def h_runs_retry(host, msg: dict) -> dict:
    budget = field(msg, "budget_usd", (int, float), "a number", required=False)
    check_settings()  # a retry the executor cannot start would only fail again
    summary = host.service.retry(_text(msg, "run_id"), budget_usd=budget)
    host.ensure_worker()
    return summary


def h_runs_cancel(host, msg: dict) -> dict:
    return host.service.cancel(_text(msg, "run_id"))


def h_runs_subscribe(host, msg: dict) -> dict:
    host.subscribe()
    return {"subscribed": True, "events": ["run.updated", "templates.changed"]}


# ---- money: what a run would cost, what was spent ---------------------------------------

def h_estimate(host, msg: dict) -> dict:
    template = _text(msg, "template")
    check_settings()
    return host.service.estimate(template, _page(msg))


def h_spend(host, msg: dict) -> dict:
    check_settings()  # the popup asks for spend when it opens: a bad setting shows there
    return host.service.spend()


# ---- the library: search, its size, "already sent", a run's page again, delete ---------------

def h_library_search(host, msg: dict) -> dict:
    from . import library

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

    return library.runs_for_url(host.service, _text(msg, "url"))


def h_runs_rerun(host, msg: dict) -> dict:
    from . import library

    check_settings()  # a run the executor cannot start would only fail
    result = library.rerun(host.service, _text(msg, "run_id"))
    host.ensure_worker()
    return result


def h_runs_delete(host, msg: dict) -> dict:
    run_id = host.service.resolve_run(_text(msg, "run_id"))
    return {"run_id": run_id, "deleted": host.service.delete(run_id)}


# The options page's messages (keys, settings, spend per day) and the batch.* family live in
# modules of their own.
from .handlers_options import h_keys_remove, h_keys_set, h_keys_status, h_settings_update, h_spend_daily  # noqa: E402,F401
from .batch_handlers import (h_batch_add, h_batch_cancel, h_batch_estimate, h_batch_fill,  # noqa: E402,F401
                             h_batch_get, h_batch_list, h_batch_pause, h_batch_resume, h_batch_retry_failed,
                             h_batch_start)

# One list of message types, hello.py's (hostboot's hello lists them before this module
# loads); each is served by the h_ function named after it ("runs.get" -> h_runs_get).
HANDLERS: dict[str, Handler] = {t: globals()["h_" + t.replace(".", "_")] for t in MESSAGE_TYPES}


__all__ = ["HANDLERS", "MAX_CAPTURE_ID", "check_settings", "field", "json_type"]
