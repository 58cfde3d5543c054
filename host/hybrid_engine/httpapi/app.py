"""The routes: HTTP in front of service.Service, the same use cases as the host and the CLI.

Request and response shapes are the host's (docs/PROTOCOL.md); external data is
models.ExternalDataRequest in and ExternalDataResponse out (workflow_id, step_id, status,
queued_dependents, message), the shapes scripts written for this API already send. Errors
are `{"error": {"code", "message", ...}}` with the host's codes and a matching status.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from .. import __version__
from ..config import ConfigError
from ..errors import HybridEngineError
from ..handlers import MAX_CAPTURE_ID, check_settings
from ..models import ExternalDataRequest, ExternalDataResponse
from . import docs_page

log = logging.getLogger(__name__)

STATUS = {"bad_request": 400, "bad_template": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404,
          "conflict": 409, "budget_exceeded": 409, "too_large": 413, "bad_config": 503,
          "store_unavailable": 503, "store_corrupt": 503, "store_read_only": 503, "store_full": 507,
          "internal": 500}
EVENTS_POLL_S = 0.15  # as the host's run.updated: Service.changes is cheap when nothing was committed
KEEPALIVE_S = 15.0  # a comment line now and then, so proxies and clients see the stream alive


class StartRunRequest(BaseModel):
    """A run of `template`; with `content`, the page that fills its capture slot."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1)
    content: str | None = None
    source_url: str | None = None
    content_type: str = "text/html"
    title: str | None = None
    selection: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # strict: as the host, a boolean or a numeric string is no number (lax pydantic made `true` $1)
    budget_usd: float | None = Field(default=None, strict=True)
    capture_id: str | None = Field(default=None, min_length=1, max_length=MAX_CAPTURE_ID,
                                   description="sending the same capture_id again returns the run it made")


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_usd: float | None = Field(default=None, strict=True, description="a new run budget in US dollars")


def error(code: str, message: str, status: int | None = None, fields: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **(fields or {})}},
                        status_code=status or STATUS.get(code, 400), headers={"cache-control": "no-store"})


def build_app(svc, *, on_work: Callable[[], None], db_path: Callable[[], Any]) -> FastAPI:
    """`on_work`: called after a request committed work (a worker picks it up)."""
    app = FastAPI(title="Hybrid Engine", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", **_no_telemetry(),
                  description="Local HTTP API of Hybrid Engine. Every route needs `Authorization: Bearer TOKEN` "
                              "(`hybrid-engine serve --show-token`).")

    @app.exception_handler(HybridEngineError)
    async def engine_error(request: Request, exc: HybridEngineError):
        return error(exc.code, exc.message, fields=exc.fields)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError):
        return error("bad_config", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            at = first.get("loc", ())[-1:]
            return error("bad_request", f"body: not valid JSON ({first.get('ctx', {}).get('error', 'cannot be parsed')}"
                         f"{f' at character {at[0]}' if at else ''})", fields={"field": "body"})
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "(body)"
        return error("bad_request", f"{where}: {first.get('msg', 'invalid')}", fields={"field": where})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return error("not_found", f"no route {request.url.path[:200]!r} (see /docs)", 404)
        if exc.status_code == 405:
            return error("bad_request", f"{request.method} is not allowed on {request.url.path[:200]!r}", 405)
        return error("bad_request", str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        from ..store import query_error

        store_exc = query_error(exc, db_path())
        if store_exc is not None:
            log.warning("%s %s: %s", request.method, request.url.path[:200], store_exc.message)
            return error(store_exc.code, store_exc.message, fields=store_exc.fields)
        log.error("%s %s failed", request.method, request.url.path[:200], exc_info=exc)
        return error("internal", f"internal error handling {request.method} {request.url.path[:60]!r} "
                     "(details in the log file)", 500)

    # ---- runs ------------------------------------------------------------------------

    @app.post("/workflows", status_code=201, summary="Start a run from a template, optionally with a page")
    def start_run(body: StartRunRequest) -> dict:
        result = svc.capture(body.template, capture_id=body.capture_id, content=body.content,
                             source_url=body.source_url, content_type=body.content_type, title=body.title,
                             selection=body.selection, metadata=body.metadata, budget_usd=body.budget_usd)
        if not result.get("duplicate"):
            on_work()
        return result

    @app.get("/workflows", summary="Runs, newest first")
    def list_runs(limit: int = 50, offset: int = 0) -> dict:
        return {"runs": svc.list_runs(limit, offset), "limit": limit, "offset": offset}

    @app.get("/workflows/{workflow_id}", summary="The run document: steps, outputs, metrics, cost")
    def get_run(workflow_id: str) -> dict:
        return svc.run_document(workflow_id)

    @app.post("/workflows/{workflow_id}/external-data", response_model=ExternalDataResponse,
              summary="Add external data: fills the run's capture slot, or adds a completed step")
    def add_external_data(workflow_id: str, body: ExternalDataRequest) -> ExternalDataResponse:
        response = svc.ingest(workflow_id, body)
        on_work()
        return response

    @app.get("/workflows/{workflow_id}/external-data", summary="The run's external-data steps")
    def list_external_data(workflow_id: str) -> dict:
        return svc.external_data(workflow_id)

    @app.post("/workflows/{workflow_id}/retry", summary="Resume a FAILED or CANCELLED run")
    def retry(workflow_id: str, body: RetryRequest | None = None) -> dict:
        check_settings()  # a retry the executor cannot start would only fail again
        summary = svc.retry(workflow_id, budget_usd=body.budget_usd if body else None)
        on_work()
        return summary

    @app.post("/workflows/{workflow_id}/cancel", summary="Cancel a run")
    def cancel(workflow_id: str) -> dict:
        return svc.cancel(workflow_id)

    @app.get("/templates", summary="Workflow templates")
    def templates() -> dict:
        return {"templates": svc.list_templates(), "errors": [e.message for e in svc.templates.errors()]}

    @app.get("/spend", summary="What model calls cost today and this month, and the budgets")
    def spend() -> dict:
        check_settings()
        return svc.spend()

    # ---- run updates as server-sent events ---------------------------------------------

    @app.get("/events", summary="Run updates as server-sent events (run.updated), optionally of one run",
             response_class=StreamingResponse)
    async def events(workflow_id: str | None = None):
        only = await anyio.to_thread.run_sync(svc.resolve_run, workflow_id) if workflow_id else None
        _, cursor = await anyio.to_thread.run_sync(svc.changes, None)  # from now on, every change is news
        return StreamingResponse(_stream(svc, cursor, only), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    # ---- docs, served here (no page or script from elsewhere) -------------------------

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page.render(app.openapi()), headers={"cache-control": "no-store"})

    return app


def _no_telemetry() -> dict:
    """FastAPI's OpenTelemetry off: it would record request bodies (pages) and, with an OTLP
    exporter configured from the environment, send them off this machine."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False,
                          "auto_configure": False}}


async def _stream(svc, cursor: dict, only: str | None):
    ready = {"event": "ready", "events": ["run.updated"], "workflow_id": only, "version": __version__}
    yield _sse("ready", ready)  # subscribed: whatever is committed after this line is reported
    quiet = 0.0
    while True:
        await anyio.sleep(EVENTS_POLL_S)
        try:
            changed, cursor = await anyio.to_thread.run_sync(svc.changes, cursor)
        except Exception:  # noqa: BLE001 - a busy store: the next poll tries again
            log.exception("polling for run changes failed")
            continue
        sent = False
        for summary in changed:
            if only is None or summary.get("id") == only:
                yield _sse("run.updated", {"event": "run.updated", "run": summary, "version": __version__})
                sent = True
        quiet = 0.0 if sent else quiet + EVENTS_POLL_S
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
