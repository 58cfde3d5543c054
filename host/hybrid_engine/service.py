"""Use cases shared by the native host and the command line.

Transports (host.py, cli.py) parse and print; everything they can do is a method
here, raising HybridEngineError subclasses that carry a code and a message. The
transports reach the store only through these methods. How runs and spending read is
views.py, what a run would cost is estimate.py, how pages and files come in is
inputs.py, a template's steps as rows is plans.py; the methods here delegate to them.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime

from . import clock, config, views
from .errors import BadRequest, ConflictError, NotFound
from .inputs import (CONTENT_TYPE_NAMES, CONTENT_TYPES, MAX_CONTENT_BYTES, MAX_METADATA_DEPTH,  # noqa: F401
                     check_text, content_type, declared_charset, decode_text, nested_deeper, parse_metadata,
                     read_input_file)
from .states import RunStatus, StepStatus
from .store import Store
from .views import DEFAULT_CUT, summary_view  # noqa: F401 - re-exported

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's runs.list 2 ms
if TYPE_CHECKING:  # pydantic, yaml and the executor load on first use: the host answers before them
    from typing import Any

    from .executor import Executor
    from .models import ExternalDataRequest, ExternalDataResponse, WorkflowTemplate
    from .recovery import RecoveryReport
    from .templates import TemplateRegistry

log = logging.getLogger(__name__)

MAX_OFFSET = 2**63 - 1  # SQLite's largest INTEGER: a larger one fails in the query, as an internal error


def new_run_id() -> str:
    return os.urandom(8).hex()  # 64 random bits, as 16 hex digits (uuid would load `platform`)


class Service:
    def __init__(self, store: Store | None = None, templates: "TemplateRegistry | None" = None):
        self._store = store
        self._store_lock = threading.Lock()
        self._templates = templates
        # The first estimate imports the extractor and the tokenizers (seconds); the host's
        # warm-up does the same on a thread of its own. Two threads importing one package graph
        # at once can meet a module half-initialised, so until one has finished, they take turns.
        self._estimate_imports = threading.RLock()
        self._estimate_loaded = False

    @property
    def store(self) -> Store:
        """Opened on first use: listing templates works even when engine.db cannot be opened."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = Store(config.db_path())
        return self._store

    @property
    def db_path(self):
        """engine.db's path, without opening it (an error reply names the file)."""
        return self._store.path if self._store is not None else config.db_path()

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
        from .plans import template_plan

        plan = template_plan(tpl)
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
                named.append(f"{rid} ({name}, {views.iso_or_none(info[2])})" if info else rid)
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
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
            raise BadRequest(f"offset: expected an integer from 0 to {MAX_OFFSET}")
        return [summary_view(s) for s in self.store.run_summaries(limit, offset)]

    def run_document(self, run_id: str, *, cut: int | None = DEFAULT_CUT) -> dict:
        """The whole run as one document (`runs.get`, `show`): steps, calls, metrics; cut=None keeps outputs whole."""
        return views.run_document(self.store, self.resolve_run(run_id), cut=cut)

    def open_slots(self, run_id: str) -> list[str]:
        """The capture slots of run `run_id` (its full id) still waiting for a page."""
        return self.store.open_slots(run_id)

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
        from .adapters import SPECS

        slots = [name for name, spec in SPECS.items() if spec.input_slot]
        n = self.store.retry_run(run_id, clock.now(), line, budget_usd=budget_usd, slot_actions=slots)
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
            # The baseline covers the same second of slack the polls look back over, so a run
            # that finished just before the subscription is not reported as news.
            now = clock.now()
            seen = {rid: (status, sig) for rid, status, sig in self._signatures(store.active_or_recent(now - 1.0))}
            return [], {"version": version, "since": now, "seen": seen}
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
        # Finished runs are reported once and forgotten once the next poll's look-back (the second
        # before `now`) can no longer find them as new; open ones are compared next time.
        seen = {rid: v for rid, v in seen.items() if v[0] in ("PENDING", "RUNNING") or (v[1][0] or 0) >= now - 1.0}
        return changed, {"version": version, "since": now, "seen": seen}

    def _signatures(self, rows) -> list[tuple[str, str, tuple]]:
        # The completed count matters: a chain link's times can tie with a parallel branch's.
        return [(rid, status, (updated, completed)) for rid, updated, status, completed in rows]

    # ---- external data and captures --------------------------------------------

    def ingest(self, run_id: str, request: "ExternalDataRequest | dict") -> "ExternalDataResponse":
        from .models import ExternalDataRequest, ExternalDataResponse

        from .images import address_label
        from .privacy import admit, unstrip

        run_id = self.resolve_run(run_id)
        req = request if isinstance(request, ExternalDataRequest) else self._parse_external(request)
        for field in ("content", "source_url", "content_type", "step_name", "title", "selection", "metadata"):
            check_text(getattr(req, field), field)
        given = req.source_url
        req.source_url = admit(given)  # [[sites]]: `never` refused, `strip_query` stripped
        # What a link, image or PDF capture points at, and the page a PDF link was on, obey
        # their own sites' rules: a PDF link's source_url is the file, not the page it was on.
        for key in ("link_url", "image_url", "pdf_url", "page_url"):
            if isinstance(req.metadata.get(key), str):
                if key == "image_url":
                    req.metadata[key] = address_label(req.metadata[key])
                target = req.metadata[key]
                req.metadata[key] = admit(target, field=f"metadata.{key}")
                unstrip(req, target, req.metadata[key])
        unstrip(req, given, req.source_url)
        ctype = content_type(req.content_type or None)
        if nested_deeper(req.metadata, MAX_METADATA_DEPTH):
            raise BadRequest(f"metadata: nested deeper than {MAX_METADATA_DEPTH} levels", field="metadata")
        size = len(req.content.encode("utf-8"))
        if req.article is not None:
            size += len(req.article.encode("utf-8"))
        if size > MAX_CONTENT_BYTES:
            raise BadRequest(f"content: {size} bytes is over the {MAX_CONTENT_BYTES} byte limit", code="too_large")
        if ctype == "application/pdf":
            from .pdf import decode_pdf

            decode_pdf(req.content)  # refused here, with the field, rather than when extract_text runs
        elif ctype.startswith("image/"):
            from .images import read_image

            read_image(req.content, field="content")  # base64 of an image a vision model takes, or refused
        run = self.store.run_row(run_id)
        if RunStatus(run["status"]).is_terminal:
            raise ConflictError(f"run '{run_id}' is {run['status']}; it takes no more data")
        now = clock.now()
        outputs = {"content": req.content, "source_url": req.source_url, "content_type": ctype,
                   "captured_at": clock.iso(now), "title": req.title, "selection": req.selection,
                   "size_bytes": size, "article": req.article or ""}
        for key in ("kind", "link_url", "link_text", "image_url", "image_alt"):
            if key in req.metadata:
                outputs[key] = req.metadata[key]
        if ctype.startswith("image/"):  # an image from a file has no page: templates may still name these
            outputs.setdefault("image_alt", "")
            outputs.setdefault("image_url", req.source_url or "")
        # What the site rules and the size check decided wins over the caller's metadata: a
        # metadata.source_url would bring back the query strip_query dropped, or name another
        # site to the local_only guard (which reads this field).
        metadata = {**req.metadata, "source_url": req.source_url, "content_type": ctype, "size_bytes": size}
        slots = self.store.open_slots(run_id)
        target = None
        if req.step_name and req.step_name in slots:
            target = req.step_name
        elif not req.step_name and slots:
            target = slots[0]
        if target is not None:
            line = f"External data received at {clock.iso(now)} ({size} bytes, {ctype})"
            with self.store.transaction():  # the run's page is on record with its capture, or neither is
                queued = self.store.fill_slot(run_id, target, outputs, metadata, now, line)
                if queued is not None:
                    from .library import record_page

                    record_page(self, run_id, run["template"], req, ctype, now)
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
              metadata: dict | None = None, budget_usd: float | None = None, article: str | None = None) -> dict:
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
                                                               selection=selection, metadata=metadata or {},
                                                               article=article))
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
                                      guards=self.guards(), rates=self.rate_limiter(checked),
                                      feeders=self.feeders())
        kwargs.update(overrides)
        return Executor(self.store, **kwargs)

    def rate_limiter(self, checked) -> "Any":
        """Every provider's requests and tokens per minute: its tier's defaults under config.toml's."""
        from .ratelimit import RateLimiter

        return RateLimiter({name: checked.providers.get(name, settings_default()).rate(name)
                            for name in config.PROVIDERS}, clock.now())

    def feeders(self) -> list:
        from .batchfeed import Feeder

        return [Feeder(self)]

    def guards(self) -> list:
        from .privacy import local_only_guard

        try:
            from .batchbudget import batch_budget_guard
            from .budget import budget_guard
        except ImportError:
            return [local_only_guard(self.store)]
        return [local_only_guard(self.store), budget_guard(self.store), batch_budget_guard(self.store)]

    def ensure_worker_if_work(self) -> int | None:
        """A background worker running when work waits for one (queued steps, or running
        ones whose owner died); its pid, or None when there is nothing to do."""
        from . import worker

        return worker.ensure(self.store)

    def recover(self) -> "RecoveryReport":
        from . import recovery

        return recovery.requeue_orphans(self.store)

    # ---- money -------------------------------------------------------------------

    def estimate(self, template_ref: str, page: dict) -> dict:
        """Tokens and cost a run of `template_ref` on `page` would take (estimate.py), with whether
        each model step could start now (preflight.py)."""
        if not self._estimate_loaded:
            with self._estimate_imports:
                result = self._estimate(template_ref, page)
                self._estimate_loaded = True
                return result
        return self._estimate(template_ref, page)

    def _estimate(self, template_ref: str, page: dict) -> dict:
        from . import preflight, settings
        from .adapters import SPECS
        from .estimate import estimate_run

        tpl = self.template(template_ref)
        if any(SPECS[s.action].provider == "local" for s in tpl.steps if s.action in SPECS):
            try:
                preflight.check_soon(settings.provider_settings("local").base_url)  # beside the extraction
            except Exception:  # noqa: BLE001 - annotate reads the same settings and says what is wrong
                pass
        est = estimate_run(tpl, page)
        budgets = settings.budgets()
        day_start, _ = clock.period_starts()
        spent = sum(self.store.spend_since(day_start).values()) + self.store.unconfirmed_cost(day_start)
        return preflight.annotate(est, spent_today=spent, daily_budget=budgets.daily_usd,
                                  provider_settings=settings.provider_settings)

    def warm_estimate(self) -> None:
        """Load what the first estimate would wait for (estimate.warm), ahead of it."""
        from .estimate import warm

        with self._estimate_imports:
            warm(self)
            self._estimate_loaded = True

    def spend(self) -> dict:
        from . import settings

        budgets = settings.budgets()  # a bad [budgets] is bad_config, never a nan in the reply
        day, month = (datetime.fromtimestamp(ts).astimezone() for ts in clock.period_starts())
        return views.spend_view(self.store, budgets, day, month)

    # ---- captures the extension may send twice ---------------------------------------

    def capture(self, template_ref: str, *, capture_id: str | None = None, reuse: str = "fresh", **page) -> dict:
        """`start` for the host's `capture`, at most one run per `capture_id`.

        The extension re-sends a capture that was in flight when the host died, with the
        same page.metadata.capture_id. One it already turned into a run gets that run back,
        `{run_id, step_id, queued_dependents: 0, duplicate: true}`, from the `captures`
        table, so across restarts and processes too. Look-up, run and record share one
        BEGIN IMMEDIATE: two processes re-sending the same id still make one run.

        `reuse`: "fresh" always makes a run; "reuse" answers with the newest COMPLETED run that
        got the same content through the same template version, `{run_id, reused_from, cost: 0}`,
        and calls no model; "ask" makes no run when there is one and names it in `reusable`.
        """
        if reuse != "fresh" and page.get("content") is not None:
            from .library import reusable_run

            earlier = reusable_run(self, template_ref, page["content"], page.get("selection"))
            if earlier is not None:
                log.info("capture on %s: content already done by run %s (%s)", template_ref, earlier, reuse)
                if reuse == "reuse":
                    return {"run_id": earlier, "step_id": None, "queued_dependents": 0, "duplicate": False,
                            "reused_from": earlier, "cost": 0.0}
                from .library import brief

                return {"run_id": None, "step_id": None, "queued_dependents": 0, "duplicate": False,
                        "reusable": brief(self, [earlier])[0]}
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
        """What is configured, for the extension's options page (configview.py)."""
        from .configview import config_summary

        templates = self._templates.folder if self._templates is not None else config.templates_dir()
        return config_summary(templates_folder=templates, database=self.db_path)


def settings_default():
    from .settings import ProviderConfig

    return ProviderConfig()


def _check_budget(budget_usd: Any) -> None:
    """A run budget of nan or below zero would never stop anything: refused, as bad input."""
    if budget_usd is not None and (isinstance(budget_usd, bool) or not isinstance(budget_usd, (int, float))
                                   or not 0 <= budget_usd < float("inf")):
        raise BadRequest("budget_usd: expected a non-negative number of US dollars (not nan or inf)", field="budget_usd")


