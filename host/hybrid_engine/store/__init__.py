"""The only code that speaks SQL: the engine's store, one SQLite file.

    schema.py      the tables, their migrations, SQL fragments naming sets of rows
    records.py     the values that go in and come out (ClaimRequest, Claimed, Outcome, ...)
    failures.py    what a SQLite or OS failure on the file means (StoreCorrupt, StoreFull, ...)
    connection.py  opening the file, one connection per thread, transactions (StoreFile)
    hotpath.py     claim, settle, continuation, leases, the call journal's writes (HotPath)
    linkgroup.py   chain links computed ahead, settled in one transaction (LinkGroup)
    expansion.py   a run growing steps while it runs: the parts of a fan-out (Expansions)
    lifecycle.py   create from a plan, slots, external steps, retry, cancel, delete,
                   recovery's requeue (RunLifecycle)
    queries.py     summaries, outputs, logs, costs, spend, unconfirmed calls (Queries)
    library.py     runs' pages, the full-text index, search, "already sent", retention (Library)
    batches.py     batches and their items: pages waiting for their runs (Batches)

`Store` is those parts put together; callers import everything from here.
"""

from __future__ import annotations

from ..errors import StoreBusy, StoreCorrupt, StoreError, StoreFull, StoreReadOnly
from .batches import Batches
from .failures import query_error, store_error
from .hotpath import HANDED_OVER
from .library import MARK_END, MARK_START, Library, fts_query
from .lifecycle import RunLifecycle
from .queries import Queries
from .records import Claimed, ClaimRequest, ExpandedStep, Expansion, NewStep, Outcome, RunningRow, RunPlan, decode_dependents, encode_dependents
from .schema import ACTIVE_RUNS, INLINE_OUTPUT_MAX, MIGRATIONS, OPEN_STATUSES, SCHEMA_VERSION


class Store(RunLifecycle, Queries, Library, Batches):
    """One engine.db: `Store(path)` opens it (or makes it) and raises a StoreError naming
    the file and the fix when it cannot."""


__all__ = ["ACTIVE_RUNS", "HANDED_OVER", "INLINE_OUTPUT_MAX", "MARK_END", "MARK_START", "MIGRATIONS", "OPEN_STATUSES", "SCHEMA_VERSION",
           "ClaimRequest", "Claimed", "ExpandedStep", "Expansion", "NewStep", "Outcome", "RunPlan", "RunningRow", "Store", "StoreBusy",
           "StoreCorrupt", "StoreError", "StoreFull", "StoreReadOnly", "decode_dependents", "encode_dependents", "fts_query",
           "query_error", "store_error"]
