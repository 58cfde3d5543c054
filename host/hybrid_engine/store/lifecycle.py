"""A run's life outside the hot path: created from its template's saved plan, slots
filled, external steps added, retried, cancelled, deleted; and the requeue (or dead
letter) of steps whose worker died.

A run is created by copying its template's saved plan (`plan_steps`) inside SQLite,
not by binding every row from Python.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's first runs.list 2 ms
if TYPE_CHECKING:
    from typing import Iterable

from ..errors import StoreError
from .expansion import Expansions
from .records import NewStep, RunningRow, RunPlan, _dumps, encode_dependents
from .schema import _OPEN_SQL, ACTIVE_RUNS


class _Stale(Exception):
    """The row changed under us: the transaction is undone and the caller told so."""


def _iso(ts: float) -> str:
    from ..clock import iso

    return iso(ts)


class RunLifecycle(Expansions):
    """Runs and their steps as the user and recovery change them, one transaction each."""

    # ---- creating runs and filling slots -----------------------------------

    @staticmethod
    def plan_run(steps: list[NewStep], template: str = "") -> "RunPlan":
        """Serialise a template's steps once; every run made from it reuses the result.

        The digest covers the template's name too: two templates never share a saved plan,
        so replacing one's plan never drops the other's."""
        dependents: dict[str, list] = {s.step_id: [] for s in steps}
        for s in steps:
            for d in s.deps:
                dependents[d].append((s.step_id, s.action, s.provider))
        rows = [(s.step_id, i, s.name, s.action, s.provider, _dumps(s.params), _dumps(s.deps),
                 encode_dependents(dependents[s.step_id]), len(s.deps), s.status.value, s.max_retries, s.timeout_s)
                for i, s in enumerate(steps)]
        queued = [r[0] for r in rows if r[9] == "QUEUED"]
        import hashlib  # once per template, not at import (OpenSSL costs the host's first runs.list)

        digest = hashlib.sha256(_dumps([template, rows]).encode()).hexdigest()[:32]
        return RunPlan(rows, queued, digest)

    _RUN_FROM_PLAN = (
        "INSERT INTO steps (run_id, step_id, pos, name, action, provider, params, deps, dependents, waiting_on,"
        " status, max_retries, timeout_s, due_at) SELECT ?1, step_id, pos, name, action, provider, params, deps,"
        " dependents, waiting_on, status, max_retries, timeout_s, CASE WHEN status = 'QUEUED' THEN ?3 END"
        " FROM plan_steps WHERE digest = ?2 ORDER BY pos")

    def create_run(self, run_id: str, name: str, template: str, plan: "RunPlan", budget_usd: float | None,
                   now: float) -> None:
        with self.transaction():
            c = self.conn
            c.execute("INSERT INTO runs (id, name, template, status, budget_usd, open_steps, created_at,"
                      " updated_at) VALUES (?, ?, ?, 'PENDING', ?, ?, ?, ?)",
                      (run_id, name, template, budget_usd, len(plan.rows), now, now))
            cur = c.execute(self._RUN_FROM_PLAN, (run_id, plan.digest, now)) if plan.digest in self._plans else None
            if cur is None or cur.rowcount == 0:  # not saved yet, or dropped since (by another process saving a newer version)
                self._save_plan(plan, template, now)
                cur = c.execute(self._RUN_FROM_PLAN, (run_id, plan.digest, now))
            n = cur.rowcount
            if n != len(plan.rows):
                raise StoreError(f"plan {plan.digest} of template '{template}' has {n} rows, expected {len(plan.rows)}")
            self._planned_here(run_id, cur.lastrowid - n + 1, plan)

    def _save_plan(self, plan: "RunPlan", template: str, now: float) -> None:
        """Keep one plan per template: an edited template's older plans go (no run refers to them)."""
        c = self.conn
        if c.execute("SELECT 1 FROM plans WHERE digest = ?", (plan.digest,)).fetchone() is None:
            for (old,) in c.execute("SELECT digest FROM plans WHERE template = ?", (template,)).fetchall():
                c.execute("DELETE FROM plan_steps WHERE digest = ?", (old,))
                c.execute("DELETE FROM plans WHERE digest = ?", (old,))
            c.execute("INSERT INTO plans (digest, template, created_at) VALUES (?, ?, ?)",
                      (plan.digest, template, now))
            c.executemany("INSERT INTO plan_steps (digest, step_id, pos, name, action, provider, params, deps,"
                          " dependents, waiting_on, status, max_retries, timeout_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          [(plan.digest, *row) for row in plan.rows])
        self._plans.add(plan.digest)

    def open_slots(self, run_id: str) -> list[str]:
        rows = self.conn.execute("SELECT step_id FROM steps WHERE run_id = ? AND status = 'WAITING_FOR_INPUT'"
                                 " ORDER BY pos", (run_id,)).fetchall()
        return [r[0] for r in rows]

    def fill_slot(self, run_id: str, step_id: str, outputs: dict, metadata: dict, now: float, log: str) -> int | None:
        """Complete a WAITING_FOR_INPUT step with external data; None if it was not waiting."""
        with self.transaction() as tx:
            c = self.conn
            row = c.execute("SELECT dependents FROM steps WHERE run_id = ? AND step_id = ?"
                            " AND status = 'WAITING_FOR_INPUT'", (run_id, step_id)).fetchone()
            if row is None:
                return None
            data, inline, ref = self._place_outputs(outputs)
            c.execute("UPDATE steps SET status = 'COMPLETED', outputs = ?, outputs_ref = ?, metadata = ?,"
                      " started_at = ?, ended_at = ?, duration_ms = 0, error = NULL, error_code = NULL"
                      " WHERE run_id = ? AND step_id = ?", (inline, ref, _dumps(metadata), now, now, run_id, step_id))
            if ref:
                self._write_large_outputs(run_id, step_id, data)
            self._log(run_id, step_id, now, log)
            queued = self._release_dependents(run_id, row[0], now, tx)
            tx.close(run_id)
            tx.started.add(run_id)
            return queued

    def add_external_step(self, run_id: str, step_id: str, name: str, outputs: dict, metadata: dict,
                          now: float, log: str) -> int | None:
        """None when the run has finished meanwhile (checked inside the write transaction)."""
        with self.transaction() as tx:
            c = self.conn
            status = c.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if status is None or status[0] not in ("PENDING", "RUNNING"):
                return None
            pos = c.execute("SELECT COALESCE(MAX(pos), -1) + 1 FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
            data, inline, ref = self._place_outputs(outputs)
            if ref:
                self._write_large_outputs(run_id, step_id, data)
            c.execute("INSERT INTO steps (run_id, step_id, pos, name, action, params, deps, status, outputs,"
                      " outputs_ref, metadata, started_at, ended_at, duration_ms, external)"
                      " VALUES (?, ?, ?, ?, 'capture', '{}', '[]', 'COMPLETED', ?, ?, ?, ?, ?, 0, 1)",
                      (run_id, step_id, pos, name, inline, ref, _dumps(metadata), now, now))
            self._log(run_id, step_id, now, log)
            queued = self._queue_ready(run_id, now)
            tx.touched.add(run_id)
            tx.started.add(run_id)
            return queued

    def _queue_ready(self, run_id: str, now: float) -> int:
        """Recount every PENDING step's open dependencies and queue those with none left."""
        c = self.conn
        rows = c.execute("SELECT step_id, deps, status FROM steps WHERE run_id = ?", (run_id,)).fetchall()
        done = {step_id for step_id, _, status in rows if status == "COMPLETED"}
        recount, ready = [], []
        for step_id, deps, status in rows:
            if status == "PENDING":
                missing = sum(1 for d in json.loads(deps) if d not in done)
                recount.append((missing, run_id, step_id))
                if not missing:
                    ready.append(step_id)
        c.executemany("UPDATE steps SET waiting_on = ? WHERE run_id = ? AND step_id = ?", recount)
        return self._set_status(run_id, ready, "QUEUED", "due_at = ?", (now,), ("PENDING",))

    # ---- recovery: steps whose worker died -----------------------------------

    def running_steps(self) -> list[RunningRow]:
        rows = self.conn.execute("SELECT rowid, run_id, step_id, owner, owner_pid, owner_start, owner_host, epoch,"
                                 f" lease_until, crash_count, carried, provider FROM steps WHERE {ACTIVE_RUNS}"
                                 " AND status = 'RUNNING'").fetchall()
        return [RunningRow(*r) for r in rows]

    def requeue_orphan(self, row: RunningRow, now: float, why: str, *, max_strikes: int) -> tuple[str, str] | None:
        try:
            return self._requeue_orphan(row, now, why, max_strikes)
        except _Stale:
            return None

    def _requeue_orphan(self, row: RunningRow, now: float, why: str, max_strikes: int) -> tuple[str, str]:
        """Requeue (or dead-letter) one orphan, if it is still the one we saw: (outcome, log line).

        A strike counts only when the step's side effect had started: for a model step, a
        call journaled as sent under this claim (it may have been billed, so it becomes
        `unconfirmed`); a step killed before it sent anything goes back to the queue as if
        never claimed. Steps without a provider strike at every crash, as they ran at once."""
        with self.transaction() as tx:
            c = self.conn
            sent = c.execute("UPDATE calls SET state = 'unconfirmed', settled_at = ?, reason = ?"
                             " WHERE run_id = ? AND step_id = ? AND state = 'sent' RETURNING epoch",
                             (now, f"no answer recorded: {why}", row.run_id, row.step_id)).fetchall()
            strike = row.provider is None or any(epoch == row.epoch for (epoch,) in sent)
            stamp = f"Recovered from orphaned RUNNING state at {_iso(now)}: {why}"
            crashes = row.crash_count + 1
            if not strike:
                cur = c.execute("UPDATE steps SET status = 'QUEUED', due_at = ?, attempts = MAX(attempts - 1, 0),"
                                " epoch = epoch + 1, owner = NULL, lease_until = NULL"
                                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'", (now, row.rowid, row.epoch))
                outcome, line = "requeued", f"{stamp}; requeued without a strike (no provider call had been sent)"
            elif crashes < max_strikes:
                cur = c.execute("UPDATE steps SET status = 'QUEUED', due_at = ?, crash_count = crash_count + 1,"
                                " epoch = epoch + 1, owner = NULL, lease_until = NULL"
                                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'", (now, row.rowid, row.epoch))
                outcome = "requeued"
                line = f"{stamp}; requeued (crash recovery {crashes} of {max_strikes})"
            else:
                reason = (f"dead-lettered: the step's worker died {crashes} times while running it ({why}); "
                          f"not retried automatically so it cannot spend money at every start. "
                          f"Fix the cause, then `hybrid-engine retry {row.run_id}`.")
                cur = c.execute("UPDATE steps SET status = 'FAILED', crash_count = crash_count + 1, error = ?,"
                                " error_code = 'dead_lettered', ended_at = ?, epoch = epoch + 1, owner = NULL,"
                                " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                                (reason, now, row.rowid, row.epoch))
                outcome = "dead_lettered"
                line = f"{stamp}; crash {crashes} of {max_strikes}, step failed (dead-lettered)"
            if cur.rowcount == 0:
                raise _Stale()  # another process got there first: undo the call update with the rest
            if sent:
                line += f"; {len(sent)} provider call(s) sent without a recorded answer are kept as unconfirmed"
            self._log(row.run_id, row.step_id, now, line)
            if outcome == "dead_lettered":
                tx.close(row.run_id, 1 + row.carried + self._skip_downstream(row.run_id, row.step_id, now))
            else:
                tx.touched.add(row.run_id)
            return outcome, line

    def delete_stale_steps(self) -> int:
        """Queue entries whose run is gone (deleted by a process without foreign keys)."""
        with self.transaction():
            cur = self.conn.execute("DELETE FROM steps WHERE status = 'QUEUED'"
                                    " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = steps.run_id)")
            return cur.rowcount

    # ---- user actions: retry, cancel, delete --------------------------------

    def retry_run(self, run_id: str, now: float, line: str, budget_usd: float | None = None, *,
                  slot_actions: Iterable[str]) -> int:
        """Re-open failed, skipped and cancelled steps; completed ones are kept (not re-billed).
        A new run budget, when given, is set in the same transaction, before any step can start.

        Steps of the `slot_actions` (filled by a capture or external data, never executed)
        wait for their input again. The caller names them: which actions are slots is the
        adapters' knowledge, and the store does not import upwards."""
        slots = frozenset(slot_actions)
        with self.transaction() as tx:
            c = self.conn
            if budget_usd is not None:
                c.execute("UPDATE runs SET budget_usd = ? WHERE id = ?", (budget_usd, run_id))
            rows = c.execute("SELECT step_id, action, external FROM steps WHERE run_id = ?"
                             " AND status IN ('FAILED','SKIPPED','CANCELLED')", (run_id,)).fetchall()
            for step_id, action, external in rows:
                status = "WAITING_FOR_INPUT" if action in slots and not external else "PENDING"
                c.execute("UPDATE steps SET status = ?, error = NULL, error_code = NULL, error_count = 0,"
                          " crash_count = 0, carried = 0, due_at = NULL, started_at = NULL, ended_at = NULL,"
                          " duration_ms = NULL, owner = NULL, lease_until = NULL, epoch = epoch + 1"
                          " WHERE run_id = ? AND step_id = ?", (status, run_id, step_id))
                self._log(run_id, step_id, now, line)
            self._queue_ready(run_id, now)
            started = c.execute("SELECT 1 FROM steps WHERE run_id = ? AND status = 'COMPLETED' AND external = 0"
                                " AND action != 'capture' LIMIT 1", (run_id,)).fetchone() is not None
            c.execute("UPDATE runs SET status = ?, error = NULL, error_code = NULL, open_steps = open_steps + ?"
                      " WHERE id = ?", ("RUNNING" if started else "PENDING", len(rows), run_id))
            tx.touched.add(run_id)
            return len(rows)

    def cancel_run(self, run_id: str, now: float, line: str) -> int:
        with self.transaction() as tx:
            c = self.conn
            rows = c.execute(f"UPDATE steps SET status = 'CANCELLED', ended_at = ?, epoch = epoch + 1, owner = NULL,"
                             f" lease_until = NULL, error = 'cancelled by the user'"
                             f" WHERE run_id = ? AND status IN {_OPEN_SQL} RETURNING step_id", (now, run_id)).fetchall()
            for (step_id,) in rows:
                self._log(run_id, step_id, now, line)
            # A call in flight is not recalled by cancelling: it may be billed, and its answer is dropped.
            c.execute("UPDATE calls SET state = 'unconfirmed', settled_at = ?, reason = 'cancelled while the call"
                      " was in flight' WHERE run_id = ? AND state = 'sent'", (now, run_id))
            c.execute("UPDATE runs SET status = 'CANCELLED', error = 'cancelled by the user', error_code = 'cancelled',"
                      " open_steps = 0 WHERE id = ? AND status NOT IN ('COMPLETED','FAILED','CANCELLED')", (run_id,))
            tx.touched.add(run_id)
            return len(rows)

    def delete_run(self, run_id: str) -> bool:
        """The run and all it holds, except what it spent (see deleted_spend)."""
        with self.transaction():
            c = self.conn
            c.execute("INSERT INTO deleted_spend (kind, provider, model, at, cost, estimated)"
                      " SELECT 'step', provider, model, ended_at, cost, COALESCE(CASE WHEN json_valid(metadata)"
                      " THEN json_extract(metadata, '$.cost_estimated') END, 0) = 1 FROM steps"
                      " WHERE run_id = ? AND status = 'COMPLETED' AND (cost IS NOT NULL OR price_unknown = 1)",
                      (run_id,))
            c.execute("INSERT INTO deleted_spend (kind, provider, model, at, cost)"
                      " SELECT 'call', provider, model, sent_at, CASE WHEN state = 'discarded' THEN cost"
                      " ELSE cost_max END FROM calls WHERE run_id = ? AND state IN ('sent', 'unconfirmed', 'discarded')",
                      (run_id,))
            return c.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    # ---- capture de-duplication ---------------------------------------------
    # The extension re-sends a capture that was in flight when the host died, with the same
    # capture_id. Service.capture looks it up, then (in the same BEGIN IMMEDIATE) starts the
    # run and records it, so two processes re-sending one capture_id still make one run.

    def capture_run(self, capture_id: str) -> tuple[str, str | None] | None:
        """(run_id, step_id) of the run a capture_id already made, or None."""
        return self.conn.execute("SELECT run_id, step_id FROM captures WHERE capture_id = ?",
                                 (capture_id,)).fetchone()

    def record_capture(self, capture_id: str, run_id: str, step_id: str | None) -> None:
        with self.transaction():
            self.conn.execute("INSERT INTO captures (capture_id, run_id, step_id) VALUES (?, ?, ?)",
                              (capture_id, run_id, step_id))
