"""The host's `batch.*` messages (docs/PROTOCOL.md, "Batches"), over batches.Batches.

The extension sends the pages of many tabs, or the links of a selection, as one batch: it
asks `batch.estimate` first (one combined estimate against every budget), then
`batch.start`; `batch.get` shows it as one row with per-item progress and its running
cost; pause, resume, cancel and retry_failed steer it; `batch.fill` hands over a page the
host could not fetch because it sits behind a login.
"""

from __future__ import annotations

from .errors import BadRequest, ConflictError
from .msgfields import field
from .msgfields import text_field as _text

MAX_PAGES = 1000  # per message: a bigger batch comes in several `batch.add`
MAX_URLS = 500
MAX_POS = 2**53  # item numbers and offsets past this are no item (and past SQLite's integers)


def _pages(msg: dict, *, required: bool = True) -> list[dict]:
    from .batches import check_page

    pages = field(msg, "pages", list, "an array of pages", required=required, default=[])
    if len(pages) > MAX_PAGES:
        raise BadRequest(f"pages: at most {MAX_PAGES} per message (send the rest with batch.add)", field="pages")
    out = []
    for i, page in enumerate(pages):
        page = check_page(page, where=f"pages[{i}]")
        if page.get("content_type") is not None:
            from .service import content_type

            page["content_type"] = content_type(page["content_type"], field=f"pages[{i}].content_type")
        out.append(page)
    return out


def _urls(msg: dict) -> list[str]:
    urls = field(msg, "urls", list, "an array of http(s) URLs", required=False, default=[])
    if len(urls) > MAX_URLS:
        raise BadRequest(f"urls: at most {MAX_URLS} per message", field="urls")
    from .fetch import url_problem

    for i, url in enumerate(urls):
        problem = url_problem(url) if isinstance(url, str) else "expected an http:// or https:// URL"
        if problem is not None:
            raise BadRequest(f"urls[{i}]: {problem}", field=f"urls[{i}]")
    return urls


def _batches(host):
    from .batches import Batches

    return Batches(host.service)


def _budget(msg: dict) -> float | None:
    return field(msg, "budget_usd", (int, float), "a number of US dollars", required=False)


def _add(batches, batch_id: str, pages: list[dict], urls: list[str]) -> None:
    for page in pages:
        batches.add_page(batch_id, page)
    for url in urls:
        batches.add_url(batch_id, url)


def h_batch_estimate(host, msg: dict) -> dict:
    check_settings()
    if msg.get("batch_id") is not None:
        # A batch made from addresses: the host fetched its pages, so they are estimated where
        # they are stored, while the batch waits (paused) for the person's yes.
        return _batches(host).estimate_batch(_text(msg, "batch_id"))
    template = _text(msg, "template")
    return _batches(host).estimate_pages(template, _pages(msg), _budget(msg))


def h_batch_start(host, msg: dict) -> dict:
    template = _text(msg, "template")
    pages, urls = _pages(msg, required=False), _urls(msg)
    if not pages and not urls:
        raise BadRequest("pages: expected at least one page (or urls)", field="pages")
    paused = field(msg, "paused", bool, "a boolean", required=False, default=False)
    parallel = field(msg, "parallel", int, "a whole number", required=False)
    name = field(msg, "name", str, "a string", required=False)
    check_settings()
    batches = _batches(host)
    batch_id = batches.create(template, budget_usd=_budget(msg), parallel=parallel, name=name)
    _add(batches, batch_id, pages, urls)
    if not paused:
        batches.resume(batch_id)
        host.ensure_worker()
    return batches.view(batch_id)


def h_batch_add(host, msg: dict) -> dict:
    batches = _batches(host)
    batch_id = batches.resolve(_text(msg, "batch_id"))
    pages, urls = _pages(msg, required=False), _urls(msg)
    if batches.store.batch_row(batch_id)["state"] == "cancelled":  # its pages would wait for good
        raise ConflictError(f"batch '{batch_id}' was cancelled; start a new one")
    _add(batches, batch_id, pages, urls)
    host.ensure_worker()
    return batches.view(batch_id, items=False)


def h_batch_get(host, msg: dict) -> dict:
    limit = field(msg, "limit", int, "an integer from 1 to 1000", required=False, default=1000)
    offset = field(msg, "offset", int, "a non-negative integer", required=False, default=0)
    if not 1 <= limit <= 1000 or not 0 <= offset <= MAX_POS:
        raise BadRequest("limit: expected 1 to 1000, offset: expected >= 0", field="limit")
    return _batches(host).view(_text(msg, "batch_id"), limit=limit, offset=offset)


def h_batch_list(host, msg: dict) -> dict:
    limit = field(msg, "limit", int, "an integer from 1 to 200", required=False, default=20)
    if not 1 <= limit <= 200:
        raise BadRequest("limit: expected an integer from 1 to 200", field="limit")
    return {"batches": _batches(host).list(limit)}


def h_batch_pause(host, msg: dict) -> dict:
    return _batches(host).pause(_text(msg, "batch_id"))


def h_batch_resume(host, msg: dict) -> dict:
    check_settings()
    view = _batches(host).resume(_text(msg, "batch_id"), budget_usd=_budget(msg))
    host.ensure_worker()
    return view


def h_batch_cancel(host, msg: dict) -> dict:
    return _batches(host).cancel(_text(msg, "batch_id"))


def h_batch_retry_failed(host, msg: dict) -> dict:
    check_settings()
    view = _batches(host).retry_failed(_text(msg, "batch_id"), budget_usd=_budget(msg))
    host.ensure_worker()
    return view


def h_batch_fill(host, msg: dict) -> dict:
    pos = field(msg, "pos", int, "an item number")
    if not 1 <= pos <= MAX_POS:
        raise BadRequest(f"pos: expected an item number from 1 to {MAX_POS}", field="pos")
    page = field(msg, "page", dict, "an object with at least `content`")
    view = _batches(host).fill(_text(msg, "batch_id"), pos, page)
    host.ensure_worker()
    return view


def check_settings() -> None:
    """ConfigError (bad_config, naming the file, key and range) when a setting is bad."""
    from . import settings

    settings.check()


__all__ = [name for name in list(globals()) if name.startswith("h_batch_")]
