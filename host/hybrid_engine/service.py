"""Use cases shared by the native host and the command line.

Transports (host.py, cli.py) parse and print; everything they can do is a method
here, raising HybridEngineError subclasses that carry a code and a message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from datetime import datetime
from pathlib import Path

from . import clock, config
from .errors import BadRequest, ConflictError, NotFound
from .states import RunStatus, StepStatus
from .store import Store

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's runs.list 2 ms
if TYPE_CHECKING:  # pydantic, yaml and the executor load on first use: the host answers before them
    from typing import Any

    from .executor import Executor
    from .models import ExternalDataRequest, ExternalDataResponse, WorkflowTemplate
    from .recovery import RecoveryReport
    from .templates import TemplateRegistry

log = logging.getLogger(__name__)

CONTENT_TYPES = ("text/html", "text/plain", "text/markdown", "application/xhtml+xml", "application/json")
# The seed's ExternalDataRequest spoke of "text", "html" and "json": short names are taken anywhere a
# MIME type is, and stored as the MIME type.
CONTENT_TYPE_NAMES = {"text": "text/plain", "html": "text/html", "json": "application/json",
                      "markdown": "text/markdown"}
MAX_CONTENT_BYTES = 64 * 1024 * 1024
DEFAULT_CUT = 4000


def content_type(value: str | None, *, field: str = "content_type", default: str = "text/html") -> str:
    """A supported MIME type (parameters such as charset dropped) for a MIME type or a short name."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string such as text/html", field=field)
    base = value.split(";")[0].strip().lower()
    base = CONTENT_TYPE_NAMES.get(base, base)
    if base not in CONTENT_TYPES:
        raise BadRequest(f"{field}: {value[:80]!r} is not supported (use one of {', '.join(CONTENT_TYPES)}, "
                         f"or {', '.join(CONTENT_TYPE_NAMES)})", field=field)
    return base


MAX_METADATA_DEPTH = 32  # nesting levels of a capture's or an ingest's metadata (the object itself is 1)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether dicts/lists nest deeper than `limit`, without recursion (no RecursionError on any input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def parse_metadata(text: str, *, what: str = "--metadata") -> dict:
    """A JSON object given as text; its nesting is counted before json parses it (which would recurse)."""
    depth = deepest = 0
    for ch in re.sub(r"[^\[\]{}]", "", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_METADATA_DEPTH:
            raise BadRequest(f"{what}: nested deeper than {MAX_METADATA_DEPTH} levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what}: not JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:  # the count above was fooled somehow: still a clear error
        raise BadRequest(f"{what}: nested deeper than {MAX_METADATA_DEPTH} levels") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"{what}: expected a JSON object")
    return value


def new_run_id() -> str:
    return os.urandom(8).hex()  # 64 random bits, as 16 hex digits (uuid would load `platform`)


def _iso(ts: float | None) -> str | None:
    return clock.iso(ts) if ts is not None else None


def summary_view(s: dict) -> dict:
    total = s["total_steps"] or 0
    done = s["completed_steps"] or 0
    return {
        "id": s["id"],
        "name": s["name"],
        "template": s["template"],
        "status": s["status"],
        "progress": round(100.0 * done / total, 1) if total else 0.0,
        "completed_steps": done,
        "failed_steps": s["failed_steps"],
        "total_steps": total,
        "total_tokens": s["total_tokens"] or 0,
        "total_cost": round(s["total_cost"] or 0.0, 10),
        "unknown_cost_steps": s["unknown_cost_steps"] or 0,
        "budget_usd": s["budget_usd"],
        "error": s["error"],
        "error_code": s["error_code"],
        "createdAt": _iso(s["created_at"]),
        "updatedAt": _iso(s["updated_at"]),
    }


def _cut(value: Any, limit: int) -> tuple[Any, bool]:
    if isinstance(value, str):
        if len(value) > limit:
            return value[:limit], True
        return value, False
    if isinstance(value, dict):
        out, cut = {}, False
        for k, v in value.items():
            out[k], c = _cut(v, limit)
            cut = cut or c
        return out, cut
    if isinstance(value, list):
        out_l, cut = [], False
        for v in value:
            nv, c = _cut(v, limit)
            out_l.append(nv)
            cut = cut or c
        return out_l, cut
    return value, False


class Service:
    def __init__(self, store: Store | None = None, templates: "TemplateRegistry | None" = None):
        self._store = store
        self._store_lock = threading.Lock()
        self._templates = templates

    @property
    def store(self) -> Store:
        """Opened on first use: listing templates works even when engine.db cannot be opened."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = Store(config.db_path())
        return self._store

    @property
    def templates(self) -> "TemplateRegistry":
        if self._templates is None:
            from .templates import TemplateRegistry

            self._templates = TemplateRegistry()
        return self._templates

    # ---- templates ------------------------------------------------------------

    def list_templates(self) -> list[dict]:
        return [t.summary() for t in sorted(self.templates.all(), key=lambda t: t.name)]

    def template(self, ref: str) -> "WorkflowTemplate":
        if not isinstance(ref, str) or not ref.strip():
            raise BadRequest("template: expected a template name")
        return self.templates.get(ref)

    # ---- runs -----------------------------------------------------------------

    def create_run(self, template: "WorkflowTemplate | str", *, budget_usd: float | None = None) -> str:
        _check_budget(budget_usd)
        tpl = self.template(template) if isinstance(template, str) else template
        plan = tpl.plan()
        run_id = new_run_id()
        budget = budget_usd if budget_usd is not None else tpl.budget_usd
        self.store.create_run(run_id, tpl.name, tpl.name, plan, budget, clock.now())
        log.info("run %s created from template %s (%d steps)", run_id, tpl.name, len(plan.rows))
        return run_id

    AMBIGUOUS_SHOWN = 5  # runs named in an "ambiguous run id" message

    def resolve_run(self, run_id: str) -> str:
        """Exact id, or a prefix that names one run (people type ids in a terminal).

        A prefix that several runs share is refused with the runs it matches, so the user
        can pick one instead of acting on a run chosen for them.
        """
        if not isinstance(run_id, str) or not run_id:
            raise BadRequest("run_id: expected a run id")
        if self.store.run_info(run_id) is not None:
            return run_id
        rows = self.store.runs_with_prefix(run_id, limit=self.AMBIGUOUS_SHOWN + 1)
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            named = []
            for (rid,) in rows[:self.AMBIGUOUS_SHOWN]:
                info = self.store.run_info(rid)
                name = " ".join(str(info[0]).split())[:60] if info else ""  # a page title may hold newlines
                named.append(f"{rid} ({name}, {_iso(info[2])})" if info else rid)
            more = ", and more" if len(rows) > self.AMBIGUOUS_SHOWN else ""
            raise BadRequest(f"ambiguous run id '{run_id}': matches {', '.join(named)}{more}; "
                             "give more of the id", field="run_id")
        raise NotFound(f"no run with id '{run_id}'")

    def summary(self, run_id: str) -> dict:
        s = self.store.run_summary(run_id)
        if s is None:
            raise NotFound(f"no run with id '{run_id}'")
        return summary_view(s)

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[dict]:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise BadRequest("limit: expected an integer from 1 to 1000")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise BadRequest("offset: expected a non-negative integer")
        return [summary_view(s) for s in self.store.run_summaries(limit, offset)]

    def run_document(self, run_id: str, *, cut: int | None = DEFAULT_CUT) -> dict:
        """The run in the seed's state.json shape; cut=None keeps outputs whole."""
        run_id = self.resolve_run(run_id)
        run = self.store.run_row(run_id)
        summary = self.store.run_summary(run_id)
        steps = self.store.step_rows(run_id)
        outputs = self.store.outputs(run_id)
        logs = self.store.logs(run_id)
        calls: dict[str, list[dict]] = {}
        for call in self.store.calls(run_id):
            calls.setdefault(call["step_id"], []).append(_call_view(call))
        docs = []
        for s in steps:
            md = json.loads(s["metadata"]) if s["metadata"] else {}
            out = outputs.get(s["step_id"])
            truncated = False
            if out is not None and cut is not None:
                out, truncated = _cut(out, cut)
            cost = None if s["price_unknown"] else (s["cost"] if s["cost"] is not None else 0.0)
            estimated = cost is not None and md.get("cost_estimated") is True
            doc = {
                "id": s["step_id"],
                "name": s["name"],
                "action": s["action"],
                "params": json.loads(s["params"]),
                "dependencies": json.loads(s["deps"]),
                "status": s["status"],
                "outputs": out,
                "error": s["error"],
                "logs": [line for _, line in logs.get(s["step_id"], [])],
                "startTime": _iso(s["started_at"]),
                "endTime": _iso(s["ended_at"]),
                "duration": (s["duration_ms"] / 1000.0) if s["duration_ms"] is not None else None,
                "metadata": md,
                "execution_metrics": {
                    "tokens": s["tokens"] or 0,
                    "prompt_tokens": s["prompt_tokens"] or 0,
                    "completion_tokens": s["completion_tokens"] or 0,
                    "cost": cost,
                    "cost_estimated": estimated,
                    "model": s["model"],
                    "duration_ms": s["duration_ms"],
                    "attempts": s["attempts"],
                    "retries": s["error_count"],
                    "crash_recoveries": s["crash_count"],
                },
            }
            step_calls = calls.get(s["step_id"])
            if step_calls:
                doc["calls"] = step_calls
                lost = [c for c in step_calls if c["state"] in ("unconfirmed", "discarded")]
                doc["execution_metrics"]["provider_calls"] = len(step_calls)
                doc["execution_metrics"]["unconfirmed_calls"] = len(lost)
                if lost:
                    doc["execution_metrics"]["unconfirmed_cost_max"] = _bound(lost)
            if s["error_code"]:
                doc["error_code"] = s["error_code"]
            if s["external"]:
                doc["external"] = True
            if truncated:
                doc["outputs_truncated"] = True
            warnings = _step_warnings(md, doc["params"])
            if warnings:
                doc["warnings"] = warnings
            docs.append(doc)
        completed = [s for s in steps if s["status"] == "COMPLETED"]
        metrics = {
            "total_tokens": sum(s["tokens"] or 0 for s in completed),
            "prompt_tokens": sum(s["prompt_tokens"] or 0 for s in completed),
            "completion_tokens": sum(s["completion_tokens"] or 0 for s in completed),
            "total_cost": round(sum(s["cost"] for s in completed if s["cost"] is not None), 10),
            "unknown_cost_steps": sum(1 for s in completed if s["price_unknown"]),
            "estimated_cost_steps": sum(1 for d in docs if d["status"] == "COMPLETED"
                                        and d["execution_metrics"]["cost_estimated"]),
            "completed_steps": len(completed),
            "unconfirmed_calls": sum(d["execution_metrics"].get("unconfirmed_calls", 0) for d in docs),
            "unconfirmed_cost_max": _bound([c for cs in calls.values() for c in cs
                                            if c["state"] in ("unconfirmed", "discarded")]),
            "failed_steps": sum(1 for s in steps if s["status"] == "FAILED"),
            "total_steps": len(steps),
            "duration_ms": (int((summary["updated_at"] - run["created_at"]) * 1000)
                            if RunStatus(run["status"]).is_terminal else None),
        }
        view = summary_view(summary)
        return {
            "id": run_id,
            "name": run["name"],
            "template": run["template"],
            "status": run["status"],
            "progress": view["progress"],
            "steps": docs,
            "metrics": metrics,
            "cost_breakdown": self.store.cost_breakdown(run_id),
            "cost_by_provider": self.store.cost_by_provider(run_id),
            "error": run["error"],
            "error_code": run["error_code"],
            "budget_usd": run["budget_usd"],
            "createdAt": _iso(run["created_at"]),
            "updatedAt": _iso(summary["updated_at"]),
        }

    def step_outputs(self, run_id: str, step_id: str) -> dict:
        run_id = self.resolve_run(run_id)
        if not isinstance(step_id, str) or not self.store.step_exists(run_id, step_id):
            raise NotFound(f"run '{run_id}' has no step '{step_id}'")
        out = self.store.outputs(run_id, [step_id]).get(step_id)
        return {"run_id": run_id, "step_id": step_id, "outputs": out}

    def retry(self, run_id: str, *, budget_usd: float | None = None) -> dict:
        """Resume a FAILED or CANCELLED run; `budget_usd` replaces its run budget (the way on
        after a step was stopped by it)."""
        _check_budget(budget_usd)
        run_id = self.resolve_run(run_id)
        status = self.store.run_row(run_id)["status"]
        if status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ConflictError(f"run '{run_id}' is {status}; only a FAILED or CANCELLED run can be retried")
        line = f"Retry requested at {clock.iso()}"
        if budget_usd is not None:
            line += f" with a run budget of ${budget_usd:.4f}"
        n = self.store.retry_run(run_id, clock.now(), line, budget_usd=budget_usd)
        log.info("run %s: retry re-opened %d steps", run_id, n)
        return self.summary(run_id)

    def cancel(self, run_id: str) -> dict:
        run_id = self.resolve_run(run_id)
        self.store.cancel_run(run_id, clock.now(), f"Cancelled at {clock.iso()}")
        return self.summary(run_id)

    def delete(self, run_id: str) -> bool:
        run_id = self.resolve_run(run_id)
        return self.store.delete_run(run_id)

    def changes(self, cursor: dict | None = None) -> tuple[list[dict], dict]:
        """Run summaries that changed since `cursor` (opaque; None = start now), from any process.

        Cheap when nothing changed: PRAGMA data_version says whether anyone committed.
        Returns (summaries, new cursor). Feeds `run.updated` events.
        """
        store = self.store
        version = store.data_version()
        if cursor is None:
            seen = {rid: (status, sig) for rid, status, sig in self._signatures(store.active_or_recent(clock.now()))}
            return [], {"version": version, "since": clock.now(), "seen": seen}
        if version == cursor["version"] and not cursor.get("dirty"):
            return [], cursor
        now = clock.now()
        rows = store.active_or_recent(cursor["since"] - 1.0, cursor["seen"].keys())
        seen = dict(cursor["seen"])
        changed = []
        for rid, status, sig in self._signatures(rows):
            if seen.get(rid) != (status, sig):
                summary = store.run_summary(rid)
                if summary is not None:
                    changed.append(summary_view(summary))
            seen[rid] = (status, sig)
        # Finished runs are reported once and forgotten; open ones are compared next time.
        seen = {rid: v for rid, v in seen.items() if v[0] in ("PENDING", "RUNNING")}
        return changed, {"version": version, "since": now, "seen": seen}

    def _signatures(self, rows) -> list[tuple[str, str, tuple]]:
        # The completed count matters: a chain link's times can tie with a parallel branch's.
        return [(rid, status, (updated, completed)) for rid, updated, status, completed in rows]

    # ---- external data and captures --------------------------------------------

    def ingest(self, run_id: str, request: "ExternalDataRequest | dict") -> "ExternalDataResponse":
        from .models import ExternalDataRequest, ExternalDataResponse

        run_id = self.resolve_run(run_id)
        req = request if isinstance(request, ExternalDataRequest) else self._parse_external(request)
        ctype = content_type(req.content_type or None)
        if _nested_deeper(req.metadata, MAX_METADATA_DEPTH):
            raise BadRequest(f"metadata: nested deeper than {MAX_METADATA_DEPTH} levels", field="metadata")
        size = len(req.content.encode("utf-8"))
        if size > MAX_CONTENT_BYTES:
            raise BadRequest(f"content: {size} bytes is over the {MAX_CONTENT_BYTES} byte limit", code="too_large")
        run = self.store.run_row(run_id)
        if RunStatus(run["status"]).is_terminal:
            raise ConflictError(f"run '{run_id}' is {run['status']}; it takes no more data")
        now = clock.now()
        outputs = {"content": req.content, "source_url": req.source_url, "content_type": ctype,
                   "captured_at": clock.iso(now), "title": req.title, "selection": req.selection,
                   "size_bytes": size}
        for key in ("kind", "link_url", "link_text", "image_url", "image_alt"):
            if key in req.metadata:
                outputs[key] = req.metadata[key]
        metadata = {"source_url": req.source_url, "content_type": ctype, "size_bytes": size, **req.metadata}
        slots = self.store.open_slots(run_id)
        target = None
        if req.step_name and req.step_name in slots:
            target = req.step_name
        elif not req.step_name and slots:
            target = slots[0]
        if target is not None:
            line = f"External data received at {clock.iso(now)} ({size} bytes, {ctype})"
            queued = self.store.fill_slot(run_id, target, outputs, metadata, now, line)
            if queued is not None:
                return ExternalDataResponse(workflow_id=run_id, step_id=target, status=StepStatus.COMPLETED.value,
                                            queued_dependents=queued,
                                            message=f"filled capture slot '{target}'; {queued} step(s) queued")
        step_id = f"external-{os.urandom(4).hex()}"
        name = req.step_name or "External data"
        line = f"External data added at {clock.iso(now)} ({size} bytes, {ctype})"
        queued = self.store.add_external_step(run_id, step_id, name, outputs, metadata, now, line)
        if queued is None:
            raise ConflictError(f"run '{run_id}' finished meanwhile; it takes no more data")
        return ExternalDataResponse(workflow_id=run_id, step_id=step_id, status=StepStatus.COMPLETED.value,
                                    queued_dependents=queued,
                                    message=f"added external step '{step_id}'; {queued} step(s) queued")

    def _parse_external(self, data: dict) -> "ExternalDataRequest":
        from pydantic import ValidationError

        from .models import ExternalDataRequest

        try:
            return ExternalDataRequest.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(x) for x in first["loc"]) or "(body)"
            raise BadRequest(f"{field}: {first['msg']}") from exc

    def external_data(self, run_id: str) -> dict:
        doc = self.run_document(run_id, cut=None)
        steps = [s for s in doc["steps"] if s["action"] == "capture" and s["status"] == "COMPLETED"]
        return {"workflow_id": doc["id"], "external_steps": steps, "count": len(steps)}

    def start(self, template_ref: str, *, content: str | None = None, source_url: str | None = None,
              content_type: str = "text/html", title: str | None = None, selection: str | None = None,
              metadata: dict | None = None, budget_usd: float | None = None) -> dict:
        """Create a run and, when content is given, fill its capture slot: `run --input` and `capture`."""
        from .models import ExternalDataRequest

        tpl = self.template(template_ref)
        if content is not None and not tpl.capture_slots:
            raise BadRequest(f"template '{tpl.name}' has no capture step to take the page")
        # One transaction: a page that ingest refuses (type, size) leaves no empty run behind.
        with self.store.transaction():
            run_id = self.create_run(tpl, budget_usd=budget_usd)
            result = {"run_id": run_id, "step_id": None, "queued_dependents": 0}
            if content is not None:
                resp = self.ingest(run_id, ExternalDataRequest(content=content, source_url=source_url,
                                                               content_type=content_type, title=title,
                                                               selection=selection, metadata=metadata or {}))
                result.update(step_id=resp.step_id, queued_dependents=resp.queued_dependents)
        return result

    # ---- execution -------------------------------------------------------------

    def make_executor(self, **overrides) -> "Executor":
        """An executor with config.toml's limits; a ConfigError (file, key, allowed range)
        before anything starts when a setting is out of range."""
        from . import settings
        from .executor import Executor, Limits, RetryPolicy

        checked = settings.check()  # a broken keys.json too: said now, not at the first step
        ex = checked.executor
        per_provider = {name: p.concurrency for name, p in checked.providers.items() if p.concurrency}
        limits = Limits(concurrency=ex.concurrency, per_action=dict(ex.action_concurrency),
                        per_provider=per_provider)
        retry = RetryPolicy(base_s=ex.backoff_base_s, cap_s=ex.backoff_cap_s)
        kwargs: dict[str, Any] = dict(limits=limits, retry=retry, lease_s=ex.lease_s,
                                      guards=self.guards())
        kwargs.update(overrides)
        return Executor(self.store, **kwargs)

    def guards(self) -> list:
        try:
            from .budget import budget_guard
        except ImportError:
            return []
        return [budget_guard(self.store)]

    def recover(self) -> "RecoveryReport":
        from . import recovery

        return recovery.requeue_orphans(self.store)

    # ---- money -------------------------------------------------------------------

    # Deterministic, offline, side-effect-free actions: an estimate computes them for real.
    _ESTIMATE_COMPUTED = ("extract_text", "template", "noop")

    def estimate(self, template_ref: str, page: dict) -> dict:
        """Tokens and cost a run of `template_ref` on `page` would take, without calling a model.

        Params are rendered as the run would render them: the capture slot's outputs come
        from `page`; extract_text, template and noop steps are computed for real. An
        upstream model step's answer is unknown: the prompt is counted with it empty
        (`prompt_tokens` is then a lower bound, `lower_bound: true`) and `cost_max`
        assumes each such answer is as long as that step's max output tokens.
        """
        from . import dag
        from .adapters import SPECS, load_action
        from .adapters.base import StepContext
        from .errors import StepError

        tpl = self.template(template_ref)
        if not isinstance(page, dict) or not isinstance(page.get("content"), str):
            raise BadRequest("page.content: expected the page's text")
        for key in ("source_url", "content_type", "title", "selection"):
            if page.get(key) is not None and not isinstance(page[key], str):
                raise BadRequest(f"page.{key}: expected text")
        now = clock.now()
        ctype = content_type(page.get("content_type") or None, field="page.content_type")
        capture = {"content": page["content"], "source_url": page.get("source_url"), "content_type": ctype,
                   "captured_at": clock.iso(now), "title": page.get("title"), "selection": page.get("selection"),
                   "size_bytes": len(page["content"].encode("utf-8"))}
        run = {"id": "estimate", "name": tpl.name, "template": tpl.name, "created_at": clock.iso(now)}
        by_id = {s.id: s for s in tpl.steps}
        outputs: dict[str, dict] = {}
        unknown: dict[str, int] = {}  # step id -> tokens its unknown output may take (0: not a model step)
        steps_out: list[dict] = []

        def render(params: dict, filler: dict[str, str]) -> dict:
            """Render with the known outputs; an unknown step's outputs read as `filler[step]`."""
            known = dag.make_lookup(outputs, run)

            def lookup(ref):
                if ref.kind == "step" and ref.step in unknown:
                    return filler.get(ref.step, "")
                return known(ref)
            return dag.render(params, lookup)

        order = dag.topological_order({s.id: list(s.dependencies) for s in tpl.steps})
        for step_id in order:
            s = by_id[step_id]
            spec = SPECS[s.action]
            upstream = sorted(dag.referenced_steps(s.params) & set(unknown))
            if spec.input_slot:
                outputs[step_id] = capture
                continue
            if spec.provider is None:
                if s.action in self._ESTIMATE_COMPUTED and not upstream:
                    try:
                        params = render(s.params, {})
                        action = load_action(s.action)
                        ctx = StepContext(run_id="estimate", step_id=step_id, action=s.action, attempt=1)
                        outputs[step_id] = action.compute(params, ctx).outputs
                        continue
                    except (StepError, dag.RenderError, dag.RefError) as exc:
                        log.info("estimate %s: step %s not computed: %s", tpl.name, step_id, exc)
                # Not computed (side effects, or depends on a model's answer): its outputs are unknown.
                unknown[step_id] = sum(unknown[u] for u in upstream)
                continue
            entry: dict[str, Any] = {"step_id": step_id, "action": s.action, "provider": spec.provider,
                                     "model": s.params.get("model")}
            try:
                action = load_action(s.action)
                est = action.estimate(render(s.params, {}))
                if upstream:
                    # cost_max: every unknown upstream answer as long as it may be.
                    filler = {u: " x" * unknown[u] for u in upstream}
                    high = action.estimate(render(s.params, filler))
                    est["prompt_tokens_max"] = high["prompt_tokens_max"]
                    est["cost_max"] = high["cost_max"]
                    est["lower_bound"] = True
                    est["unknown_inputs"] = upstream
                entry.update(est)
            except (StepError, dag.RenderError, dag.RefError) as exc:
                entry.update({"prompt_tokens": None, "max_output_tokens": None, "cost_min": None, "cost_max": None,
                              "price_unknown": True, "context_window": None, "fits": None,
                              "error": getattr(exc, "message", None) or str(exc)})
            entry.setdefault("lower_bound", False)
            steps_out.append(entry)
            unknown[step_id] = int(entry.get("max_output_tokens") or 0)
        pos = {s.id: i for i, s in enumerate(tpl.steps)}
        steps_out.sort(key=lambda e: pos[e["step_id"]])
        known_costs = [e for e in steps_out if not e["price_unknown"]]
        return {
            "template": tpl.name,
            "steps": steps_out,
            "total_prompt_tokens": sum(e["prompt_tokens"] or 0 for e in steps_out),
            "total_cost_min": round(sum(e["cost_min"] or 0.0 for e in known_costs), 10),
            "total_cost_max": round(sum(e["cost_max"] or 0.0 for e in known_costs), 10),
            "price_unknown": any(e["price_unknown"] for e in steps_out),
            "unknown_cost_steps": len(steps_out) - len(known_costs),
            "lower_bound": any(e["lower_bound"] for e in steps_out),
            "budget_usd": tpl.budget_usd,
        }

    def spend(self) -> dict:
        now = datetime.now().astimezone()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        from . import settings

        budgets = settings.budgets()  # a bad [budgets] is bad_config, never a nan in the reply
        today = self.store.spend_since(day.timestamp())
        this_month = self.store.spend_since(month.timestamp())
        lost_today = self.store.unconfirmed_since(day.timestamp())
        lost_month = self.store.unconfirmed_since(month.timestamp())
        month_estimated = self.store.estimated_since(month.timestamp())
        return {
            # Calls that may have been billed without an answer on record: budgets count them
            # at their upper bound, so spend shows them beside the confirmed figures.
            "today_unconfirmed": _unconfirmed_view(lost_today),
            "this_month_unconfirmed": _unconfirmed_view(lost_month),
            "today": round(sum(today.values()), 10),
            "this_month": round(sum(this_month.values()), 10),
            "today_by_provider": today,
            "this_month_by_provider": this_month,
            # Included in the sums above: calls whose provider gave no usable usage, priced
            # from our own token count.
            "today_estimated": round(sum(self.store.estimated_since(day.timestamp()).values()), 10),
            "this_month_estimated": round(sum(month_estimated.values()), 10),
            "this_month_estimated_by_provider": month_estimated,
            "today_unpriced_steps": self.store.unpriced_since(day.timestamp()),
            "this_month_unpriced_steps": self.store.unpriced_since(month.timestamp()),
            "daily_budget_usd": budgets.daily_usd,
            "monthly_budget_usd": budgets.monthly_usd,
            "day_started": day.isoformat(),
            "month_started": month.isoformat(),
        }

    # ---- captures the extension may send twice ---------------------------------------

    def capture(self, template_ref: str, *, capture_id: str | None = None, **page) -> dict:
        """`start` for the host's `capture`, at most one run per `capture_id`.

        The extension re-sends a capture that was in flight when the host died, with the
        same page.metadata.capture_id. One it already turned into a run gets that run back,
        `{run_id, step_id, queued_dependents: 0, duplicate: true}`, from the `captures`
        table, so across restarts and processes too. Look-up, run and record share one
        BEGIN IMMEDIATE: two processes re-sending the same id still make one run.
        """
        if capture_id is None:
            return {**self.start(template_ref, **page), "duplicate": False}
        hit = self._capture_hit(capture_id)
        if hit is not None:
            return hit
        self.template(template_ref)  # load (or refuse) the template before taking the write lock
        with self.store.transaction():
            hit = self._capture_hit(capture_id)  # another process may have made it meanwhile
            if hit is not None:
                return hit
            result = self.start(template_ref, **page)
            self.store.record_capture(capture_id, result["run_id"], result["step_id"])
        log.info("capture %s made run %s", capture_id, result["run_id"])
        return {**result, "duplicate": False}

    def _capture_hit(self, capture_id: str) -> dict | None:
        row = self.store.capture_run(capture_id)
        if row is None:
            return None
        log.info("capture %s was re-sent; it already made run %s", capture_id, row[0])
        return {"run_id": row[0], "step_id": row[1], "queued_dependents": 0, "duplicate": True}

    # ---- configuration, as the host shows it (never a key) ---------------------------

    def config_summary(self) -> dict:
        """What is configured, for the extension's options page.

        Per provider: whether it has a key and where the key comes from, as a label only
        (`env`, `keys_file`, `config`; never the key or any part of it) with `key_from` naming
        the variable or the file, the base URL (credentials in it removed), concurrency and
        timeout. Then budgets, executor limits and where things live. A bad config.toml or
        keys.json does not hide the rest: what cannot be read is named in `errors`.
        """
        from . import settings
        from .redact import public_url

        errors: list[str] = []
        try:
            conf = config.load_config()
        except config.ConfigError as exc:
            conf, errors = {}, [str(exc)]
        try:
            settings.load(conf)
        except config.ConfigError as exc:
            errors.append(str(exc))
        providers = {}
        for name in config.PROVIDERS:
            try:
                s = config.provider_settings(name, conf)
            except config.ConfigError as exc:
                if str(exc) not in errors:
                    errors.append(str(exc))
                try:  # show the rest: without keys.json, then without config.toml's table too
                    s = config.provider_settings(name, conf, keys_file=False)
                except config.ConfigError:
                    s = config.provider_settings(name, {}, keys_file=False)
            source = s.api_key_source or ""
            from_env = source.startswith("env:")
            providers[name] = {
                "has_key": bool(s.api_key),
                "key_source": "env" if from_env else {"keys": "keys_file", "config": "config"}.get(source),
                "key_env": source[4:] if from_env else s.key_env,
                "key_from": s.key_source_label,
                "base_url": public_url(s.base_url),
                "concurrency": s.concurrency,
                "timeout_s": s.timeout_s,
            }
        budgets: dict[str, Any] = {"daily_usd": None, "monthly_usd": None, "unknown_price": None}
        try:
            b = settings.budgets(conf)
            budgets.update(daily_usd=b.daily_usd, monthly_usd=b.monthly_usd, unknown_price=b.unknown_price)
        except config.ConfigError as exc:  # show the rest; say what is wrong with [budgets]
            budgets["error"] = str(exc)
        try:
            ex = settings.executor(conf)
            limits: dict[str, Any] = {"concurrency": ex.concurrency, "per_action": dict(ex.action_concurrency)}
        except config.ConfigError as exc:
            limits = {"concurrency": None, "per_action": {}, "error": str(exc)}
        limits["per_provider"] = {n: p["concurrency"] for n, p in providers.items() if p["concurrency"]}
        warning = config.keys_file_warning()
        templates = self._templates.folder if self._templates is not None else config.templates_dir()
        return {
            "providers": providers,
            "budgets": budgets,
            "limits": limits,
            "errors": errors,
            "warnings": [warning] if warning else [],
            "templates_folder": str(templates),
            "data_folder": str(config.data_dir()),
            "database": str(self._store.path if self._store is not None else config.db_path()),
            "log_file": str(config.logs_dir() / "hybrid-engine.log"),
            "config_file": str(config.config_path()),
            "config_file_exists": config.config_path().is_file(),
            "keys_file": str(config.keys_path()),
        }


def _call_view(call: dict) -> dict:
    """A journaled provider call as people read it: what it may have cost and what became of it."""
    return {"attempt": call["attempt"], "state": call["state"], "provider": call["provider"],
            "model": call["model"], "prompt_tokens": call["prompt_tokens"],
            "max_output_tokens": call["max_output_tokens"], "cost_max": call["cost_max"],
            "cost": call["cost"], "sent_at": _iso(call["sent_at"]), "settled_at": _iso(call["settled_at"]),
            "reason": call["reason"]}


def _bound(calls: list[dict]) -> float | None:
    """The most these calls may have cost: a discarded answer at its price, the rest at their
    bound; None when any of them has no known price."""
    total = 0.0
    for c in calls:
        value = c["cost"] if c["state"] == "discarded" else c["cost_max"]
        if value is None:
            return None
        total += value
    return round(total, 10)


def _unconfirmed_view(by_provider: dict[str, dict]) -> dict:
    calls = sum(v["calls"] for v in by_provider.values())
    unknown = any(v["cost_max"] is None for v in by_provider.values())
    return {"calls": calls, "cost_max": None if unknown else round(sum(v["cost_max_known"] for v in
                                                                       by_provider.values()), 10),
            "cost_max_known": round(sum(v["cost_max_known"] for v in by_provider.values()), 10),
            "by_provider": {k: {"calls": v["calls"], "cost_max": v["cost_max"]} for k, v in by_provider.items()}}


def _step_warnings(md: dict, params: dict) -> list[str]:
    """What a user must know about a step that completed: said where its row is shown."""
    warnings = []
    if md.get("finish_reason") == "length":
        limit = params.get("max_tokens") if isinstance(params, dict) else None
        limit = f" ({limit:,} tokens)" if isinstance(limit, int) and not isinstance(limit, bool) else ""
        warnings.append(f"cut at max_tokens{limit}: the answer is incomplete")
    elif md.get("finish_reason") == "content_filter":
        why = md.get("provider_finish_reason") or "finish_reason: content_filter"
        warnings.append(f"stopped by the provider's content filter ({why}): the answer is empty or incomplete")
    return warnings


def _check_budget(budget_usd: Any) -> None:
    """A run budget of nan or below zero would never stop anything: refused, as bad input."""
    if budget_usd is not None and (isinstance(budget_usd, bool) or not isinstance(budget_usd, (int, float))
                                   or not 0 <= budget_usd < float("inf")):
        raise BadRequest("budget_usd: expected a non-negative number of US dollars (not nan or inf)", field="budget_usd")


_SUFFIX_TYPES = {".html": "text/html", ".htm": "text/html", ".xhtml": "application/xhtml+xml", ".md": "text/markdown",
                 ".markdown": "text/markdown", ".txt": "text/plain", ".text": "text/plain", ".json": "application/json"}
# Where a page declares its encoding: <meta charset>, <meta http-equiv content="...; charset=...">, or an
# XML declaration. Browsers look in the first 1024 bytes (the HTML standard's prescan).
_PRESCAN_BYTES = 1024
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""", re.I)
# Labels the HTML standard maps elsewhere: Latin-1 and ASCII mean windows-1252; a UTF-16 label in a
# page that was read as bytes cannot be right, so it means UTF-8; UTF-7 is not decoded at all.
_CHARSET_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                    "l1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "iso_8859-1": "cp1252",
                    "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8", "utf-7": None, "utf7": None}


def read_input_file(path: str, *, limit: int = MAX_CONTENT_BYTES) -> tuple[str, str]:
    """Content and a content type guessed from the file name.

    The size is checked before the file is read: a regular file over `limit` is refused
    from its stat; anything else (a pipe, a device such as /dev/zero) is read up to
    limit + 1 bytes and refused past the limit.
    """
    import stat as stat_

    p = Path(path)
    try:
        with open(p, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat_.S_ISREG(st.st_mode) and st.st_size > limit:
                raise BadRequest(f"{path}: {st.st_size} bytes is over the {limit} byte limit", code="too_large")
            data = fh.read(limit + 1)
    except FileNotFoundError as exc:
        raise BadRequest(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise BadRequest(f"{path}: is a folder, not a file") from exc
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > limit:
        raise BadRequest(f"{path}: more than the {limit} byte limit (not a regular file: stopped reading there)",
                         code="too_large")
    suffix = p.suffix.lower()
    ctype = _SUFFIX_TYPES.get(suffix, "text/html")
    return decode_text(data, html=ctype in ("text/html", "application/xhtml+xml")), ctype


def declared_charset(data: bytes) -> str | None:
    """The Python codec a page's own declaration names, or None (no usable declaration)."""
    import codecs

    head = data[:_PRESCAN_BYTES]
    m = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    if m is None:
        return None
    label = m.group(1).decode("ascii").lower()
    label = _CHARSET_ALIASES.get(label, label)
    if label is None:
        return None
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode_text(data: bytes, *, html: bool = False) -> str:
    """Bytes to text without letting one bad byte change how the rest reads.

    A byte-order mark wins, then (for HTML) the page's declared charset; otherwise UTF-8,
    with a bad byte replaced by U+FFFD. Only a file in which not one non-ASCII sequence is
    valid UTF-8 is taken for a legacy single-byte file and read as windows-1252.
    """
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace")
    if html:
        codec = declared_charset(data)
        if codec is not None:
            return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    if not any(ord(ch) > 0x7F and ch != "\ufffd" for ch in text):
        return data.decode("cp1252", errors="replace")
    return text
