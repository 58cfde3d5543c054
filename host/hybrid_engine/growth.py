"""The executor's side of steps that grow parts while a run runs (mixed into Executor).

Two kinds: a for_each row, run on the spot, which grows one part per item of its list and,
once they are done, gathers their outputs (fanout.py); and a model step with
`on_overflow: map_reduce` whose rendered prompt does not fit its model, which grows its
split, map and reduce (overflow.py) instead of being sent. Either way the new rows are the
outcome of the claimed step ("expand"), written by the store in the transaction that
settles it. Kept apart from executor.py, which claims, runs and settles every step.
"""

from __future__ import annotations

import dataclasses
import json

from . import clock, fanout, overflow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .store import Claimed, Outcome


class GrowingSteps:
    """Needs the executor's store, _render, _success and _failure."""

    def _render_one(self, c: "Claimed", value: "Any") -> "Any":
        """One value rendered as the step's params are (a reference to a list stays a list)."""
        return self._render(dataclasses.replace(c, params=json.dumps({"value": value})))["value"]

    def _for_each(self, c: "Claimed", started: float) -> "Outcome":
        from .adapters.base import StepResult

        self.executed += 1
        try:
            done = fanout.run_row(c.step_id, c.params, self.store.step_deps(c.run_id, c.step_id),
                                  lambda ids: self.store.outputs(c.run_id, ids), lambda v: self._render_one(c, v))
            if isinstance(done, dict):
                return self._success(c, StepResult(outputs=done), started)
            raise fanout.Expand(done)
        except Exception as exc:  # noqa: BLE001 - an Expand becomes the outcome, anything else the step's error
            return self._failure(c, exc, started)

    def _check_overflow(self, c: "Claimed", params: dict) -> None:
        """Raises fanout.Expand when the prompt does not fit the model (map_reduce set)."""
        overflow.check(c, json.loads(c.params), params, self.store.step_deps(c.run_id, c.step_id),
                       lambda v: self._render_one(c, v))

    @staticmethod
    def _expanded(c: "Claimed", grow: fanout.Expand, started: float) -> "Outcome":
        from .store import Outcome

        return Outcome(claim=c, kind="expand", started_at=started, ended_at=clock.now(), expansion=grow.expansion)


__all__ = ["GrowingSteps"]
