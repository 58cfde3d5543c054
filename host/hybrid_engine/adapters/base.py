"""What the executor needs from an action.

An action is looked up by name in the registry (adapters/__init__.py) through an
ActionSpec that is cheap to import: template validation needs names, parameter
types and output keys, never an SDK. The implementation is imported on first use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable


@dataclass(frozen=True)
class Param:
    """One parameter of an action.

    `kind` says what a value means beyond its type, and so who may choose it. "path": a
    file path; the template chooses the folder and data only fills in names (see
    dag.render_path and safepath). `same_name_if` names a boolean param of the same
    action that, when true, keeps a data-derived name as it is instead of making it
    unique per run (an append log that several runs share). "url", "folder" and "fallback"
    (a model step's other models, fallbacks.py): only the template writes them; a reference
    in one is refused at load time and never rendered (LITERAL_KINDS). "command" is
    reserved, under the same rule.
    """

    type: type | tuple[type, ...]
    required: bool = False
    doc: str = ""
    kind: str = "text"
    same_name_if: str | None = None


LITERAL_KINDS = frozenset({"url", "folder", "fallback"})  # params data may not fill at all

# Parameters every action accepts; the executor reads them, actions may ignore them.
COMMON_PARAMS: dict[str, Param] = {
    "timeout_s": Param((int, float), doc="per-attempt time limit in seconds"),
    "retries": Param(int, doc="how many times a transient failure is retried"),
}


@dataclass(frozen=True)
class ActionSpec:
    name: str
    loader: str  # "module:attribute" of an Action subclass, imported lazily
    params: dict[str, Param] = field(default_factory=dict)
    outputs: frozenset[str] | None = None  # None: any key may be referenced
    provider: str | None = None  # concurrency group, cost breakdown by provider
    default_retries: int = 0
    default_timeout_s: float = 300.0
    blocking: bool = False  # CPU-bound: run in a worker thread, not on the event loop
    inline: bool = False  # quick and synchronous: run on the spot, takes no concurrency slot
    input_slot: bool = False  # completed by a capture / external data, never executed
    run_facts: bool = False  # the action reads the run so far (page, models, cost): ctx.run_facts

    def all_params(self) -> dict[str, Param]:
        return {**COMMON_PARAMS, **self.params}

    @property
    def path_params(self) -> dict[str, str | None]:
        """Path params -> the param that shares a name (see Param), for dag.render_params."""
        return {key: p.same_name_if for key, p in self.params.items() if p.kind == "path"}

    @property
    def literal_params(self) -> tuple[str, ...]:
        return tuple(key for key, p in self.params.items() if p.kind in LITERAL_KINDS)


@dataclass(slots=True)
class StepContext:
    run_id: str
    step_id: str
    action: str
    attempt: int
    log: Callable[[str], None] = lambda line: None
    run_created_at: str | None = None
    # Awaited by an action right before it sends a billable request, with what the call may
    # cost; raises CallNotSent when the step is no longer this process's to run.
    journal: Callable[..., Awaitable[None]] | None = None
    # For actions whose spec asks (run_facts=True): runfacts.run_facts for this run, without
    # this step; called from the action's own thread (the store has a connection per thread).
    run_facts: Callable[..., dict] | None = None


class CallNotSent(Exception):
    """The step was taken over (cancelled, recovered elsewhere) before its call was sent."""


@dataclass(slots=True)  # one per step executed
class StepResult:
    outputs: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


class Action:
    """Base class for everything a step can do."""

    spec: ActionSpec

    async def run(self, params: dict[str, Any], ctx: StepContext) -> StepResult:
        raise NotImplementedError

    def estimate(self, params: dict[str, Any]) -> dict | None:
        """Tokens and cost this step would take, without calling anything. None: free."""
        return None


class SyncAction(Action):
    """A deterministic action written as a plain function; blocking ones run in a thread."""

    def compute(self, params: dict[str, Any], ctx: StepContext) -> StepResult:
        raise NotImplementedError

    async def run(self, params: dict[str, Any], ctx: StepContext) -> StepResult:
        if self.spec.blocking:
            return await asyncio.to_thread(self.compute, params, ctx)
        return self.compute(params, ctx)
