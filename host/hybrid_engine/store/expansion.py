"""A run that grows while it runs: the parts of a fan-out become step rows.

The engine decides the new steps (for_each over a list it has just read, or the split of
a prompt too long for its model) and hands them over as the outcome of the claimed step
that decided them; they are inserted in the same transaction that puts that step back to
waiting on them, conditional on its claim (rowid, epoch). A crash before the commit
leaves the claimed step RUNNING and no part at all (recovery requeues it and it decides
again, the same way); after it, every part is an ordinary row, recovered, retried and
priced like any other. There is never half a fan-out.

New rows are placed just before the claimed step (a position between its own and the
one before it), so a run's steps read in the order they run.
"""

from __future__ import annotations

import json
import sqlite3

from .connection import _Tx
from .hotpath import HotPath
from .records import Outcome, _dumps, encode_dependents


class Expansions(HotPath):
    """Inserting a fan-out's rows under the claim of the step that planned it."""

    def step_deps(self, run_id: str, step_id: str) -> list[str]:
        row = self.conn.execute("SELECT deps FROM steps WHERE run_id = ? AND step_id = ?", (run_id, step_id)).fetchone()
        return json.loads(row[0]) if row else []

    def _expand(self, o: Outcome, tx: _Tx) -> bool:
        cl = o.claim
        row = self.conn.execute("SELECT pos, deps, action, provider FROM steps WHERE rowid = ? AND epoch = ?"
                                " AND status = 'RUNNING'", (cl.rowid, cl.epoch)).fetchone()
        if row is None:
            return False  # the lease was lost: whoever has the step now decides
        try:
            with self.transaction():  # a savepoint: the whole fan-out, or none of it
                self._grow(o, tx, *row)
        except sqlite3.IntegrityError as exc:  # a part's id taken: an engine bug, not a reason to stop the queue
            message = f"could not grow its parts: {exc}"
            self.conn.execute("UPDATE steps SET status = 'FAILED', error = ?, error_code = 'bad_fan_out', ended_at = ?,"
                              " owner = NULL, lease_until = NULL WHERE rowid = ?", (message, o.ended_at, cl.rowid))
            from ..clock import iso

            self._log(cl.run_id, cl.step_id, o.ended_at, f"Failed at {iso(o.ended_at)}: {message}")
            tx.close(cl.run_id, 1 + cl.carried + self._skip_downstream(cl.run_id, cl.step_id, o.ended_at))
        return True

    def _grow(self, o: Outcome, tx: _Tx, pos: float, old_deps: str, action: str, provider: str | None) -> None:
        c = self.conn
        cl, ex = o.claim, o.expansion
        old = set(json.loads(old_deps))
        new_ids = [r.step.step_id for r in ex.rows]
        done = {r.step.step_id for r in ex.rows if r.outputs is not None}
        waiting = {r.step.step_id: sum(1 for d in r.step.deps if d in new_ids and d not in done) for r in ex.rows}
        dependents: dict[str, list] = {sid: [] for sid in new_ids}
        for r in ex.rows:
            for d in r.step.deps:
                if d in dependents:
                    dependents[d].append((r.step.step_id, r.step.action, r.step.provider))
        for d in ex.parent_deps:
            if d in dependents:
                dependents[d].append((cl.step_id, action, provider))
        before = c.execute("SELECT MAX(pos) FROM steps WHERE run_id = ? AND pos < ?", (cl.run_id, pos)).fetchone()[0]
        low = before if before is not None else pos - 1
        span = (pos - low) / (len(ex.rows) + 1)
        opened = 0
        for k, r in enumerate(ex.rows, 1):
            s = r.step
            if r.outputs is not None:
                data, inline, ref = self._place_outputs(r.outputs)
                status = "COMPLETED"
                if ref:
                    self._write_large_outputs(cl.run_id, s.step_id, data)
            else:
                inline, ref = None, 0
                status = "QUEUED" if waiting[s.step_id] == 0 else "PENDING"
                opened += 1
            c.execute("INSERT INTO steps (run_id, step_id, pos, name, action, provider, params, deps, dependents,"
                      " waiting_on, status, outputs, outputs_ref, max_retries, timeout_s, due_at, started_at, ended_at,"
                      " duration_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (cl.run_id, s.step_id, low + k * span, s.name, s.action, s.provider, _dumps(s.params),
                       _dumps(s.deps), encode_dependents(dependents[s.step_id]), waiting[s.step_id], status, inline,
                       ref, s.max_retries, s.timeout_s, o.ended_at if status == "QUEUED" else None,
                       o.ended_at if status == "COMPLETED" else None, o.ended_at if status == "COMPLETED" else None,
                       0 if status == "COMPLETED" else None))
        parent_waiting = sum(1 for d in ex.parent_deps if d not in old and d not in done)
        params_sql, args = "", []
        if ex.parent_params is not None:
            params_sql, args = ", params = ?", [_dumps(ex.parent_params)]
        # The closed predecessors it carried (a continuation) are taken off the run's count now:
        # a waiting step carries none, or a part's failure that skips it would leave them counted.
        c.execute(f"UPDATE steps SET status = ?, waiting_on = ?, deps = ?, due_at = ?, owner = NULL,"
                  f" lease_until = NULL, carried = 0, attempts = MAX(attempts - 1, 0){params_sql} WHERE rowid = ?",
                  ("PENDING" if parent_waiting else "QUEUED", parent_waiting, _dumps(ex.parent_deps),
                   None if parent_waiting else o.ended_at, *args, cl.rowid))
        if ex.log:
            self._log(cl.run_id, cl.step_id, o.ended_at, ex.log)
        tx.close(cl.run_id, cl.carried - opened)
        tx.touched.add(cl.run_id)


__all__ = ["Expansions"]
