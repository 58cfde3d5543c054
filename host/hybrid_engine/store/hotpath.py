"""The hot path: claim, settle, continuation, leases, and the call journal's writes.

Claiming is a compare-and-swap UPDATE that bumps the step's epoch; every later
write by the claimant is conditional on that epoch, so a worker that lost its lease
cannot overwrite the step's new owner. A completion and the claim of the step it
unblocks are one transaction ("continuation"): a chain costs about one commit per
step. Step outputs are written once, when the step completes: a 5 MB page is never
rewritten by a status change.

A chain link costs two UPDATEs, and nothing is read: the next step's row is known ahead
(from the plan of a run made here, or read once with its run's other pending rows), and the
claim is a compare-and-swap on everything that can have changed since. A link has a commit
of its own, unless the executor settles the pure inline steps after it in the same one
(linkgroup.py). Queue claims read the rows, then write them by rowid in the same write
transaction (SQLite's UPDATE ... RETURNING costs more than the read).

Most of what is here runs at every step or every link of a chain: a change to it is
measured with `bash bench/run engine_overhead` (ratios to one SQLite commit per step).
"""

from __future__ import annotations

import sqlite3

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's first runs.list 2 ms
if TYPE_CHECKING:
    from typing import Any, Iterable

from ..errors import StoreError
from .connection import StoreFile, _Tx
from .linkgroup import LinkGroup, _claimed_as
from .records import Claimed, ClaimRequest, Outcome, RunPlan, _dumps, decode_dependents
from .schema import ACTIVE_RUNS, INLINE_OUTPUT_MAX

HANDED_OVER = -1  # _release_dependents: the continued step took over the closing count
LINKS_MAX = 20_000  # pending chain links kept read ahead, over all runs
PLANNED_MAX = 10_000  # runs made here whose plans stand in for their rows


class HotPath(StoreFile):
    """What the executor does at every step: claim, settle, log, renew its leases, poll the queue."""

    @staticmethod
    def _place_outputs(outputs: dict | None) -> tuple[str, str | None, int]:
        """Small outputs go in the step's row, large ones in `outputs`: (json, inline value, ref)."""
        data = _dumps(outputs if outputs is not None else {})
        if len(data) <= INLINE_OUTPUT_MAX:
            return data, data, 0
        return data, None, 1

    def _write_large_outputs(self, run_id: str, step_id: str, data: str) -> None:
        """Written once, after the step's own row was won: never rewritten by a status change."""
        self.conn.execute("INSERT OR REPLACE INTO outputs (run_id, step_id, data) VALUES (?,?,?)",
                          (run_id, step_id, data))

    # ---- claiming and settling ---------------------------------------------

    _CLAIM_COLS = ("rowid, run_id, step_id, action, provider, params, dependents, epoch, attempts, error_count,"
                   " crash_count, max_retries, timeout_s, carried")

    _CLAIM_SET = ("status = 'RUNNING', owner = ?, owner_pid = ?, owner_start = ?, owner_host = ?, epoch = epoch + 1,"
                  " lease_until = ?, attempts = attempts + 1, started_at = ?, ended_at = NULL")

    # A chain link: read the one dependent, then either count the finished dependency or
    # claim it by rowid. (A single UPDATE ... RETURNING did both, but SQLite's RETURNING
    # costs more than this SELECT: ~1 us of a ~30 us chain step.)
    _CHAIN_NEXT = f"SELECT waiting_on, {_CLAIM_COLS} FROM steps WHERE run_id = ? AND step_id = ? AND status = 'PENDING'"
    _CLAIM_ROW = f"UPDATE steps SET {_CLAIM_SET}, waiting_on = 0, carried = carried + ? WHERE rowid = ?"
    # The same claim without that read, for a link whose row is known ahead (_link): taken
    # only if it is still that step, as known. A step's identity, action, params and
    # dependents never change once written, so the counters are all there is to compare; a
    # row that changed is read again by _CHAIN_NEXT.
    _CLAIM_LINK = (f"UPDATE steps SET {_CLAIM_SET}, waiting_on = 0, carried = carried + ? WHERE rowid = ?"
                   " AND run_id = ? AND step_id = ? AND status = 'PENDING' AND waiting_on <= 1 AND epoch = ?"
                   " AND attempts = ? AND error_count = ? AND crash_count = ? AND carried = ?")
    # A link is the claim columns and whether the step joins more than one dependency (its
    # `deps` is a JSON list, and step ids hold no comma): a join is not computed ahead.
    _PENDING_LINKS = (f"SELECT {_CLAIM_COLS}, instr(deps, ',') > 0 FROM steps WHERE run_id = ? AND status = 'PENDING'"
                      f" LIMIT {LINKS_MAX}")

    def _planned_here(self, run_id: str, first_rowid: int, plan: RunPlan) -> None:
        """A run this process made from `plan`: its rows are the plan's, in order, from
        `first_rowid` (one INSERT ... SELECT under the write lock), never claimed yet. Its
        links are then known without reading them back (a 500-step run's read took 1-2 ms)."""
        planned = self._planned
        if len(planned) >= PLANNED_MAX:
            planned.clear()
        planned[run_id] = (first_rowid, plan)

    def _link(self, run_id: str, step_id: str, read: bool, keep: bool = False) -> tuple | None:
        """A pending step's claim columns as last known here, or None. From the plan of a run
        made here; else read with the run's other pending links (when `read`: once a run).
        A link read ahead is used once (its claim takes it), unless `keep`: a look ahead."""
        planned = self._planned.get(run_id)
        if planned is not None:
            first, plan = planned
            if not plan.positions:
                plan.positions.update((row[0], row) for row in plan.rows)
            row = plan.positions.get(step_id)
            if row is not None:  # see plan_run for the row's columns
                return (first + row[1], run_id, step_id, row[3], row[4], row[5], row[7], 0, 0, 0, 0, row[10], row[11], 0,
                        row[8] > 1)
        link = self._links.get((run_id, step_id)) if keep else self._links.pop((run_id, step_id), None)
        if link is not None:
            return link
        if read and run_id not in self._links_read:
            self._read_links(run_id)
            return self._links.pop((run_id, step_id), None)
        return None

    def _forget(self, run_id: str) -> None:
        """A run's rows moved on from what is known of them here (a retry moved their epochs):
        its plan and the links read ahead go, and its links are read again when next needed."""
        self._planned.pop(run_id, None)
        if run_id in self._links_read:
            self._links_read.discard(run_id)
            links = self._links
            for key in [k for k in links if k[0] == run_id]:
                del links[key]

    _LINK_NOW = f"SELECT {_CLAIM_COLS} FROM steps WHERE rowid = ? AND status = 'PENDING'"

    def _forget_if_moved(self, cur: sqlite3.Cursor, link: tuple) -> None:
        """After a known link's claim failed: a join waiting on another step is as known; any
        other reason is a row that moved on."""
        row = cur.execute(self._LINK_NOW, (link[0],)).fetchone()
        if row is None or row != link[:14]:
            self._forget(link[1])

    def _claim_link(self, cur: sqlite3.Cursor, link: tuple, req: ClaimRequest, now: float, carry: int) -> Claimed | None:
        """The claim of a known link (_CLAIM_LINK) on this thread's cursor, inside its
        transaction, or None when its row is not as known."""
        if not cur.execute(self._CLAIM_LINK, (req.owner, req.pid, req.start, req.host, req.lease_until, now, carry,
                                              link[0], link[1], link[2], link[7], link[8], link[9], link[10],
                                              link[13])).rowcount:
            return None
        return _claimed_as(link, carry)

    def _linkable(self, o: Outcome, req: ClaimRequest) -> tuple | None:
        """(the dependent's known link, `o`'s outputs as written) when `o` settles as a link of
        a chain: a step without metadata, log or provider call that completed, with one
        dependent that may continue here and is known ahead. None for anything else. The link
        stays known until its claim is made (LinkGroup.settle)."""
        cl = o.claim
        deps = cl.dependents
        if o.kind != "completed" or o.metadata or o.call_id is not None or o.log or not deps or "," in deps \
                or req.limit <= 0:
            return None
        dep_id, action, provider = deps.split(" ")
        if not req.may_continue(action, provider):
            return None
        _, inline, ref = self._place_outputs(o.outputs)
        if ref:  # a large output goes in its own table: the general way writes it
            return None
        link = self._link(cl.run_id, dep_id, read=False, keep=True)
        return None if link is None else (link, inline)

    def look_ahead(self, o: Outcome, req: ClaimRequest) -> "tuple | None":
        """What settling `o` as a link would claim, as the claim would return it, with what it
        needs to be settled so (LinkGroup.settle's `ahead`); None when `o` is not a link.
        Nothing is written or used up: the claim may still fail when it is made."""
        known = self._linkable(o, req)
        if known is None:
            return None
        return _claimed_as(known[0], o.claim.carried + 1), known[0], known[1]

    def _read_links(self, run_id: str) -> None:
        """A run's pending steps, read in one statement the first time a link of it is
        claimed here: a chain of N steps then reads its rows once instead of N times."""
        links = self._links
        if len(links) > LINKS_MAX or len(self._links_read) > LINKS_MAX:
            links.clear()
            self._links_read.clear()
        self._links_read.add(run_id)
        for row in self.conn.execute(self._PENDING_LINKS, (run_id,)):
            links[(run_id, row[2])] = row

    def _claim(self, req: ClaimRequest, now: float, tx: _Tx) -> list[Claimed]:
        if req.limit <= 0 and not req.inline_limit:
            return []
        where = "status = 'QUEUED' AND due_at <= ?"
        args: list[Any] = [now]
        ex_a, ex_p = list(req.exclude_actions), list(req.exclude_providers)
        if ex_a:
            where += f" AND action NOT IN ({','.join('?' * len(ex_a))})"
            args += ex_a
        if ex_p:
            where += f" AND (provider IS NULL OR provider NOT IN ({','.join('?' * len(ex_p))}))"
            args += ex_p
        rows = self._take(f"SELECT {self._CLAIM_COLS} FROM steps WHERE {where} ORDER BY due_at LIMIT ?",
                          [*args, req.limit], req, now)
        if len(rows) == req.limit and req.inline_limit > 0 and req.inline_actions:
            marks = ",".join("?" * len(req.inline_actions))
            rows += self._take(f"SELECT {self._CLAIM_COLS} FROM steps WHERE {where} AND action IN ({marks})"
                               f" ORDER BY due_at LIMIT ?", [*args, *req.inline_actions, req.inline_limit], req, now)
        for c in rows:
            tx.touched.add(c.run_id)
            tx.started.add(c.run_id)
        return rows

    def _take(self, select: str, args: list, req: ClaimRequest, now: float) -> list[Claimed]:
        """The rows `select` reads, claimed. Read, then written by rowid: inside the write
        transaction nobody else can change them in between, and SQLite's UPDATE ... RETURNING
        costs more than the read (~3 us a step of a fan-out's ~8)."""
        claimed = [Claimed(*r) for r in self.conn.execute(select, args).fetchall()]
        if not claimed:
            return claimed
        ids = [c.rowid for c in claimed]
        n = self.conn.execute(f"UPDATE steps SET {self._CLAIM_SET} WHERE status = 'QUEUED' AND rowid IN"
                              f" ({','.join('?' * len(ids))})",
                              (req.owner, req.pid, req.start, req.host, req.lease_until, now, *ids)).rowcount
        if n != len(ids):  # cannot happen under the write lock; undone by the caller's rollback
            raise StoreError(f"claimed {n} of {len(ids)} queued steps read a moment before")
        for c in claimed:
            c.epoch += 1
            c.attempts += 1
        return claimed

    def claim(self, req: ClaimRequest, now: float) -> list[Claimed]:
        with self.transaction() as tx:
            return self._claim(req, now, tx)

    def settle(self, outcomes: list[Outcome], req: ClaimRequest | None, now: float, *,
               as_link: bool = True) -> tuple[list[bool], list[Claimed]]:
        """Apply outcomes and claim the next batch, all in one commit.

        A dependent that a completion makes ready is claimed on the spot when the
        request has room for it ("continuation"): a chain then costs one commit per
        step and never passes through the queue. Returns, per outcome, whether it was
        applied (False: the lease was lost and another owner has the step), and the
        newly claimed steps. `as_link=False`: the caller has tried the outcome as a link
        already (LinkGroup), so it is not tried again.
        """
        if as_link and len(outcomes) == 1 and req is not None and not req.probe_queue:
            link = self._settle_link(outcomes[0], req, now)
            if link is not None:
                return [True], [link]
        with self.transaction() as tx:
            claimed: list[Claimed] = []
            room = [req.limit if req is not None else 0]
            applied = [self._apply(o, tx, req, room, claimed) for o in outcomes]
            if req is not None and (room[0] > 0 or req.inline_limit) and (not claimed or tx.queued or req.probe_queue and self.conn.execute(
                    "SELECT 1 FROM steps WHERE status = 'QUEUED' AND due_at <= ? LIMIT 1", (now,)).fetchone()):
                req.limit = room[0]
                claimed += self._claim(req, now, tx)
            return applied, claimed

    def _settle_link(self, o: Outcome, req: ClaimRequest, now: float) -> Claimed | None:
        """settle() for a link of a chain, the commonest settle of all, in its own transaction
        (LinkGroup.settle says what a link is). None, with nothing written, for anything else
        or when a row is not as known: the general path then decides."""
        group = self.links()
        if group is None:
            return None
        with group:
            return group.settle(o, req, now)

    def links(self) -> LinkGroup | None:
        """A group of chain links to settle in one transaction on this thread's connection, or
        None on a thread whose connection has not opened yet (it opens on the general way) or
        inside another transaction."""
        local = self._local
        cur = getattr(local, "cur", None)
        if cur is None or local.tx is not None:
            return None
        return LinkGroup(self, cur, local.conn)

    _COMPLETE = (
        "UPDATE steps SET status = 'COMPLETED', outputs = ?, outputs_ref = ?, ended_at = ?, duration_ms = ?,"
        " metadata = ?, model = ?, provider = COALESCE(?, provider), tokens = ?, prompt_tokens = ?,"
        " completion_tokens = ?, cost = ?, price_unknown = ?, error = NULL, error_code = NULL, owner = NULL,"
        " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'")
    # The same for a step without metadata (deterministic actions): the NULLs are literals,
    # which saves binding eight parameters on every link of a chain (~1.5 us of ~30).
    _COMPLETE_PLAIN = (
        "UPDATE steps SET status = 'COMPLETED', outputs = ?, outputs_ref = ?, ended_at = ?, duration_ms = ?,"
        " metadata = NULL, model = NULL, tokens = NULL, prompt_tokens = NULL, completion_tokens = NULL,"
        " cost = NULL, price_unknown = 0, error = NULL, error_code = NULL, owner = NULL, lease_until = NULL"
        " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'")

    def _apply(self, o: Outcome, tx: _Tx, req: ClaimRequest | None = None, room: list | None = None,
               claimed: list | None = None) -> bool:
        c = self.conn
        cl = o.claim
        duration_ms = int(round((o.ended_at - o.started_at) * 1000))
        kind = o.kind
        if o.call_id is not None:
            self._settle_call(o)
        if kind == "completed":
            md = o.metadata
            data, inline, ref = self._place_outputs(o.outputs)
            if md:
                if "cost" in md or "model" in md or "tokens" in md:
                    cost = md.get("cost")
                    billing = (md.get("model"), md.get("provider"), md.get("tokens"), md.get("prompt_tokens"),
                               md.get("completion_tokens"), cost,
                               1 if (md.get("price_unknown") or ("cost" in md and cost is None)) else 0)
                else:
                    billing = (None, None, None, None, None, None, 0)
                cur = c.execute(self._COMPLETE, (inline, ref, o.ended_at, duration_ms, _dumps(md), *billing,
                                                 cl.rowid, cl.epoch))
            else:
                cur = c.execute(self._COMPLETE_PLAIN, (inline, ref, o.ended_at, duration_ms, cl.rowid, cl.epoch))
            if cur.rowcount == 0:
                return False  # the lease was lost: nothing of ours is written, the winner's outputs stay
            if ref:
                self._write_large_outputs(cl.run_id, cl.step_id, data)
            if o.log:
                self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
            if not cl.dependents or self._release_dependents(
                    cl.run_id, cl.dependents, o.ended_at, tx, req, room, claimed, cl.carried + 1) != HANDED_OVER:
                tx.close(cl.run_id, 1 + cl.carried)
            # else: the step that continues this chain carries the count; the run's row is not
            # written at every link of a chain.
            return True
        if kind == "retry":
            cur = c.execute(
                "UPDATE steps SET status = 'QUEUED', due_at = ?, error = ?, error_code = ?, ended_at = ?,"
                " duration_ms = ?, error_count = error_count + 1, owner = NULL, lease_until = NULL"
                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.due_at, o.error, o.error_code, o.ended_at, duration_ms, cl.rowid, cl.epoch))
            if cur.rowcount and o.log:
                self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
        elif kind == "released":
            # Handed back at shutdown: to the queue at once, the attempt not counted.
            cur = c.execute(
                "UPDATE steps SET status = 'QUEUED', due_at = ?, attempts = MAX(attempts - 1, 0), owner = NULL,"
                " lease_until = NULL WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.due_at or o.ended_at, cl.rowid, cl.epoch))
        elif kind == "expand":
            return self._expand(o, tx)  # store/expansion.py: the claimed step grows parts and waits on them
        elif kind == "failed":
            md = o.metadata or None
            cur = c.execute(
                "UPDATE steps SET status = 'FAILED', error = ?, error_code = ?, ended_at = ?, duration_ms = ?,"
                " error_count = error_count + 1, metadata = COALESCE(?, metadata), owner = NULL, lease_until = NULL"
                " WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                (o.error, o.error_code, o.ended_at, duration_ms, _dumps(md) if md else None, cl.rowid, cl.epoch))
            if cur.rowcount:
                if o.log:
                    self._log(cl.run_id, cl.step_id, o.ended_at, o.log)
                tx.close(cl.run_id, 1 + cl.carried + self._skip_downstream(cl.run_id, cl.step_id, o.ended_at))
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        if cur.rowcount == 0:
            return False
        tx.touched.add(cl.run_id)
        return True

    def _settle_call(self, o: Outcome) -> None:
        """The call's fate, whatever became of the step: an answer whose step was taken over
        meanwhile (cancelled, recovered) was still billed, so it stays on the record, priced."""
        c = self.conn
        if o.call_state == "answered":
            c.execute("UPDATE calls SET state = CASE WHEN EXISTS (SELECT 1 FROM steps WHERE rowid = ? AND epoch = ?"
                      " AND status = 'RUNNING') THEN 'answered' ELSE 'discarded' END, cost = ?, settled_at = ?"
                      " WHERE id = ? AND state IN ('sent', 'unconfirmed')",
                      (o.claim.rowid, o.claim.epoch, o.call_cost, o.ended_at, o.call_id))
        else:
            c.execute("UPDATE calls SET state = ?, settled_at = ?, reason = ? WHERE id = ? AND state = 'sent'",
                      (o.call_state or "unconfirmed", o.ended_at, o.error, o.call_id))

    # ---- the call journal ----------------------------------------------------

    def settle_call(self, call_id: int, state: str, reason: str | None, now: float) -> float | None:
        """One call's fate before its step settles (a fallback tried next in the same attempt);
        returns its bound, what an unconfirmed call counts at."""
        with self.transaction():
            row = self.conn.execute("UPDATE calls SET state = ?, settled_at = ?, reason = ? WHERE id = ?"
                                    " AND state = 'sent' RETURNING cost_max", (state, now, reason, call_id)).fetchone()
        return row[0] if row else None

    def journal_call(self, rowid: int, epoch: int, attempt: int, provider: str | None, model: str | None,
                     prompt_tokens: int | None, max_output_tokens: int | None, cost_max: float | None,
                     pid: int, now: float) -> int | None:
        """Record a provider call before it is sent; None when the step is no longer ours (do not send)."""
        with self.transaction():
            row = self.conn.execute(
                "INSERT INTO calls (run_id, step_id, epoch, attempt, provider, model, prompt_tokens,"
                " max_output_tokens, cost_max, owner_pid, sent_at, state) SELECT run_id, step_id, epoch, ?, ?, ?, ?,"
                " ?, ?, ?, ?, 'sent' FROM steps WHERE rowid = ? AND epoch = ? AND status = 'RUNNING' RETURNING id",
                (attempt, provider, model, prompt_tokens, max_output_tokens, cost_max, pid, now, rowid,
                 epoch)).fetchone()
            return row[0] if row else None

    def _release_dependents(self, run_id: str, dependents_json: str, now: float, tx: _Tx,
                            req: ClaimRequest | None = None, room: list | None = None,
                            claimed: list | None = None, carry: int = 0) -> int:
        """One dependency of each dependent is done; those with none left are claimed
        (when `req` has room and their group has no limit) or queued. Returns how many
        became ready."""
        c = self.conn
        deps = decode_dependents(dependents_json)
        if len(deps) == 1:  # a chain: one statement on one row, no index touched
            dep_id, action, provider = deps[0]
            if req is not None and room[0] > 0 and req.may_continue(action, provider):
                key = (run_id, dep_id)
                link = self._link(run_id, dep_id, read=True)
                if link is not None:
                    cl = self._claim_link(self._local.cur, link, req, now, carry)
                    if cl is not None:
                        claimed.append(cl)
                        room[0] -= 1
                        return HANDED_OVER
                row = c.execute(self._CHAIN_NEXT, key).fetchone()
                if link is not None and (row is None or row[1:] != link[:14]):
                    self._forget(run_id)  # not a join waiting on another step: its rows moved on
                if row is None:
                    return 0
                if row[0] > 1:
                    c.execute("UPDATE steps SET waiting_on = waiting_on - 1 WHERE rowid = ?", (row[1],))
                    return 0
                c.execute(self._CLAIM_ROW, (req.owner, req.pid, req.start, req.host, req.lease_until, now, carry,
                                            row[1]))
                cl = Claimed(*row[1:])
                cl.epoch += 1
                cl.attempts += 1
                cl.carried += carry
                claimed.append(cl)
                room[0] -= 1
                return HANDED_OVER
        return self._count_done(run_id, [d[0] for d in deps], now, tx)

    def _count_done(self, run_id: str, dep_ids: list[str], now: float, tx: _Tx) -> int:
        """One dependency of each of these is done: those it was the last of are queued (and
        claimed from the queue by the settle they are part of), the others wait on one fewer.
        Returns how many were queued."""
        c = self.conn
        if len(set(dep_ids)) != len(dep_ids):  # a step listed twice counts twice
            queued = 0
            for dep_id in dep_ids:
                queued += self._count_done(run_id, [dep_id], now, tx)
            return queued
        queued = 0
        for i in range(0, len(dep_ids), 500):
            chunk = dep_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            ready = c.execute(f"UPDATE steps SET status = 'QUEUED', due_at = ?, waiting_on = 0 WHERE run_id = ?"
                              f" AND step_id IN ({marks}) AND status = 'PENDING' AND waiting_on <= 1",
                              (now, run_id, *chunk)).rowcount
            queued += ready
            if ready < len(chunk):  # (a fan-out's parts are all ready at once)
                # The rows just queued are not PENDING any more, so this counts only the others.
                c.execute(f"UPDATE steps SET waiting_on = waiting_on - 1 WHERE run_id = ? AND step_id IN ({marks})"
                          " AND status = 'PENDING'", (run_id, *chunk))
        if queued:
            tx.queued = True
        return queued

    def _skip_downstream(self, run_id: str, step_id: str, now: float) -> int:
        """Every step downstream of a failed one is SKIPPED (a walk over `dependents`, on failure only)."""
        rows = self.conn.execute("SELECT step_id, dependents FROM steps WHERE run_id = ?", (run_id,)).fetchall()
        graph = {sid: [d[0] for d in decode_dependents(deps)] for sid, deps in rows}
        down, todo = set(), list(graph.get(step_id, ()))
        while todo:
            sid = todo.pop()
            if sid not in down:
                down.add(sid)
                todo.extend(graph.get(sid, ()))
        return self._set_status(run_id, sorted(down), "SKIPPED", "ended_at = ?, error = ?",
                                (now, f"skipped: upstream step '{step_id}' failed"),
                                ("PENDING", "QUEUED", "WAITING_FOR_INPUT"))

    def _set_status(self, run_id: str, step_ids: list[str], status: str, extra: str, extra_args: tuple,
                    only_from: tuple) -> int:
        changed = 0
        frm = ",".join(f"'{s}'" for s in only_from)
        for i in range(0, len(step_ids), 500):
            chunk = step_ids[i:i + 500]
            changed += self.conn.execute(
                f"UPDATE steps SET status = ?, {extra} WHERE run_id = ? AND status IN ({frm}) AND step_id IN"
                f" ({','.join('?' * len(chunk))})", (status, *extra_args, run_id, *chunk)).rowcount
        return changed

    def _log(self, run_id: str, step_id: str, ts: float, line: str) -> None:
        self.conn.execute("INSERT INTO step_logs (run_id, step_id, ts, line) VALUES (?,?,?,?)",
                          (run_id, step_id, ts, line))

    def append_log(self, run_id: str, step_id: str, ts: float, line: str) -> None:
        with self.transaction():
            self._log(run_id, step_id, ts, line)

    # ---- leases and the queue -----------------------------------------------

    def renew_leases(self, held: Iterable[tuple[int, int]], until: float) -> set[tuple[int, int]]:
        """Extend the leases of the (rowid, epoch) pairs we hold; return those still ours."""
        kept = set()
        with self.transaction():
            c = self.conn
            for rowid, epoch in held:
                if c.execute("UPDATE steps SET lease_until = ? WHERE rowid = ? AND epoch = ? AND status = 'RUNNING'",
                             (until, rowid, epoch)).rowcount:
                    kept.add((rowid, epoch))
        return kept

    def open_actions(self) -> list[str]:
        """Actions that steps of open runs may still run (O(steps of open runs))."""
        return [r[0] for r in self.conn.execute(
            f"SELECT DISTINCT action FROM steps WHERE {ACTIVE_RUNS} AND status IN ('PENDING','QUEUED','RUNNING')")]

    def has_queued(self) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE status = 'QUEUED' LIMIT 1").fetchone() is not None

    def has_running(self) -> bool:
        return self.conn.execute(f"SELECT 1 FROM steps WHERE {ACTIVE_RUNS} AND status = 'RUNNING' LIMIT 1").fetchone() is not None

    def next_due(self) -> float | None:
        row = self.conn.execute("SELECT MIN(due_at) FROM steps WHERE status = 'QUEUED'").fetchone()
        return row[0] if row else None

    def has_ready(self, now: float) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE status = 'QUEUED' AND due_at <= ? LIMIT 1",
                                 (now,)).fetchone() is not None
