"""Deterministic actions: no model, no network, the same output for the same input."""

from __future__ import annotations

import asyncio
import os

from ..errors import PermanentStepError, TransientStepError
from .base import Action, StepContext, StepResult, SyncAction


class Capture(SyncAction):
    """The input slot. Filled by a capture or `ingest`; the executor never runs it."""

    def compute(self, params, ctx):  # pragma: no cover - guarded by the executor
        raise PermanentStepError("a capture slot is filled from outside")


class ExtractText(SyncAction):
    def compute(self, params, ctx: StepContext) -> StepResult:
        from ..extract import extract_main
        from ..pdf import is_pdf_base64

        html = params.get("html") or ""
        if not isinstance(html, str):
            raise PermanentStepError(f"params.html: expected text, got {type(html).__name__}")
        if is_pdf_base64(html):
            return self._pdf(html)
        from ..images import is_image_base64

        if is_image_base64(html):  # its base64 read as text: thousands of tokens of nothing, paid for
            raise PermanentStepError("params.html: the capture is an image, which has no text to extract; send it "
                                     "to a workflow with a vision model step (image-describe)", code="image_not_text")
        article = params.get("article") or ""
        if not isinstance(article, str):
            raise PermanentStepError(f"params.article: expected text, got {type(article).__name__}")
        result = extract_main(html, params.get("url"), include_links=bool(params.get("include_links", False)),
                              include_tables=bool(params.get("include_tables", True)), article=article)
        text = result.get("text") or ""
        # source: "article" when the live page's Readability article was used, else "html" (article.py)
        return StepResult(outputs={"text": text, "title": result.get("title") or "", "chars": len(text),
                                   "source_chars": len(html), "source": result["source"]},
                          metadata={"source_chars": len(html), "chars": len(text), "source": result["source"]})


    @staticmethod
    def _pdf(content: str) -> StepResult:
        """A captured PDF (base64, as capture and `run --input file.pdf` store it): its text by page."""
        from ..errors import BadRequest
        from ..pdf import PdfError, decode_pdf, pdf_text

        try:
            result = pdf_text(decode_pdf(content, field="params.html"))
        except BadRequest as exc:
            raise PermanentStepError(exc.message, code="bad_pdf") from exc
        except PdfError as exc:
            raise PermanentStepError(exc.message, code=exc.code) from exc
        text = result["text"]
        facts = {"pages": result["pages"], "pages_without_text": result["pages_without_text"], "chars": len(text),
                 "source_chars": len(content)}
        return StepResult(outputs={"text": text, "title": result["title"], **facts},
                          metadata={**facts, "content_type": "application/pdf"})


class SplitText(SyncAction):
    """Token-sized parts of a text, cut at paragraph boundaries, for a for_each to map over."""

    def compute(self, params, ctx) -> StepResult:
        from .. import split, tokens

        text = params.get("text")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise PermanentStepError(f"params.text: expected text, got {type(text).__name__}")
        part_tokens = params.get("part_tokens", split.DEFAULT_PART_TOKENS)
        overlap = params.get("overlap_tokens", min(split.DEFAULT_OVERLAP_TOKENS, part_tokens // 2)
                             if isinstance(part_tokens, int) else 0)
        for key, value in (("part_tokens", part_tokens), ("overlap_tokens", overlap)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise PermanentStepError(f"params.{key}: expected an integer, got {type(value).__name__}",
                                         code="bad_params")
        encoding, _ = tokens.encoding_for(params.get("model"), None)
        try:
            parts = split.split_text(text, part_tokens, overlap, encoding)
        except split.SplitError as exc:
            raise PermanentStepError(f"params: {exc}", code="bad_params") from exc
        return StepResult(outputs={"parts": parts, "count": len(parts)})


class ForEach(SyncAction):
    """The row of a for_each step; the executor runs it itself (fanout.py)."""

    def compute(self, params, ctx):  # pragma: no cover - guarded by the executor
        raise PermanentStepError("a for_each row is run by the executor")


class Template(SyncAction):
    """The executor has already rendered `template` in one pass; the result is the text."""

    def compute(self, params, ctx) -> StepResult:
        from ..safepath import as_text

        return StepResult(outputs={"text": as_text(params.get("template", ""))})


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
    """Save text to a file (append or replace) in the files folder, or a folder the template names.

    The path has been rendered by dag.render_path (data fills names only); safepath opens
    it without following links and writes regular files only. Runs in a worker thread
    (spec.blocking), so a slow disk holds a thread under the step's timeout, not the loop.
    """

    def compute(self, params, ctx) -> StepResult:
        from .. import config, safepath

        path = params.get("path")
        if not isinstance(path, str):
            raise PermanentStepError(f"params.path: expected text, got {type(path).__name__}", code="bad_path")
        content = params.get("content", "")
        if not isinstance(content, str):
            import json

            content = json.dumps(content, ensure_ascii=False)
        data = content.encode("utf-8")
        try:
            fd, where = safepath.open_for_write(path, config.data_dir() / "files", append=params.get("append") is True)
        except safepath.UnsafePath as exc:
            raise PermanentStepError(f"params.path: {exc}", code="unsafe_path") from exc
        except OSError as exc:
            raise PermanentStepError(f"params.path: cannot open '{path}': {exc.strerror or exc}",
                                     code="bad_path") from exc
        try:
            safepath.write_all(fd, data)
        except OSError as exc:
            raise PermanentStepError(f"params.path: cannot write '{where}': {exc.strerror or exc}",
                                     code="bad_path") from exc
        finally:
            os.close(fd)
        return StepResult(outputs={"path": str(where), "bytes": len(data)})
