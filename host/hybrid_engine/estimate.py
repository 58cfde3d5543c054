"""What a run would take before it is made: tokens and cost per step, without calling a model.

The popup shows it before a capture and `hybrid-engine estimate` prints it; budgets are
judged against the same figures. Nothing is stored and no provider is called.
"""

from __future__ import annotations

import logging

from . import clock
from .errors import BadRequest, PermanentStepError, StepError
from .inputs import content_type

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's start
if TYPE_CHECKING:
    from typing import Any

    from .models import WorkflowTemplate

log = logging.getLogger(__name__)

# Deterministic, offline, side-effect-free actions: an estimate computes them for real.
COMPUTED_ACTIONS = ("extract_text", "split_text", "template", "noop")


def estimate_run(tpl: "WorkflowTemplate", page: dict) -> dict:
    """Tokens and cost a run of `tpl` on `page` would take, without calling a model.

    Params are rendered as the run would render them: the capture slot's outputs come
    from `page`, whose site rules apply (`never` refuses, `strip_query` strips its URL);
    each model step's `sent` is what it would send (the `redact:` kinds replaced before a
    cloud model), and `blocked` says why a `local_only` page stops it. extract_text,
    template and noop steps are computed for real. An upstream model step's answer is
    unknown: the prompt is counted (and shown in `sent`) with it empty
    (`prompt_tokens` is then a lower bound, `lower_bound: true`) and `cost_max`
    assumes each such answer is as long as that step's max output tokens.
    """
    from . import dag
    from .adapters import SPECS, load_action
    from .adapters.base import StepContext

    if not isinstance(page, dict) or not isinstance(page.get("content"), str):
        raise BadRequest("page.content: expected the page's text")
    for key in ("source_url", "content_type", "title", "selection", "article"):
        if page.get(key) is not None and not isinstance(page[key], str):
            raise BadRequest(f"page.{key}: expected text")
    from . import privacy

    source_url = privacy.admit(page.get("source_url"))  # a `never` site is refused here too
    now = clock.now()
    ctype = content_type(page.get("content_type") or None, field="page.content_type")
    capture = {"content": page["content"], "source_url": source_url, "content_type": ctype,
               "captured_at": clock.iso(now), "title": page.get("title"), "selection": page.get("selection"),
               "size_bytes": len(page["content"].encode("utf-8")), "article": page.get("article") or ""}
    metadata = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
    for key in ("kind", "link_url", "link_text", "image_url", "image_alt"):  # as ingest copies them
        if key in metadata:
            capture[key] = metadata[key]
    if isinstance(capture.get("image_url"), str):
        from .images import address_label

        capture["image_url"] = address_label(capture["image_url"])
    if ctype.startswith("image/"):
        capture.setdefault("image_alt", "")
        capture.setdefault("image_url", page.get("source_url") or "")
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

    failed: dict[str, str] = {}  # step id -> why the run would fail there (a deterministic step's error)
    order = dag.topological_order({s.id: list(s.dependencies) for s in tpl.steps})
    for step_id in order:
        s = by_id[step_id]
        spec = SPECS[s.action]
        upstream = sorted(dag.referenced_steps(s.params) & set(unknown))
        blocked = [d for d in s.dependencies if d in failed]
        if blocked:
            failed[step_id] = failed[blocked[0]]
            if spec.provider is not None:  # never sent: it costs nothing, and the reason is said
                steps_out.append({"step_id": step_id, "action": s.action, "provider": spec.provider,
                                  "model": s.params.get("model"), "prompt_tokens": 0, "max_output_tokens": 0,
                                  "cost_min": 0.0, "cost_max": 0.0, "price_unknown": False, "context_window": None,
                                  "fits": None, "lower_bound": False,
                                  "error": f"would not be sent: {failed[step_id]}"})
            continue
        if spec.input_slot:
            outputs[step_id] = capture
            continue
        if s.for_each is not None:
            try:
                parts = _for_each(s, spec, outputs, unknown, render, steps_out)
            except PermanentStepError as exc:  # the run would fail here before sending any part
                failed[step_id] = f"step '{step_id}' fails ({exc.code}): {exc.message}"
                if spec.provider is not None:
                    steps_out.append({"step_id": step_id, "action": s.action, "provider": spec.provider,
                                      "model": s.params.get("model"), "prompt_tokens": 0, "max_output_tokens": 0,
                                      "cost_min": 0.0, "cost_max": 0.0, "price_unknown": False,
                                      "context_window": None, "fits": None, "lower_bound": False,
                                      "error": f"would not be sent: {failed[step_id]}"})
                continue
            unknown[step_id] = sum(int(e.get("max_output_tokens") or 0) for e in parts)
            continue
        if spec.provider is None:
            if s.action in COMPUTED_ACTIONS and not upstream:
                try:
                    params = render(s.params, {})
                    action = load_action(s.action)
                    ctx = StepContext(run_id="estimate", step_id=step_id, action=s.action, attempt=1)
                    outputs[step_id] = action.compute(params, ctx).outputs
                    continue
                except PermanentStepError as exc:  # deterministic: the run would fail here too
                    failed[step_id] = f"step '{step_id}' fails ({exc.code}): {exc.message}"
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
            params = render(s.params, {})
            entry["sent"] = action.outgoing(params)
            blocked = privacy.blocked_reason([source_url] if source_url else [], spec.provider)
            if blocked:
                entry["blocked"] = blocked
            if s.params.get("on_overflow") == "map_reduce" and not upstream:
                reduce = _map_reduce(s, action, outputs, render, steps_out)
                if reduce is not None:
                    entry.update(reduce)
                    steps_out.append(entry)
                    unknown[step_id] = int(entry.get("max_output_tokens") or 0)
                    continue
            est = action.estimate(params)
            if upstream:
                # cost_max: every unknown upstream answer as long as it may be.
                filler = {u: " x" * unknown[u] for u in upstream}
                high = action.estimate(render(s.params, filler))
                est["prompt_tokens_max"] = high["prompt_tokens_max"]
                est["cost_max"] = high["cost_max"]
                est["lower_bound"] = True
                est["unknown_inputs"] = upstream
                if high.get("fits") is False and est.get("fits") and (s.params.get("on_overflow") or "fail") == "fail":
                    # Known only once the answers it reads are in, and paid for: said now.
                    est["warning"] = (
                        f"if the answers of {', '.join(upstream)} are as long as their max_tokens allow, this prompt "
                        f"is about {high['prompt_tokens']:,} tokens, over the {high['context_window']:,}-token context "
                        f"window of {high['model']}: the step would fail after they were paid for; set "
                        f"on_overflow: map_reduce on it, or lower their max_tokens")
            entry.update(est)
        except (StepError, dag.RenderError, dag.RefError) as exc:
            entry.update({"prompt_tokens": None, "max_output_tokens": None, "cost_min": None, "cost_max": None,
                          "price_unknown": True, "context_window": None, "fits": None,
                          "error": getattr(exc, "message", None) or str(exc)})
        entry.setdefault("lower_bound", False)
        steps_out.append(entry)
        unknown[step_id] = int(entry.get("max_output_tokens") or 0)
    pos = {s.id: i for i, s in enumerate(tpl.steps)}
    steps_out.sort(key=lambda e: pos[e.get("part_of") or e["step_id"]])  # stable: parts keep their order
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


def _part_entry(step_id: str, action_name: str, spec, action, params: dict, part_of: str) -> dict:
    entry = {"step_id": step_id, "action": action_name, "provider": spec.provider, "model": params.get("model"),
             "part_of": part_of}
    entry.update(action.estimate(params))
    entry.setdefault("lower_bound", False)
    return entry


def _map_reduce(s, action, outputs: dict, render, steps_out: list) -> dict | None:
    """A model step with on_overflow: map_reduce whose prompt does not fit: an entry for
    every part it will be split into, as the run will split it (overflow.plan is the same
    deterministic function), and the reduce's own figures. None: the prompt fits."""
    from . import overflow
    from .adapters import SPECS
    from .config import load_config

    try:
        config = load_config()
    except Exception:  # noqa: BLE001 - the estimate is still useful with the defaults
        config = {}
    spec = SPECS[s.action]
    rendered = render(s.params, {})
    p = overflow.plan(s.params, rendered, spec.provider, lambda v: render({"v": v}, {})["v"], config)
    if p is None:
        return None
    grown = overflow.expansion(s.id, s.action, s.params, list(s.dependencies), p)
    split_id = grown.rows[0].step.step_id
    outputs[split_id] = grown.rows[0].outputs
    try:
        answers = []
        for row in grown.rows[1:-1]:
            entry = _part_entry(row.step.step_id, s.action, spec, action, render(row.step.params, {}), s.id)
            steps_out.append(entry)
            answers.append(int(entry.get("max_output_tokens") or 0))
        map_id = grown.rows[-1].step.step_id
        outputs[map_id] = {"text": [""] * len(answers)}
        est = action.estimate(render(grown.parent_params, {}))
        outputs[map_id] = {"text": [" x" * n for n in answers]}
        high = action.estimate(render(grown.parent_params, {}))
    finally:
        outputs.pop(split_id, None)
        outputs.pop(grown.rows[-1].step.step_id, None)
    est.update({"prompt_tokens_max": high["prompt_tokens_max"], "cost_max": high["cost_max"], "lower_bound": True,
                "unknown_inputs": [map_id],
                "map_reduce": {"parts": len(p.parts), "part_tokens": p.part_tokens,
                               "answer_tokens": p.answer_tokens, "split": p.expr}})
    return est


def _for_each(s, spec, outputs: dict, unknown: dict, render, steps_out: list) -> list[dict]:
    """A for_each step over a list the estimate computed: one entry per item for a model
    action; over a list not known before the run, one entry that says so."""
    from . import dag, fanout
    from .adapters import load_action

    expr = fanout.list_expr(s.for_each)
    ref = dag.parse_ref(expr)
    known = ref.step not in unknown and ref.step in outputs
    if known:
        items = dag.make_lookup(outputs, {})(ref)
        if isinstance(items, list):
            fanout.check_count(expr, len(items))
    if spec.provider is None:
        return []
    if not known:
        steps_out.append({"step_id": s.id, "action": s.action, "provider": spec.provider,
                          "model": s.params.get("model"), "prompt_tokens": None, "max_output_tokens": None,
                          "cost_min": None, "cost_max": None, "price_unknown": True, "lower_bound": True,
                          "error": f"runs once per item of {expr}, which is not known before the run"})
        return []
    if not isinstance(items, list):
        return []
    action = load_action(s.action)
    entries = []
    for i in range(len(items)):
        params = render(fanout.with_item(s.params, expr, i, len(items)), {})
        entry = _part_entry(fanout.part_id(s.id, i + 1), s.action, spec, action, params, s.id)
        steps_out.append(entry)
        entries.append(entry)
    return entries


def warm(service=None) -> None:
    """Load what a first estimate needs (the extractor, the tokenizers, the price table), so
    that the popup's first estimate after the browser starts is not the one that waits for
    them: measured 4 s of imports on a 2-core machine against 0.1 s for the estimate itself.
    The host calls it on a thread of its own once the browser's opening requests are answered."""
    from .adapters import load_action
    from .adapters.base import StepContext

    # An article-sized page: the extractor's and the tokenizer's first large input costs more
    # than a small one (caches, compiled patterns).
    para = "<p>" + "Local workflows keep every step's tokens, cost and time on record. " * 12 + "</p>"
    html = ("<html><head><title>warm</title></head><body><nav><a href='/'>Home</a></nav><article><h1>Warm</h1>"
            + para * 40 + "</article><footer>(c)</footer></body></html>")
    ctx = StepContext(run_id="warm", step_id="text", action="extract_text", attempt=1)
    load_action("extract_text").compute({"html": html}, ctx)
    for action, model in (("local_chat", "warm-up"), ("openai_chat", "gpt-4o-mini")):
        try:
            load_action(action).estimate({"model": model, "prompt": "A few words.", "max_tokens": 1})
        except StepError:
            pass  # an unknown model still loaded the tokenizer and the price table
    if service is not None:
        # One whole estimate of a workflow the popup offers first: templates, settings and the
        # spend query too.
        names = [t["name"] for t in service.list_templates() if t.get("has_capture_slot") is not False]
        if names:
            service.estimate("page-digest" if "page-digest" in names else names[0], {"content": html})


__all__ = ["COMPUTED_ACTIONS", "estimate_run", "warm"]
