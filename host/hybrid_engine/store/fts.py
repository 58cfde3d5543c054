"""The library's full-text index as the store writes it: one row per run (its page's title and
URL, and its results), written inside the caller's transaction, and the schema 6 backfill.

Apart from the rest of the library (library.py) so that the connection (which finishes runs)
and the migrations (schema.py) can use it without importing the store's upper parts.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3

from ..pageurl import site_of, url_key

# What the index holds of a run's results: the `text` of every completed step that is not the
# page itself (the capture) or its extracted text, in step order. Outputs are written by the
# store's own JSON encoder, which spells a "text" key as is: a step whose outputs lack the
# spelling has none, and is passed over without parsing (a third of the write for a run of
# 500 steps without text).
BODY_SQL = ("SELECT group_concat(t, char(10)) FROM (SELECT json_extract(COALESCE(s.outputs, o.data), '$.text') AS t"
            " FROM steps s LEFT JOIN outputs o ON o.run_id = s.run_id AND o.step_id = s.step_id"
            " WHERE s.run_id = r.id AND s.status = 'COMPLETED' AND s.action NOT IN ('capture', 'extract_text')"
            " AND instr(COALESCE(s.outputs, o.data), '\"text\"') AND json_valid(COALESCE(s.outputs, o.data)) ORDER BY s.pos)")

# OR REPLACE: a run indexed before (finished, then retried) has its old row and its terms
# dropped by FTS5 itself, in the same statement.
_INDEX_RUN = (f"INSERT OR REPLACE INTO library (rowid, title, url, body) SELECT r.rowid, p.title, p.url, ({BODY_SQL})"
              " FROM runs r LEFT JOIN pages p ON p.run_id = r.id WHERE r.id = ?")

CAPTURE_DATA = ("SELECT s.rowid, s.run_id, s.step_id, COALESCE(s.outputs, o.data) FROM steps s LEFT JOIN outputs o"
                " ON o.run_id = s.run_id AND o.step_id = s.step_id AND s.outputs_ref = 1"
                " WHERE s.action = 'capture' AND s.status = 'COMPLETED'")


def index_run(conn: "sqlite3.Connection", run_id: str) -> None:
    """(Re)write a run's index row from its page and its results; inside the caller's transaction."""
    conn.execute(_INDEX_RUN, (run_id,))


def backfill_library(conn: "sqlite3.Connection") -> None:
    """Schema 6 on a database with runs: each run's page from its capture step, then its index row."""
    rows = conn.execute(f"{CAPTURE_DATA} ORDER BY s.run_id, s.pos").fetchall()
    for _rowid, run_id, _step_id, data in rows:
        try:
            out = json.loads(data) if data else None
        except ValueError:
            continue
        if not isinstance(out, dict):
            continue
        url = out.get("source_url") if isinstance(out.get("source_url"), str) else None
        title = out.get("title") if isinstance(out.get("title"), str) else None
        conn.execute("INSERT OR IGNORE INTO pages (run_id, title, url, url_key, site, captured_at)"
                     " SELECT ?, ?, ?, ?, ?, created_at FROM runs WHERE id = ?",
                     (run_id, title, url, url_key(url), site_of(url), run_id))
    conn.execute(f"INSERT INTO library (rowid, title, url, body) SELECT r.rowid, p.title, p.url, ({BODY_SQL})"
                 " FROM runs r LEFT JOIN pages p ON p.run_id = r.id")


__all__ = ["BODY_SQL", "CAPTURE_DATA", "backfill_library", "index_run"]
