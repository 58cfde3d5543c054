"""The library's use cases: find runs by what their pages and results say, say whether a
page was already sent, reuse an earlier result, show what the store takes and keep it from
growing without bound.

Shared by the host's `library.*`, `runs.for_url` and `runs.delete` messages and the
`search` command; the SQL is the store's (store/library.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from . import clock
from .errors import BadRequest
from .pagetitle import bounded, html_title
from .states import RunStatus
from .views import summary_view

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .service import Service

MAX_QUERY = 500
MAX_LIMIT = 200
MAX_SNIPPET = 400  # characters of a search snippet
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer: past it, OFFSET cannot be bound
DAY_S = 86400.0


def _when(value: str | None, name: str, *, end_of_day: bool = False) -> float | None:
    """An ISO date or date-time as epoch seconds; a bare date given as `until` includes its day."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name}: expected an ISO date (2026-11-30) or date-time", field=name)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{name}: '{value[:40]}' is not an ISO date (2026-11-30) or date-time", field=name) from None
    try:
        if when.tzinfo is None:  # the user's own clock, as the library page shows dates
            when = when.astimezone()
        if end_of_day and len(value.strip()) == 10:
            when += timedelta(days=1)
        return when.timestamp()
    except (OverflowError, ValueError, OSError):  # the calendar's first or last day: no time zone or next day
        raise BadRequest(f"{name}: '{value[:40]}' is outside the dates this machine's clock can show",
                         field=name) from None


def _text(value, name: str, limit: int = 200) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{name}: expected a string of at most {limit} characters", field=name)
    return value.strip() or None


def search(svc: "Service", query: str | None = None, *, workflow: str | None = None, site: str | None = None,
           status: str | None = None, since: str | None = None, until: str | None = None, limit: int = 50,
           offset: int = 0) -> dict:
    """{runs: [runs.list items + `snippet`], total}: runs whose page title, URL or results hold
    every word of `query` (each a prefix); all runs without one; newest first. The filters
    narrow either."""
    from .store import fts_query

    query = _text(query, "query", MAX_QUERY)
    workflow, site = _text(workflow, "workflow"), _text(site, "site")
    status = _text(status, "status")
    if status is not None:
        status = status.upper()
        if status not in RunStatus.__members__:
            raise BadRequest(f"status: expected one of {', '.join(RunStatus.__members__)}", field="status")
    if site is not None:
        site = site.lower().removeprefix("www.")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: expected an integer from 1 to {MAX_LIMIT}", field="limit")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise BadRequest(f"offset: expected an integer from 0 to {MAX_OFFSET}", field="offset")
    match = fts_query(query) if query else None
    if query and match is None:  # only punctuation: nothing can match it
        return {"runs": [], "total": 0}
    rows, total = svc.store.search_runs(match, workflow=workflow, site=site, status=status,
                                        since=_when(since, "since"), until=_when(until, "until", end_of_day=True),
                                        limit=limit, offset=offset)
    summaries = svc.store.run_summaries_of([r[0] for r in rows])
    runs = []
    for run_id, snippet in rows:
        if run_id in summaries:
            runs.append({**summary_view(summaries[run_id]), "snippet": short_snippet(snippet)})
    return {"runs": runs, "total": total}


def short_snippet(snippet: str | None, limit: int = MAX_SNIPPET) -> str | None:
    """At most `limit` characters of a snippet, from a little before its first match. FTS5 cuts
    snippets at words, and one word of a result (a long URL, base64, a run of symbols) can
    be the whole result: 16 such words would be megabytes in every search reply."""
    from .store import MARK_END, MARK_START

    if snippet is None or len(snippet) <= limit:
        return snippet
    first = snippet.find(MARK_START)
    start = max(0, first - limit // 4) if first >= 0 else 0
    cut = snippet[start:start + limit - 2]
    if cut.count(MARK_START) > cut.count(MARK_END):  # cut inside a match: close its mark
        cut += MARK_END
    return ("…" if start else "") + cut + "…"


def stats(svc: "Service") -> dict:
    """What the store takes on disk, how much of it is raw page captures, and the retention."""
    runs, captures = svc.store.library_counts()
    return {"db_bytes": svc.store.file_bytes(), "captures_bytes": captures, "runs": runs,
            "retention_days": retention_days()}


def retention_days() -> int | None:
    from . import settings

    return settings.library().keep_captures_days


def apply_retention(svc: "Service", days: int | None = None) -> dict:
    """Drop the raw page of runs older than `days` (config's keep_captures_days when None), then
    compact the file. {captures_dropped, db_bytes_before, db_bytes_after, retention_days}."""
    days = retention_days() if days is None else days
    before = svc.store.file_bytes()
    if days is None:
        return {"captures_dropped": 0, "db_bytes_before": before, "db_bytes_after": before, "retention_days": None}
    dropped = svc.store.drop_captures(clock.now() - days * DAY_S)
    if dropped:
        svc.store.compact()
    return {"captures_dropped": dropped, "db_bytes_before": before, "db_bytes_after": svc.store.file_bytes(),
            "retention_days": days}


def _cost(view: dict, estimated: int) -> tuple[float | None, str]:
    """A run's cost and what kind of figure it is: exact, estimated, or unknown (never $0 for
    a call whose price is not known)."""
    if view["unknown_cost_steps"]:
        return (None, "unknown") if not view["total_cost"] else (view["total_cost"], "unknown")
    return view["total_cost"], "estimated" if estimated else "exact"


def brief(svc: "Service", run_ids: list[str]) -> list[dict]:
    """{run_id, workflow, status, finished_at, cost, cost_state, page} of each run, in order."""
    summaries = svc.store.run_summaries_of(run_ids)
    estimated = svc.store.estimated_steps(run_ids)
    out = []
    for run_id in run_ids:
        s = summaries.get(run_id)
        if s is None:
            continue
        view = summary_view(s)
        cost, state = _cost(view, estimated.get(run_id, 0))
        out.append({"run_id": run_id, "workflow": view["template"], "status": view["status"],
                    "finished_at": view["updatedAt"] if RunStatus(view["status"]).is_terminal else None,
                    "cost": cost, "cost_state": state, "page": view["page"]})
    return out


def runs_for_url(svc: "Service", url: str) -> dict:
    """Runs already given this page (the URL without its fragment), newest first."""
    if not isinstance(url, str) or not url.strip() or len(url) > 8192:
        raise BadRequest("url: expected a page address of at most 8192 characters", field="url")
    return {"runs": brief(svc, svc.store.runs_for_url(url.strip()))}


def record_page(svc: "Service", run_id: str, template: str, req, ctype: str, now: float) -> None:
    """The page a run was given (an ExternalDataRequest that filled its capture slot): title,
    URL, the browser's favicon (kept only when safe to show), and the content's hash with the
    template version it went to, which reuse matches on."""
    from .pageurl import safe_favicon

    title = bounded(req.title) or (html_title(req.content) if "html" in ctype else None)
    svc.store.record_page(run_id, title=title, url=req.source_url, favicon=safe_favicon(req.metadata.get("favicon")),
                          content_hash=content_hash(req.content, req.selection), template_version=template_version(svc, template),
                          captured_at=now)


def template_version(svc: "Service", name: str) -> str | None:
    """The digest of the template's steps as they are now: an edited prompt or model is a new version."""
    try:
        tpl = svc.template(name)
    except Exception:  # a template run from a file path, or deleted since: no version to match on
        return None
    from .plans import template_plan

    return template_plan(tpl).digest


def reusable_run(svc: "Service", template_ref: str, content: str, selection: str | None = None) -> str | None:
    """The newest COMPLETED run that got this very content (and selection) through the template as it is now."""
    version = template_version(svc, svc.template(template_ref).name)
    return svc.store.reusable_run(content_hash(content, selection), version) if version else None


def rerun(svc: "Service", run_id: str) -> dict:
    """A new run of the same workflow on the page the run was given (its capture, as kept).
    {run_id, step_id, queued_dependents, rerun_of}; a Conflict when retention dropped the page."""
    from .errors import ConflictError

    run_id = svc.resolve_run(run_id)
    template = svc.store.run_row(run_id)["template"]
    captures = [s["step_id"] for s in svc.store.step_rows(run_id) if s["action"] == "capture"]
    outputs = svc.store.outputs(run_id, captures[:1])
    page = outputs.get(captures[0]) if captures else None
    if not isinstance(page, dict) or not isinstance(page.get("content"), str):
        why = "its page was dropped by [library] keep_captures_days" if isinstance(page, dict) and page.get(
            "content_dropped") else "it has no captured page"
        raise ConflictError(f"run '{run_id}' cannot be run again: {why}; open the page and send it again")
    favicon = (svc.store.page_rows([run_id]).get(run_id) or {}).get("favicon")
    result = svc.start(template, content=page["content"], source_url=page.get("source_url"),
                       content_type=page.get("content_type") or "text/html", title=page.get("title"),
                       selection=page.get("selection"), metadata={"favicon": favicon} if favicon else {})
    return {**result, "rerun_of": run_id}


def content_hash(content: str, selection: str | None = None) -> str:
    """What a run was given, as reuse compares it: the page, and the selection when there is
    one (a template may work on the selection alone, so another selection of the same page is
    another request). Without a selection the hash is the page's alone, as stored before."""
    import hashlib

    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass"))
    if selection:
        digest.update(b"\x00selection\x00" + selection.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()




__all__ = ["apply_retention", "brief", "content_hash", "html_title", "record_page", "retention_days",
           "rerun", "reusable_run", "runs_for_url", "search", "stats", "template_version"]
