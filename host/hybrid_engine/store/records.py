"""The values that go into the store and come out of it: rows as Python objects.

Shared by every part of the store and by its callers (the executor builds ClaimRequests
and Outcomes, models.py builds NewSteps); none of them speaks SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's first runs.list 2 ms
if TYPE_CHECKING:
    from typing import Any, Iterable

from ..states import StepStatus


@dataclass
class NewStep:
    step_id: str
    name: str
    action: str
    provider: str | None
    params: dict
    deps: list[str]
    status: StepStatus
    max_retries: int
    timeout_s: float | None


@dataclass
class ExpandedStep:
    """A step a run grows while it runs (a part of a fan-out). `outputs` given: it is
    created COMPLETED with them (the split of an overflowing prompt)."""

    step: NewStep
    outputs: dict | None = None


@dataclass
class Expansion:
    """Steps added before a claimed step, and what the claimed step waits for afterwards.
    Applied in the transaction that settles the claimed step: all of it or none."""

    rows: list[ExpandedStep]
    parent_deps: list[str]  # the claimed step's dependencies afterwards (it goes back to waiting)
    parent_params: dict | None = None  # new params for the claimed step (the reduce of an overflow)
    log: str | None = None


@dataclass(frozen=True)
class RunPlan:
    """A template's steps as rows: everything a run needs to execute is in them."""

    rows: list[tuple]
    queued: list[str]
    digest: str  # of the rows: names the plan in the store's `plans` table
    positions: dict = field(default_factory=dict, compare=False)  # step id -> row, filled on first use


@dataclass(slots=True)
class Claimed:
    rowid: int
    run_id: str
    step_id: str
    action: str
    provider: str | None
    params: str
    dependents: str
    epoch: int
    attempts: int
    error_count: int
    crash_count: int
    max_retries: int
    timeout_s: float | None
    carried: int = 0


@dataclass(slots=True)
class Outcome:
    """What happened to a claimed step; applied by Store.settle in one transaction."""

    claim: Claimed
    kind: str  # "completed" | "retry" | "failed" | "released" | "expand"
    started_at: float
    ended_at: float
    outputs: dict | None = None
    metadata: dict | None = None
    error: str | None = None
    error_code: str | None = None
    due_at: float | None = None
    log: str | None = None
    # The journaled provider call of this attempt, if one was sent, and what became of it:
    # "answered", "refused" (the provider answered with an error) or "unconfirmed".
    call_id: int | None = None
    call_state: str | None = None
    call_cost: float | None = None
    expansion: Expansion | None = None  # kind "expand": the steps the claimed one grows


@dataclass
class ClaimRequest:
    owner: str
    pid: int
    start: int | None
    host: str
    lease_until: float
    limit: int
    exclude_actions: Iterable[str] = ()
    exclude_providers: Iterable[str] = ()
    # Groups with a concurrency limit: their steps always go through the queue.
    limited_actions: frozenset = frozenset()
    limited_providers: frozenset = frozenset()
    # Actions that finish on the spot take no concurrency slot: up to `inline_limit` more
    # of them are claimed in the same batch when `limit` is used up.
    inline_actions: tuple = ()
    inline_limit: int = 0
    # False: when a continuation claimed something, skip looking at the queue this time
    # (the executor still looks often enough for fairness).
    probe_queue: bool = True

    def may_continue(self, action: str, provider: str | None) -> bool:
        """A step of this action and provider may be claimed straight from a chain (its group
        has no limit), not through the queue."""
        return action not in self.limited_actions and not (provider and provider in self.limited_providers)


@dataclass
class RunningRow:
    rowid: int
    run_id: str
    step_id: str
    owner: str | None
    owner_pid: int | None
    owner_start: int | None
    owner_host: str | None
    epoch: int
    lease_until: float | None
    crash_count: int
    carried: int = 0
    provider: str | None = None


def encode_dependents(entries: list) -> str:
    """Step ids, action names and providers never hold spaces or commas (the template schema
    says so), so a step's dependents fit a string that splits faster than JSON parses: read
    at every completion."""
    return ",".join(f"{step} {action} {provider or ''}" for step, action, provider in entries)


def decode_dependents(text: str) -> list[tuple[str, str, str | None]]:
    if not text:
        return []
    if "," not in text:  # one dependent: every link of a chain
        step, action, provider = text.split(" ")
        return [(step, action, provider or None)]
    out = []
    for entry in text.split(","):
        step, action, provider = entry.split(" ")
        out.append((step, action, provider or None))
    return out

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps with options builds one per call
# The C encoder that _ENCODER.encode builds on every call, built once: encode() spends more
# time making it than a step's small outputs take to write (a few us on every step settled).
# Same text byte for byte (plan digests hash it); without the circular-reference markers, a
# structure that contains itself, which parsed JSON never is, raises RecursionError, not ValueError.
_C_ENCODE = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)


def _dumps(value: Any) -> str:
    if _C_ENCODE is None:  # an interpreter without the C accelerator
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))
