"""`for_each`: a step that runs once per item of an upstream list, and gathers the results.

A template step with `for_each: "{{ steps.X.outputs.K }}"` becomes one row whose action
is FOR_EACH. When it is first claimed (X and its other dependencies are done) it reads
the list and grows one part row per item, named `<id>~1`, `<id>~2`, ..., each running the
step's own action with `{{ item }}` standing for `{{ steps.X.outputs.K.<i> }}`; it then
waits for them (store/expansion.py inserts the parts and puts it back to waiting in one
transaction). Claimed again once every part is done, it completes with each output key
of its parts as a list in item order, so a following step that refers to
`{{ steps.<id>.outputs.text }}` reduces the parts' texts.

Part ids hold '~', which no template step id does: they cannot collide with a template's
steps, and only the engine refers to them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing`'s: keep the engine's imports light
if TYPE_CHECKING:
    from typing import Any

    from .models import TemplateStep, WorkflowTemplate
    from .store import Expansion

FOR_EACH = "for_each"
PART_MARK = "~"
# Parts one step may grow: the same bound as a template's steps (models.MAX_STEPS), for the
# same reasons (every part is a row, a line in the popup and in `show`).
MAX_PARTS = 10_000


class Expand(Exception):
    """Raised while preparing a claimed step that grows parts instead of running now."""

    def __init__(self, expansion: "Expansion"):
        super().__init__("expand")
        self.expansion = expansion


def part_id(step_id: str, number: int) -> str:
    return f"{step_id}{PART_MARK}{number}"


def part_ids(step_id: str, deps: list[str]) -> list[str]:
    """The parts a for_each row has grown, in item order (none: it has not fanned out yet)."""
    prefix = step_id + PART_MARK
    found = [(int(d[len(prefix):]), d) for d in deps if d.startswith(prefix) and d[len(prefix):].isdigit()]
    return [d for _, d in sorted(found)]


def row_params(s: "TemplateStep") -> dict:
    """What a for_each step's row holds: the list to go over and the step to run per item."""
    return {"for_each": s.for_each, "action": s.action, "name": s.name or s.id, "params": s.params}


def with_item(params: Any, list_expr: str, index: int, count: int) -> Any:
    """The template's params for item `index` (from 0): `{{ item }}` becomes a reference to
    that item, rendered in one pass when the part runs like any other reference; the
    number and the count are written in (a whole-string one stays a number)."""
    from . import dag

    item_ref = "{{ " + f"{list_expr}.{index}" + " }}"
    values = {"item": item_ref, "item_number": str(index + 1), "item_count": str(count)}

    def one(m):
        expr = m.group(1).strip()
        return values.get(expr, m.group(0))

    if isinstance(params, str):
        m = dag.REF_PATTERN.fullmatch(params)
        if m and m.group(1).strip() in ("item_number", "item_count"):
            return index + 1 if m.group(1).strip() == "item_number" else count
        return dag.REF_PATTERN.sub(one, params) if "{{" in params else params
    if isinstance(params, dict):
        return {k: with_item(v, list_expr, index, count) for k, v in params.items()}
    if isinstance(params, list):
        return [with_item(v, list_expr, index, count) for v in params]
    return params


def list_expr(for_each: str) -> str:
    """`steps.X.outputs.K` from `{{ steps.X.outputs.K }}`."""
    from . import dag

    m = dag.REF_PATTERN.fullmatch(for_each.strip())
    return m.group(1).strip() if m else for_each.strip()


def fan_out(step_id: str, spec: dict, items: list, deps: list[str]) -> "Expansion":
    """The part rows of a for_each row over `items`, and what it waits for afterwards."""
    from .adapters import SPECS
    from .states import StepStatus
    from .store import ExpandedStep, Expansion, NewStep

    action, params = spec["action"], spec.get("params") or {}
    action_spec = SPECS[action]
    expr = list_expr(spec["for_each"])
    n = len(items)
    check_count(expr, n)
    timeout = params.get("timeout_s")
    rows = [ExpandedStep(NewStep(
        step_id=part_id(step_id, i + 1), name=f"{spec.get('name') or step_id} [{i + 1}/{n}]", action=action,
        provider=action_spec.provider, params=with_item(params, expr, i, n), deps=list(deps),
        status=StepStatus.QUEUED, max_retries=int(params.get("retries", action_spec.default_retries)),
        timeout_s=float(timeout) if timeout else None)) for i in range(n)]
    ids = [r.step.step_id for r in rows]
    line = (f"for_each: {n} item(s) in {expr}; runs {ids[0]} to {ids[-1]}" if n else
            f"for_each: {expr} is an empty list; nothing to run")
    return Expansion(rows=rows, parent_deps=list(deps) + ids, log=line)


def check_count(expr: str, n: int) -> None:
    """PermanentStepError when a list is too long to run per item (the run and its estimate agree)."""
    if n > MAX_PARTS:
        from .errors import PermanentStepError

        raise PermanentStepError(f"for_each: {expr} holds {n:,} items, over the {MAX_PARTS:,} parts one step may "
                                 f"run; split the text into larger parts", code="bad_for_each")


def template_problems(tpl: "WorkflowTemplate", ids: set[str]) -> list[str]:
    """`for_each` names one upstream list by a reference, and is not nested: the step it
    goes over does not itself run per item. The list's step is made a dependency."""
    import json

    from . import dag

    problems: list[str] = []
    by_id = {s.id: s for s in tpl.steps}
    for s in tpl.steps:
        if s.for_each is None:
            continue
        where = f"step '{s.id}', field 'for_each'"
        m = dag.REF_PATTERN.fullmatch(s.for_each.strip())
        try:
            ref = dag.parse_ref(m.group(1)) if m else None
        except dag.RefError:
            ref = None
        if ref is None or ref.kind != "step":
            problems.append(f"{where}: expected one reference to an upstream list, "
                            f"\"{{{{ steps.<id>.outputs.<key> }}}}\", got {json.dumps(s.for_each)[:80]}")
            continue
        if ref.step not in ids:
            problems.append(f"{where}: reference to unknown step '{ref.step}'")
        elif ref.step == s.id:
            problems.append(f"{where}: a step cannot go over its own outputs")
        elif by_id[ref.step].for_each is not None:
            problems.append(f"{where}: nested for_each is not supported: step '{ref.step}' itself runs per item; "
                            f"go over a list made from its outputs instead (for example a split_text step)")
        elif ref.step not in s.dependencies:
            s.dependencies.append(ref.step)
    return problems


def run_row(step_id: str, params_json: str, deps: list[str], outputs_of, render_value) -> "Expansion | dict":
    """What a claimed for_each row does: the first time, grow one part per item of its list
    (an Expansion); once its parts are done, its outputs gathered from theirs (a dict).
    `outputs_of(ids)` reads completed steps' outputs, `render_value` renders a reference."""
    import json

    from .adapters import SPECS
    from .errors import PermanentStepError

    spec = json.loads(params_json)
    parts = part_ids(step_id, deps)
    if parts:
        found = outputs_of(set(parts))
        return gathered([found.get(p) or {} for p in parts])
    items = render_value(spec["for_each"])
    if not isinstance(items, list):
        raise PermanentStepError(f"for_each: {list_expr(spec['for_each'])} is {type(items).__name__}, not a list",
                                 code="bad_for_each")
    if not items:
        return {k: [] for k in sorted(SPECS[spec["action"]].outputs or ())}
    return fan_out(step_id, spec, items, deps)


def gathered(part_outputs: list[dict]) -> dict:
    """Each output key of the parts as a list in item order (None where a part lacks it)."""
    keys: list[str] = []
    for out in part_outputs:
        for k in out:
            if k not in keys:
                keys.append(k)
    return {k: [out.get(k) for out in part_outputs] for k in keys}


__all__ = ["FOR_EACH", "MAX_PARTS", "PART_MARK", "Expand", "check_count", "fan_out", "gathered", "list_expr", "part_id",
           "part_ids", "row_params", "run_row", "template_problems", "with_item"]
