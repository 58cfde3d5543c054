"""The exception tree, in one place.

    HybridEngineError (code, message)     -- becomes {"ok": false, "error": {...}} / exit 2
     +-- BadRequest        bad_request     a malformed message, argument or file
     |    +-- TemplateError bad_template   a workflow template that does not validate
     +-- NotFound          not_found       unknown run, step or template
     +-- Forbidden         forbidden       caller origin not allowed
     +-- TooLarge          too_large       a payload over a size limit
     +-- BudgetExceeded    budget_exceeded a step would cross a budget
     +-- ConflictError     conflict        the request contradicts the current state
     +-- SiteRefused       site_never      a page whose site the user ruled `never` ([[sites]])
     +-- StoreError        store_unavailable  engine.db cannot be opened or used (names the file and the fix)
          +-- StoreBusy      store_unavailable  another process held the write lock past the busy timeout
          +-- StoreCorrupt   store_corrupt    not a database, damaged, truncated, or an empty file
          +-- StoreReadOnly  store_read_only  the file or its folder cannot be written
          +-- StoreFull      store_full       the disk that holds it is full

    StepError                              raised by actions, caught by the executor
     +-- TransientStepError                worth retrying (429, 5xx, timeouts); may carry retry_after
     +-- PermanentStepError                retrying cannot help (4xx, bad params, no provider)

Codes are append-only: the extension and the tests match on them.
"""

from __future__ import annotations


class HybridEngineError(Exception):
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, **fields):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.fields = fields

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        out.update(self.fields)
        return out


class BadRequest(HybridEngineError):
    code = "bad_request"


class TemplateError(BadRequest):
    code = "bad_template"


class NotFound(HybridEngineError):
    code = "not_found"


class Forbidden(HybridEngineError):
    code = "forbidden"


class TooLarge(HybridEngineError):
    code = "too_large"


class BudgetExceeded(HybridEngineError):
    code = "budget_exceeded"


class ConflictError(HybridEngineError):
    code = "conflict"


class SiteRefused(HybridEngineError):
    code = "site_never"


class StoreError(HybridEngineError):
    """The database file cannot serve: the message names the file and what the user can do."""

    code = "store_unavailable"


class StoreBusy(StoreError):
    """Another process held the write lock past the busy timeout. Nothing was written (the
    transaction rolled back), so the caller may keep what it meant to write and try again.
    Its code is StoreError's: to the extension and the CLI a busy store is an unavailable one."""


class StoreCorrupt(StoreError):
    code = "store_corrupt"


class StoreReadOnly(StoreError):
    code = "store_read_only"


class StoreFull(StoreError):
    code = "store_full"


class StepError(Exception):
    """An action's failure. The message is shown to the user as the step's error."""

    code = "step_failed"

    def __init__(self, message: str, *, code: str | None = None, metadata: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.metadata = metadata or {}


class TransientStepError(StepError):
    code = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PermanentStepError(StepError):
    code = "permanent"


class StepBudgetExceeded(PermanentStepError):
    code = "budget_exceeded"
