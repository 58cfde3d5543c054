"""A template's steps as the rows every run made from it starts with.

Which steps are capture slots (they wait for a page), which start queued (no
dependencies) or pending, each step's provider, retries and timeout: read from the
actions' specs (adapters) and serialised once per template by the store, so a run is
created with one INSERT ... SELECT whatever its size.
"""

from __future__ import annotations

from .states import StepStatus

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's start
if TYPE_CHECKING:
    from .models import WorkflowTemplate
    from .store import RunPlan


def template_plan(tpl: "WorkflowTemplate") -> "RunPlan":
    """The steps of `tpl` as rows for the store, serialised once per template (runs reuse it)."""
    cached = tpl._plan
    if cached is not None:
        return cached
    from . import fanout
    from .adapters import SPECS
    from .store import NewStep, Store

    steps = []
    for s in tpl.steps:
        if s.for_each is not None:  # one row that grows a part per item when its list is known
            steps.append(NewStep(step_id=s.id, name=s.name or s.id, action=fanout.FOR_EACH, provider=None,
                                 params=fanout.row_params(s), deps=list(s.dependencies), status=StepStatus.PENDING,
                                 max_retries=0, timeout_s=None))
            continue
        spec = SPECS[s.action]
        if spec.input_slot:
            status = StepStatus.WAITING_FOR_INPUT
        elif s.dependencies:
            status = StepStatus.PENDING
        else:
            status = StepStatus.QUEUED
        timeout = s.params.get("timeout_s")
        steps.append(NewStep(step_id=s.id, name=s.name or s.id, action=s.action, provider=spec.provider,
                             params=s.params, deps=list(s.dependencies), status=status,
                             max_retries=int(s.params.get("retries", spec.default_retries)),
                             timeout_s=float(timeout) if timeout else None))
    tpl._plan = Store.plan_run(steps, tpl.name)
    return tpl._plan


__all__ = ["template_plan"]
