"""Orphan recovery, run at every launch of anything that executes.

Built only on store calls, each a compare-and-swap on the step's epoch, so two
processes recovering at once cannot both count the same crash. A crash counts as a
strike only when the step had sent its provider call (the store reads the journal in
the same transaction): a worker killed between claiming and sending costs nothing. Cost is
O(steps RUNNING right now), not O(every run ever kept): the store keeps a
partial index of RUNNING steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import clock, procs
from .store import Store

log = logging.getLogger(__name__)

MAX_CRASH_RECOVERIES = 3


@dataclass
class RecoveryReport:
    requeued: list[tuple[str, str]] = field(default_factory=list)
    dead_lettered: list[tuple[str, str]] = field(default_factory=list)
    left_alone: list[tuple[str, str]] = field(default_factory=list)
    stale_removed: int = 0

    def to_dict(self) -> dict:
        def fmt(items):
            return [{"run_id": r, "step_id": s} for r, s in items]
        return {"requeued": fmt(self.requeued), "dead_lettered": fmt(self.dead_lettered),
                "left_alone": fmt(self.left_alone), "stale_removed": self.stale_removed}


def requeue_orphans(store: Store, *, own_owner: str | None = None, now: float | None = None,
                    remove_stale: bool = True) -> RecoveryReport:
    now = clock.now() if now is None else now
    report = RecoveryReport()
    for row in store.running_steps():
        if own_owner is not None and row.owner == own_owner:
            continue
        alive = procs.owner_alive(row.owner_pid, row.owner_start, row.owner_host)
        lease_over = row.lease_until is not None and row.lease_until < now
        if alive is True and not lease_over:
            report.left_alone.append((row.run_id, row.step_id))
            continue
        if alive is None and not lease_over:
            report.left_alone.append((row.run_id, row.step_id))
            continue
        why = (f"owner pid {row.owner_pid} is gone" if alive is False
               else f"lease of {row.owner} expired at {clock.iso(row.lease_until)}")
        result = store.requeue_orphan(row, now, why, max_strikes=MAX_CRASH_RECOVERIES)
        if result is None:
            continue
        outcome, line = result
        if outcome == "requeued":
            report.requeued.append((row.run_id, row.step_id))
            log.warning("run %s step %s: %s", row.run_id, row.step_id, line)
        else:
            report.dead_lettered.append((row.run_id, row.step_id))
            log.error("run %s step %s: %s", row.run_id, row.step_id, line)
    if remove_stale:
        report.stale_removed = store.delete_stale_steps()
    return report
