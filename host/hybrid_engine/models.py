"""Data shapes: statuses, workflow templates, the run document and the external-data request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


from .states import OPEN_STEP, TERMINAL_STEP, RunStatus, StepStatus  # noqa: F401 - re-exported


STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"

# Steps in one template. Each step is a row in every run made from it and a line in the
# popup, the run document and `show`; the bundled templates have 3 to 6 steps, and a page
# pipeline of even a few hundred is hard to read. At 10,000, validating and planning take
# about 0.3 s and 20 MB (bench/template_size) and a run's rows are created in tens of
# milliseconds, so a mistaken generator cannot stall the host.
MAX_STEPS = 10_000


class TemplateStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID_PATTERN)
    name: str | None = None
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list)
    # One reference to an upstream list, "{{ steps.<id>.outputs.<key> }}": the step runs once
    # per item, `{{ item }}` in its params standing for the item (fanout.py).
    for_each: str | None = None


class WorkflowTemplate(BaseModel):
    """A validated template. `source` is where it came from, for error messages."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    description: str = ""
    budget_usd: float | None = Field(default=None, ge=0)
    redact: list[str] = Field(default_factory=list)  # pii.KINDS replaced before every cloud model step
    steps: list[TemplateStep] = Field(min_length=1)  # at most MAX_STEPS: templates.validate says so first
    source: str | None = Field(default=None, exclude=True)

    _plan: Any = PrivateAttr(default=None)  # plans.template_plan's rows, made once: every run reuses them

    @property
    def capture_slots(self) -> list[str]:
        from .adapters import SPECS

        return [s.id for s in self.steps if SPECS[s.action].input_slot]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "steps": len(self.steps),
            "has_capture_slot": bool(self.capture_slots),
            "budget_usd": self.budget_usd,
        }


# ---- the run document ----------------------------------------------------

class ExecutionMetrics(BaseModel):
    tokens: int = 0
    cost: float | None = 0.0
    model: str | None = None
    duration_ms: int | None = None
    attempts: int = 0


class WorkflowStep(BaseModel):
    id: str
    name: str
    action: str
    params: dict[str, Any]
    dependencies: list[str]
    status: StepStatus
    outputs: dict[str, Any] | None = None
    error: str | None = None
    logs: list[str] = Field(default_factory=list)
    startTime: str | None = None
    endTime: str | None = None
    duration: float | None = None  # seconds
    metadata: dict[str, Any] = Field(default_factory=dict)
    execution_metrics: ExecutionMetrics = Field(default_factory=ExecutionMetrics)


class RunMetrics(BaseModel):
    total_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_cost: float = 0.0
    unknown_cost_steps: int = 0
    completed_steps: int = 0
    failed_steps: int = 0
    total_steps: int = 0
    duration_ms: int | None = None


class Workflow(BaseModel):
    id: str
    name: str
    template: str
    status: RunStatus
    progress: float
    steps: list[WorkflowStep]
    metrics: RunMetrics
    cost_breakdown: dict[str, float]
    cost_by_provider: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    budget_usd: float | None = None
    createdAt: str
    updatedAt: str


class ExternalDataRequest(BaseModel):
    """The body of `external_data.add` and `hybrid-engine ingest`."""

    model_config = ConfigDict(extra="forbid")

    content: str
    source_url: str | None = None
    content_type: str = "text/html"  # a MIME type or a short name (text, html, json, markdown): stored as MIME
    step_name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    title: str | None = None
    selection: str | None = None
    # The article the extension's Readability found in the rendered page (HTML); extract_text may use it.
    article: str | None = None


class ExternalDataResponse(BaseModel):
    workflow_id: str
    step_id: str
    status: str
    queued_dependents: int
    message: str
