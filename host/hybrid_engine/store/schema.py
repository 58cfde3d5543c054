"""The tables, their migrations, and the SQL fragments that name a set of rows.

Data only, but for the one Python step of a migration (the library's backfill, in fts.py):
applying the migrations is the connection's job (connection.apply_migrations), so that a
reader can see the whole schema, version by version, in one place.
"""

from __future__ import annotations

from .fts import backfill_library


OPEN_STATUSES = ("PENDING", "QUEUED", "RUNNING", "WAITING_FOR_INPUT")
_OPEN_SQL = "('PENDING','QUEUED','RUNNING','WAITING_FOR_INPUT')"

MIGRATIONS: list = [
    # 1: the initial schema. Hot-path notes: a status change of a step touches its
    # table row and at most the one `steps_live` index; the run's open-step counter
    # lives on its row so that "is the run over?" needs no scan; outputs under
    # INLINE_OUTPUT_MAX bytes sit in the step's row, larger ones (pages) are written
    # once to `outputs` and never rewritten.
    """
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        template    TEXT NOT NULL,
        status      TEXT NOT NULL,
        budget_usd  REAL,
        error       TEXT,
        error_code  TEXT,
        open_steps  INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX runs_created ON runs(created_at);
    CREATE INDEX runs_active ON runs(status) WHERE status IN ('PENDING','RUNNING');

    -- AUTOINCREMENT: a step's rowid is never reused after its run is deleted, so the
    -- (rowid, epoch) pair that every compare-and-swap checks names one step forever.
    CREATE TABLE steps (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id        TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id       TEXT NOT NULL,
        pos           INTEGER NOT NULL,
        name          TEXT NOT NULL,
        action        TEXT NOT NULL,
        provider      TEXT,
        params        TEXT NOT NULL,
        deps          TEXT NOT NULL,
        dependents    TEXT NOT NULL DEFAULT '',  -- "step action provider" entries, comma-separated
        waiting_on    INTEGER NOT NULL DEFAULT 0,
        status        TEXT NOT NULL,
        outputs       TEXT,
        outputs_ref   INTEGER NOT NULL DEFAULT 0,
        error         TEXT,
        error_code    TEXT,
        metadata      TEXT,
        model         TEXT,
        tokens        INTEGER,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost          REAL,
        price_unknown INTEGER NOT NULL DEFAULT 0,
        attempts      INTEGER NOT NULL DEFAULT 0,
        error_count   INTEGER NOT NULL DEFAULT 0,
        crash_count   INTEGER NOT NULL DEFAULT 0,
        max_retries   INTEGER NOT NULL DEFAULT 0,
        timeout_s     REAL,
        due_at        REAL,
        owner         TEXT,
        owner_pid     INTEGER,
        owner_start   INTEGER,
        owner_host    TEXT,
        epoch         INTEGER NOT NULL DEFAULT 0,
        lease_until   REAL,
        started_at    REAL,
        ended_at      REAL,
        duration_ms   INTEGER,
        external      INTEGER NOT NULL DEFAULT 0,
        carried       INTEGER NOT NULL DEFAULT 0,  -- closed predecessors not yet taken off runs.open_steps
        UNIQUE (run_id, step_id)
    );
    CREATE INDEX steps_queue ON steps(due_at) WHERE status = 'QUEUED';
    CREATE INDEX steps_billed ON steps(ended_at) WHERE cost IS NOT NULL;

    CREATE TABLE outputs (
        run_id  TEXT NOT NULL,
        step_id TEXT NOT NULL,
        data    TEXT NOT NULL,
        PRIMARY KEY (run_id, step_id),
        FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE CASCADE
    );

    CREATE TABLE step_logs (
        id      INTEGER PRIMARY KEY,
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id TEXT NOT NULL,
        ts      REAL NOT NULL,
        line    TEXT NOT NULL
    );
    CREATE INDEX step_logs_step ON step_logs(run_id, step_id);
    """,
    # 2: capture de-duplication. The extension re-sends a capture that was in flight when
    # the host died, with the same page.metadata.capture_id; this maps that id to the run
    # it already made, across restarts. Rows go with their run (ON DELETE CASCADE; the
    # run_id index keeps that delete from scanning the table).
    """
    CREATE TABLE captures (
        capture_id TEXT PRIMARY KEY,
        run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id    TEXT
    );
    CREATE INDEX captures_run ON captures(run_id);
    """,
    # 3: a template's step rows, stored once per version (content-addressed by `digest`), so
    # that creating a run is one INSERT ... SELECT done inside SQLite instead of binding every
    # column of every row from Python (200 steps: 3.5 -> 1.5 us per step). Runs do not refer
    # to plans: a plan can be dropped at any time and is written again when next needed.
    """
    CREATE TABLE plans (
        digest     TEXT PRIMARY KEY,
        template   TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX plans_template ON plans(template);
    CREATE TABLE plan_steps (
        digest      TEXT NOT NULL,
        pos         INTEGER NOT NULL,
        step_id     TEXT NOT NULL,
        name        TEXT NOT NULL,
        action      TEXT NOT NULL,
        provider    TEXT,
        params      TEXT NOT NULL,
        deps        TEXT NOT NULL,
        dependents  TEXT NOT NULL,
        waiting_on  INTEGER NOT NULL,
        status      TEXT NOT NULL,
        max_retries INTEGER NOT NULL,
        timeout_s   REAL,
        PRIMARY KEY (digest, pos)
    ) WITHOUT ROWID;
    """,
    # 4: the call journal. A provider call is written here, committed, before its request is
    # sent; settling the step settles the call in the same transaction. A call still `sent`
    # whose process died, or whose answer was dropped (cancel, timeout), becomes
    # `unconfirmed`: it may have been billed, so budgets and spend count it at `cost_max`.
    # States: sent -> answered (the step's row holds its cost) | refused (the provider
    # answered with an error: not billed) | unconfirmed.
    """
    CREATE TABLE calls (
        id          INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id     TEXT NOT NULL,
        epoch       INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        provider    TEXT,
        model       TEXT,
        prompt_tokens INTEGER,
        max_output_tokens INTEGER,
        cost_max    REAL,
        cost        REAL,
        owner_pid   INTEGER,
        sent_at     REAL NOT NULL,
        state       TEXT NOT NULL,
        settled_at  REAL,
        reason      TEXT
    );
    CREATE INDEX calls_step ON calls(run_id, step_id);
    CREATE INDEX calls_open ON calls(sent_at) WHERE state IN ('sent', 'unconfirmed');
    """,
    # 5: what a deleted run spent. Deleting a run removes its steps and its journal, not the
    # money: the day's and the month's spend and their budgets keep counting its completed
    # model steps ('step': cost, NULL when the price is unknown) and its calls without a
    # recorded answer ('call': the bound, or the cost of one answered after its step was
    # taken over; a call still in flight when its run was deleted counts as unconfirmed).
    """
    CREATE TABLE deleted_spend (
        kind      TEXT NOT NULL,
        provider  TEXT,
        model     TEXT,
        at        REAL NOT NULL,
        cost      REAL,
        estimated INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX deleted_spend_at ON deleted_spend(kind, at);
    """,
    # 6: the library. `pages` is the page a run was given (title, URL, its site, the favicon
    # URL the browser reported, the content's hash and the template version it went to: what
    # "already sent" and reuse look up). `library` is the full-text index over titles, URLs and
    # results, one row per run with the run's rowid; the store writes it in the transaction that
    # records the page and in the one that finishes the run, so it is never behind the store.
    # A list of statements, not one script: trigger bodies hold semicolons; the backfill is
    # Python because a page's site is read the way new pages' are (pageurl.py).
    [
        """CREATE TABLE pages (
            run_id       TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
            title        TEXT,
            url          TEXT,
            url_key      TEXT,
            site         TEXT,
            favicon      TEXT,
            content_hash TEXT,
            template_version TEXT,
            captured_at  REAL NOT NULL
        )""",
        "CREATE INDEX pages_url ON pages(url_key)",
        "CREATE INDEX pages_site ON pages(site)",
        "CREATE INDEX pages_content ON pages(content_hash, template_version)",
        "CREATE VIRTUAL TABLE library USING fts5(title, url, body, tokenize = 'unicode61 remove_diacritics 2')",
        # Deleting a run takes its index row with it, whoever deletes it.
        "CREATE TRIGGER runs_unindex AFTER DELETE ON runs BEGIN DELETE FROM library WHERE rowid = old.rowid; END",
        # Existing runs: their page from their capture step, then their index row.
        backfill_library,
    ],
    # 7: batches: many pages sent at once, one run per distinct page. A batch makes its runs a few
    # at a time (`parallel`), so that pause, cancel and its budget act before work starts; an item
    # keeps its page (as JSON) only until its run is made. `digest` (of the URL and the content)
    # is unique among a batch's items that run: the same page twice runs once, the second item
    # is kept as a `duplicate` naming the first. Items that could not be read (`unreadable`) or
    # that sit behind a login (`needs_browser`) are kept with a note, for the extension to take
    # over. Item states: waiting -> started (its run says the rest) | duplicate | needs_browser
    # | unreadable. Batch states: running | paused | stopped (its budget) | cancelled.
    """
        CREATE TABLE batches (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            template    TEXT NOT NULL,
            state       TEXT NOT NULL,
            budget_usd  REAL,
            parallel    INTEGER NOT NULL,
            note        TEXT,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL
        );
        CREATE INDEX batches_created ON batches(created_at);
        CREATE INDEX batches_running ON batches(state) WHERE state = 'running';
        CREATE TABLE batch_items (
            id        INTEGER PRIMARY KEY,
            batch_id  TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
            pos       INTEGER NOT NULL,
            source    TEXT NOT NULL,
            title     TEXT,
            digest    TEXT,
            state     TEXT NOT NULL,
            run_id    TEXT REFERENCES runs(id) ON DELETE SET NULL,
            page      TEXT,
            note      TEXT,
            UNIQUE (batch_id, pos)
        );
        CREATE UNIQUE INDEX batch_items_digest ON batch_items(batch_id, digest) WHERE state NOT IN ('duplicate', 'unreadable', 'needs_browser');
        CREATE INDEX batch_items_waiting ON batch_items(batch_id, pos) WHERE state = 'waiting';
        CREATE INDEX batch_items_run ON batch_items(run_id) WHERE run_id IS NOT NULL;
    """,
]

INLINE_OUTPUT_MAX = 8192

# RUNNING steps are found through the runs that are open (runs_active), not through an
# index of their own: a chain step then goes PENDING -> RUNNING -> COMPLETED touching no
# index at all, and recovery still costs O(steps of open runs), not O(history).
ACTIVE_RUNS = "run_id IN (SELECT id FROM runs WHERE status IN ('PENDING','RUNNING'))"
SCHEMA_VERSION = len(MIGRATIONS)
