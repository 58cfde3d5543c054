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
COMPUTED_ACTIONS = ("extract_text", "template", "noop")


def estimate_run(tpl: "WorkflowTemplate", page: dict) -> dict:
    """Tokens and cost a run of `tpl` on `page` would take, without calling a model.

    Params are rendered as the run would render them: the capture slot's outputs come
    from `page`; extract_text, template and noop steps are computed for real. An
    upstream model step's answer is unknown: the prompt is counted with it empty
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
    now = clock.now()
    ctype = content_type(page.get("content_type") or None, field="page.content_type")
    capture = {"content": page["content"], "source_url": page.get("source_url"), "content_type": ctype,
               "captured_at": clock.iso(now), "title": page.get("title"), "selection": page.get("selection"),
               "size_bytes": len(page["content"].encode("utf-8")), "article": page.get("article") or ""}
    metadata = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
    for key in ("kind", "link_url", "link_text", "image_url", "image_alt"):  # as ingest copies them
        if key in metadata:
            capture[key] = metadata[key]
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


__all__ = ["COMPUTED_ACTIONS", "estimate_run"]
