"""Read-side queries: run summaries and rows, outputs, logs, costs and spend (exact,
estimated, unpriced), the call journal's calls that may have been billed. None of them
writes, so none waits for another process's write lock.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not `typing`'s: importing typing costs the host's first runs.list 2 ms
if TYPE_CHECKING:
    from typing import Iterable

from .connection import StoreFile


class Queries(StoreFile):
    """What the service, the CLI and budgets read."""

    def _dict_rows(self, sql: str, args: tuple) -> list[dict]:
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def run_row(self, run_id: str) -> dict | None:
        rows = self._dict_rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        return rows[0] if rows else None

    def runs_with_prefix(self, prefix: str, limit: int = 2) -> list[tuple[str]]:
        """Run ids starting with `prefix`, taken literally (no LIKE wildcards); uses the primary key."""
        return self.conn.execute("SELECT id FROM runs WHERE id >= ? AND substr(id, 1, ?) = ? ORDER BY id LIMIT ?",
                                 (prefix, len(prefix), prefix, limit)).fetchall()

    def run_budget(self, run_id: str) -> float | None:
        row = self.conn.execute("SELECT budget_usd FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def run_info(self, run_id: str) -> tuple[str, str, float] | None:
        return self.conn.execute("SELECT name, template, created_at FROM runs WHERE id = ?", (run_id,)).fetchone()

    def step_rows(self, run_id: str) -> list[dict]:
        return self._dict_rows("SELECT * FROM steps WHERE run_id = ? ORDER BY pos", (run_id,))

    def step_exists(self, run_id: str, step_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM steps WHERE run_id = ? AND step_id = ?",
                                 (run_id, step_id)).fetchone() is not None

    def outputs(self, run_id: str, step_ids: Iterable[str] | None = None) -> dict[str, dict]:
        c = self.conn
        if step_ids is None:
            rows = c.execute("SELECT s.step_id, COALESCE(s.outputs, o.data) FROM steps s LEFT JOIN outputs o"
                             " ON o.run_id = s.run_id AND o.step_id = s.step_id AND s.outputs_ref = 1"
                             " WHERE s.run_id = ? AND s.status = 'COMPLETED'", (run_id,)).fetchall()
        else:
            ids = list(step_ids)
            if not ids:
                return {}
            rows = c.execute(f"SELECT s.step_id, COALESCE(s.outputs, o.data) FROM steps s LEFT JOIN outputs o"
                             f" ON o.run_id = s.run_id AND o.step_id = s.step_id AND s.outputs_ref = 1"
                             f" WHERE s.run_id = ? AND s.step_id IN ({','.join('?' * len(ids))})"
                             f" AND s.status = 'COMPLETED'", (run_id, *ids)).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows if r[1] is not None}

    def source_urls(self, run_id: str) -> list[str]:
        """The page URLs a run was given (its filled capture slots and external data)."""
        rows = self.conn.execute("SELECT json_extract(metadata, '$.source_url') FROM steps WHERE run_id = ?"
                                 " AND (action = 'capture' OR external = 1) AND status = 'COMPLETED'"
                                 " AND metadata IS NOT NULL AND json_valid(metadata)", (run_id,)).fetchall()
        return [r[0] for r in rows if isinstance(r[0], str) and r[0]]

    def logs(self, run_id: str) -> dict[str, list[tuple[float, str]]]:
        out: dict[str, list[tuple[float, str]]] = {}
        for step_id, ts, line in self.conn.execute(
                "SELECT step_id, ts, line FROM step_logs WHERE run_id = ? ORDER BY id", (run_id,)):
            out.setdefault(step_id, []).append((ts, line))
        return out

    # A run's row is not written at every link of a chain, so "updated" also looks at its steps.
    _SUMMARY = ("SELECT r.id, r.name, r.template, r.status, r.created_at,"
                " MAX(r.updated_at, COALESCE(MAX(s.started_at), 0), COALESCE(MAX(s.ended_at), 0)), r.error,"
                " COUNT(s.step_id), COALESCE(SUM(s.status = 'COMPLETED'), 0),"
                " COALESCE(SUM(CASE WHEN s.status = 'COMPLETED' THEN s.tokens END), 0),"
                " COALESCE(SUM(CASE WHEN s.status = 'COMPLETED' THEN s.cost END), 0),"
                " COALESCE(SUM(s.status = 'COMPLETED' AND s.price_unknown = 1), 0),"
                " COALESCE(SUM(s.status = 'FAILED'), 0), r.budget_usd, r.error_code,"
                " p.title, p.url, p.site, p.favicon"
                " FROM runs r LEFT JOIN pages p ON p.run_id = r.id LEFT JOIN steps s ON s.run_id = r.id")
    SUMMARY_FIELDS = ("id", "name", "template", "status", "created_at", "updated_at", "error", "total_steps",
                      "completed_steps", "total_tokens", "total_cost", "unknown_cost_steps", "failed_steps",
                      "budget_usd", "error_code", "page_title", "page_url", "page_site", "page_favicon")

    def _summaries(self, where: str, args: tuple, tail: str = "") -> list[dict]:
        rows = self.conn.execute(f"{self._SUMMARY} {where} GROUP BY r.id {tail}", args).fetchall()
        return [dict(zip(self.SUMMARY_FIELDS, r)) for r in rows]

    def run_summaries(self, limit: int = 50, offset: int = 0) -> list[dict]:
        return self._summaries("WHERE r.id IN (SELECT id FROM runs ORDER BY created_at DESC, rowid DESC"
                               " LIMIT ? OFFSET ?)", (limit, offset), "ORDER BY r.created_at DESC, r.rowid DESC")

    def run_summaries_of(self, run_ids: list[str]) -> dict[str, dict]:
        """The summaries of these runs, by id (the caller keeps its own order)."""
        if not run_ids:
            return {}
        rows = self._summaries(f"WHERE r.id IN ({','.join('?' * len(run_ids))})", tuple(run_ids))
        return {r["id"]: r for r in rows}

    def run_summary(self, run_id: str) -> dict | None:
        rows = self._summaries("WHERE r.id = ?", (run_id,))
        return rows[0] if rows else None

    def active_or_recent(self, since: float, known: Iterable[str] = ()) -> list[tuple[str, float, str, int]]:
        """(id, last change, status, completed steps) of runs that are open, created since `since`, or in `known`:
        what an event feed must look at, without an index that every step change would touch."""
        ids = list(known)
        marks = ",".join("?" * len(ids)) or "NULL"
        return self.conn.execute(
            f"SELECT r.id, MAX(r.updated_at, COALESCE((SELECT MAX(MAX(COALESCE(s.started_at, 0)),"
            f" MAX(COALESCE(s.ended_at, 0))) FROM steps s WHERE s.run_id = r.id), 0)), r.status,"
            f" (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'COMPLETED') FROM runs r"
            f" WHERE r.status IN ('PENDING','RUNNING') OR r.created_at >= ? OR r.id IN ({marks})",
            (since, *ids)).fetchall()

    def cost_breakdown(self, run_id: str) -> dict[str, float]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT model, SUM(cost) FROM steps WHERE run_id = ? AND status = 'COMPLETED' AND model IS NOT NULL"
            " AND cost IS NOT NULL GROUP BY model ORDER BY model", (run_id,))}

    def cost_by_provider(self, run_id: str) -> dict[str, float]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT provider, SUM(cost) FROM steps WHERE run_id = ? AND status = 'COMPLETED' AND provider IS NOT NULL"
            " AND cost IS NOT NULL GROUP BY provider ORDER BY provider", (run_id,))}

    def run_cost(self, run_id: str) -> float:
        return self.conn.execute("SELECT COALESCE(SUM(cost), 0) FROM steps WHERE run_id = ? AND status = 'COMPLETED'",
                                 (run_id,)).fetchone()[0]

    def _summed(self, sql: str, deleted_sql: str, since: float) -> dict:
        """Per-key sums over the live steps and the deleted runs' spend alike."""
        out: dict = {}
        for key, value in (self.conn.execute(sql, (since,)).fetchall()
                           + self.conn.execute(deleted_sql, (since,)).fetchall()):
            out[key or "unknown"] = out.get(key or "unknown", 0) + value
        return out

    def spend_since(self, since: float) -> dict[str, float]:
        """Known cost of completed model steps since a time, per provider."""
        return self._summed(
            "SELECT provider, SUM(cost) FROM steps WHERE cost IS NOT NULL AND ended_at >= ? AND status = 'COMPLETED'"
            " GROUP BY provider",
            "SELECT provider, SUM(cost) FROM deleted_spend WHERE kind = 'step' AND at >= ? AND cost IS NOT NULL"
            " GROUP BY provider", since)

    def estimated_since(self, since: float) -> dict[str, float]:
        """The part of spend_since priced from our own token count (the provider's usage was
        missing or impossible), per provider: spend counts it and says it is estimated."""
        return self._summed(
            "SELECT provider, SUM(cost) FROM steps WHERE cost IS NOT NULL AND ended_at >= ? AND status = 'COMPLETED'"
            " AND CASE WHEN json_valid(metadata) THEN json_extract(metadata, '$.cost_estimated') END = 1"
            " GROUP BY provider",
            "SELECT provider, SUM(cost) FROM deleted_spend WHERE kind = 'step' AND at >= ? AND cost IS NOT NULL"
            " AND estimated = 1 GROUP BY provider", since)

    def unpriced_since(self, since: float) -> dict[str, int]:
        """Completed model steps since a time whose price is unknown, per model: spend cannot
        count them, so it says how many there are rather than let them pass for $0."""
        return self._summed(
            "SELECT model, COUNT(*) FROM steps WHERE price_unknown = 1 AND ended_at >= ? AND status = 'COMPLETED'"
            " GROUP BY model",
            "SELECT model, COUNT(*) FROM deleted_spend WHERE kind = 'step' AND at >= ? AND cost IS NULL"
            " GROUP BY model", since)

    def spend_rows_since(self, since: float) -> list[tuple]:
        """(ended_at, provider, workflow, cost, estimated, priced) of every completed model step
        since a time, with the deleted runs' spend (workflow None): what a chart of spend per
        day groups, in the caller's own time zone."""
        rows = self.conn.execute(
            "SELECT s.ended_at, s.provider, r.template, s.cost,"
            " CASE WHEN json_valid(s.metadata) THEN json_extract(s.metadata, '$.cost_estimated') = 1 ELSE 0 END,"
            " s.price_unknown = 0 FROM steps s JOIN runs r ON r.id = s.run_id"
            " WHERE s.status = 'COMPLETED' AND s.ended_at >= ? AND (s.cost IS NOT NULL OR s.price_unknown = 1)",
            (since,)).fetchall()
        rows += self.conn.execute(
            "SELECT at, provider, NULL, cost, estimated, cost IS NOT NULL FROM deleted_spend"
            " WHERE kind = 'step' AND at >= ?", (since,)).fetchall()
        return rows

    # ---- the call journal ----------------------------------------------------

    def calls(self, run_id: str) -> list[dict]:
        return self._dict_rows("SELECT * FROM calls WHERE run_id = ? ORDER BY id", (run_id,))

    def unconfirmed_since(self, since: float, run_id: str | None = None) -> dict[str, dict]:
        """Calls that may have been billed but whose answer was never recorded, per provider:
        {provider: {"calls": n, "cost_max": USD or None when a bound is unknown}}; with the
        calls answered after their step was taken over (state `discarded`, their cost known)."""
        where, args = "state IN ('unconfirmed', 'discarded') AND sent_at >= ?", [since]
        if run_id is not None:
            where += " AND run_id = ?"
            args.append(run_id)
        rows = self.conn.execute(
            "SELECT provider, COUNT(*), SUM(CASE WHEN state = 'discarded' THEN cost ELSE cost_max END),"
            " SUM(CASE WHEN state = 'discarded' THEN cost IS NULL ELSE cost_max IS NULL END)"
            f" FROM calls WHERE {where} GROUP BY provider", args).fetchall()
        if run_id is None:
            rows += self.conn.execute("SELECT provider, COUNT(*), SUM(cost), SUM(cost IS NULL) FROM deleted_spend"
                                      " WHERE kind = 'call' AND at >= ? GROUP BY provider", (since,)).fetchall()
        out: dict[str, dict] = {}
        for provider, n, bound, unknown in rows:
            v = out.setdefault(provider or "unknown", {"calls": 0, "cost_max_known": 0.0, "unpriced": 0})
            v["calls"] += n
            v["cost_max_known"] += bound or 0.0
            v["unpriced"] += unknown or 0
            v["cost_max"] = None if v["unpriced"] else v["cost_max_known"]
        return out

    def unconfirmed_cost(self, since: float = 0.0, run_id: str | None = None) -> float:
        """What budgets count for those calls: their upper bound (known part)."""
        return sum(v["cost_max_known"] for v in self.unconfirmed_since(since, run_id).values())
