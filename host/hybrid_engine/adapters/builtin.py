"""Deterministic actions: no model, no network, the same output for the same input."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ..errors import PermanentStepError, TransientStepError
from .base import Action, StepContext, StepResult, SyncAction


class Capture(SyncAction):
    """The input slot. Filled by a capture or `ingest`; the executor never runs it."""

    def compute(self, params, ctx):  # pragma: no cover - guarded by the executor
        raise PermanentStepError("a capture slot is filled from outside")


class ExtractText(SyncAction):
    def compute(self, params, ctx: StepContext) -> StepResult:
        from ..extract import extract_main

        html = params.get("html") or ""
        if not isinstance(html, str):
            raise PermanentStepError(f"params.html: expected text, got {type(html).__name__}")
        result = extract_main(html, params.get("url"), include_links=bool(params.get("include_links", False)),
                              include_tables=bool(params.get("include_tables", True)))
        text = result.get("text") or ""
        return StepResult(outputs={"text": text, "title": result.get("title") or "", "chars": len(text),
                                   "source_chars": len(html)},
                          metadata={"source_chars": len(html), "chars": len(text)})


class Template(SyncAction):
    """The executor has already rendered `template` in one pass; the result is the text."""

    def compute(self, params, ctx) -> StepResult:
        return StepResult(outputs={"text": params.get("template", "")})


class Noop(SyncAction):
    def compute(self, params, ctx) -> StepResult:
        return StepResult(outputs={"value": params.get("value")})


class Sleep(Action):
    async def run(self, params, ctx) -> StepResult:
        seconds = float(params.get("seconds", 0))
        await asyncio.sleep(seconds)
        return StepResult(outputs={"slept": seconds})


class Fail(SyncAction):
    """Fails on purpose: for trying out retries and failure handling in a template."""

    def compute(self, params, ctx) -> StepResult:
        times = params.get("times")
        if times is not None and ctx.attempt > int(times):
            return StepResult(outputs={"ok": True})
        message = params.get("message") or "failed on purpose"
        if params.get("transient"):
            raise TransientStepError(message, retry_after=params.get("retry_after"))
        raise PermanentStepError(message)


class WriteFile(SyncAction):
    """Save text to a file (append or replace); relative paths land in the data folder's files/."""

    def compute(self, params, ctx) -> StepResult:
        from .. import config

        path = Path(os.path.expanduser(params["path"]))
        if not path.is_absolute():
            path = config.data_dir() / "files" / path
        path.parent.mkdir(parents=True, exist_ok=True)
        content = params.get("content", "")
        if not isinstance(content, str):
            import json

            content = json.dumps(content, ensure_ascii=False)
        mode = "a" if params.get("append") else "w"
        with open(path, mode, encoding="utf-8") as fh:
            fh.write(content)
        return StepResult(outputs={"path": str(path), "bytes": len(content.encode("utf-8"))})
