"""Batches and their items (schema version 7): many pages, one run per distinct page.

The service (batches.py) says what a batch means; this module reads and writes its rows.
"""

from __future__ import annotations

import json

from .connection import StoreFile

ITEM_STATES = ("waiting", "started", "duplicate", "needs_browser", "unreadable", "blocked")
BATCH_STATES = ("running", "paused", "stopped", "cancelled")
OPEN_RUN = "('PENDING','RUNNING')"


class Batches(StoreFile):
    def create_batch(self, batch_id: str, name: str, template: str, budget_usd: float | None, parallel: int,
                     now: float, state: str = "running") -> None:
        with self.transaction():
            self.conn.execute("INSERT INTO batches (id, name, template, state, budget_usd, parallel, created_at,"
                              " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (batch_id, name, template, state, budget_usd, parallel, now, now))

    def add_batch_item(self, batch_id: str, source: str, title: str | None, digest: str | None,
                       page: dict | None, state: str, note: str | None = None) -> dict:
        """The next item of the batch; a page already in it (same digest) is stored as a
        `duplicate` naming the first, without its page. Returns {pos, state, note}."""
        with self.transaction():
            c = self.conn
            pos = c.execute("SELECT COALESCE(MAX(pos), 0) + 1 FROM batch_items WHERE batch_id = ?",
                            (batch_id,)).fetchone()[0]
            if digest is not None and state == "waiting":
                first = c.execute("SELECT pos FROM batch_items WHERE batch_id = ? AND digest = ? AND state NOT IN"
                                  " ('duplicate', 'unreadable', 'needs_browser')", (batch_id, digest)).fetchone()
                if first is not None:
                    state, page, note = "duplicate", None, f"the same page as item {first[0]}"
            c.execute("INSERT INTO batch_items (batch_id, pos, source, title, digest, state, page, note)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (batch_id, pos, source, title, digest, state,
                       json.dumps(page, ensure_ascii=False) if page is not None else None, note))
        return {"pos": pos, "state": state, "note": note}

    def batch_row(self, batch_id: str) -> dict | None:
        cur = self.conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def batches_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM batches WHERE id >= ? AND substr(id, 1, ?) = ? ORDER BY id LIMIT ?",
            (prefix, len(prefix), prefix, limit))]

    def batch_ids(self, limit: int, offset: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM batches ORDER BY created_at DESC LIMIT ? OFFSET ?",
                                                (limit, offset))]

    def set_batch_state(self, batch_id: str, state: str, now: float, note: str | None = None,
                        budget_usd: float | None = None, only_from: tuple[str, ...] | None = None) -> bool:
        sql = "UPDATE batches SET state = ?, note = ?, updated_at = ?, budget_usd = COALESCE(?, budget_usd) WHERE id = ?"
        args: tuple = (state, note, now, budget_usd, batch_id)
        if only_from:
            sql += f" AND state IN ({','.join('?' * len(only_from))})"
            args += only_from
        with self.transaction():
            return self.conn.execute(sql, args).rowcount > 0

    def batch_items(self, batch_id: str, limit: int = 1000, offset: int = 0) -> list[dict]:
        """Items with their run's status, error and cost (never their page)."""
        cur = self.conn.execute(
            "SELECT i.pos, i.source, i.title, i.state, i.run_id, i.note, r.status, r.error,"
            " (SELECT SUM(s.cost) FROM steps s WHERE s.run_id = i.run_id AND s.cost IS NOT NULL)"
            " FROM batch_items i LEFT JOIN runs r ON r.id = i.run_id WHERE i.batch_id = ?"
            " ORDER BY i.pos LIMIT ? OFFSET ?", (batch_id, limit, offset))
        keys = ("pos", "source", "title", "state", "run_id", "note", "run_status", "error", "cost_usd")
        return [dict(zip(keys, r)) for r in cur.fetchall()]

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        """Items per state, a started item counted under its run's status."""
        out: dict[str, int] = {}
        for state, count in self.conn.execute(
                "SELECT CASE WHEN i.state = 'started' THEN COALESCE(r.status, 'DELETED') ELSE i.state END, COUNT(*)"
                " FROM batch_items i LEFT JOIN runs r ON r.id = i.run_id WHERE i.batch_id = ? GROUP BY 1",
                (batch_id,)):
            out[state] = count
        return out

    def batch_cost(self, batch_id: str) -> float:
        return self.conn.execute(
            "SELECT COALESCE(SUM(s.cost), 0) FROM batch_items i JOIN steps s ON s.run_id = i.run_id"
            " WHERE i.batch_id = ? AND s.cost IS NOT NULL AND s.status = 'COMPLETED'", (batch_id,)).fetchone()[0]

    def batch_unknown_cost_steps(self, batch_id: str) -> int:
        """Completed steps of the batch's runs whose call was answered at a price not known."""
        return self.conn.execute(
            "SELECT COUNT(*) FROM batch_items i JOIN steps s ON s.run_id = i.run_id"
            " WHERE i.batch_id = ? AND s.status = 'COMPLETED' AND s.price_unknown = 1", (batch_id,)).fetchone()[0]

    def batch_runs(self, batch_id: str, statuses: tuple[str, ...]) -> list[str]:
        return [r[0] for r in self.conn.execute(
            f"SELECT i.run_id FROM batch_items i JOIN runs r ON r.id = i.run_id WHERE i.batch_id = ?"
            f" AND r.status IN ({','.join('?' * len(statuses))}) ORDER BY i.pos", (batch_id, *statuses))]

    def batch_of_run(self, run_id: str) -> tuple[str, float | None] | None:
        """(batch id, its budget) of the batch that made this run, if any."""
        return self.conn.execute("SELECT b.id, b.budget_usd FROM batch_items i JOIN batches b ON b.id = i.batch_id"
                                 " WHERE i.run_id = ?", (run_id,)).fetchone()

    def batches_to_feed(self) -> list[tuple[str, str, int, float | None]]:
        """Running batches with waiting items and room: (id, template, room, budget)."""
        return self.conn.execute(
            "SELECT b.id, b.template, b.parallel - (SELECT COUNT(*) FROM batch_items i JOIN runs r ON r.id = i.run_id"
            f"  WHERE i.batch_id = b.id AND r.status IN {OPEN_RUN}), b.budget_usd FROM batches b"
            " WHERE b.state = 'running' AND EXISTS (SELECT 1 FROM batch_items w WHERE w.batch_id = b.id"
            " AND w.state = 'waiting')").fetchall()

    def has_waiting_items(self) -> bool:
        return self.conn.execute("SELECT 1 FROM batches b WHERE b.state = 'running' AND EXISTS (SELECT 1 FROM"
                                 " batch_items w WHERE w.batch_id = b.id AND w.state = 'waiting')").fetchone() is not None

    def waiting_items(self, batch_id: str, limit: int) -> list[tuple[int, dict]]:
        return [(pos, json.loads(page)) for pos, page in self.conn.execute(
            "SELECT pos, page FROM batch_items WHERE batch_id = ? AND state = 'waiting' ORDER BY pos LIMIT ?",
            (batch_id, limit))]

    def iter_item_pages(self, batch_id: str):
        """Each waiting item's page, one at a time (an estimate never holds the whole batch)."""
        last = 0
        while True:
            row = self.conn.execute("SELECT pos, page FROM batch_items WHERE batch_id = ? AND pos > ? AND"
                                    " state = 'waiting' ORDER BY pos LIMIT 1", (batch_id, last)).fetchone()
            if row is None:
                return
            last = row[0]
            yield json.loads(row[1])

    def item_started(self, batch_id: str, pos: int, run_id: str) -> bool:
        with self.transaction():
            return self.conn.execute("UPDATE batch_items SET state = 'started', run_id = ?, page = NULL WHERE"
                                     " batch_id = ? AND pos = ? AND state = 'waiting'",
                                     (run_id, batch_id, pos)).rowcount > 0

    def fill_item(self, batch_id: str, pos: int, page: dict, digest: str, title: str | None) -> bool:
        """A `needs_browser` item's page, sent by the extension: it waits for its run now, or is
        a `duplicate` when the batch already has that page."""
        with self.transaction():
            c = self.conn
            first = c.execute("SELECT pos FROM batch_items WHERE batch_id = ? AND digest = ? AND state NOT IN"
                              " ('duplicate', 'unreadable', 'needs_browser')", (batch_id, digest)).fetchone()
            if first is not None:
                return c.execute("UPDATE batch_items SET state = 'duplicate', note = ?, title = COALESCE(?, title)"
                                 " WHERE batch_id = ? AND pos = ? AND state = 'needs_browser'",
                                 (f"the same page as item {first[0]}", title, batch_id, pos)).rowcount > 0
            return c.execute(
                "UPDATE batch_items SET state = 'waiting', page = ?, digest = ?, title = COALESCE(?, title),"
                " note = NULL WHERE batch_id = ? AND pos = ? AND state = 'needs_browser'",
                (json.dumps(page, ensure_ascii=False), digest, title, batch_id, pos)).rowcount > 0

    def set_item_aside(self, batch_id: str, pos: int, state: str, note: str, from_state: str = "waiting") -> bool:
        """An item that will not run, its page dropped: `unreadable` (its run refused the page:
        too large, a type the template cannot take) or `blocked` (a site rule of `never`)."""
        with self.transaction():
            return self.conn.execute("UPDATE batch_items SET state = ?, note = ?, page = NULL WHERE batch_id = ?"
                                     " AND pos = ? AND state = ?", (state, note, batch_id, pos, from_state)).rowcount > 0

__all__ = ["BATCH_STATES", "Batches", "ITEM_STATES"]
