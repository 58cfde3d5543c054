"""The library's SQL: the page each run was given, the full-text index over titles, URLs and
results, search, "already sent" look-ups, and retention (dropping old raw captures, then
giving the space back to the file system).

The index (`library`, FTS5; its writes are fts.py) holds one row per run under the run's rowid.
It is written in the transaction that records the run's page and again in the one that finishes
the run (connection._finish_run), and a trigger removes it with the run: it is never behind the
store, and the engine's per-step hot path never touches it.
"""

from __future__ import annotations

import json
import os
import sqlite3

from ..pageurl import site_of, url_key
from .connection import StoreFile
from .failures import reraise
from .fts import CAPTURE_DATA as _CAPTURE_DATA
from .fts import index_run

# Snippets mark each match with these (control characters no page text carries): a reader
# splits on them and highlights, never parses the snippet as markup.
MARK_START, MARK_END = "\x02", "\x03"
_SNIPPET = f"snippet(library, -1, '{MARK_START}', '{MARK_END}', '…', 16)"


def fts_query(text: str) -> str | None:
    """A user's search words as an FTS5 query that cannot fail: every word is quoted (so `"`,
    `*`, `AND`, `NEAR`, `-`, `:` are words, not syntax), matches as a prefix, and all must
    match. None when nothing searchable is left (only punctuation). A NUL would end FTS5's
    quoted string early (a syntax error), so it separates words as a space does."""
    terms = []
    for word in text.replace("\x00", " ").split():
        if any(ch.isalnum() for ch in word):
            terms.append('"' + word.replace('"', '""') + '"*')
    return " ".join(terms) or None


class Library(StoreFile):
    """Pages, search, "already sent", retention."""

    def record_page(self, run_id: str, *, title: str | None, url: str | None, favicon: str | None,
                    content_hash: str | None, template_version: str | None, captured_at: float) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO pages (run_id, title, url, url_key, site, favicon, content_hash,"
                " template_version, captured_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, title, url, url_key(url), site_of(url), favicon, content_hash, template_version,
                 captured_at))
            index_run(self.conn, run_id)

    def search_runs(self, match: str | None, *, workflow: str | None = None, site: str | None = None,
                    status: str | None = None, since: float | None = None, until: float | None = None,
                    limit: int = 50, offset: int = 0) -> tuple[list[tuple[str, str | None]], int]:
        """([(run_id, snippet or None)], total matching), newest first."""
        where, args = [], []
        for clause, value in (("r.template = ?", workflow), ("p.site = ?", site), ("r.status = ?", status),
                              ("r.created_at >= ?", since), ("r.created_at < ?", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if match is not None:
            # The pages table only for a site filter: the join costs a lookup per match.
            pages = " LEFT JOIN pages p ON p.run_id = r.id" if site is not None else ""
            base = f"FROM library JOIN runs r ON r.rowid = library.rowid{pages} WHERE library MATCH ?"
            args = [match, *args]
            cond = "".join(" AND " + w for w in where)
            # Newest first, as without words: FTS5 walks its index backwards and stops at the page,
            # where ORDER BY rank would score every match first (20x slower for a common word).
            rows = self.conn.execute(f"SELECT r.id, {_SNIPPET} {base}{cond} ORDER BY library.rowid DESC"
                                     f" LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
            # Unfiltered, the index alone is counted: each of its rows is a run's (runs_unindex
            # deletes a run's row with the run), so the join to runs would only cost a lookup per match.
            count = f"SELECT count(*) {base}{cond}" if where else "SELECT count(*) FROM library WHERE library MATCH ?"
            total = self.conn.execute(count, args).fetchone()[0]
            return rows, total
        base = "FROM runs r LEFT JOIN pages p ON p.run_id = r.id" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.conn.execute(f"SELECT r.id, NULL {base} ORDER BY r.created_at DESC, r.rowid DESC LIMIT ? OFFSET ?",
                                 (*args, limit, offset)).fetchall()
        total = self.conn.execute(f"SELECT count(*) {base}", args).fetchone()[0]
        return rows, total

    def runs_for_url(self, url: str, limit: int = 10) -> list[str]:
        """Runs given this page (fragment ignored), newest first."""
        return [r[0] for r in self.conn.execute(
            "SELECT p.run_id FROM pages p JOIN runs r ON r.id = p.run_id WHERE p.url_key = ?"
            " ORDER BY r.created_at DESC LIMIT ?", (url_key(url), limit))]

    def reusable_run(self, content_hash: str, template_version: str) -> str | None:
        """The newest COMPLETED run that got this very content through this template version."""
        row = self.conn.execute(
            "SELECT p.run_id FROM pages p JOIN runs r ON r.id = p.run_id WHERE p.content_hash = ?"
            " AND p.template_version = ? AND r.status = 'COMPLETED' ORDER BY r.created_at DESC LIMIT 1",
            (content_hash, template_version)).fetchone()
        return row[0] if row else None

    def page_rows(self, run_ids: list[str]) -> dict[str, dict]:
        if not run_ids:
            return {}
        rows = self.conn.execute(f"SELECT run_id, title, url, site, favicon FROM pages WHERE run_id IN"
                                 f" ({','.join('?' * len(run_ids))})", run_ids).fetchall()
        return {r[0]: {"title": r[1], "url": r[2], "site": r[3], "favicon": r[4]} for r in rows}

    def estimated_steps(self, run_ids: list[str]) -> dict[str, int]:
        """Completed steps per run whose cost was estimated from our own token count."""
        if not run_ids:
            return {}
        return dict(self.conn.execute(
            f"SELECT run_id, count(*) FROM steps WHERE run_id IN ({','.join('?' * len(run_ids))})"
            " AND status = 'COMPLETED' AND cost IS NOT NULL AND json_valid(metadata)"
            " AND json_extract(metadata, '$.cost_estimated') = 1 GROUP BY run_id", run_ids).fetchall())

    # ---- size and retention ---------------------------------------------------------

    def file_bytes(self) -> int:
        """engine.db with its write-ahead log: what the store takes on disk."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.stat(str(self.path) + suffix).st_size
            except FileNotFoundError:
                pass
        return total

    def library_counts(self) -> tuple[int, int]:
        """(runs, bytes of raw page captures still kept)."""
        runs = self.conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        size = self.conn.execute("SELECT COALESCE(SUM(length(COALESCE(s.outputs, o.data))), 0) FROM steps s"
                                 " LEFT JOIN outputs o ON o.run_id = s.run_id AND o.step_id = s.step_id"
                                 " AND s.outputs_ref = 1 WHERE s.action = 'capture'").fetchone()[0]
        return runs, size

    def drop_captures(self, before: float, batch: int = 200) -> int:
        """Empty the raw page of capture steps in runs created before `before` that are over
        (COMPLETED or CANCELLED: a FAILED run may still be retried from its page). Title, URL and
        the rest of the capture's outputs stay, with `content_dropped: true`; extracted text and
        results are other steps and stay whole. Returns how many captures were emptied."""
        done = 0
        while True:
            with self.transaction():
                rows = self.conn.execute(
                    f"{_CAPTURE_DATA} AND s.run_id IN (SELECT id FROM runs WHERE created_at < ? AND status IN"
                    " ('COMPLETED', 'CANCELLED')) AND NOT (json_valid(COALESCE(s.outputs, o.data)) AND"
                    " json_extract(COALESCE(s.outputs, o.data), '$.content_dropped') IS NOT NULL) LIMIT ?",
                    (before, batch)).fetchall()
                for rowid, run_id, step_id, data in rows:
                    try:
                        out = json.loads(data) if data else {}
                    except ValueError:
                        out = {}
                    if not isinstance(out, dict):
                        out = {}
                    content = out.pop("content", None)
                    out["content_dropped"] = True
                    out["content_bytes"] = len(content.encode("utf-8")) if isinstance(content, str) else 0
                    self.conn.execute("UPDATE steps SET outputs = ?, outputs_ref = 0 WHERE rowid = ?",
                                      (json.dumps(out, ensure_ascii=False), rowid))
                    self.conn.execute("DELETE FROM outputs WHERE run_id = ? AND step_id = ?", (run_id, step_id))
            done += len(rows)
            if len(rows) < batch:
                return done

    def compact(self) -> None:
        """Give freed pages back to the file system: VACUUM (outside any transaction), then fold
        the write-ahead log into the file and truncate it."""
        try:
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # busy past the timeout, a full disk: the store's own error
            reraise(exc, self.path)


__all__ = ["MARK_END", "MARK_START", "Library", "fts_query"]
