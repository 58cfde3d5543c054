"""Batches: many pages sent at once, one run per distinct page, shown and steered as one thing.

    b = Batches(service)
    batch_id = b.create("page-digest", budget_usd=0.50)   a batch, paused until its pages are in
    b.add_page(batch_id, page, source="https://...")       stored at once, never held: memory stays flat
    b.add_url(batch_id, "https://...")                     fetched by the host, then as add_page
    b.estimate_batch(batch_id)                             one combined estimate, against every budget
    b.resume(batch_id)                                     runs are made `parallel` at a time (batchfeed.py)
    b.view(batch_id) / pause / cancel / retry_failed

The same page twice (same URL and content) runs once: the second is a `duplicate` item.
Pages that sit behind a login are `needs_browser` items until the extension sends them
(`fill`). A batch budget stops the batch: no further run is made and no model step starts
that would cross it (batchbudget.py); a step is never cut half way.

The user's [[sites]] rules (privacy.py) hold for every page of a batch as for one capture: a
page or URL of a site ruled `never` is not fetched, stored or sent, and its item is `blocked`
with a note that says why (its source kept as the site alone, not the page's address); a
`strip_query` page is stored without its query; `local_only` and redaction act on its run as
on any run.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from . import clock, money, privacy, sites
from .errors import BadRequest, ConflictError, NotFound, SiteRefused
from .pagetitle import bounded

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

    from .service import Service

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 16  # runs of one batch open at once; the executor's limits pace the calls
MAX_PARALLEL = 1000
PAGE_KEYS = ("content", "source_url", "content_type", "title", "selection")
FINISHED_RUN = ("COMPLETED", "FAILED", "CANCELLED")


def page_digest(page: dict) -> str:
    """The same page: the same URL (or none) and the same content. Two tabs of one page
    scrolled to different headings (#fragment), or a host typed in capitals, are one page."""
    h = hashlib.sha256(_same_page_url(page.get("source_url") or "").encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(page["content"].encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _same_page_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


def check_page(page: Any, where: str = "page") -> dict:
    if not isinstance(page, dict) or not isinstance(page.get("content"), str):
        raise BadRequest(f"{where}.content: expected the page's text", field=f"{where}.content")
    for key in PAGE_KEYS[1:]:
        if page.get(key) is not None and not isinstance(page[key], str):
            raise BadRequest(f"{where}.{key}: expected text", field=f"{where}.{key}")
    out = {k: page[k] for k in PAGE_KEYS if page.get(k) is not None}
    if "title" in out:
        out["title"] = bounded(out["title"])
    return out


class Batches:
    def __init__(self, service: "Service") -> None:
        self.svc = service

    @property
    def store(self):
        return self.svc.store

    # ---- making one --------------------------------------------------------------------

    def create(self, template_ref: str, *, budget_usd: float | None = None, parallel: int | None = None,
               name: str | None = None, start: bool = False) -> str:
        from .service import _check_budget, new_run_id

        _check_budget(budget_usd)
        parallel = DEFAULT_PARALLEL if parallel is None else parallel
        if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
            raise BadRequest(f"parallel: expected a whole number from 1 to {MAX_PARALLEL}", field="parallel")
        tpl = self.svc.template(template_ref)
        if not tpl.capture_slots:
            raise BadRequest(f"template '{tpl.name}' has no capture step to take the pages", field="template")
        ref = template_ref
        if tpl.source and Path(template_ref).suffix.lower() in (".yaml", ".yml", ".json"):
            ref = str(Path(template_ref).resolve())  # the worker runs elsewhere: a path from here
        batch_id = new_run_id()
        label = name or f"{tpl.name} batch"
        # Paused until its pages are in: a worker must not start half a list.
        self.store.create_batch(batch_id, label, ref, budget_usd, parallel, clock.now(),
                                state="running" if start else "paused")
        log.info("batch %s created from template %s", batch_id, tpl.name)
        return batch_id

    def add_page(self, batch_id: str, page: dict, source: str | None = None) -> dict:
        page = check_page(page)
        url = page.get("source_url")
        source = source or url or page.get("title") or "(page)"
        try:
            page = admitted(page)
            if source == url:
                source = page.get("source_url")
            elif source.lower().startswith(("http://", "https://")):  # not a file's path
                source = privacy.admit(source, field="source")
        except SiteRefused as exc:
            return self.add_blocked(batch_id, url or source, exc.message)
        return self.store.add_batch_item(batch_id, source, page.get("title"), page_digest(page), page, "waiting")

    def add_url(self, batch_id: str, url: str) -> dict:
        """A page the host fetches; a URL of a `never` site, or one redirected to such a site,
        is not fetched (not followed) and its item is `blocked`."""
        from .fetch import fetch_page

        try:
            kept = privacy.admit(url, field="urls")
        except SiteRefused as exc:
            return self.add_blocked(batch_id, url, exc.message)
        got = fetch_page(url, refuse=_refused_redirect)
        if got.page is not None:
            return self.add_page(batch_id, got.page, source=kept)
        if got.blocked:
            return self.add_blocked(batch_id, kept, got.note)
        return self.add_unusable(batch_id, kept, "needs_browser" if got.needs_browser else "unreadable",
                                 got.note or "could not fetch")

    def add_unusable(self, batch_id: str, source: str, state: str, note: str, title: str | None = None) -> dict:
        """An item that could not be read (`unreadable`) or sits behind a login (`needs_browser`)."""
        return self.store.add_batch_item(batch_id, source, title, None, None, state, note)

    def add_blocked(self, batch_id: str, url: str, note: str) -> dict:
        """An item of a site ruled `never`: nothing of the page kept but its site and why."""
        return self.store.add_batch_item(batch_id, site_only(url), None, None, None, "blocked", note)

    def fill(self, batch_id: str, pos: int, page: dict) -> dict:
        """The extension's page for a `needs_browser` item (`blocked` when its site is ruled `never`)."""
        batch_id = self.resolve(batch_id)
        page = check_page(page)
        try:
            page = admitted(page)
        except SiteRefused as exc:
            if not self.store.set_item_aside(batch_id, pos, "blocked", exc.message, from_state="needs_browser"):
                raise ConflictError(f"batch '{batch_id}' has no item {pos} waiting for the browser") from None
            return self.view(batch_id)
        if not self.store.fill_item(batch_id, pos, page, page_digest(page), page.get("title")):
            raise ConflictError(f"batch '{batch_id}' has no item {pos} waiting for the browser")
        return self.view(batch_id)

    # ---- finding one --------------------------------------------------------------------

    def resolve(self, batch_id: str) -> str:
        if not isinstance(batch_id, str) or not batch_id:
            raise BadRequest("batch_id: expected a batch id", field="batch_id")
        if self.store.batch_row(batch_id) is not None:
            return batch_id
        ids = self.store.batches_with_prefix(batch_id, 6)
        if len(ids) == 1:
            return ids[0]
        if ids:
            raise BadRequest(f"ambiguous batch id '{batch_id}': matches {', '.join(ids[:5])}; give more of the id",
                             field="batch_id")
        raise NotFound(f"no batch with id '{batch_id}'")

    # ---- estimate --------------------------------------------------------------------------

    def estimate_pages(self, template_ref: str, pages: Iterable[dict], budget_usd: float | None = None) -> dict:
        """The combined tokens and cost range of a run per page, and whether the total fits the
        run, batch, daily and monthly budgets. Pages are estimated one at a time."""
        from .estimate import estimate_run

        tpl = self.svc.template(template_ref)
        total = {"pages": 0, "prompt_tokens": 0, "cost_min": 0.0, "cost_max": 0.0, "price_unknown_pages": 0,
                 "lower_bound": False, "largest_run_cost_max": 0.0, "blocked_pages": 0}
        for page in pages:
            page = check_page(page)
            try:
                privacy.admit(page.get("source_url"))
            except SiteRefused:  # never sent: not in the estimate, counted apart
                total["blocked_pages"] += 1
                continue
            est = estimate_run(tpl, page)
            total["pages"] += 1
            total["prompt_tokens"] += est["total_prompt_tokens"]
            total["cost_min"] += est["total_cost_min"]
            total["cost_max"] += est["total_cost_max"]
            total["price_unknown_pages"] += 1 if est["price_unknown"] else 0
            total["lower_bound"] = total["lower_bound"] or est["lower_bound"]
            total["largest_run_cost_max"] = max(total["largest_run_cost_max"], est["total_cost_max"])
        total["cost_min"], total["cost_max"] = round(total["cost_min"], 10), round(total["cost_max"], 10)
        total.update(template=tpl.name, budgets=self._fits(total, tpl.budget_usd, budget_usd))
        total["text"] = estimate_text(total)
        return total

    def estimate_batch(self, batch_id: str) -> dict:
        batch_id = self.resolve(batch_id)
        row = self.store.batch_row(batch_id)
        return self.estimate_pages(row["template"], self.store.iter_item_pages(batch_id), row["budget_usd"])

    def _fits(self, total: dict, run_budget: float | None, batch_budget: float | None) -> list[dict]:
        """Each budget that applies, what it has left and whether the whole batch fits in it."""
        from . import settings

        out = []
        if run_budget is not None:
            out.append({"kind": "run", "limit_usd": run_budget, "left_usd": run_budget,
                        "fits": total["largest_run_cost_max"] <= run_budget})
        if batch_budget is not None:
            out.append({"kind": "batch", "limit_usd": batch_budget, "left_usd": batch_budget,
                        "fits": total["cost_max"] <= batch_budget})
        b = settings.budgets()
        day_start, month_start = clock.period_starts()
        for kind, limit, since in (("daily", b.daily_usd, day_start), ("monthly", b.monthly_usd, month_start)):
            if limit is None:
                continue
            spent = sum(self.store.spend_since(since).values()) + self.store.unconfirmed_cost(since)
            left = max(0.0, limit - spent)
            out.append({"kind": kind, "limit_usd": limit, "left_usd": round(left, 10),
                        "fits": total["cost_max"] <= left})
        return out

    # ---- steering -------------------------------------------------------------------------

    def pause(self, batch_id: str) -> dict:
        """No further run is made; runs already made go on."""
        batch_id = self.resolve(batch_id)
        if not self.store.set_batch_state(batch_id, "paused", clock.now(), "paused", only_from=("running", "stopped")):
            raise ConflictError(f"batch '{batch_id}' is {self.store.batch_row(batch_id)['state']}; only a running "
                                "batch can be paused")
        return self.view(batch_id)

    def resume(self, batch_id: str, *, budget_usd: float | None = None) -> dict:
        """Make runs again; `budget_usd` replaces the batch budget (the way on after it stopped the batch)."""
        from .service import _check_budget

        _check_budget(budget_usd)
        batch_id = self.resolve(batch_id)
        if not self.store.set_batch_state(batch_id, "running", clock.now(), None, budget_usd=budget_usd,
                                          only_from=("paused", "stopped", "running")):
            raise ConflictError(f"batch '{batch_id}' was cancelled; start a new one")
        return self.view(batch_id)

    def cancel(self, batch_id: str) -> dict:
        """No further run is made, and its open runs are cancelled."""
        batch_id = self.resolve(batch_id)
        self.store.set_batch_state(batch_id, "cancelled", clock.now(), "cancelled")
        for run_id in self.store.batch_runs(batch_id, ("PENDING", "RUNNING")):
            self.svc.cancel(run_id)
        return self.view(batch_id)

    def retry_failed(self, batch_id: str, *, budget_usd: float | None = None) -> dict:
        """Only the failed items run again (each from its failed steps); the batch runs again."""
        batch_id = self.resolve(batch_id)
        failed = self.store.batch_runs(batch_id, ("FAILED",))
        state = self.store.batch_row(batch_id)["state"]
        if state == "cancelled":
            raise ConflictError(f"batch '{batch_id}' was cancelled; start a new one")
        if not failed and state == "paused":  # a batch paused for its estimate must not start by this
            raise ConflictError(f"batch '{batch_id}' has no failed item to retry; it is paused (resume it to go on)")
        self.resume(batch_id, budget_usd=budget_usd)
        for run_id in failed:
            self.svc.retry(run_id)
        view = self.view(batch_id)
        view["retried"] = len(failed)
        return view

    # ---- reading ----------------------------------------------------------------------------

    def view(self, batch_id: str, *, items: bool = True, limit: int = 1000, offset: int = 0) -> dict:
        batch_id = self.resolve(batch_id)
        row = self.store.batch_row(batch_id)
        counts = self.store.batch_counts(batch_id)
        waiting = counts.get("waiting", 0)
        running = counts.get("PENDING", 0) + counts.get("RUNNING", 0)
        state = row["state"]
        if state == "cancelled":
            status = "cancelled"
        elif running:
            status = "running" if state == "running" else state  # paused/stopped: finishing what runs
        elif waiting and state != "running":
            status = state
        elif waiting or counts.get("needs_browser"):
            status = "running" if waiting else "waiting_for_browser"
        else:
            status = "failed" if counts.get("FAILED") else "completed"
        cost = self.store.batch_cost(batch_id)
        unknown = self.store.batch_unknown_cost_steps(batch_id)
        # A call answered at a price not known cost something: never "$0" for it.
        cost_text = money.usd(cost) if not unknown else "unknown" if not cost else f"{money.usd(cost)} + unknown"
        doc = {
            "id": batch_id, "name": row["name"], "template": row["template"], "state": state, "status": status,
            "note": row["note"], "budget_usd": row["budget_usd"], "parallel": row["parallel"],
            "created_at": clock.iso(row["created_at"]), "updated_at": clock.iso(row["updated_at"]),
            "counts": {"total": sum(counts.values()), "waiting": waiting, "running": running,
                       "completed": counts.get("COMPLETED", 0), "failed": counts.get("FAILED", 0),
                       "cancelled": counts.get("CANCELLED", 0) + (waiting if state == "cancelled" else 0),
                       "duplicate": counts.get("duplicate", 0), "needs_browser": counts.get("needs_browser", 0),
                       "unreadable": counts.get("unreadable", 0), "blocked": counts.get("blocked", 0)},
            "cost_usd": cost, "unknown_cost_steps": unknown, "cost": cost_text,
        }
        if items:
            doc["items"] = self.store.batch_items(batch_id, limit, offset)
        return doc

    def list(self, limit: int = 50, offset: int = 0) -> list[dict]:
        return [self.view(b, items=False) for b in self.store.batch_ids(limit, offset)]


def estimate_text(total: dict) -> str:
    """One line a person reads before sending: pages, tokens, cost range, budgets."""
    approx = "at least " if total["lower_bound"] else "about "
    unknown_pages = total["price_unknown_pages"]
    # Pages at a price not known add nothing to the figures: with none known, the range is no "$0 to $0".
    cost = ("cost unknown" if unknown_pages and unknown_pages >= total["pages"]
            else f"{money.usd(total['cost_min'])} to {money.usd(total['cost_max'])}"
            + (" + unknown" if unknown_pages else ""))
    unknown = f"; {unknown_pages} page(s) at a price not known" if unknown_pages else ""
    if total.get("blocked_pages"):
        unknown += f"; {total['blocked_pages']} page(s) left out by a site rule (`never`)"
    budgets = "; ".join(f"{b['kind']} budget {money.usd_budget(b['limit_usd'])}: "
                        + ("fits" if b["fits"] else "DOES NOT FIT") for b in total["budgets"])
    return (f"{total['pages']} page(s), {approx}{total['prompt_tokens']:,} prompt tokens, {cost}{unknown}"
            + (f"; {budgets}" if budgets else ""))


def admitted(page: dict) -> dict:
    """The page as the site rules let it be stored: SiteRefused for a `never` site; a
    `strip_query` site's URL without its query, in the text too (as a capture's is)."""
    url = page.get("source_url")
    kept = privacy.admit(url)
    if kept == url:
        return page
    from types import SimpleNamespace

    fields = SimpleNamespace(**{k: page.get(k) for k in ("content", "title", "selection")})
    privacy.unstrip(fields, url, kept)
    return {**page, **{k: v for k, v in vars(fields).items() if v is not None}, "source_url": kept}


def site_only(url: str) -> str:
    """What a blocked item keeps of where it came from: the site, never the page's address."""

    host = sites.host_of(url)
    if host is None:
        return "(a site ruled never)"
    try:
        scheme = urlsplit(url).scheme.lower() or "https"
    except ValueError:
        scheme = "https"
    return f"{scheme}://{host}/"


def _refused_redirect(url: str) -> str | None:
    """fetch_page's check of a redirect: why it is not followed, or None."""
    if sites.NEVER in privacy.page_rules(url):
        return (f"redirected to {sites.host_of(url)}, a site you ruled `never` in [[sites]] of config.toml: "
                "not followed, nothing of it stored or sent")
    return None


__all__ = ["Batches", "DEFAULT_PARALLEL", "admitted", "check_page", "estimate_text", "page_digest", "site_only"]
